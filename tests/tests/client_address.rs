//! Who is calling, through the whole stack: a forwarded header from an untrusted peer is ignored, the walk
//! through trusted proxies finds the first untrusted hop, garbage is a 400, and every attempt to pass as a
//! private caller fails.

use http::StatusCode;
use portcullis_tests::client::{PUBLIC, VNET, get_from};
use portcullis_tests::configs::{STACK, azure_403};
use portcullis_tests::server::TestGateway;
use portcullis_tests::{curl, skip_without};

const GW: &str = "contoso.azure-api.net";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarded_headers_from_an_untrusted_peer_are_ignored() {
    let gw = TestGateway::start(STACK).await;
    let addr = gw.addr("http");
    // 127.0.0.2 is public and not a trusted proxy: whatever it claims, it is 127.0.0.2.
    for claim in [
        vec![("x-forwarded-for", "127.0.0.1")],
        vec![("x-forwarded-for", "10.0.1.1, 10.0.3.3")],
        vec![("x-forwarded-for", "10.0.1.1"), ("x-forwarded-for", "127.0.0.1")],
        vec![("forwarded", "for=10.0.1.1"), ("x-real-ip", "10.0.1.1"), ("true-client-ip", "10.0.1.1")],
        // Garbage is not even read from an untrusted peer: the refusal is the public-access one, not a 400.
        vec![("x-forwarded-for", "not-an-address, _hidden")],
    ] {
        let r = get_from(PUBLIC, addr, GW, &claim).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{claim:?}: {}", r.text());
        assert_eq!(r.denial(), "public-access.disabled", "{claim:?}");
        assert_eq!(r.field("detail"), azure_403("127.0.0.2"), "{claim:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_from_a_public_address_cannot_spoof_its_way_in() {
    if skip_without("curl", "curl_from_a_public_address_cannot_spoof_its_way_in") {
        return;
    }
    let gw = TestGateway::start(STACK).await;
    let port = gw.port("http");
    let r = curl(
        &[
            "--interface",
            "127.0.0.2",
            "-H",
            "X-Forwarded-For: 127.0.0.1",
            "--resolve",
            &format!("{GW}:{port}:127.0.0.1"),
            &format!("http://{GW}:{port}/echo"),
        ],
        None,
    )
    .await;
    assert_eq!(r.code, 403, "{r:?}");
    assert_eq!(r.json()["detail"], azure_403("127.0.0.2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_are_walked_right_to_left() {
    let gw = TestGateway::start(STACK).await;
    let addr = gw.addr("http");
    // 127.0.0.1 and 10.0.3.0/24 are trusted proxies: the first untrusted hop from the right is the client.
    let r = get_from(VNET, addr, GW, &[("x-forwarded-for", "10.0.1.7, 10.0.3.3")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.field("client"), "10.0.1.7");
    assert_eq!(r.field("learnt_via"), "x-forwarded-for (2 trusted hops)");
    assert_eq!(r.field("origin"), "private network vnet");
    // An attacker behind the proxy prepends a private address: the proxy appended the real one, which wins.
    let r = get_from(VNET, addr, GW, &[("x-forwarded-for", "10.0.1.1, 203.0.113.7, 10.0.3.3")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.field("detail"), azure_403("203.0.113.7"));
    // Several header lines are one list, in order.
    let r = get_from(VNET, addr, GW, &[("x-forwarded-for", "10.0.1.1"), ("x-forwarded-for", "203.0.113.8")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.field("detail"), azure_403("203.0.113.8"));
    // Every hop trusted: the leftmost is the client.
    let r = get_from(VNET, addr, GW, &[("x-forwarded-for", "10.0.3.1, 10.0.3.2")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.field("client"), "10.0.3.1");
    // Ports and IPv4-mapped IPv6 are folded: the address is what the rules see.
    let r = get_from(VNET, addr, GW, &[("x-forwarded-for", "[::ffff:10.0.1.9]:4711")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.field("client"), "10.0.1.9");
    // Without a header, the trusted peer itself.
    let r = get_from(VNET, addr, GW, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!((r.field("client").as_str(), r.field("learnt_via").as_str()), ("127.0.0.1", "peer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_trusted_proxy_is_a_bad_request() {
    let gw = TestGateway::start(STACK).await;
    let addr = gw.addr("http");
    for (xff, code) in [
        ("not-an-address", "client-addr.bad-entry"),
        ("10.0.1.1, 999.1.1.1", "client-addr.bad-entry"),
        ("_hidden", "client-addr.obfuscated-entry"),
        ("unknown, 10.0.3.3", "client-addr.obfuscated-entry"),
        ("10.0.1.1, , 10.0.3.3", "client-addr.malformed-header"),
        ("fe80::1%eth0", "client-addr.bad-entry"),
        ("10.0.1.1:99999", "client-addr.bad-entry"),
        ("10.0.3.1, 10.0.3.2, 10.0.3.3, 10.0.3.4, 10.0.3.5, 10.0.3.6", "client-addr.too-many-entries"),
    ] {
        let r = get_from(VNET, addr, GW, &[("x-forwarded-for", xff)]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{xff}: {}", r.text());
        let got = r.denial();
        // An empty entry may be classified as a bad entry or as a syntax error; both are a 400 naming why.
        if code == "client-addr.malformed-header" {
            assert!(got == code || got == "client-addr.bad-entry", "{xff}: {got}");
        } else {
            assert_eq!(got, code, "{xff}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7239_forwarded_is_the_one_source_when_configured() {
    let config = STACK.replace("forwarded = \"x-forwarded-for\"", "forwarded = \"forwarded\"");
    let gw = TestGateway::start(&config).await;
    let addr = gw.addr("http");
    let r =
        get_from(VNET, addr, GW, &[("forwarded", "for=10.0.1.7;proto=https, for=\"10.0.3.3:8080\"")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.field("client"), "10.0.1.7");
    assert_eq!(r.field("learnt_via"), "forwarded (2 trusted hops)");
    // X-Forwarded-For is not read in this deployment: a private claim in it changes nothing.
    let r =
        get_from(VNET, addr, GW, &[("x-forwarded-for", "10.0.1.1"), ("forwarded", "for=203.0.113.5")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.field("detail"), azure_403("203.0.113.5"));
    // Obfuscated identifiers stop the walk with a 400.
    let r = get_from(VNET, addr, GW, &[("forwarded", "for=_hidden, for=10.0.3.3")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.denial(), "client-addr.obfuscated-entry");
}
