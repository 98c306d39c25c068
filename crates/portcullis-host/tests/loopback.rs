//! Host routing over real loopback connections: a hyper-util server (HTTP/1.1 and HTTP/2 on one port) in
//! front of axum routers, driven by hyper's connection-level clients (which send exactly the request
//! target and headers they are given) and, for bytes no client library would send, a raw TCP socket.

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use portcullis_core::{AddConnInfo, ConnInfo, Decisions, Denial, Responder, TlsInfo};
use portcullis_host::{
    Endpoint, EndpointKind, HostFilterLayer, HostRefusal, HostRouter, Hosts, NoSniCheck, ServiceNames,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;

type BoxError = Box<dyn Error + Send + Sync>;

// === servers ===

/// Serves `svc` on 127.0.0.1 (HTTP/1.1 and HTTP/2 prior knowledge on one port), adding the connection's
/// `ConnInfo` (with `tls`, when given, standing in for a real handshake) to every request.
async fn serve<S, B>(svc: S, tls: Option<TlsInfo>) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_on(listener, svc, tls)
}

fn serve_on<S, B>(listener: TcpListener, svc: S, tls: Option<TlsInfo>) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((io, peer)) = listener.accept().await else { return };
            let mut info = ConnInfo::new(peer, io.local_addr().ok());
            if let Some(tls) = &tls {
                info = info.with_tls(tls.clone());
            }
            let svc = TowerToHyperService::new(AddConnInfo::new(svc.clone(), info));
            tokio::spawn(async move {
                let _ =
                    auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(io), svc).await;
            });
        }
    });
    addr
}

/// An endpoint application: answers `<endpoint> <matched endpoint>|<pattern>|<host> shadow=<n>`.
fn app(name: &'static str) -> Router {
    Router::new().fallback(move |req: axum::extract::Request| async move {
        let decisions = Decisions::get(req.extensions());
        let matched = decisions
            .and_then(|d| d.host.as_ref())
            .map(|m| format!("{}|{}|{}", m.endpoint, m.pattern, m.host))
            .unwrap_or_else(|| "-".into());
        let shadow = decisions.map_or(0, |d| d.shadow.len());
        format!("{name} {matched} shadow={shadow}")
    })
}

/// The four endpoints of `contoso` + `azure-api.net` (gateway with private link and a custom domain, portal
/// with a Unicode custom domain), plus a `tenants` wildcard endpoint and an address-served health endpoint,
/// each served by its own axum router.
fn contoso() -> HostRouter<Incoming, axum::body::Body, Infallible> {
    let names = ServiceNames::new("contoso", "azure-api.net")
        .private_link(true)
        .custom_domain(EndpointKind::Gateway, "api.contoso.com")
        .custom_domain(EndpointKind::Portal, "bücher.example");
    HostRouter::builder()
        .route(names.endpoint(EndpointKind::Gateway), app("gateway"))
        .route(names.endpoint(EndpointKind::Portal), app("portal"))
        .route(names.endpoint(EndpointKind::Management), app("management"))
        .route(names.endpoint(EndpointKind::Scm), app("scm"))
        .route(Endpoint::new("tenants").host("*.tenants.contoso.com"), app("tenants"))
        .route(Endpoint::new("admin").host("admin.tenants.contoso.com:3443"), app("admin"))
        .build()
        .unwrap()
}

// === clients ===

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn answer(res: Response<Incoming>) -> Answer {
    let status = res.status();
    let content_type = res.headers().get(CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer { status, content_type, body: String::from_utf8_lossy(&body).into_owned() }
}

/// One HTTP/1.1 request with exactly this target and these `Host` headers (hyper's connection-level client
/// adds none of its own).
async fn h1(addr: SocketAddr, target: &str, hosts: &[&str]) -> Answer {
    h1_with(addr, target, hosts, &[]).await
}

async fn h1_with(addr: SocketAddr, target: &str, hosts: &[&str], extra: &[(&str, &str)]) -> Answer {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io).await.unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder().uri(target);
    for host in hosts {
        req = req.header(HOST, *host);
    }
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    answer(send.send_request(req.body(Empty::new()).unwrap()).await.unwrap()).await
}

