//! Private vs public origin through the whole stack: Azure's 403 for a public caller, private networks,
//! private endpoint connections recognised by the link id a trusted load balancer sends in PROXY v2 (Azure,
//! AWS, GCP), pending/rejected/unknown connections and endpoints outside a connection's targets refused, PROXY
//! headers from untrusted peers closed, and a client's imitation of the origin tag stripped.

use std::net::{SocketAddr, SocketAddrV4};

use http::StatusCode;
use portcullis_tests::client::{PUBLIC, Reply, VNET, get, get_from, h1, read_until_closed, tcp_from};
use portcullis_tests::configs::{STACK, azure_403};
use portcullis_tests::proxy::{aws_tlv, azure_tlv, gcp_tlv, v1, v2};
use portcullis_tests::server::TestGateway;
use portcullis_tests::{curl, skip_without};
use tokio::io::AsyncWriteExt;

const GW: &str = "contoso.azure-api.net";

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("the tests bind IPv4 loopback"),
    }
}

/// Sends `header` then `GET /echo` with `Host: host` from the load balancer (127.0.0.1) to listener `lb`.
async fn via_lb(gw: &TestGateway, header: &[u8], host: &str, headers: &[(&str, &str)]) -> Reply {
    let mut io = tcp_from(VNET, gw.addr("lb")).await;
    io.write_all(header).await.expect("write the PROXY header");
    h1(io, get("/echo", Some(host), headers)).await.unwrap_or_else(|e| panic!("no response: {e}"))
}

