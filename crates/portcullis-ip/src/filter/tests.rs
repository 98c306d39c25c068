use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::BodyExt;
use portcullis_core::{
    ClientAddr, ClientAddrConfig, ConnInfo, Decisions, ForwardedSource, LearntVia, ResolveClientAddrLayer,
};
use tower::{ServiceBuilder, ServiceExt, service_fn};

use super::*;
use http::{Request, Response};

type Req = Request<()>;

fn rules() -> IpRules {
    IpRules::builder(Action::Deny)
        .allow("10.0.0.0/8")
        .deny("10.0.66.0/24")
        .allow("10.0.66.5")
        .name("v1")
        .build()
        .unwrap()
}

/// The inner service answers with the number of shadow denials it saw.
async fn inner(req: Req) -> Result<Response<String>, Infallible> {
    let shadow = Decisions::get(req.extensions()).map_or(0, |d| d.shadow.len());
    Ok(Response::new(format!("shadow={shadow}")))
}

fn with_client(ip: &str) -> Req {
    let mut req = Request::new(());
    Decisions::get_mut(req.extensions_mut()).client =
        Some(ClientAddr { ip: ip.parse().unwrap(), learnt_via: LearntVia::Peer });
    req
}

fn with_peer(peer: &str) -> Req {
    let mut req = Request::new(());
    req.extensions_mut().insert(ConnInfo::new(peer.parse().unwrap(), None));
    req
}