/// One HTTP/2 request: `uri`'s authority becomes `:authority`; `hosts` are sent as `host` headers too.
async fn h2(addr: SocketAddr, uri: &str, hosts: &[&str]) -> Answer {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) =
        hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder().version(Version::HTTP_2).uri(uri);
    for host in hosts {
        req = req.header(HOST, *host);
    }
    answer(send.send_request(req.body(Empty::new()).unwrap()).await.unwrap()).await
}

/// Raw bytes on a socket, for requests no client library would send (the request must end the connection:
/// HTTP/1.0 or `Connection: close`); returns the status code and the denial code of a problem+json body.
async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    // Bounded: the server closes the connection after its answer; we stop at 64 KiB in any case.
    let _ = (&mut s).take(65536).read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let code =
        text.split("urn:portcullis:denial:").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("");
    (status, code.to_owned())
}

// === the four endpoints on one port ===

#[tokio::test]
async fn four_endpoints_on_one_port_http1_and_http2() {
    let addr = serve(contoso(), None).await;
    let cases = [
        ("contoso.azure-api.net", "gateway"),
        ("contoso.privatelink.azure-api.net", "gateway"),
        ("api.contoso.com", "gateway"),
        ("contoso.developer.azure-api.net", "portal"),
        ("xn--bcher-kva.example", "portal"),
        ("contoso.management.azure-api.net", "management"),
        ("contoso.scm.azure-api.net", "scm"),
        ("eu.tenants.contoso.com", "tenants"),
    ];
    for (host, endpoint) in cases {
        let a = h1(addr, "/x", &[host]).await;
        assert_eq!(a.status, StatusCode::OK, "h1 {host}: {a:?}");
        assert!(a.body.starts_with(&format!("{endpoint} {endpoint}|")), "h1 {host}: {}", a.body);
        let a = h2(addr, &format!("http://{host}/x"), &[]).await;
        assert_eq!(a.status, StatusCode::OK, "h2 {host}: {a:?}");
        assert!(a.body.starts_with(&format!("{endpoint} {endpoint}|")), "h2 {host}: {}", a.body);
    }
    // The matched pattern and normalised host are recorded for handlers.
    let a = h1(addr, "/", &["EU.Tenants.Contoso.COM.:80"]).await;
    assert_eq!(a.body, "tenants tenants|*.tenants.contoso.com|eu.tenants.contoso.com shadow=0");
    let a = h2(addr, "http://API.contoso.com./", &[]).await;
    assert_eq!(a.body, "gateway gateway|api.contoso.com|api.contoso.com shadow=0");
}

#[tokio::test]
async fn case_trailing_dot_and_port_do_not_change_the_endpoint() {
    let addr = serve(contoso(), None).await;
    // The exact management name must never fall to another endpoint through a spelling variant.
    for host in [
        "CONTOSO.MANAGEMENT.AZURE-API.NET",
        "contoso.management.azure-api.net.",
        "Contoso.Management.Azure-Api.Net.:443",
        "contoso.management.azure-api.net:",
    ] {
        let a = h1(addr, "/", &[host]).await;
        assert!(a.body.starts_with("management management|"), "{host}: {a:?}");
    }
    // A route naming its port serves only connections that arrived on that port: writing the port in Host
    // does not select it (this connection arrived on another port), the wildcard answers.
    let a = h1(addr, "/", &["admin.tenants.contoso.com:3443"]).await;
    assert!(a.body.starts_with("tenants "), "{a:?}");
    let a = h1(addr, "/", &["admin.tenants.contoso.com:8443"]).await;
    assert!(a.body.starts_with("tenants "), "{a:?}");
    // Two trailing dots are an empty label, not a second spelling.
    assert_eq!(h1(addr, "/", &["contoso.management.azure-api.net.."]).await.status, StatusCode::BAD_REQUEST);
}

