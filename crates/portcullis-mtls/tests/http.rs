//! The HTTP side over real TLS: the identity in an axum handler (MtlsListener + ConnInfo), "refuse at HTTP"
//! mode answering 403 with the reason, the hyper-util helper, and curl as an independent client.
#![cfg(feature = "axum")]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use portcullis_core::ConnInfo;
use portcullis_mtls::{
    ClientAuth, ClientIdentity, MtlsAcceptor, MtlsListener, RefusedAtHttpLayer, VirtualHost, VirtualHosts,
};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One HTTP/1.1 GET over TLS; returns (status, body).
async fn https_get(
    addr: SocketAddr,
    cfg: Arc<ClientConfig>,
    sni: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let mut tls =
        tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status =
        text.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no status in {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

async fn whoami(id: Option<ClientIdentity>, ConnectInfo(conn): ConnectInfo<ConnInfo>) -> String {
    let tls = conn.tls.expect("TLS facts");
    format!(
        "subject={} sha256={} sni={} vhost={} peer={}",
        id.map(|ClientIdentity(c)| c.subject.clone()).unwrap_or_else(|| "-".into()),
        tls.client_cert.as_ref().map(|c| c.sha256.clone()).unwrap_or_else(|| "-".into()),
        tls.sni.as_deref().unwrap_or("-"),
        tls.vhost.as_deref().unwrap_or("-"),
        conn.peer.ip(),
    )
}

async fn required(ClientIdentity(c): ClientIdentity) -> String {
    c.subject.clone()
}

/// Serves the test app on `hosts` with axum; returns the address.
async fn serve_axum(hosts: VirtualHosts) -> SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let listener = MtlsListener::new(tcp, MtlsAcceptor::new(hosts)).expect("listener");
    let addr = listener.local_addr();
    let app = Router::new()
        .route("/", get(whoami))
        .route("/required", get(required))
        .layer(RefusedAtHttpLayer::new());
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<ConnInfo>()).await.expect("serve");
    });
    addr
}

struct Setup {
    pki: Pki,
    hosts: VirtualHosts,
    server_ca: Issued,
    client_ca: Issued,
    alice: Issued,
}

/// `a.test` requires client auth; `debug.test` requires it in "refuse at HTTP" mode; `open.test` has none.
fn setup() -> Setup {
    let pki = Pki::new();
    let client_ca = pki.ca_of("client-ca", "ec:P-256", None);
    let alice = pki.leaf("alice", "ec:P-256", &client_ca);
    let hosts = VirtualHosts::new();
    let (ks, server_ca) = server_keystore(&pki, "srv", &["a.test", "debug.test", "open.test"]);
    hosts.put_keystore(ks).expect("ks");
    hosts.put_truststore(truststore("clients", &[&client_ca])).expect("ts");
    hosts
        .put(VirtualHost::new("a", ["a.test"], "srv").client_auth(ClientAuth::Required).truststore("clients"))
        .expect("a");
    hosts
        .put(
            VirtualHost::new("debug", ["debug.test"], "srv")
                .client_auth(ClientAuth::Required)
                .truststore("clients")
                .refuse_at_http(true),
        )
        .expect("debug");
    hosts.put(VirtualHost::new("open", ["open.test"], "srv")).expect("open");
    Setup { pki, hosts, server_ca, client_ca, alice }
}

#[tokio::test]
async fn axum_handler_sees_the_verified_identity() {
    let s = setup();
    let addr = serve_axum(s.hosts.clone()).await;
    let cfg = client_config(&s.server_ca, &[&s.alice], Some(&s.alice));
    let (status, body) = https_get(addr, cfg.clone(), "a.test", "/").await.expect("get");
    assert_eq!(status, 200, "{body}");
    let sha = portcullis_mtls::client_cert(std::slice::from_ref(&s.alice.der)).expect("cert").sha256;
    assert!(body.contains("subject=O=Portcullis Test, CN=alice"), "{body}");
    assert!(body.contains(&format!("sha256={sha}")), "{body}");
    assert!(body.contains("sni=a.test vhost=a peer=127.0.0.1"), "{body}");
    let (status, body) = https_get(addr, cfg, "a.test", "/required").await.expect("get");
    assert_eq!((status, body.as_str()), (200, "O=Portcullis Test, CN=alice"));
    // On the host without client auth the extractor refuses a handler that requires an identity.
    let anon = client_config(&s.server_ca, &[], None);
    let (status, body) = https_get(addr, anon.clone(), "open.test", "/").await.expect("get");
    assert_eq!(status, 200);
    assert!(body.contains("subject=- sha256=- sni=open.test vhost=open"), "{body}");
    let (status, body) = https_get(addr, anon, "open.test", "/required").await.expect("get");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("mtls.no-client-identity"), "{body}");
}

