//! Smoke tests of the five examples: each is started on 127.0.0.1, port 0, exactly as its binary runs it,
//! and called by real clients over loopback (hyper's HTTP/1.1 and HTTP/2 clients, rustls, tonic's
//! `HealthClient`). Each checks requests served and requests refused, and tries to get around the rules.
//!
//! Loopback addresses play the network: on Linux every 127.0.0.0/8 address is local, so a client can
//! bind 127.0.0.2 or 127.0.0.3 to call from "elsewhere".

mod support;

use std::net::SocketAddr;

use portcullis_examples::{hyper_only, internal_vnet, mtls_vhosts, private_endpoint, tonic_health};
use support::{Server, get, get_after, get_tls, get_with, http2_over, tls_client};

// === internal_vnet ===

const GW: &str = "contoso.azure-api.net";
const PORTAL: &str = "contoso.developer.azure-api.net";
const MGMT: &str = "contoso.management.azure-api.net";
const SCM: &str = "contoso.scm.azure-api.net";

async fn internal_vnet_server() -> Server {
    Server::start(|listener, shutdown| async move {
        internal_vnet::run(listener, &internal_vnet::Options::loopback(), shutdown).await
    })
    .await
}

#[tokio::test]
async fn internal_vnet_serves_each_endpoint_by_host_name() {
    let server = internal_vnet_server().await;
    for (host, endpoint) in [(GW, "gateway"), (PORTAL, "portal"), (SCM, "scm"), (MGMT, "management")] {
        // 127.0.0.1 is in the virtual network and the admin subnet.
        let r = get(server.addr, "127.0.0.1", host, "/").await;
        assert_eq!(r.status, 200, "{host}: {}", r.body);
        let v = r.json();
        assert_eq!(v["served_by"], endpoint, "{host}");
        assert_eq!(v["endpoint"], endpoint, "{host}");
        assert_eq!(v["client"], "127.0.0.1");
    }
    // Each endpoint has its own router: management's route is not the gateway's.
    let r = get(server.addr, "127.0.0.1", MGMT, "/subscriptions").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get(server.addr, "127.0.0.1", GW, "/subscriptions").await.status, 404);
    server.stop().await;
}

#[tokio::test]
async fn internal_vnet_management_only_from_the_admin_subnet() {
    let server = internal_vnet_server().await;
    // 127.0.0.2: in the virtual network, not an admin.
    let r = get(server.addr, "127.0.0.2", GW, "/echo").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = get(server.addr, "127.0.0.2", MGMT, "/subscriptions").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.denial_code(), "ip.no-rule-matched");
    assert_eq!(r.json()["refused"], "127.0.0.2");
    assert!(!r.body.contains("starter"), "{}", r.body);

    // Getting around it: the management host in another spelling, a forwarded header naming an admin
    // (this gateway trusts no proxy), an absolute-form target naming the gateway while Host names management.
    for host in ["CONTOSO.Management.Azure-Api.Net", "contoso.management.azure-api.net."] {
        assert_eq!(get(server.addr, "127.0.0.2", host, "/subscriptions").await.status, 403, "{host}");
    }
    for (name, value) in [("x-forwarded-for", "127.0.0.1"), ("forwarded", "for=127.0.0.1")] {
        let r = get_with(server.addr, "127.0.0.2", MGMT, "/subscriptions", &[(name, value)]).await;
        assert_eq!(r.status, 403, "{name}: {}", r.body);
    }
    let r = get(server.addr, "127.0.0.2", MGMT, &format!("http://{GW}/subscriptions")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.denial_code(), "host.mismatch");
    server.stop().await;
}

#[tokio::test]
async fn internal_vnet_refuses_outsiders_bare_ips_and_unknown_hosts() {
    let server = internal_vnet_server().await;
    // 127.0.0.3 is outside the virtual network: no endpoint answers it.
    for host in [GW, PORTAL, SCM, MGMT] {
        let r = get(server.addr, "127.0.0.3", host, "/").await;
        assert_eq!(r.status, 403, "{host}: {}", r.body);
        assert_eq!(r.denial_code(), "ip.no-rule-matched");
    }
    // A bare IP (a scanner) and an unknown name (DNS rebinding) get 421, from anyone.
    let bare = server.addr.to_string();
    let r = get(server.addr, "127.0.0.1", &bare, "/echo").await;
    assert_eq!(r.status, 421, "{}", r.body);
    assert_eq!(r.denial_code(), "host.ip-literal");
    let r = get(server.addr, "127.0.0.1", "rebind.attacker.example", "/echo").await;
    assert_eq!(r.status, 421, "{}", r.body);
    assert_eq!(r.denial_code(), "host.unknown");
    // A name one label off a configured one is unknown too.
    assert_eq!(get(server.addr, "127.0.0.1", "x.contoso.azure-api.net", "/").await.status, 421);
    server.stop().await;
}

