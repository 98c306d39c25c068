//! The ops listener and the metrics, over loopback with a real HTTP client: `/healthz`, `/readyz` (ready
//! while serving, not during the shutdown drain), `/metrics` rendered by the Prometheus recorder the binary
//! installs, counters that move with the requests sent, and a reload on `SIGHUP`.
//!
//! One test in this file: the recorder and the `SIGHUP` handler are process-wide.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::routing::get as route_get;
use portcullis::config::GatewayConfig;
use portcullis::serve::Bound;
use portcullis_tests::bounded;
use portcullis_tests::client::{PUBLIC, Reply, VNET, get, get_from, h1, tcp_from};

const CONFIG: &str = r#"
resource = "Microsoft.ApiManagement/service/contoso"

[[listener]]
name = "http"
address = "127.0.0.1:0"

[[listener]]
name = "lb"
address = "127.0.0.1:0"
[listener.proxy_protocol]
required_from = ["127.0.0.1"]

[ops]
listen = "127.0.0.1:0"

[private_networks.networks]
vnet = ["127.0.0.1"]

[public_access]
enabled = false

[hosts.endpoint.gateway]
names = ["api.example"]
"#;

/// `GET path` on the ops listener.
async fn ops(addr: SocketAddr, path: &str) -> Reply {
    h1(tcp_from(VNET, addr).await, get(path, Some("ops"), &[])).await.expect("ops request")
}