#[tokio::test]
async fn a_refused_handshake_does_not_block_the_listener() {
    let s = setup();
    let addr = serve_axum(s.hosts.clone()).await;
    // A client that connects and says nothing holds a handshake task, not the accept loop.
    let _idle = TcpStream::connect(addr).await.expect("idle");
    let stranger_ca = s.pki.ca_of("stranger-ca", "ec:P-256", None);
    let stranger = s.pki.leaf("stranger", "ec:P-256", &stranger_ca);
    let refused =
        https_get(addr, client_config(&s.server_ca, &[&stranger], Some(&stranger)), "a.test", "/").await;
    assert!(refused.is_err(), "{refused:?}");
    let ok = https_get(addr, client_config(&s.server_ca, &[&s.alice], Some(&s.alice)), "a.test", "/").await;
    assert_eq!(ok.expect("served").0, 200);
}

#[tokio::test]
async fn refuse_at_http_mode_answers_403_with_the_reason() {
    let s = setup();
    let addr = serve_axum(s.hosts.clone()).await;
    // A chain from an unknown CA: the handshake completes, every request gets 403 with the reason.
    let stranger_ca = s.pki.ca_of("stranger-ca", "ec:P-256", None);
    let stranger = s.pki.leaf("stranger", "ec:P-256", &stranger_ca);
    let cfg = client_config(&s.server_ca, &[&stranger], Some(&stranger));
    let (status, body) = https_get(addr, cfg, "debug.test", "/").await.expect("handshake completes");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("mtls.client-chain") && body.contains("issuer unknown"), "{body}");
    assert!(body.contains("CN=stranger"), "{body}");
    // A weak chain: the reason names the rule.
    let sha1 = s.pki.issue_named("sha1-leaf", "ec:P-256", Some(&s.client_ca), &["-sha1"], LEAF_EXT);
    let cfg = client_config(&s.server_ca, &[&sha1], Some(&sha1));
    let (status, body) = https_get(addr, cfg, "debug.test", "/").await.expect("handshake completes");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("ecdsa-with-SHA1"), "{body}");
    // No certificate at all.
    let (status, body) =
        https_get(addr, client_config(&s.server_ca, &[], None), "debug.test", "/").await.expect("get");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("mtls.no-client-certificate"), "{body}");
    // A good chain is served, with its identity.
    let cfg = client_config(&s.server_ca, &[&s.alice], Some(&s.alice));
    let (status, body) = https_get(addr, cfg, "debug.test", "/").await.expect("get");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("CN=alice"), "{body}");
}

#[tokio::test]
async fn refused_at_http_connections_are_not_resumed_into_an_identity() {
    let s = setup();
    let addr = serve_axum(s.hosts.clone()).await;
    let stranger_ca = s.pki.ca_of("stranger-ca", "ec:P-256", None);
    let stranger = s.pki.leaf("stranger", "ec:P-256", &stranger_ca);
    let cfg = client_config(&s.server_ca, &[&stranger], Some(&stranger));
    for _ in 0..2 {
        let (status, body) = https_get(addr, cfg.clone(), "debug.test", "/").await.expect("get");
        assert_eq!(status, 403, "a second (would-be resumed) connection is refused too: {body}");
    }
}