// === private_endpoint ===

const PL_HOST: &str = private_endpoint::HOST;

async fn private_endpoint_server() -> Server {
    Server::start(private_endpoint::run).await
}

fn header(source: &str, link: Option<u32>, to: SocketAddr) -> Vec<u8> {
    private_endpoint::proxy_v2_header(source.parse().expect("a socket address"), to, link)
}

#[tokio::test]
async fn private_endpoint_config_builds() {
    let built = private_endpoint::build().expect("the embedded configuration builds");
    assert_eq!(built.listeners.len(), 1);
    assert!(built.listeners[0].1.proxy.is_some(), "the listener reads PROXY headers");
    // The file in the repository is the embedded one, and it loads from disk too.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/private_endpoint.toml");
    let (config, source) = portcullis::config::GatewayConfig::load(path).expect("loads");
    config.build(&source).expect("builds from the file");
}

#[tokio::test]
async fn private_endpoint_approved_link_is_served_with_its_connection() {
    let server = private_endpoint_server().await;
    let r = get_after(
        server.addr,
        &header("10.20.0.5:50123", Some(private_endpoint::APPROVED_LINK_ID), server.addr),
        PL_HOST,
        "/whoami",
    )
    .await
    .expect("an answer");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let pe = &v["private_endpoint_connection"];
    assert_eq!(pe["name"], "pe-contoso-westeurope", "{v}");
    assert_eq!(pe["group_id"], "Gateway");
    assert_eq!(pe["link_id"], format!("azure:{}", private_endpoint::APPROVED_LINK_ID));
    // The client is the PROXY source, not the load balancer.
    assert_eq!(v["client"], "10.20.0.5");
    // The gateway's public name is served over the link too.
    let r = get_after(
        server.addr,
        &header("10.20.0.5:50124", Some(private_endpoint::APPROVED_LINK_ID), server.addr),
        "contoso.azure-api.net",
        "/",
    )
    .await
    .expect("an answer");
    assert_eq!(r.status, 200, "{}", r.body);
    server.stop().await;
}

#[tokio::test]
async fn private_endpoint_pending_unknown_and_untargeted_links_are_refused() {
    let server = private_endpoint_server().await;
    let pending = header("10.20.0.6:50123", Some(private_endpoint::PENDING_LINK_ID), server.addr);
    let r = get_after(server.addr, &pending, PL_HOST, "/whoami").await.expect("an answer");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.denial_code(), "origin.connection-pending");
    assert!(r.body.contains("pe-fabrikam-pending"), "the refusal names the connection: {}", r.body);

    let unknown = header("10.20.0.7:50123", Some(12345), server.addr);
    let r = get_after(server.addr, &unknown, PL_HOST, "/whoami").await.expect("an answer");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.denial_code(), "origin.unknown-link");

    // The approved connection targets the gateway only: the portal is refused over it.
    let approved = header("10.20.0.5:50123", Some(private_endpoint::APPROVED_LINK_ID), server.addr);
    let r =
        get_after(server.addr, &approved, "contoso.developer.azure-api.net", "/").await.expect("an answer");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.denial_code(), "origin.endpoint-not-targeted");
    server.stop().await;
}

#[tokio::test]
async fn private_endpoint_public_caller_gets_azures_403() {
    let server = private_endpoint_server().await;
    let public = header("203.0.113.7:40000", None, server.addr);
    let r = get_after(server.addr, &public, PL_HOST, "/whoami").await.expect("an answer");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.body,
        "Request originated from client public IP address 203.0.113.7, public network access on this \
         'Microsoft.ApiManagement/service/contoso' is disabled. To connect to \
         'Microsoft.ApiManagement/service/contoso', please use the Private Endpoint from inside your virtual \
         network."
    );
    assert_eq!(r.headers["content-type"], "text/plain; charset=utf-8");
    // A private source address does not make a caller private: only a connection's LinkID does.
    let r = get_after(server.addr, &header("10.20.0.5:40000", None, server.addr), PL_HOST, "/")
        .await
        .expect("an answer");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.starts_with("Request originated from client public IP address 10.20.0.5,"), "{}", r.body);
    server.stop().await;
}

