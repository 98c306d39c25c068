//! Spoofing attempts against the IP filter over real loopback axum servers, with a hyper client.
//!
//! Each test states the rule an attacker wants to get around and the trick tried.

use axum::{Router, routing::get};
use http::StatusCode;
use portcullis_core::{ClientAddr, ClientAddrConfig, Decisions, ForwardedSource, ResolveClientAddrLayer};
use portcullis_ip::{Action, IpFilterLayer, IpRules};

use portcullis_test_support::loopback::{get as get_at, get_from, serve_axum};

async fn who(client: ClientAddr) -> String {
    client.ip.to_string()
}

/// An app behind `ResolveClientAddrLayer(config)` then `IpFilterLayer(rules)`; `/` answers the client address.
async fn app(config: ClientAddrConfig, filter: IpFilterLayer) -> std::net::SocketAddr {
    let router = Router::new().route("/", get(who)).layer(filter).layer(ResolveClientAddrLayer::new(config));
    serve_axum(router).await
}

fn xff_trusting(cidrs: &[&str]) -> ClientAddrConfig {
    ClientAddrConfig::new()
        .trusted_proxies(cidrs.iter().map(|c| c.parse().unwrap()))
        .unwrap()
        .source(ForwardedSource::XForwardedFor)
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_do_not_open_the_door() {
    // Only the office may call; the attacker on 127.0.0.1 (not a trusted proxy) claims to be the office.
    let rules = IpRules::builder(Action::Deny).allow("198.51.100.0/24").build().unwrap();
    let addr = app(xff_trusting(&["10.0.0.0/8"]), IpFilterLayer::new(rules)).await;
    let attempts: [&[(&str, &str)]; 6] = [
        &[("x-forwarded-for", "198.51.100.7")],
        &[("x-forwarded-for", "198.51.100.7, 10.0.0.1")],
        &[("x-forwarded-for", "10.0.0.1"), ("x-forwarded-for", "198.51.100.7")],
        &[("forwarded", "for=198.51.100.7")],
        &[("x-real-ip", "198.51.100.7")],
        &[("true-client-ip", "198.51.100.7"), ("x-client-ip", "198.51.100.7")],
    ];
    for headers in attempts {
        let a = get_at(addr, "/", headers).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{headers:?} must not open the door: {}", a.body);
        assert_eq!(a.content_type, "application/problem+json");
        let doc = a.json();
        assert_eq!(doc["refused"], "127.0.0.1", "{headers:?}");
        assert_eq!(doc["rule"], "no rule matched");
    }
}

#[tokio::test]
async fn a_client_cannot_choose_its_entry_in_a_trusted_proxys_header() {
    // 127.0.0.1 is a trusted proxy; the real client it saw (198.51.100.66) is denied. The client prepends
    // an allowed address to the header it sends the proxy: the walk goes right to left and ignores it.
    let rules =
        IpRules::builder(Action::Deny).allow("198.51.100.0/24").deny("198.51.100.66").build().unwrap();
    let addr = app(xff_trusting(&["127.0.0.1"]), IpFilterLayer::new(rules)).await;
    let a = get_at(addr, "/", &[("x-forwarded-for", "198.51.100.7, 198.51.100.66")]).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["refused"], "198.51.100.66");
    assert_eq!(a.json()["rule"], "deny 198.51.100.66");
    // The same, as two header lines.
    let a =
        get_at(addr, "/", &[("x-forwarded-for", "198.51.100.7"), ("x-forwarded-for", "198.51.100.66")]).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // Sanity: the allowed client through the proxy gets in.
    let a = get_at(addr, "/", &[("x-forwarded-for", "198.51.100.7")]).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "198.51.100.7"));
}

