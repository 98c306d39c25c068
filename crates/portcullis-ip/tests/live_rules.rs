//! Swapping the rules while requests are in flight, over a real loopback server: every request is decided
//! by exactly one rule set.

use std::collections::HashSet;

use axum::{Router, routing::get};
use http::StatusCode;
use portcullis_core::{ClientAddrConfig, ResolveClientAddrLayer};
use portcullis_ip::{Action, IpFilterLayer, IpRules, IpRulesHandle};

use portcullis_test_support::loopback::{get_from, serve_axum};

/// Set A refuses 127.0.0.0/8 except 127.0.0.2; set B allows 127.0.0.0/8 except 127.0.0.1.
fn sets() -> (IpRules, IpRules) {
    let mut a = IpRules::builder(Action::Allow);
    a.name("A").deny("127.0.0.0/8").allow("127.0.0.2");
    let mut b = IpRules::builder(Action::Deny);
    b.name("B").allow("127.0.0.0/8").deny("127.0.0.1");
    // Padding, so that the two tables differ in size and layout too.
    for i in 0..2000u32 {
        a.deny(std::net::Ipv4Addr::from(0x0a00_0000 + i * 4));
        b.allow(std::net::Ipv4Addr::from(0x0b00_0000 + i * 8));
    }
    (a.build().unwrap(), b.build().unwrap())
}

/// What each source address may see: status plus the refusal's detail, under set A or set B.
fn expected(source: &str) -> [(StatusCode, String); 2] {
    let denied = |rule: &str, set: &str| {
        (
            StatusCode::FORBIDDEN,
            format!("client address {source} is refused by rule `{rule}` (rules \"{set}\")"),
        )
    };
    match source {
        "127.0.0.1" => [denied("deny 127.0.0.0/8", "A"), denied("deny 127.0.0.1", "B")],
        "127.0.0.3" => [denied("deny 127.0.0.0/8", "A"), (StatusCode::OK, String::new())],
        "127.0.0.2" => [(StatusCode::OK, String::new()), (StatusCode::OK, String::new())],
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_under_concurrent_requests_never_mixes_two_rule_sets() {
    let (a, b) = sets();
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let handle = IpRulesHandle::new(a.clone());
    let router = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(IpFilterLayer::new(handle.clone()))
        .layer(ResolveClientAddrLayer::new(ClientAddrConfig::new()));
    let addr = serve_axum(router).await;

    let sources = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let mut seen = HashSet::new();
    for round in 0..24 {
        let mut tasks = Vec::new();
        for i in 0..12 {
            let source = sources[i % sources.len()];
            tasks.push(tokio::spawn(async move { (source, get_from(source, addr, "/", &[]).await) }));
        }
        // Swap while the round's requests are in flight.
        handle.store(if round % 2 == 0 { b.clone() } else { a.clone() });
        for t in tasks {
            let (source, answer) = t.await.unwrap();
            let detail = if answer.status == StatusCode::OK {
                assert_eq!(answer.body, "ok");
                String::new()
            } else {
                answer.json()["detail"].as_str().unwrap().to_owned()
            };
            let outcome = (answer.status, detail);
            let allowed = expected(source);
            assert!(allowed.contains(&outcome), "{source}: {outcome:?} is not one rule set's answer");
            seen.insert((source, outcome));
        }
    }
    // Both rule sets decided some requests (the rounds alternate which one is stored first).
    for source in ["127.0.0.1", "127.0.0.3"] {
        for outcome in expected(source) {
            assert!(seen.contains(&(source, outcome.clone())), "{source} never saw {outcome:?}");
        }
    }
}