// === refusals: bare addresses, unknown names ===

#[tokio::test]
async fn bare_ip_requests_are_421_with_problem_json() {
    let addr = serve(contoso(), None).await;
    let ip_host = addr.to_string();
    for (a, refused) in [
        (h1(addr, "/", &[ip_host.as_str()]).await, "127.0.0.1"),
        (h1(addr, "/", &["127.0.0.1"]).await, "127.0.0.1"),
        (h1(addr, "/", &["[::1]:8080"]).await, "[::1]"),
        (h1(addr, "/", &["[::ffff:127.0.0.1]"]).await, "[::ffff:127.0.0.1]"),
        (h2(addr, &format!("http://{ip_host}/"), &[]).await, "127.0.0.1"),
        (h2(addr, "http://[::1]/", &[]).await, "[::1]"),
    ] {
        assert_eq!(a.status, StatusCode::MISDIRECTED_REQUEST, "{a:?}");
        assert_eq!(a.content_type.as_deref(), Some("application/problem+json"));
        let doc = a.json();
        assert_eq!(doc["type"], "urn:portcullis:denial:host.ip-literal");
        assert_eq!(doc["status"], 421);
        assert_eq!(doc["refused"], refused, "{doc}");
    }
    // Spellings of an address that are not a dotted quad are refused as malformed, not guessed at.
    for host in ["2130706433", "127.1", "0x7f.0.0.1", "127.000.000.001"] {
        assert_eq!(h1(addr, "/", &[host]).await.status, StatusCode::BAD_REQUEST, "{host}");
    }
}

