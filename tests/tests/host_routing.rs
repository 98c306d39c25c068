//! Host routing through the whole stack: the four endpoints by name on one port, and every way around it
//! (bare IP, unknown name, trailing dot and case games, absolute-form and HTTP/2 `:authority` that disagree
//! with `Host`, forwarded host headers). SNI ↔ Host is in `mtls.rs`.

use http::StatusCode;
use portcullis_tests::client::{VNET, get, get_from, h1, h2, read_until_closed, tcp_from};
use portcullis_tests::configs::STACK;
use portcullis_tests::server::TestGateway;
use portcullis_tests::{curl, skip_without};
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_endpoints_are_served_by_their_names_on_one_port() {
    let gw = TestGateway::start(STACK).await;
    let addr = gw.addr("http");
    for (host, endpoint) in [
        ("contoso.azure-api.net", "gateway"),
        ("contoso.privatelink.azure-api.net", "gateway"),
        ("contoso.developer.azure-api.net", "portal"),
        ("contoso.management.azure-api.net", "management"),
        ("contoso.scm.azure-api.net", "scm"),
    ] {
        let r = get_from(VNET, addr, host, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{host}: {}", r.text());
        assert_eq!(r.field("served_by"), endpoint, "{host} must reach the {endpoint} router");
        assert_eq!(r.field("endpoint"), endpoint);
        assert_eq!(r.field("host"), host);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_ip_is_misdirected() {
    let gw = TestGateway::start(STACK).await;
    let addr = gw.addr("http");
    for host in [addr.to_string(), "127.0.0.1".into(), "[::1]:80".into(), "[::ffff:127.0.0.1]".into()] {
        let r = get_from(VNET, addr, &host, &[]).await;
        assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{host}: {}", r.text());
        assert_eq!(r.denial(), "host.ip-literal", "{host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_are_misdirected_and_named() {
    let gw = TestGateway::start(STACK).await;
    let addr = gw.addr("http");
    for host in [
        "attacker.example",
        "contoso.azure-api.net.attacker.example",
        "evil.contoso.azure-api.net",
        "azure-api.net",
        "contoso-azure-api.net",
    ] {
        let r = get_from(VNET, addr, host, &[]).await;
        assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{host}: {}", r.text());
        assert_eq!(r.denial(), "host.unknown", "{host}");
        assert_eq!(r.field("refused"), host);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_dot_case_and_port_are_normalised_not_bypasses() {
    let gw = TestGateway::start(STACK).await;
    let addr = gw.addr("http");
    for (host, endpoint) in [
        ("contoso.azure-api.net.", "gateway"),
        ("CONTOSO.Azure-API.NET", "gateway"),
        ("Contoso.Management.Azure-Api.Net.:8080", "management"),
        ("contoso.scm.azure-api.net:443", "scm"),
    ] {
        let r = get_from(VNET, addr, host, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{host}: {}", r.text());
        assert_eq!(r.field("served_by"), endpoint, "{host}");
    }
    // Two trailing dots is an empty label: malformed, not a third spelling of the name.
    for host in [
        "contoso.azure-api.net..",
        "contoso..azure-api.net",
        "contoso.azure-api.net/x",
        "con toso.azure-api.net",
    ] {
        let r = get_from(VNET, addr, host, &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{host}: {}", r.text());
        assert_eq!(r.denial(), "host.malformed", "{host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_target_must_agree_with_host() {
    let gw = TestGateway::start(STACK).await;
    let addr = gw.addr("http");
    // Disagreeing: the target names the management endpoint, Host the gateway.
    let io = tcp_from(VNET, addr).await;
    let r = h1(io, get("http://contoso.management.azure-api.net/echo", Some("contoso.azure-api.net"), &[]))
        .await
        .expect("response");
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.denial(), "host.mismatch");
    // Agreeing (case and trailing dot aside): served by the endpoint both name. (A port on one side only is a
    // disagreement: the comparison fails closed.)
    let io = tcp_from(VNET, addr).await;
    let r = h1(
        io,
        get("http://contoso.management.azure-api.net/echo", Some("Contoso.Management.Azure-Api.Net."), &[]),
    )
    .await
    .expect("response");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.field("served_by"), "management");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_repeated_host_is_a_bad_request() {
    let gw = TestGateway::start(STACK).await;
    let addr = gw.addr("http");
    let io = tcp_from(VNET, addr).await;
    let r = h1(io, get("/echo", None, &[])).await.expect("response");
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.denial(), "host.missing");
    let io = tcp_from(VNET, addr).await;
    let r =
        h1(io, get("/echo", Some("contoso.azure-api.net"), &[("host", "contoso.management.azure-api.net")]))
            .await
            .expect("response");
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.denial(), "host.multiple");
    // HTTP/1.0 without Host names no host at all: nothing is served for it.
    let mut io = tcp_from(VNET, addr).await;
    io.write_all(b"GET /echo HTTP/1.0\r\n\r\n").await.expect("write");
    let got = String::from_utf8_lossy(&read_until_closed(&mut io).await).into_owned();
    assert!(got.starts_with("HTTP/1.0 421") || got.starts_with("HTTP/1.1 421"), "{got}");
    assert!(got.contains("host.none"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_host_headers_never_route() {
    let gw = TestGateway::start(STACK).await;
    let addr = gw.addr("http");
    let spoof = [
        ("x-forwarded-host", "contoso.management.azure-api.net"),
        ("forwarded", "host=contoso.management.azure-api.net"),
        ("x-original-host", "contoso.management.azure-api.net"),
    ];
    let r = get_from(VNET, addr, "attacker.example", &spoof).await;
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{}", r.text());
    let r = get_from(VNET, addr, "contoso.developer.azure-api.net", &spoof).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.field("served_by"),
        "portal",
        "X-Forwarded-Host must not move a request to another endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_routes_and_must_agree_with_host() {
    let gw = TestGateway::start(STACK).await;
    let addr = gw.addr("http");
    // :authority alone (prior-knowledge h2c, no Host header).
    let io = tcp_from(VNET, addr).await;
    let r = h2(io, get("http://contoso.scm.azure-api.net/echo", None, &[])).await.expect("response");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.field("version"), "HTTP/2.0");
    assert_eq!(r.field("served_by"), "scm");
    // :authority and Host disagreeing.
    let io = tcp_from(VNET, addr).await;
    let r = h2(io, get("http://contoso.azure-api.net/echo", Some("contoso.management.azure-api.net"), &[]))
        .await
        .expect("response");
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.denial(), "host.mismatch");
    // A bare IP and an unknown name as :authority.
    for (authority, code) in [("127.0.0.1", "host.ip-literal"), ("attacker.example", "host.unknown")] {
        let io = tcp_from(VNET, addr).await;
        let r = h2(io, get(&format!("http://{authority}/echo"), None, &[])).await.expect("response");
        assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{authority}: {}", r.text());
        assert_eq!(r.denial(), code);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sees_the_same_routing() {
    if skip_without("curl", "curl_sees_the_same_routing") {
        return;
    }
    let gw = TestGateway::start(STACK).await;
    let port = gw.port("http");
    let resolve = |h: &str| format!("{h}:{port}:127.0.0.1");
    // By name (curl resolves the name to loopback itself).
    let r = curl(
        &[
            "--resolve",
            &resolve("contoso.developer.azure-api.net"),
            &format!("http://contoso.developer.azure-api.net:{port}/echo"),
        ],
        None,
    )
    .await;
    assert_eq!(r.code, 200, "{r:?}");
    assert_eq!(r.json()["served_by"], "portal");
    // A scanner on the bare IP.
    let r = curl(&[&format!("http://127.0.0.1:{port}/")], None).await;
    assert_eq!(r.code, 421, "{r:?}");
    assert_eq!(r.json()["type"], "urn:portcullis:denial:host.ip-literal");
    // DNS rebinding: an attacker's name pointing at us.
    let r = curl(&["-H", "Host: rebind.attacker.example", &format!("http://127.0.0.1:{port}/")], None).await;
    assert_eq!(r.code, 421, "{r:?}");
    // Absolute-form through "a proxy" (curl -x sends the absolute URI) with a Host of another endpoint.
    let r = curl(
        &[
            "-x",
            &format!("http://127.0.0.1:{port}"),
            "-H",
            "Host: contoso.azure-api.net",
            "http://contoso.management.azure-api.net/echo",
        ],
        None,
    )
    .await;
    assert_eq!(r.code, 400, "{r:?}");
    assert_eq!(r.json()["type"], "urn:portcullis:denial:host.mismatch");
    // HTTP/2 with prior knowledge, upper case and a trailing dot.
    let r = curl(
        &[
            "--http2-prior-knowledge",
            "-H",
            "Host: CONTOSO.SCM.AZURE-API.NET.",
            &format!("http://127.0.0.1:{port}/echo"),
        ],
        None,
    )
    .await;
    // curl sends the Host header as :authority over HTTP/2.
    assert_eq!(r.code, 200, "{r:?}");
    assert_eq!(r.json()["served_by"], "scm");
    assert_eq!(r.json()["version"], "HTTP/2.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_overrides_replace_the_refusal_body() {
    let config = format!(
        "{STACK}\n[responses.\"host.unknown\"]\nbody = \"no such site: {{refused}} ({{code}})\\n\"\n"
    );
    let gw = TestGateway::start(&config).await;
    let r = get_from(VNET, gw.addr("http"), "attacker.example", &[]).await;
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(r.text(), "no such site: attacker.example (host.unknown)\n");
    assert_eq!(
        r.headers.get("content-type").map(|v| v.to_str().unwrap_or("")),
        Some("text/plain; charset=utf-8")
    );
    // Other refusals keep problem+json.
    let r = get_from(VNET, gw.addr("http"), "127.0.0.1", &[]).await;
    assert_eq!(r.denial(), "host.ip-literal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_ends_the_serve_task() {
    let gw = TestGateway::start(STACK).await;
    let addr = gw.addr("http");
    let r = get_from(VNET, addr, "contoso.azure-api.net", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    gw.stop().await;
    // The listener is closed: a new connection is refused by the kernel.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    assert!(socket.connect(addr).await.is_err(), "no longer listening after shutdown");
}