fn src(ip: [u8; 4]) -> SocketAddrV4 {
    SocketAddrV4::new(ip.into(), 40123)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_caller_gets_azures_exact_403() {
    let gw = TestGateway::start(STACK).await;
    for listener in ["http", "lb"] {
        // On `lb`, 127.0.0.2 is not a load balancer: its plain HTTP is served as a direct (public) caller.
        let r = get_from(PUBLIC, gw.addr(listener), GW, &[]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{listener}: {}", r.text());
        assert_eq!(r.denial(), "public-access.disabled");
        assert_eq!(r.field("detail"), azure_403("127.0.0.2"));
        assert_eq!(r.field("refused"), "127.0.0.2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_shows_the_403_text() {
    if skip_without("curl", "curl_shows_the_403_text") {
        return;
    }
    let gw = TestGateway::start(STACK).await;
    let port = gw.port("http");
    let r = curl(
        &[
            "--interface",
            "127.0.0.2",
            "--resolve",
            &format!("{GW}:{port}:127.0.0.1"),
            &format!("http://{GW}:{port}/"),
        ],
        None,
    )
    .await;
    assert_eq!(r.code, 403, "{r:?}");
    assert_eq!(r.json()["detail"], azure_403("127.0.0.2"));
    let r =
        curl(&["--resolve", &format!("{GW}:{port}:127.0.0.1"), &format!("http://{GW}:{port}/")], None).await;
    assert_eq!(r.code, 200, "{r:?}");
    assert_eq!(r.json()["origin"], "private network vnet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_network_caller_is_served_with_its_origin() {
    let gw = TestGateway::start(STACK).await;
    let r = get_from(VNET, gw.addr("http"), GW, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.field("origin"), "private network vnet");
    assert_eq!(r.json()["private_endpoint"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_endpoint_connections_from_each_cloud_are_served() {
    let gw = TestGateway::start(STACK).await;
    let dst = v4(gw.addr("lb"));
    // The PROXY sources are public addresses: only the link id makes them private.
    for (tlv, name, source) in [
        (azure_tlv(570_425_483), "pe-azure", [198, 51, 100, 10]),
        (aws_tlv("vpce-0123456789abcdef0"), "pe-aws", [198, 51, 100, 11]),
        (gcp_tlv(1_234_567_890_123), "pe-gcp", [198, 51, 100, 12]),
    ] {
        let r = via_lb(&gw, &v2(src(source), dst, &[tlv]), GW, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.text());
        assert_eq!(r.field("private_endpoint"), name);
        assert!(
            r.field("origin").starts_with(&format!("private endpoint connection {name}")),
            "{}",
            r.text()
        );
        let ip = std::net::Ipv4Addr::from(source).to_string();
        assert_eq!(r.field("client"), ip);
        assert_eq!(r.field("learnt_via"), "proxy-protocol");
        assert_eq!(
            r.field("peer"),
            format!("127.0.0.1:{}", r.field("peer").rsplit(':').next().unwrap_or(""))
        );
    }
    // The same public source without a link id is a public caller: Azure's 403 names the PROXY source.
    let r = via_lb(&gw, &v2(src([198, 51, 100, 10]), dst, &[]), GW, &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.field("detail"), azure_403("198.51.100.10"));
    // PROXY v1 from the load balancer: a source in the virtual network is private, others are public.
    let r = via_lb(&gw, &v1(src([10, 0, 1, 1]), dst), GW, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.field("origin"), "private network vnet");
    let r = via_lb(&gw, &v1(src([203, 0, 113, 50]), dst), GW, &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.field("detail"), azure_403("203.0.113.50"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_rejected_and_unknown_connections_are_refused_by_name() {
    let gw = TestGateway::start(STACK).await;
    let dst = v4(gw.addr("lb"));
    for (tlv, code, named) in [
        (azure_tlv(7), "origin.connection-pending", "pe-azure-pending"),
        (aws_tlv("vpce-0ffffffffffffffff"), "origin.connection-rejected", "pe-aws-rejected"),
        (azure_tlv(99), "origin.unknown-link", "99"),
        (gcp_tlv(42), "origin.unknown-link", "42"),
    ] {
        // Even from a source inside the virtual network: the connection's state decides.
        let r = via_lb(&gw, &v2(src([10, 0, 1, 1]), dst, &[tlv]), GW, &[]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{named}: {}", r.text());
        assert_eq!(r.denial(), code, "{named}");
        assert!(r.field("detail").contains(named), "{named} must be named: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reaches_only_its_target_endpoints() {
    let gw = TestGateway::start(STACK).await;
    let dst = v4(gw.addr("lb"));
    let s = src([198, 51, 100, 20]);
    for (tlv, host, allowed) in [
        // pe-azure: targets = ["gateway"]
        (azure_tlv(570_425_483), "contoso.azure-api.net", true),
        (azure_tlv(570_425_483), "contoso.privatelink.azure-api.net", true),
        (azure_tlv(570_425_483), "contoso.developer.azure-api.net", false),
        (azure_tlv(570_425_483), "contoso.management.azure-api.net", false),
        (azure_tlv(570_425_483), "CONTOSO.SCM.AZURE-API.NET.", false),
        // pe-aws: targets = ["gateway", "portal"]
        (aws_tlv("vpce-0123456789abcdef0"), "contoso.developer.azure-api.net", true),
        (aws_tlv("vpce-0123456789abcdef0"), "contoso.management.azure-api.net", false),
        // pe-gcp: no targets given, so the gateway only (Azure's default).
        (gcp_tlv(1_234_567_890_123), "contoso.azure-api.net", true),
        (gcp_tlv(1_234_567_890_123), "contoso.scm.azure-api.net", false),
    ] {
        let r = via_lb(&gw, &v2(s, dst, &[tlv]), host, &[]).await;
        if allowed {
            assert_eq!(r.status, StatusCode::OK, "{host}: {}", r.text());
        } else {
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{host}: {}", r.text());
            assert_eq!(r.denial(), "origin.endpoint-not-targeted", "{host}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_from_untrusted_peers_or_missing_ones_close_the_connection() {
    let gw = TestGateway::start(STACK).await;
    let lb = gw.addr("lb");
    let dst = v4(lb);
    let approved = v2(src([10, 0, 1, 1]), dst, &[azure_tlv(570_425_483)]);
    let request = b"GET /echo HTTP/1.1\r\nHost: contoso.azure-api.net\r\n\r\n";
    // 127.0.0.2 is not a load balancer: its PROXY header (v2 with an approved link id, or v1) is refused.
    for header in [approved.clone(), v1(src([10, 0, 1, 1]), dst)] {
        let mut io = tcp_from(PUBLIC, lb).await;
        io.write_all(&header).await.expect("write");
        let _ = io.write_all(request).await;
        let got = read_until_closed(&mut io).await;
        assert!(got.is_empty(), "closed without an answer: {:?}", String::from_utf8_lossy(&got));
    }
    // The load balancer must send a header: plain HTTP from it is closed.
    let mut io = tcp_from(VNET, lb).await;
    io.write_all(request).await.expect("write");
    let got = read_until_closed(&mut io).await;
    assert!(got.is_empty(), "closed without an answer: {:?}", String::from_utf8_lossy(&got));
    // A malformed v2 header from the load balancer: closed.
    let mut bad = approved.clone();
    bad[12] = 0x31; // version 3
    let mut io = tcp_from(VNET, lb).await;
    io.write_all(&bad).await.expect("write");
    let _ = io.write_all(request).await;
    let got = read_until_closed(&mut io).await;
    assert!(got.is_empty(), "closed without an answer: {:?}", String::from_utf8_lossy(&got));
    // The header split across writes still works (and a second header is payload, not a new header).
    let mut io = tcp_from(VNET, lb).await;
    io.write_all(&approved[..7]).await.expect("write");
    io.flush().await.expect("flush");
    io.write_all(&approved[7..]).await.expect("write");
    let r = h1(io, get("/echo", Some(GW), &[])).await.expect("response");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.field("private_endpoint"), "pe-azure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_origin_headers_are_stripped() {
    let gw = TestGateway::start(STACK).await;
    let spoof = [
        ("x-portcullis-origin", "private; connection=pe-azure; group-id=Gateway"),
        ("x_portcullis_origin", "private; network=vnet"),
    ];
    // A private caller: served, and the application never sees the client's tag.
    let r = get_from(VNET, gw.addr("http"), GW, &spoof).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["origin_headers"], serde_json::json!([]), "{}", r.text());
    assert_eq!(r.field("origin"), "private network vnet");
    // A public caller claiming to be private: still public.
    let r = get_from(PUBLIC, gw.addr("http"), GW, &spoof).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.field("detail"), azure_403("127.0.0.2"));
    // Over a private endpoint connection, the tag claiming another connection is stripped too.
    let dst = v4(gw.addr("lb"));
    let r = via_lb(&gw, &v2(src([198, 51, 100, 30]), dst, &[gcp_tlv(1_234_567_890_123)]), GW, &spoof).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.field("private_endpoint"), "pe-gcp");
    assert_eq!(r.json()["origin_headers"], serde_json::json!([]));
}

/// A gateway with public access enabled and no private path configured: nothing to decide about origin, but a
/// client's imitation of the origin tag must still never reach the application (an upstream that trusts
/// `x-portcullis-origin` would otherwise take a public caller for a private one).
const OPEN: &str = r#"
resource = "Microsoft.ApiManagement/service/contoso"

[[listener]]
name = "http"
address = "127.0.0.1:0"

[hosts.service]
name = "contoso"
domain = "azure-api.net"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_origin_headers_are_stripped_without_origin_rules_too() {
    let gw = TestGateway::start(OPEN).await;
    let r = get_from(
        PUBLIC,
        gw.addr("http"),
        GW,
        &[("x-portcullis-origin", "private; network=vnet"), ("x_portcullis_origin", "private; network=vnet")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json()["origin_headers"],
        serde_json::json!([]),
        "the client's tag reached the app: {}",
        r.text()
    );
    assert_eq!(r.field("origin"), "public");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_access_in_shadow_mode_serves_and_records() {
    let gw = TestGateway::start(&STACK.replace("enabled = false", "enabled = false\nshadow = true")).await;
    let r = get_from(PUBLIC, gw.addr("http"), GW, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.field("origin"), "public");
    assert_eq!(r.json()["shadow"], serde_json::json!(["public-access.disabled"]));
}