#[tokio::test]
async fn private_endpoint_closes_connections_without_a_proxy_header() {
    let server = private_endpoint_server().await;
    // The load balancer must send a header: plain HTTP from it is closed unanswered.
    let mut tcp = support::connect_from(server.addr, None).await;
    tokio::io::AsyncWriteExt::write_all(
        &mut tcp,
        format!("GET /whoami HTTP/1.1\r\nHost: {PL_HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    support::assert_closed_unanswered(tcp).await;
    // And a peer that is not the load balancer may not send one (127.0.0.2 is not trusted).
    let mut tcp = support::connect_from(server.addr, Some("127.0.0.2".parse().unwrap())).await;
    let approved = header("10.20.0.5:50123", Some(private_endpoint::APPROVED_LINK_ID), server.addr);
    tokio::io::AsyncWriteExt::write_all(&mut tcp, &approved).await.expect("write");
    support::assert_closed_unanswered(tcp).await;
    server.stop().await;
}

// === mtls_vhosts ===

use mtls_vhosts::{API_HOST, PARTNERS_HOST, Pki};

async fn mtls_server(pki: &std::sync::Arc<Pki>) -> Server {
    let pki = pki.clone();
    Server::start(move |listener, shutdown| async move { mtls_vhosts::run(listener, &pki, shutdown).await })
        .await
}

#[tokio::test]
async fn mtls_vhosts_serves_both_hosts_and_shows_the_identity() {
    let pki = std::sync::Arc::new(Pki::generate().expect("certificates"));
    let server = mtls_server(&pki).await;
    let ca = pki.server_ca.cert_pem();

    let r = get_tls(server.addr, &tls_client(ca, None), API_HOST, API_HOST).await.expect("api");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["virtual_host"], "api");
    assert_eq!(v["sni"], API_HOST);
    assert!(v["client_certificate"].is_null(), "{v}");

    let partner = tls_client(ca, Some(&pki.client));
    let r = get_tls(server.addr, &partner, PARTNERS_HOST, PARTNERS_HOST).await.expect("partners");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["virtual_host"], "partners");
    assert_eq!(v["endpoint"], "partners");
    assert_eq!(v["client_certificate"]["subject"], "CN=partner-app, O=Fabrikam", "{v}");
    assert_eq!(v["client_certificate"]["issuer"], "CN=contoso example partners CA");
    server.stop().await;
}

#[tokio::test]
async fn mtls_vhosts_refuses_the_partners_host_without_a_partner_certificate() {
    let pki = std::sync::Arc::new(Pki::generate().expect("certificates"));
    let server = mtls_server(&pki).await;
    let ca = pki.server_ca.cert_pem();

    // No certificate: the handshake (or, in TLS 1.3, the first exchange after it) fails.
    let r = get_tls(server.addr, &tls_client(ca, None), PARTNERS_HOST, PARTNERS_HOST).await;
    assert!(r.is_err(), "served without a client certificate: {r:?}");
    // A certificate from another CA (the server CA): refused the same way.
    let stranger = pki.server_ca.client("stranger", "Elsewhere").expect("certificate");
    let r = get_tls(server.addr, &tls_client(ca, Some(&stranger)), PARTNERS_HOST, PARTNERS_HOST).await;
    assert!(r.is_err(), "served with a certificate from another CA: {r:?}");

    // The partners' Host over a connection made for the open host (no client certificate asked): 421.
    let r = get_tls(server.addr, &tls_client(ca, None), API_HOST, PARTNERS_HOST).await.expect("an answer");
    assert_eq!(r.status, 421, "{}", r.body);
    assert_eq!(r.denial_code(), "host.sni-mismatch");
    // Even with a partner certificate presented on the open host's connection: the open host never asked
    // for it, so the request is still misdirected.
    let partner = tls_client(ca, Some(&pki.client));
    let r = get_tls(server.addr, &partner, API_HOST, PARTNERS_HOST).await.expect("an answer");
    assert_eq!(r.status, 421, "{}", r.body);
    server.stop().await;
}

// === hyper_only ===

async fn hyper_server() -> Server {
    Server::start(|listener, shutdown| async move {
        hyper_only::run(listener, &["127.0.0.1".parse()?], shutdown).await
    })
    .await
}

