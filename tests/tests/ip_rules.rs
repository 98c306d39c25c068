//! IP rules through the whole stack: a per-endpoint rule (management only from the admins), a deny exception
//! inside an allowed block, and the connection filter that drops a refused peer before reading a byte.

use http::StatusCode;
use portcullis_tests::client::{BLOCKED, VNET, get, get_from, h1, read_until_closed, tcp_from};
use portcullis_tests::configs::STACK;
use portcullis_tests::server::TestGateway;
use portcullis_tests::{curl, skip_without};
use tokio::io::AsyncWriteExt;

const MGMT: &str = "contoso.management.azure-api.net";
const GW: &str = "contoso.azure-api.net";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_only_from_the_admin_set() {
    let gw = TestGateway::start(STACK).await;
    let addr = gw.addr("http");
    // 127.0.0.1 is in @admins.
    let r = get_from(VNET, addr, MGMT, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.field("served_by"), "management");
    // 10.0.9.0/24 is in @admins too (through the trusted proxy 127.0.0.1).
    let r = get_from(VNET, addr, MGMT, &[("x-forwarded-for", "10.0.9.9")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // A private caller outside @admins: the gateway endpoint yes, the management endpoint no.
    let r = get_from(VNET, addr, GW, &[("x-forwarded-for", "10.0.1.1")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = get_from(VNET, addr, MGMT, &[("x-forwarded-for", "10.0.1.1")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.denial(), "ip.no-rule-matched");
    assert_eq!(r.field("refused"), "10.0.1.1");
    // Reaching the management router by another spelling of its name changes nothing.
    let r =
        get_from(VNET, addr, "CONTOSO.MANAGEMENT.AZURE-API.NET.", &[("x-forwarded-for", "10.0.1.1")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    // Nor does HTTP/2 with the name as :authority.
    let io = tcp_from(VNET, addr).await;
    let r = portcullis_tests::client::h2(
        io,
        get(&format!("http://{MGMT}/echo"), None, &[("x-forwarded-for", "10.0.1.1")]),
    )
    .await
    .expect("response");
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.denial(), "ip.no-rule-matched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_exception_inside_an_allowed_block() {
    let gw = TestGateway::start(STACK).await;
    let addr = gw.addr("http");
    // default allow; deny 10.0.66.0/24; allow 10.0.66.5 (the most specific rule wins).
    for (client, status) in [
        ("10.0.66.7", StatusCode::FORBIDDEN),
        ("10.0.66.255", StatusCode::FORBIDDEN),
        ("::ffff:10.0.66.7", StatusCode::FORBIDDEN),
        ("10.0.66.5", StatusCode::OK),
        ("10.0.67.1", StatusCode::OK),
    ] {
        let r = get_from(VNET, addr, GW, &[("x-forwarded-for", client)]).await;
        assert_eq!(r.status, status, "{client}: {}", r.text());
        if status == StatusCode::FORBIDDEN {
            assert_eq!(r.denial(), "ip.denied", "{client}");
            assert_eq!(r.field("refused"), client.trim_start_matches("::ffff:"));
            assert!(r.field("detail").contains("10.0.66.0/24"), "the rule is named: {}", r.text());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_filter_drops_a_refused_peer_before_any_byte() {
    let gw = TestGateway::start(STACK).await;
    let addr = gw.addr("http");
    let stats = gw.filter("http").stats();
    let dropped_before = stats.dropped();
    // The refused peer sends nothing: the server closes on its own, so it decided without reading.
    let mut io = tcp_from(BLOCKED, addr).await;
    let got = read_until_closed(&mut io).await;
    assert!(got.is_empty(), "nothing may be answered: {:?}", String::from_utf8_lossy(&got));
    assert_eq!(stats.dropped(), dropped_before + 1);
    // A full request from the refused peer gets no answer either (even with a spoofed header).
    let mut io = tcp_from(BLOCKED, addr).await;
    let _ = io
        .write_all(b"GET /echo HTTP/1.1\r\nHost: contoso.azure-api.net\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n")
        .await;
    let got = read_until_closed(&mut io).await;
    assert!(got.is_empty(), "nothing may be answered: {:?}", String::from_utf8_lossy(&got));
    assert_eq!(stats.dropped(), dropped_before + 2);
    // An admitted peer on the same listener is served.
    let io = tcp_from(VNET, addr).await;
    let r = h1(io, get("/echo", Some(GW), &[])).await.expect("response");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(stats.admitted() >= 1);
    assert_eq!(stats.dropped(), dropped_before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_from_a_refused_peer_gets_no_response() {
    if skip_without("curl", "curl_from_a_refused_peer_gets_no_response") {
        return;
    }
    let gw = TestGateway::start(STACK).await;
    let port = gw.port("http");
    let url = format!("http://{GW}:{port}/echo");
    let resolve = format!("{GW}:{port}:127.0.0.1");
    let r = curl(&["--interface", "127.0.0.3", "--resolve", &resolve, &url], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_ne!(r.exit, Some(0), "curl must fail: {r:?}");
    assert!(r.body.is_empty(), "{r:?}");
    let r = curl(&["--resolve", &resolve, &url], None).await;
    assert_eq!(r.code, 200, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_swapped_while_serving_apply_to_the_next_request_and_connection() {
    use portcullis::ip::{Action, IpRules};
    let gw = TestGateway::start(STACK).await;
    let addr = gw.addr("http");
    let r = get_from(VNET, addr, MGMT, &[("x-forwarded-for", "10.0.1.1")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    // Open the management endpoint to 10.0.1.0/24 as well.
    let mut b = IpRules::builder(Action::Deny);
    b.allow("127.0.0.1").allow("10.0.1.0/24");
    gw.ip_rules("endpoint.management").store(b.build().expect("rules"));
    let r = get_from(VNET, addr, MGMT, &[("x-forwarded-for", "10.0.1.1")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // Refuse 127.0.0.1 at accept: the very next connection from it is dropped.
    let mut b = IpRules::builder(Action::Allow);
    b.deny("127.0.0.1").deny("127.0.0.3");
    gw.ip_rules("connection").store(b.build().expect("rules"));
    let mut io = tcp_from(VNET, addr).await;
    let got = read_until_closed(&mut io).await;
    assert!(got.is_empty());
    assert!(gw.filter("http").stats().dropped() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_load_balancer_the_connection_filter_judges_the_proxy_source() {
    use portcullis_tests::proxy::v2;
    use std::net::{SocketAddr, SocketAddrV4};
    let config = STACK
        .replace("deadline_ms = 20000", "deadline_ms = 20000\n\n")
        .replace(
            "name = \"lb\"\naddress = \"127.0.0.1:0\"",
            "name = \"lb\"\naddress = \"127.0.0.1:0\"\nconnection_filter = true",
        )
        .replace("deny = [\"127.0.0.3\"]", "deny = [\"127.0.0.3\", \"203.0.113.0/24\"]");
    let gw = TestGateway::start(&config).await;
    let lb = gw.addr("lb");
    let SocketAddr::V4(dst) = lb else { panic!("IPv4 loopback") };
    let stats = gw.filter("lb").stats();
    // The load balancer (127.0.0.1) is admitted, but the client it speaks for is refused: closed unanswered.
    let mut io = tcp_from(VNET, lb).await;
    io.write_all(&v2(SocketAddrV4::new([203, 0, 113, 9].into(), 5555), dst, &[])).await.expect("write");
    let _ = io.write_all(b"GET /echo HTTP/1.1\r\nHost: contoso.azure-api.net\r\n\r\n").await;
    let got = read_until_closed(&mut io).await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert_eq!(stats.dropped(), 1);
    // Another client through the same load balancer is served.
    let mut io = tcp_from(VNET, lb).await;
    io.write_all(&v2(SocketAddrV4::new([10, 0, 1, 1].into(), 5555), dst, &[])).await.expect("write");
    let r = h1(io, get("/echo", Some(GW), &[])).await.expect("response");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.field("client"), "10.0.1.1");
}