async fn body_json(res: Response<portcullis_core::GateBody<String>>) -> serde_json::Value {
    let bytes: Bytes = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn refusal_is_problem_json_naming_address_and_rule() {
    let svc = IpFilterLayer::new(rules()).layer(service_fn(inner));
    let res = svc.clone().oneshot(with_client("10.0.66.4")).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let denial = res.extensions().get::<Denial>().unwrap().clone();
    assert_eq!(denial.layer(), "ip");
    assert_eq!(denial.code(), "ip.denied");
    assert_eq!(
        denial.reason::<IpRefusal>(),
        Some(&IpRefusal::Denied {
            ip: "10.0.66.4".parse().unwrap(),
            checked: AddressSource::Client,
            rule: "deny 10.0.66.0/24".into(),
            rules_name: Some("v1".into()),
        })
    );
    let doc = body_json(res).await;
    assert_eq!(doc["status"], 403);
    assert_eq!(doc["type"], "urn:portcullis:denial:ip.denied");
    assert_eq!(doc["refused"], "10.0.66.4");
    assert_eq!(doc["rule"], "deny 10.0.66.0/24");
    assert_eq!(
        doc["detail"],
        "client address 10.0.66.4 is refused by rule `deny 10.0.66.0/24` (rules \"v1\")"
    );

    let res = svc.clone().oneshot(with_client("172.16.0.1")).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let doc = body_json(res).await;
    assert_eq!(doc["rule"], "no rule matched");
    assert_eq!(doc["type"], "urn:portcullis:denial:ip.no-rule-matched");
    assert_eq!(doc["refused"], "172.16.0.1");

    for ok in ["10.1.2.3", "10.0.66.5", "::ffff:10.0.66.5"] {
        let res = svc.clone().oneshot(with_client(ok)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{ok}");
        assert!(res.extensions().get::<Denial>().is_none());
    }
}

#[tokio::test]
async fn mapped_client_address_cannot_dodge_an_ipv4_rule() {
    // ClientAddr's fields are public: even an unfolded mapped address set by hand is folded.
    let svc = IpFilterLayer::new(rules()).layer(service_fn(inner));
    let res = svc.oneshot(with_client("::ffff:10.0.66.4")).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(res.extensions().get::<Denial>().unwrap().refused(), Some("10.0.66.4"));
}

#[tokio::test]
async fn missing_client_address_fails_closed_with_a_wiring_hint_even_in_shadow_mode() {
    for layer in [IpFilterLayer::new(IpRules::uniform(Action::Allow)), IpFilterLayer::new(rules()).shadow()] {
        let svc = layer.layer(service_fn(inner));
        // Connection info alone is not enough: the client-address layer did not run.
        let res = svc.oneshot(with_peer("10.1.2.3:1000")).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let denial = res.extensions().get::<Denial>().unwrap();
        assert_eq!(denial.code(), "ip.no-client-address");
        assert!(denial.detail().contains("ResolveClientAddrLayer"), "{}", denial.detail());
        assert_eq!(denial.reason::<IpRefusal>(), Some(&IpRefusal::NoClientAddr));
    }
}

#[tokio::test]
async fn direct_peer_mode_ignores_the_resolved_client() {
    // The trusted proxy 10.0.0.2 says the client is 198.51.100.7; the direct peer is the proxy itself.
    let config = ClientAddrConfig::new()
        .trusted_proxies(["10.0.0.0/8".parse().unwrap()])
        .unwrap()
        .source(ForwardedSource::XForwardedFor);
    let only_lb = IpRules::builder(Action::Deny).allow("10.0.0.0/24").build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(ResolveClientAddrLayer::new(config))
        .layer(IpFilterLayer::new(only_lb).direct_peer())
        .service(service_fn(inner));
    let req = |peer: &str| {
        let mut r = Request::builder().header("x-forwarded-for", "198.51.100.7").body(()).unwrap();
        r.extensions_mut().insert(ConnInfo::new(peer.parse().unwrap(), None));
        r
    };
    assert_eq!(svc.clone().oneshot(req("10.0.0.2:9")).await.unwrap().status(), StatusCode::OK);
    let res = svc.clone().oneshot(req("10.0.1.2:9")).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let denial = res.extensions().get::<Denial>().unwrap();
    assert_eq!(denial.refused(), Some("10.0.1.2"));
    assert!(denial.detail().starts_with("direct peer 10.0.1.2"), "{}", denial.detail());
}

#[tokio::test]
async fn direct_peer_mode_reads_axum_connect_info_and_fails_closed_without_any() {
    let svc = IpFilterLayer::new(rules()).direct_peer().layer(service_fn(inner));
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo("10.0.66.9:1".parse::<std::net::SocketAddr>().unwrap()));
    assert_eq!(svc.clone().oneshot(req).await.unwrap().status(), StatusCode::FORBIDDEN);
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo("10.0.67.9:1".parse::<std::net::SocketAddr>().unwrap()));
    assert_eq!(svc.clone().oneshot(req).await.unwrap().status(), StatusCode::OK);

    // A resolved client without connection info: still no peer to decide on.
    let res = svc.oneshot(with_client("10.1.1.1")).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.extensions().get::<Denial>().unwrap().reason::<IpRefusal>(), Some(&IpRefusal::NoConnInfo));
}

#[tokio::test]
async fn shadow_mode_lets_through_and_records() {
    let svc = IpFilterLayer::new(rules()).shadow().layer(service_fn(|req: Req| async move {
        let d = Decisions::get(req.extensions()).unwrap();
        let what: Vec<String> =
            d.shadow.iter().map(|s| format!("{} {}", s.code(), s.rule().unwrap_or("-"))).collect();
        Ok::<_, Infallible>(Response::new(what.join(";")))
    }));
    let res = svc.clone().oneshot(with_client("10.0.66.4")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.extensions().get::<Denial>().is_none());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "ip.denied deny 10.0.66.0/24");
    // Allowed addresses record nothing.
    let body =
        svc.oneshot(with_client("10.1.1.1")).await.unwrap().into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "");
}

#[tokio::test]
async fn responder_is_replaceable() {
    let responder = Responder::new(|d: &Denial| {
        let mut res =
            Response::new(http_body_util::Full::new(Bytes::from(format!("nope: {}", d.refused().unwrap()))));
        *res.status_mut() = StatusCode::NOT_FOUND;
        res
    });
    let svc = IpFilterLayer::new(rules()).responder(responder).layer(service_fn(inner));
    let res = svc.oneshot(with_client("10.0.66.4")).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(res.extensions().get::<Denial>().is_some(), "the denial is still attached");
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "nope: 10.0.66.4");
}

