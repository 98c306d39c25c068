//! The SNI ↔ Host bypass (Traefik CVE-2019-20894 and its kin): a client completes the handshake for a host
//! without client auth, then asks for the mTLS host with `Host:`. portcullis-host's SNI check reads the
//! `TlsInfo` this crate fills in and answers 421.
#![cfg(feature = "axum")]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use portcullis_core::ConnInfo;
use portcullis_host::{Endpoint, HostFilterLayer, Hosts};
use portcullis_mtls::{
    ClientAuth, ClientIdentity, MtlsAcceptor, MtlsListener, RefusedAtHttpLayer, VirtualHost, VirtualHosts,
};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn get_with_host(addr: SocketAddr, cfg: Arc<ClientConfig>, sni: &str, host: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(sni.to_string()).expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await.expect("tls");
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text[9..12].parse().expect("status");
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

#[tokio::test]
async fn host_of_the_mtls_vhost_on_a_public_connection_is_misdirected() {
    let pki = Pki::new();
    let client_ca = pki.ca_of("client-ca", "ec:P-256", None);
    let alice = pki.leaf("alice", "ec:P-256", &client_ca);
    let vhosts = VirtualHosts::new();
    let (ks, server_ca) = server_keystore(&pki, "srv", &["secure.test", "public.test", "IP:127.0.0.1"]);
    vhosts.put_keystore(ks).expect("ks");
    vhosts.put_truststore(truststore("clients", &[&client_ca])).expect("ts");
    vhosts
        .put(
            VirtualHost::new("secure", ["secure.test"], "srv")
                .client_auth(ClientAuth::Required)
                .truststore("clients"),
        )
        .expect("secure");
    vhosts.put(VirtualHost::new("public", ["public.test"], "srv")).expect("public");
    vhosts.set_default(Some("public")).expect("default");

    let hosts = Hosts::builder()
        .endpoint(Endpoint::new("secure").host_in_vhost("secure.test", "secure"))
        .endpoint(Endpoint::new("public").host_in_vhost("public.test", "public"))
        .build()
        .expect("hosts");
    let app =
        Router::new()
            .route(
                "/",
                get(|id: Option<ClientIdentity>| async move {
                    id.map(|i| i.0.subject.clone()).unwrap_or_default()
                }),
            )
            .layer(RefusedAtHttpLayer::new())
            .layer(HostFilterLayer::new(hosts));
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let listener = MtlsListener::new(tcp, MtlsAcceptor::new(vhosts)).expect("listener");
    let addr = listener.local_addr();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<ConnInfo>()).await.expect("serve");
    });

    let anonymous = client_config(&server_ca, &[], None);
    // The public host on its own connection: served.
    let (status, _) = get_with_host(addr, anonymous.clone(), "public.test", "public.test").await;
    assert_eq!(status, 200);
    // The bypass: handshake as public.test (no client certificate asked), then Host: secure.test.
    let (status, body) = get_with_host(addr, anonymous.clone(), "public.test", "secure.test").await;
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("host.sni-mismatch"), "{body}");
    // Without SNI the connection lands on the default (public) host: the same request is refused too.
    let (status, body) = get_with_host(addr, anonymous, "127.0.0.1", "secure.test").await;
    assert_eq!(status, 421, "{body}");
    // The mTLS host on its own, authenticated connection: served with the identity.
    let authed = client_config(&server_ca, &[&alice], Some(&alice));
    let (status, body) = get_with_host(addr, authed, "secure.test", "secure.test").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("CN=alice"), "{body}");
}