#[tokio::test]
async fn an_address_is_served_only_where_a_route_names_it() {
    let router: HostRouter<Incoming, axum::body::Body, Infallible> = HostRouter::builder()
        .route(Endpoint::new("gateway").host("gw.example"), app("gateway"))
        .route(Endpoint::new("health").host("127.0.0.1"), app("health"))
        .build()
        .unwrap();
    let addr = serve(router, None).await;
    let a = h1(addr, "/", &[addr.to_string().as_str()]).await;
    assert!(a.body.starts_with("health health|127.0.0.1|127.0.0.1"), "{a:?}");
    // The same address in IPv4-mapped IPv6 form is another literal: not served.
    assert_eq!(h1(addr, "/", &["[::ffff:127.0.0.1]"]).await.status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(h1(addr, "/", &["127.0.0.2"]).await.status, StatusCode::MISDIRECTED_REQUEST);
}

#[tokio::test]
async fn unknown_names_are_421_naming_the_host() {
    let addr = serve(contoso(), None).await;
    for a in [
        h1(addr, "/", &["rebind.attacker.example"]).await,
        h2(addr, "http://Rebind.Attacker.Example./", &[]).await,
    ] {
        assert_eq!(a.status, StatusCode::MISDIRECTED_REQUEST, "{a:?}");
        let doc = a.json();
        assert_eq!(doc["type"], "urn:portcullis:denial:host.unknown");
        assert_eq!(doc["refused"], "rebind.attacker.example");
        assert_eq!(doc["layer"], "host");
    }
    // The Unicode custom domain is served under its A-label only; raw UTF-8 bytes in Host are malformed.
    assert_eq!(
        raw(addr, "GET / HTTP/1.1\r\nHost: bücher.example\r\nConnection: close\r\n\r\n".as_bytes()).await,
        (400, "host.malformed".into())
    );
}

#[tokio::test]
async fn wildcard_edge_cases() {
    let addr = serve(contoso(), None).await;
    let status = |host: &'static str| async move { h1(addr, "/", &[host]).await.status };
    assert_eq!(status("x.tenants.contoso.com").await, StatusCode::OK);
    assert_eq!(status("x-1_y.tenants.contoso.com").await, StatusCode::OK);
    // Not the apex, not two labels, not a look-alike suffix.
    assert_eq!(status("tenants.contoso.com").await, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(status("a.b.tenants.contoso.com").await, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(status("xtenants.contoso.com").await, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(status("x.tenants.contoso.com.evil.example").await, StatusCode::MISDIRECTED_REQUEST);
    // The pattern's text as a host is not a wildcard; neither is an empty first label.
    assert_eq!(status("*.tenants.contoso.com").await, StatusCode::BAD_REQUEST);
    assert_eq!(status(".tenants.contoso.com").await, StatusCode::BAD_REQUEST);
    // A 64-octet label under the wildcard is over the DNS limit.
    let long = format!("{}.tenants.contoso.com", "a".repeat(64));
    assert_eq!(h1(addr, "/", &[long.as_str()]).await.status, StatusCode::BAD_REQUEST);
    let max = format!("{}.tenants.contoso.com", "a".repeat(63));
    assert_eq!(h1(addr, "/", &[max.as_str()]).await.status, StatusCode::OK);
}

// === refusals: contradictory or malformed authorities ===

#[tokio::test]
async fn absolute_form_target_decides_and_must_agree_with_host() {
    let addr = serve(contoso(), None).await;
    // The target's authority is the request's host...
    let a = h1(addr, "http://contoso.scm.azure-api.net/repo", &["contoso.scm.azure-api.net"]).await;
    assert!(a.body.starts_with("scm scm|"), "{a:?}");
    // ...and a Host header naming another endpoint is a contradiction, in both directions.
    for (target, host) in [
        ("http://contoso.management.azure-api.net/", "contoso.azure-api.net"),
        ("http://contoso.azure-api.net/", "contoso.management.azure-api.net"),
        ("http://evil.example/", "contoso.azure-api.net"),
        ("http://contoso.azure-api.net:8080/", "contoso.azure-api.net"),
    ] {
        let a = h1(addr, target, &[host]).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{target} / {host}: {a:?}");
        assert_eq!(a.json()["type"], "urn:portcullis:denial:host.mismatch");
    }
    // Absolute-form without any Host header on HTTP/1.1 is malformed (RFC 9112 §3.2).
    assert_eq!(h1(addr, "http://contoso.azure-api.net/", &[]).await.status, StatusCode::BAD_REQUEST);
    // Userinfo in the target is refused even though the host part agrees.
    let a = raw(
        addr,
        b"GET http://u@contoso.azure-api.net/ HTTP/1.1\r\nHost: contoso.azure-api.net\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(a, (400, "host.malformed".into()));
}

#[tokio::test]
async fn http2_authority_must_agree_with_host() {
    let addr = serve(contoso(), None).await;
    let a = h2(addr, "http://contoso.azure-api.net/", &["Contoso.Azure-Api.Net."]).await;
    assert!(a.body.starts_with("gateway "), "{a:?}");
    let a = h2(addr, "http://contoso.azure-api.net/", &["contoso.management.azure-api.net"]).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{a:?}");
    assert_eq!(a.json()["type"], "urn:portcullis:denial:host.mismatch");
    let a = h2(addr, "http://evil.example/", &["contoso.azure-api.net"]).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{a:?}");
}

#[tokio::test]
async fn missing_repeated_and_malformed_hosts_are_400() {
    let addr = serve(contoso(), None).await;
    let a = h1(addr, "/", &[]).await;
    assert_eq!(
        (a.status, a.json()["type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("urn:portcullis:denial:host.missing"))
    );
    let a = h1(addr, "/", &["contoso.azure-api.net", "contoso.azure-api.net"]).await;
    assert_eq!(a.json()["type"], "urn:portcullis:denial:host.multiple");
    let a = h1(addr, "/", &["contoso.azure-api.net", "evil.example"]).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    for host in [
        "contoso.azure-api.net:99999",
        "contoso.azure-api.net:http",
        "%63ontoso.azure-api.net",
        "contoso..azure-api.net",
        "user@contoso.azure-api.net",
        "[fe80::1%25eth0]",
    ] {
        let a = h1(addr, "/", &[host]).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{host}: {a:?}");
        let doc = a.json();
        let reason = doc["detail"].as_str().unwrap();
        assert!(!reason.is_empty());
    }
    let over_long = format!("{}.azure-api.net", vec!["a".repeat(60); 5].join("."));
    assert_eq!(h1(addr, "/", &[over_long.as_str()]).await.status, StatusCode::BAD_REQUEST);
    // HTTP/1.0 naming no host names nothing served: 421, not the default endpoint.
    assert_eq!(raw(addr, b"GET / HTTP/1.0\r\n\r\n").await, (421, "host.none".into()));
    // HTTP/1.0 with a Host header is routed like HTTP/1.1.
    assert_eq!(
        raw(addr, b"GET / HTTP/1.0\r\nHost: contoso.azure-api.net\r\n\r\n").await,
        (200, String::new())
    );
}

#[tokio::test]
async fn forwarded_host_headers_are_never_read() {
    let addr = serve(contoso(), None).await;
    // An unknown Host stays refused whatever the forwarded headers claim...
    let a = h1_with(
        addr,
        "/",
        &["rebind.attacker.example"],
        &[("x-forwarded-host", "contoso.azure-api.net"), ("forwarded", "host=contoso.azure-api.net")],
    )
    .await;
    assert_eq!(a.status, StatusCode::MISDIRECTED_REQUEST);
    // ...and they cannot move a request to another endpoint.
    let a = h1_with(
        addr,
        "/",
        &["contoso.azure-api.net"],
        &[
            ("x-forwarded-host", "contoso.management.azure-api.net"),
            ("forwarded", "host=contoso.scm.azure-api.net"),
        ],
    )
    .await;
    assert!(a.body.starts_with("gateway "), "{a:?}");
}

// === SNI binding ===

fn tls(sni: &str, vhost: Option<&str>) -> TlsInfo {
    TlsInfo { sni: Some(Arc::from(sni)), vhost: vhost.map(Arc::from), ..TlsInfo::default() }
}

#[tokio::test]
async fn host_of_another_virtual_host_than_the_sni_is_421() {
    let addr = serve(contoso(), Some(tls("contoso.developer.azure-api.net", None))).await;
    for a in [
        h1(addr, "/", &["contoso.developer.azure-api.net"]).await,
        h2(addr, "https://Contoso.Developer.Azure-Api.Net./", &[]).await,
    ] {
        assert!(a.body.starts_with("portal "), "{a:?}");
    }
    for a in [
        h1(addr, "/", &["contoso.management.azure-api.net"]).await,
        h2(addr, "https://contoso.management.azure-api.net/", &[]).await,
    ] {
        assert_eq!(a.status, StatusCode::MISDIRECTED_REQUEST, "{a:?}");
        let doc = a.json();
        assert_eq!(doc["type"], "urn:portcullis:denial:host.sni-mismatch");
        assert_eq!(doc["refused"], "contoso.management.azure-api.net");
    }
    // The same requests pass when the binding is switched off: it is the SNI rule that refuses.
    let unbound: HostRouter<Incoming, axum::body::Body, Infallible> = HostRouter::builder()
        .route(Endpoint::new("portal").host("contoso.developer.azure-api.net"), app("portal"))
        .route(Endpoint::new("management").host("contoso.management.azure-api.net"), app("management"))
        .sni_check(NoSniCheck)
        .build()
        .unwrap();
    let addr = serve(unbound, Some(tls("contoso.developer.azure-api.net", None))).await;
    assert!(h1(addr, "/", &["contoso.management.azure-api.net"]).await.body.starts_with("management "));
}

#[tokio::test]
async fn virtual_host_tags_bind_custom_domains() {
    let router = || -> HostRouter<Incoming, axum::body::Body, Infallible> {
        HostRouter::builder()
            .route(
                Endpoint::new("gateway")
                    .host("contoso.azure-api.net")
                    .host_in_vhost("api.contoso.com", "custom")
                    .host_in_vhost("api2.contoso.com", "custom")
                    .vhost("default"),
                app("gateway"),
            )
            .route(Endpoint::new("portal").host("portal.contoso.com").vhost("default"), app("portal"))
            .build()
            .unwrap()
    };
    // The acceptor selected the "custom" virtual host: its names are served, the default ones are not.
    let addr = serve(router(), Some(tls("api.contoso.com", Some("custom")))).await;
    assert!(h1(addr, "/", &["api2.contoso.com"]).await.body.starts_with("gateway "));
    assert_eq!(h1(addr, "/", &["contoso.azure-api.net"]).await.status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(h1(addr, "/", &["portal.contoso.com"]).await.status, StatusCode::MISDIRECTED_REQUEST);
    // A closure replaces the check.
    let allow_all = HostRouter::builder()
        .route(Endpoint::new("gateway").host("contoso.azure-api.net").vhost("default"), app("gateway"))
        .sni_check(|_: &portcullis_host::SniContext<'_>| Ok(()))
        .build()
        .unwrap();
    let addr = serve(allow_all, Some(tls("api.contoso.com", Some("custom")))).await;
    assert_eq!(h1(addr, "/", &["contoso.azure-api.net"]).await.status, StatusCode::OK);
}

// === shadow mode, responders, filter mode ===

#[tokio::test]
async fn shadow_mode_records_and_lets_through() {
    // Router: a matched host with a failed SNI binding is served by its endpoint; an unknown host by the
    // shadow fallback; without a fallback it is still refused.
    let with_fallback: HostRouter<Incoming, axum::body::Body, Infallible> = HostRouter::builder()
        .route(Endpoint::new("portal").host("portal.example"), app("portal"))
        .route(Endpoint::new("management").host("mgmt.example"), app("management"))
        .shadow(true)
        .shadow_fallback(app("fallback"))
        .build()
        .unwrap();
    let addr = serve(with_fallback, Some(tls("portal.example", None))).await;
    let a = h1(addr, "/", &["mgmt.example"]).await;
    assert_eq!(a.body, "management management|mgmt.example|mgmt.example shadow=1");
    let a = h1(addr, "/", &["unknown.example"]).await;
    assert_eq!(a.body, "fallback - shadow=1");
    let a = h1(addr, "/", &["10.0.0.1"]).await;
    assert_eq!(a.body, "fallback - shadow=1");
    let a = h1(addr, "/", &["portal.example"]).await;
    assert_eq!(a.body, "portal portal|portal.example|portal.example shadow=0");

    let without_fallback: HostRouter<Incoming, axum::body::Body, Infallible> = HostRouter::builder()
        .route(Endpoint::new("portal").host("portal.example"), app("portal"))
        .shadow(true)
        .build()
        .unwrap();
    let addr = serve(without_fallback, None).await;
    assert_eq!(h1(addr, "/", &["unknown.example"]).await.status, StatusCode::MISDIRECTED_REQUEST);

    // Filter: everything reaches the one service, refusals are recorded.
    let hosts = Hosts::builder().endpoint(Endpoint::new("gateway").host("gw.example")).build().unwrap();
    let svc = ServiceBuilder::new().layer(HostFilterLayer::new(hosts).shadow(true)).service(app("filtered"));
    let addr = serve(svc, None).await;
    assert_eq!(h1(addr, "/", &["gw.example"]).await.body, "filtered gateway|gw.example|gw.example shadow=0");
    assert_eq!(h1(addr, "/", &["other.example"]).await.body, "filtered - shadow=1");
    assert_eq!(h1(addr, "/", &["gw..example"]).await.body, "filtered - shadow=1");
}

#[tokio::test]
async fn filter_mode_over_plain_hyper_with_a_custom_responder() {
    let hosts = Hosts::builder()
        .endpoint(Endpoint::new("gateway").hosts(["gw.example", "*.gw.example"]))
        .build()
        .unwrap();
    // The responder sees the typed reason.
    let responder = Responder::new(|d: &Denial| {
        let reason = match d.reason::<HostRefusal>() {
            Some(HostRefusal::Unknown { host }) => format!("unknown {host}"),
            Some(other) => format!("other {}", other.code()),
            None => "untyped".into(),
        };
        let mut res = Response::new(Full::new(Bytes::from(reason)));
        *res.status_mut() = StatusCode::NOT_FOUND;
        res
    });
    let svc = ServiceBuilder::new().layer(HostFilterLayer::new(hosts).responder(responder)).service_fn(
        |req: Request<Incoming>| async move {
            let host = Decisions::get(req.extensions()).and_then(|d| d.host.clone()).unwrap();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("ok {}", host.host)))))
        },
    );
    let addr = serve(svc, None).await;
    assert_eq!(h1(addr, "/", &["A.GW.example"]).await.body, "ok a.gw.example");
    assert_eq!(h2(addr, "http://gw.example/", &[]).await.body, "ok gw.example");
    let a = h1(addr, "/", &["evil.example"]).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::NOT_FOUND, "unknown evil.example"));
    let a = h1(addr, "/", &["127.0.0.1"]).await;
    assert_eq!(a.body, "other host.ip-literal");
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_serve_with_connect_info() {
    let router: HostRouter<axum::body::Body, axum::body::Body, Infallible> = HostRouter::builder()
        .route(Endpoint::new("gateway").host("gw.example"), app("gateway"))
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let make = router.into_axum_router().into_make_service_with_connect_info::<ConnInfo>();
    tokio::spawn(async move { axum::serve(listener, make).await });
    assert!(h1(addr, "/", &["gw.example"]).await.body.starts_with("gateway "));
    assert!(h2(addr, "http://gw.example/", &[]).await.body.starts_with("gateway "));
    assert_eq!(h1(addr, "/", &[addr.to_string().as_str()]).await.status, StatusCode::MISDIRECTED_REQUEST);
}

#[tokio::test]
async fn a_port_bound_route_is_chosen_by_the_port_the_connection_arrived_on() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router: HostRouter<Incoming, axum::body::Body, Infallible> = HostRouter::builder()
        .route(Endpoint::new("tenants").host("*.tenants.contoso.com"), app("tenants"))
        .route(Endpoint::new("admin").host(format!("admin.tenants.contoso.com:{port}")), app("admin"))
        .build()
        .unwrap();
    let addr = serve_on(listener, router, None);
    // Arrived on the route's port: served by it, whatever port (or none) the client wrote in Host.
    for host in [format!("admin.tenants.contoso.com:{port}"), "admin.tenants.contoso.com".to_owned()] {
        let a = h1(addr, "/", &[host.as_str()]).await;
        assert!(a.body.starts_with("admin admin|"), "{host}: {a:?}");
    }
    let a = h1(addr, "/", &["admin.tenants.contoso.com:1"]).await;
    assert!(a.body.starts_with("admin admin|"), "the Host port does not move the request elsewhere: {a:?}");
}

#[tokio::test]
async fn a_route_bound_to_a_virtual_host_is_not_served_over_plain_http() {
    let router: HostRouter<Incoming, axum::body::Body, Infallible> = HostRouter::builder()
        .route(Endpoint::new("management").host("mgmt.contoso.com").vhost("mgmt"), app("management"))
        .route(Endpoint::new("gateway").host("api.contoso.com"), app("gateway"))
        .build()
        .unwrap();
    let addr = serve(router, None).await;
    // The management route belongs to the mTLS virtual host `mgmt`: over plain HTTP its certificate,
    // client authentication and chain policy would be skipped, so it is refused.
    let a = h1(addr, "/", &["mgmt.contoso.com"]).await;
    assert_eq!(a.status, StatusCode::MISDIRECTED_REQUEST, "{a:?}");
    assert!(a.body.contains("host.not-tls"), "{a:?}");
    // An untagged route is served over plain HTTP as before.
    let a = h1(addr, "/", &["api.contoso.com"]).await;
    assert!(a.body.starts_with("gateway gateway|"), "{a:?}");
}