#[tokio::test]
async fn hyper_util_helper_puts_conn_info_into_requests() {
    let s = setup();
    let acceptor = MtlsAcceptor::new(s.hosts.clone());
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    tokio::spawn(async move {
        let (sock, remote) = tcp.accept().await.expect("accept");
        let stream = acceptor.accept(sock).await.expect("tls");
        let svc = tower::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
            let conn = ConnInfo::from_extensions(req.extensions()).expect("conn info");
            let tls = conn.tls.expect("tls");
            let subject = tls.client_cert.as_ref().map(|c| c.subject.clone()).unwrap_or_default();
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from(format!("{} {}", tls.vhost.as_deref().unwrap_or("-"), subject)),
            )))
        });
        let _ = portcullis_mtls::serve_connection(stream, remote, svc).await;
    });
    let cfg = client_config(&s.server_ca, &[&s.alice], Some(&s.alice));
    let (status, body) = https_get(addr, cfg, "a.test", "/").await.expect("get");
    assert_eq!((status, body.as_str()), (200, "a O=Portcullis Test, CN=alice"));
}

fn curl_available() -> bool {
    std::process::Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn curl_with_cert_and_key() {
    if !curl_available() {
        eprintln!("SKIPPED: curl is not installed; this test drives `curl --cert --key` against the server");
        return;
    }
    let s = setup();
    let addr = serve_axum(s.hosts.clone()).await;
    // An OpenSSL configuration at security level 0, so that curl agrees to send a SHA-1 signed chain.
    let weak_conf = s.pki.path("seclevel0.cnf");
    std::fs::write(
        &weak_conf,
        "openssl_conf = init\n[init]\nssl_conf = ssl\n[ssl]\nsystem_default = sys\n[sys]\n\
         CipherString = DEFAULT@SECLEVEL=0\n",
    )
    .expect("conf");
    let curl_to = |port: u16, host: &'static str, cert: Option<&Issued>, weak: bool| {
        let mut cmd = tokio::process::Command::new("curl");
        if weak {
            cmd.env("OPENSSL_CONF", &weak_conf);
        }
        cmd.args(["-sS", "--max-time", "20", "-w", "\n%{http_code}", "--cacert"])
            .arg(&s.server_ca.cert)
            .arg("--resolve")
            .arg(format!("{host}:{port}:127.0.0.1"));
        if let Some(c) = cert {
            cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
        }
        cmd.arg(format!("https://{host}:{port}/"));
        cmd
    };
    let curl = |host: &'static str, cert: Option<&Issued>, weak: bool| curl_to(addr.port(), host, cert, weak);
    let out = curl("a.test", Some(&s.alice), false).output().await.expect("curl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "curl failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("CN=alice") && stdout.ends_with("200"), "{stdout}");
    // Without a certificate the required host refuses the handshake.
    let out = curl("a.test", None, false).output().await.expect("curl");
    assert!(
        !out.status.success(),
        "curl without a certificate must fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // An SHA-1 signed chain (curl's OpenSSL is told to send it anyway): refused at TLS on a.test, answered
    // 403 with the reason on the "refuse at HTTP" host.
    let sha1 = s.pki.issue_named("sha1-leaf", "ec:P-256", Some(&s.client_ca), &["-sha1"], LEAF_EXT);
    // For a.test, a bare acceptor reports the server's typed reason.
    let (raw_addr, mut results) = spawn_server(MtlsAcceptor::new(s.hosts.clone()), 1).await;
    let out = curl_to(raw_addr.port(), "a.test", Some(&sha1), true).output().await.expect("curl");
    assert!(!out.status.success(), "SHA-1 chain must be refused: {}", String::from_utf8_lossy(&out.stdout));
    match results.recv().await.expect("server result") {
        Err(portcullis_mtls::AcceptError::ClientChain { refusal, .. }) => {
            assert_eq!(refusal.rule, portcullis_mtls::Rule::Signature("ecdsa-with-SHA1".into()));
        }
        other => panic!("expected a chain refusal, got {other:?}"),
    }
    let out = curl("debug.test", Some(&sha1), true).output().await.expect("curl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ecdsa-with-SHA1"), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.ends_with("403"), "{stdout}");
}