#[tokio::test]
async fn stored_rules_apply_to_the_next_request() {
    let layer = IpFilterLayer::new(rules());
    let svc = layer.layer(service_fn(inner));
    assert_eq!(svc.clone().oneshot(with_client("192.0.2.1")).await.unwrap().status(), StatusCode::FORBIDDEN);
    layer.rules().store(IpRules::builder(Action::Deny).allow("192.0.2.0/24").build().unwrap());
    assert_eq!(svc.clone().oneshot(with_client("192.0.2.1")).await.unwrap().status(), StatusCode::OK);
    assert_eq!(svc.oneshot(with_client("10.1.1.1")).await.unwrap().status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn inner_errors_pass_through() {
    let svc = IpFilterLayer::new(IpRules::uniform(Action::Allow))
        .layer(service_fn(|_req: Req| async { Err::<Response<String>, _>("boom") }));
    assert_eq!(svc.oneshot(with_client("10.1.1.1")).await.unwrap_err(), "boom");
}

#[tokio::test]
async fn the_layers_rule_runs_in_a_list_of_rules() {
    use portcullis_core::{GateLayer, Rules};
    let gates = Rules::new([
        IpFilterLayer::new(rules()).rule().clone() as Arc<dyn Rule>,
        IpFilterLayer::new(IpRules::builder(Action::Allow).deny("10.1.0.0/16").build().unwrap())
            .shadow()
            .rule()
            .clone(),
    ]);
    let svc = GateLayer::new(gates).layer(service_fn(inner));
    let res = svc.clone().oneshot(with_client("10.0.66.4")).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(res.extensions().get::<Denial>().unwrap().rule(), Some("deny 10.0.66.0/24"));
    // Allowed by the first, refused in shadow by the second: through, and recorded.
    let res = svc.clone().oneshot(with_client("10.1.2.3")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "shadow=1");
    let res = svc.oneshot(with_peer("10.1.2.3:1")).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// The rule's allow path decides as the rules' full verdict,
    /// for the client address and the direct peer, IPv4 and IPv4-mapped IPv6, over tables from a few rules
    /// to thousands (so that the IPv4 index has empty, small and crowded buckets).
    #[test]
    fn the_gate_allows_exactly_what_the_verdict_allows(
        seed in proptest::prelude::any::<u64>(),
        count in 1usize..2500,
        default_allow in proptest::prelude::any::<bool>(),
    ) {
        let mut x = seed | 1;
        let mut next = move || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
        let mut b = IpRules::builder(if default_allow { Action::Allow } else { Action::Deny });
        let mut seen = std::collections::HashSet::new();
        for _ in 0..count {
            let host_bits = (next() % 13) as u32;
            let start = (0x0a00_0000 | (next() as u32 & 0x000f_ffff)) & !((1u32 << host_bits) - 1);
            let range = portcullis_core::IpRange::V4 { start, end: start | ((1u32 << host_bits) - 1) };
            if seen.insert(range) {
                b.rules(if next() % 2 == 0 { Action::Allow } else { Action::Deny }, [range]);
            }
        }
        let rules = b.build().unwrap();
        let by_client = IpFilterLayer::new(rules.clone());
        let by_peer = IpFilterLayer::new(rules.clone()).direct_peer();
        for _ in 0..200 {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 | (next() as u32 & 0x001f_ffff));
            let want = rules.check(IpAddr::V4(a)).action == Action::Allow;
            for ip in [IpAddr::V4(a), IpAddr::V6(a.to_ipv6_mapped())] {
                let (mut head, ()) = with_client(&ip.to_string()).into_parts();
                proptest::prop_assert_eq!(by_client.rule().check(&mut head).is_ok(), want, "client {}", ip);
                let (mut head, ()) = with_peer(&std::net::SocketAddr::new(ip, 4000).to_string()).into_parts();
                proptest::prop_assert_eq!(by_peer.rule().check(&mut head).is_ok(), want, "peer {}", ip);
            }
        }
    }
}