/// The value of the series `name{labels}` in a Prometheus text (0 when absent). `labels` is the exact label
/// set as the exporter writes it (sorted by the order given at record time).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap_or_else(|e| panic!("{series}: {v}: {e}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ops_endpoints_metrics_and_sighup() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this test process");

    let dir = std::env::temp_dir().join(format!("portcullis-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join("gateway.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let (config, source) = GatewayConfig::load(&path).unwrap();
    let bound = Bound::from_config(&config, &source)
        .await
        .unwrap()
        .watch_interval(None)
        .metrics(move || recorder.render());
    let handle = bound.handle();
    let addr = bound.local_addrs()[0].1;
    let lb = bound.local_addrs()[1].1;
    let ops_addr = bound.ops_addr().expect("an ops listener");
    assert!(ops_addr.ip().is_loopback());

    // An application with a handler that holds its request until told, to keep the shutdown drain open.
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let app = Router::new().route("/echo", route_get(|| async { "ok" })).route(
        "/slow",
        route_get(move || {
            let mut release = release_rx.clone();
            async move {
                let _ = release.wait_for(|r| *r).await;
                "done"
            }
        }),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.serve(app.into_service(), async move {
        let _ = stop_rx.await;
    }));
    bounded("ready", async {
        while !handle.is_ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    let r = ops(ops_addr, "/healthz").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok\n"));
    let r = ops(ops_addr, "/readyz").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ready generation=1\n"));
    assert_eq!(ops(ops_addr, "/").await.status, 404, "nothing else is answered");
    assert_eq!(ops(ops_addr, "/echo").await.status, 404, "the application is not reachable on the ops port");

    // The requests sent, counted.
    let before = ops(ops_addr, "/metrics").await;
    assert_eq!(before.status, 200);
    assert!(
        before
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.to_str().unwrap().starts_with("text/plain")),
        "{:?}",
        before.headers
    );
    let before = before.text();
    for _ in 0..3 {
        assert_eq!(get_from(VNET, addr, "api.example", &[]).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get_from(PUBLIC, addr, "api.example", &[]).await.status, 403);
    }
    assert_eq!(get_from(VNET, addr, "evil.example", &[]).await.status, 421);
    // Through the load balancer: a PROXY v2 header with an Azure link id, then a request (refused: the link
    // id is not a registered private endpoint connection); then a connection without a header (closed).
    let mut io = tcp_from(VNET, lb).await;
    let header = portcullis_tests::proxy::v2(
        "127.0.0.2:50000".parse().unwrap(),
        "127.0.0.1:443".parse().unwrap(),
        &[portcullis_tests::proxy::azure_tlv(42)],
    );
    tokio::io::AsyncWriteExt::write_all(&mut io, &header).await.unwrap();
    let r = h1(io, get("/echo", Some("api.example"), &[])).await.expect("answered");
    assert_eq!(r.status, 403, "{}", r.text());
    let io = tcp_from(VNET, lb).await;
    assert!(h1(io, get("/echo", Some("api.example"), &[])).await.is_err(), "no header from a load balancer");
    let after = ops(ops_addr, "/metrics").await.text();
    let delta = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(delta("portcullis_requests_allowed_total"), 3.0, "{after}");
    assert_eq!(
        delta(r#"portcullis_requests_refused_total{layer="public-access",code="public-access.disabled"}"#),
        2.0,
        "{after}"
    );
    assert_eq!(
        delta(r#"portcullis_requests_refused_total{layer="host",code="host.unknown"}"#),
        1.0,
        "{after}"
    );
    assert_eq!(delta(r#"portcullis_connections_accepted_total{listener="http"}"#), 6.0, "{after}");
    assert_eq!(delta(r#"portcullis_connections_accepted_total{listener="lb"}"#), 2.0, "{after}");
    assert_eq!(delta(r#"portcullis_proxy_headers_total{outcome="ok",tlv="azure"}"#), 1.0, "{after}");
    assert_eq!(delta(r#"portcullis_proxy_headers_total{outcome="refused",tlv="none"}"#), 1.0, "{after}");
    assert_eq!(
        delta(r#"portcullis_connections_refused_total{listener="lb",reason="proxy-protocol"}"#),
        1.0,
        "{after}"
    );
    assert_eq!(value(&after, "portcullis_config_generation"), 1.0, "{after}");
    assert!(!after.contains("127.0.0.2"), "no client address in any label: {after}");

    // SIGHUP reloads the file: the new host name is served, the generation and the reload counter move.
    std::fs::write(&path, CONFIG.replace("\"api.example\"", "\"api.example\", \"next.example\"")).unwrap();
    let pid = std::process::id().to_string();
    let status = std::process::Command::new("kill").args(["-HUP", &pid]).status().expect("kill");
    assert!(status.success());
    bounded("SIGHUP reload", async {
        while handle.generation() != 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(get_from(VNET, addr, "next.example", &[]).await.status, 200);
    let r = ops(ops_addr, "/readyz").await;
    assert_eq!(r.text(), "ready generation=2\n");
    // A refused reload is counted too.
    std::fs::write(&path, "resource = ").unwrap();
    assert!(handle.reload().is_err());
    let m = ops(ops_addr, "/metrics").await.text();
    assert_eq!(value(&m, r#"portcullis_config_reloads_total{outcome="ok"}"#), 1.0, "{m}");
    assert_eq!(value(&m, r#"portcullis_config_reloads_total{outcome="failed"}"#), 1.0, "{m}");
    assert_eq!(value(&m, "portcullis_config_generation"), 2.0, "{m}");

    // The shutdown drain: a request in flight keeps it open; meanwhile the server is not ready.
    let slow = tokio::spawn(async move {
        h1(tcp_from(VNET, addr).await, get("/slow", Some("api.example"), &[])).await.map(|r| r.status)
    });
    bounded("slow request in flight", async {
        let m = loop {
            let m = ops(ops_addr, "/metrics").await.text();
            if value(&m, r#"portcullis_connections_open{listener="http"}"#) >= 1.0 {
                break m;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(m.contains("portcullis_connections_open"));
    })
    .await;
    stop_tx.send(()).unwrap();
    bounded("not ready while draining", async {
        while ops(ops_addr, "/readyz").await.status != 503 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(ops(ops_addr, "/healthz").await.status, 200, "alive while draining");
    release_tx.send(true).unwrap();
    assert_eq!(bounded("slow request", slow).await.unwrap().unwrap(), 200, "the request in flight finished");
    bounded("server end", server).await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