#[tokio::test]
async fn mapped_addresses_do_not_slip_past_ipv4_rules() {
    // Everyone but 10.0.66.0/24 may call; the attacker writes its address in the IPv4-mapped IPv6 form.
    let rules = IpRules::builder(Action::Allow).deny("10.0.66.0/24").build().unwrap();
    let addr = app(xff_trusting(&["127.0.0.1"]), IpFilterLayer::new(rules)).await;
    for entry in [
        "::ffff:10.0.66.4",
        "[::ffff:10.0.66.4]",
        "::FFFF:10.0.66.4",
        "::ffff:a00:4204",
        "0:0:0:0:0:ffff:10.0.66.4",
    ] {
        let a = get_at(addr, "/", &[("x-forwarded-for", entry)]).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{entry} must be refused: {}", a.body);
        assert_eq!(a.json()["refused"], "10.0.66.4", "{entry}");
    }
    let a = get_at(addr, "/", &[("x-forwarded-for", "10.0.67.4")]).await;
    assert_eq!(a.status, StatusCode::OK);

    // The rule written in the mapped form covers the plain IPv4 address too.
    let rules = IpRules::builder(Action::Allow).deny("::ffff:10.0.66.0/120").build().unwrap();
    let addr = app(xff_trusting(&["127.0.0.1"]), IpFilterLayer::new(rules)).await;
    for entry in ["10.0.66.4", "::ffff:10.0.66.4"] {
        let a = get_at(addr, "/", &[("x-forwarded-for", entry)]).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{entry}");
    }
    // And the mapped form of the loopback peer itself is the peer: a deny on 127.0.0.1 holds.
    let rules = IpRules::builder(Action::Allow).deny("::ffff:127.0.0.1").build().unwrap();
    let addr = app(ClientAddrConfig::new(), IpFilterLayer::new(rules)).await;
    assert_eq!(get_at(addr, "/", &[]).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn ports_are_not_part_of_the_address() {
    let rules =
        IpRules::builder(Action::Allow).deny("10.0.66.0/24").deny("2001:db8:66::/48").build().unwrap();
    let addr = app(xff_trusting(&["127.0.0.1"]), IpFilterLayer::new(rules)).await;
    for entry in ["10.0.66.4:8080", "10.0.66.4:1", "[::ffff:10.0.66.4]:443", "[2001:db8:66::1]:443"] {
        let a = get_at(addr, "/", &[("x-forwarded-for", entry)]).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{entry}: {}", a.body);
    }
    let cfg = ClientAddrConfig::new()
        .trusted_proxies(["127.0.0.1".parse().unwrap()])
        .unwrap()
        .source(ForwardedSource::Forwarded);
    let rules = IpRules::builder(Action::Allow).deny("10.0.66.0/24").build().unwrap();
    let addr = app(cfg, IpFilterLayer::new(rules)).await;
    for value in ["for=\"10.0.66.4:1234\"", "for=\"[::ffff:10.0.66.4]:1\"", "for=10.0.66.4"] {
        let a = get_at(addr, "/", &[("forwarded", value)]).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{value}: {}", a.body);
    }
    // Out-of-range or junk ports are not addresses: 400, not a guess.
    let addr = app(xff_trusting(&["127.0.0.1"]), IpFilterLayer::new(IpRules::uniform(Action::Allow))).await;
    for entry in ["10.0.66.4:65536", "10.0.66.4:", "10.0.66.4:http"] {
        let a = get_at(addr, "/", &[("x-forwarded-for", entry)]).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{entry}: {}", a.body);
    }
}

#[tokio::test]
async fn ipv6_zone_ids_in_forwarded_headers_are_refused_with_400() {
    // A zone id could make a naive parser fail open, or match no rule under a default allow.
    let rules = IpRules::builder(Action::Allow).deny("fe80::/10").build().unwrap();
    let addr = app(xff_trusting(&["127.0.0.1"]), IpFilterLayer::new(rules)).await;
    for entry in ["fe80::1%eth0", "[fe80::1%25eth0]:443", "fe80::1%1", "198.51.100.7, fe80::1%eth0"] {
        let a = get_at(addr, "/", &[("x-forwarded-for", entry)]).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{entry}: {}", a.body);
        assert_eq!(a.json()["layer"], "client-addr");
    }
    let a = get_at(addr, "/", &[("x-forwarded-for", "fe80::1")]).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // Zone ids are not accepted in rules either.
    assert!(IpRules::builder(Action::Allow).deny("fe80::1%eth0").build().is_err());
}

#[tokio::test]
async fn direct_peer_mode_is_not_fooled_by_a_trusted_proxys_header() {
    // Only the load-balancer subnet may connect at all; 127.0.0.1 is trusted for XFF but not allowed.
    let rules = IpRules::builder(Action::Deny).allow("10.1.0.0/16").build().unwrap();
    let addr = app(xff_trusting(&["127.0.0.0/8"]), IpFilterLayer::new(rules).direct_peer()).await;
    let a = get_at(addr, "/", &[("x-forwarded-for", "10.1.2.3")]).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["refused"], "127.0.0.1");
    assert!(a.json()["detail"].as_str().unwrap().starts_with("direct peer 127.0.0.1"));
}

#[tokio::test]
async fn second_loopback_address_is_refused_per_request() {
    let rules = IpRules::builder(Action::Deny).allow("127.0.0.1").build().unwrap();
    let addr = app(ClientAddrConfig::new(), IpFilterLayer::new(rules)).await;
    assert_eq!(get_from("127.0.0.1", addr, "/", &[]).await.status, StatusCode::OK);
    let a = get_from("127.0.0.2", addr, "/", &[]).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["refused"], "127.0.0.2");
}

#[tokio::test]
async fn shadow_mode_lets_through_and_records_over_a_real_server() {
    let rules = IpRules::builder(Action::Deny).allow("127.0.0.1").build().unwrap();
    let router = Router::new()
        .route(
            "/",
            get(|req: axum::extract::Request| async move {
                let d = Decisions::get(req.extensions()).unwrap();
                d.shadow
                    .iter()
                    .map(|s| {
                        format!("{} {} {}", s.code(), s.refused().unwrap_or("-"), s.rule().unwrap_or("-"))
                    })
                    .collect::<Vec<_>>()
                    .join(";")
            }),
        )
        .layer(IpFilterLayer::new(rules).shadow())
        .layer(ResolveClientAddrLayer::new(ClientAddrConfig::new()));
    let addr = serve_axum(router).await;
    let a = get_from("127.0.0.2", addr, "/", &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, "ip.no-rule-matched 127.0.0.2 no rule matched");
    let a = get_from("127.0.0.1", addr, "/", &[]).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, ""));
}