#[tokio::test]
async fn hyper_only_serves_http1_and_http2_and_refuses_the_rest() {
    let server = hyper_server().await;
    let r = get(server.addr, "127.0.0.1", hyper_only::HOST, "/hello").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "hello from hyper: endpoint=api client=127.0.0.1 path=/hello\n");

    let tcp = support::connect_from(server.addr, Some("127.0.0.1".parse().unwrap())).await;
    let r = http2_over(tcp, &format!("http://{}:{}/h2", hyper_only::HOST, server.addr.port()))
        .await
        .expect("HTTP/2");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("path=/h2"), "{}", r.body);

    let r = get(server.addr, "127.0.0.2", hyper_only::HOST, "/hello").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.denial_code(), "ip.no-rule-matched");
    let r =
        get_with(server.addr, "127.0.0.2", hyper_only::HOST, "/hello", &[("x-forwarded-for", "127.0.0.1")])
            .await;
    assert_eq!(r.status, 403, "a forwarded header from an untrusted peer changes nothing: {}", r.body);

    let r = get(server.addr, "127.0.0.1", &server.addr.to_string(), "/hello").await;
    assert_eq!(r.status, 421, "{}", r.body);
    // HTTP/2 with the bare IP as :authority.
    let tcp = support::connect_from(server.addr, Some("127.0.0.1".parse().unwrap())).await;
    let r = http2_over(tcp, &format!("http://{}/h2", server.addr)).await.expect("HTTP/2");
    assert_eq!(r.status, 421, "{}", r.body);
    server.stop().await;
}

// === tonic_health ===

async fn tonic_server() -> Server {
    Server::start(|listener, shutdown| async move {
        tonic_health::run(listener, &["127.0.0.1".parse()?], shutdown).await
    })
    .await
}

#[tokio::test]
async fn tonic_health_is_served_for_the_allowed_host_and_address() {
    use ::tonic_health::pb::health_check_response::ServingStatus;
    let server = tonic_server().await;
    let from = Some("127.0.0.1".parse().unwrap());
    let status = tonic_health::check(server.addr, tonic_health::HOST, from, "").await.expect("served");
    assert_eq!(status, ServingStatus::Serving);
    let status = tonic_health::check(server.addr, tonic_health::HOST, from, tonic_health::SERVICE_NAME)
        .await
        .expect("served");
    assert_eq!(status, ServingStatus::Serving);
    // The service itself still answers gRPC errors of its own: an unknown service is NotFound.
    let err =
        tonic_health::check(server.addr, tonic_health::HOST, from, "no.such.Service").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(err.metadata().get("portcullis-denial").is_none(), "not a gateway refusal: {err:?}");
    server.stop().await;
}

#[tokio::test]
async fn tonic_health_refusals_are_grpc_statuses() {
    let server = tonic_server().await;
    let denial = |s: &tonic::Status| {
        s.metadata().get("portcullis-denial").and_then(|v| v.to_str().ok()).map(str::to_owned)
    };

    // Another address: 403, PermissionDenied.
    let err = tonic_health::check(server.addr, tonic_health::HOST, Some("127.0.0.2".parse().unwrap()), "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert_eq!(denial(&err).as_deref(), Some("ip.no-rule-matched"));
    assert!(err.message().starts_with("403 Forbidden"), "{}", err.message());
    assert!(err.message().contains("127.0.0.2"), "{}", err.message());

    // The bare IP as :authority, and an unknown name: 421, Unknown.
    let from = Some("127.0.0.1".parse().unwrap());
    let err = tonic_health::check(server.addr, "127.0.0.1", from, "").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert_eq!(denial(&err).as_deref(), Some("host.ip-literal"));
    assert!(err.message().starts_with("421 Misdirected Request"), "{}", err.message());
    let err = tonic_health::check(server.addr, "grpc.attacker.example", from, "").await.unwrap_err();
    assert_eq!(denial(&err).as_deref(), Some("host.unknown"), "{err:?}");
    server.stop().await;
}

#[test]
fn grpc_codes_are_the_documented_ones() {
    use http::StatusCode;
    use portcullis::GrpcStatus;
    let code = |s| tonic::Code::from_i32(i32::from(GrpcStatus::code(s)));
    assert_eq!(code(StatusCode::FORBIDDEN), tonic::Code::PermissionDenied);
    assert_eq!(code(StatusCode::MISDIRECTED_REQUEST), tonic::Code::FailedPrecondition);
    assert_eq!(code(StatusCode::BAD_REQUEST), tonic::Code::InvalidArgument);
    assert_eq!(code(StatusCode::INTERNAL_SERVER_ERROR), tonic::Code::Internal);
}
