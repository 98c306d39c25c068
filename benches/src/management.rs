//! The management API on a running server (the serve helper, `[management]` enabled, a bearer token):
//!
//! - `vhost_created_to_handshake_ms`: a virtual host created with `PUT /v1/virtual-hosts/{name}`; from the
//!   API's answer to the first completed TLS handshake with that name as SNI (there is no default virtual
//!   host, so an unknown name is refused: a completed handshake is the new host served). Median and worst
//!   of 20 (target ≤ 10 ms).
//! - `changes_under_load_throughput_ratio`: wrk drives the gateway (`wrk -t1 -c16 -d5s`, one private
//!   caller's `GET` on the gateway's host name) while 100 API changes (an IP set replaced, alternately)
//!   are made; requests per second against a run without changes, in alternating pairs; the median
//!   ratio (target ≥ 0.9) and the failed requests (wrk's non-2xx answers and socket errors, target 0).
//!   Skipped when `wrk` is not installed (`scripts/wrk-compare.sh` says how to get it).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use portcullis::config::GatewayConfig;
use portcullis::serve::Bound;
use rcgen::{CertificateParams, KeyPair};

use crate::stats::report;

const TOKEN: &str = "bench-admin-token-0123456789";
const VHOSTS: usize = 20;
const CHANGES: usize = 100;
const PAIRS: usize = 2;
const SECONDS: u64 = 5;

fn config(dir: &Path) -> String {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["*.bench.example".into(), "api.bench.example".into()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    std::fs::write(dir.join("server.crt"), cert.pem()).expect("write");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write");
    std::fs::write(dir.join("admin.token"), TOKEN).expect("write");
    format!(
        r#"resource = "Microsoft.ApiManagement/service/bench"

[[listener]]
name = "http"
address = "127.0.0.1:0"

[[listener]]
name = "https"
address = "127.0.0.1:0"
tls = true

[hosts.endpoint.gateway]
names = ["api.bench.example"]

[hosts.endpoint.management]
names = ["mgmt.bench.example"]

[ip.sets]
churn = ["10.0.0.0/8"]

[[keystore]]
name = "server"
cert = "{d}/server.crt"
key = "{d}/server.key"

[[virtual_host]]
name = "api"
hosts = ["api.bench.example"]
keystore = "server"

[management]
state_file = "{d}/state/management.json"
allow_from = ["127.0.0.1"]

[[management.grant]]
role = "admin"
token_file = "{d}/admin.token"
"#,
        d = dir.display()
    )
}

/// One API call over plain HTTP on the management host name: the status.
async fn api(addr: SocketAddr, method: &str, path: &str, body: String) -> u16 {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp)).await.expect("http");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "mgmt.bench.example")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let res = send.send_request(req).await.expect("response");
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await;
    status
}

fn tls_connector(dir: &Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(dir.join("server.crt")).expect("cert") {
        roots.add(der.expect("cert")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(portcullis::mtls::default_provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

/// `wrk` against the gateway host for `SECONDS`: requests per second and failed requests.
fn wrk(http: SocketAddr) -> (f64, u64) {
    let out = Command::new("wrk")
        .args(["-t1", "-c16", &format!("-d{SECONDS}s"), "--timeout", "2s", "-H", "Host: api.bench.example"])
        .arg(format!("http://{http}/"))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let number = |after: &str| -> Option<f64> {
        let rest = text.split(after).nth(1)?;
        rest.split_whitespace().next()?.trim_end_matches(',').parse().ok()
    };
    let rps = number("Requests/sec:").unwrap_or(0.0);
    let non_2xx = number("Non-2xx or 3xx responses:").unwrap_or(0.0);
    let errors: f64 = ["connect ", "read ", "write ", "timeout "].iter().filter_map(|k| number(k)).sum();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let failed = (non_2xx + errors) as u64;
    (rps, failed)
}

pub(crate) fn run() {
    let dir = std::env::temp_dir().join(format!("portcullis-bench-management-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config(&dir)).expect("write");
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let (config, source) = GatewayConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let bound = Bound::from_config(&config, &source).await.unwrap_or_else(|e| panic!("{e}"));
        let bound = bound.watch_interval(None);
        let addr = |name: &str| bound.local_addrs().into_iter().find(|(n, _)| n == name).expect("listener").1;
        let (http, https) = (addr("http"), addr("https"));
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(bound.serve(app, async move {
            let _ = stopped.await;
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;

        // 1. Created through the API → served by the next handshake.
        let tls = tls_connector(&dir);
        let mut times = Vec::new();
        for i in 0..VHOSTS {
            let name = format!("v{i}.bench.example");
            let body = format!(r#"{{"hosts": ["{name}"], "keystore": "server"}}"#);
            let status = api(http, "PUT", &format!("/v1/virtual-hosts/v{i}"), body).await;
            assert_eq!(status, 201, "virtual host v{i}");
            let answered = Instant::now();
            let mut done = None;
            for _ in 0..1000 {
                let tcp = tokio::net::TcpStream::connect(https).await.expect("connect");
                let sni = rustls::pki_types::ServerName::try_from(name.clone()).expect("name");
                if tls.connect(sni, tcp).await.is_ok() {
                    done = Some(answered.elapsed());
                    break;
                }
            }
            let took = done.unwrap_or_else(|| panic!("v{i} was never served"));
            times.push(took.as_secs_f64() * 1e3);
        }
        let (med, worst) = median(times);
        report("vhost_created_to_handshake_ms", med, "ms");
        report("vhost_created_to_handshake_ms_worst", worst, "ms");

        // 2. 100 changes while wrk drives the gateway, against runs without changes.
        if Command::new("wrk").arg("--version").output().is_err() {
            eprintln!("wrk is not installed: changes_under_load skipped (see scripts/wrk-compare.sh)");
        } else {
            let mut ratios = Vec::new();
            let mut failed_total = 0;
            let mut changes_made = 0;
            for pair in 0..PAIRS {
                let mut quiet = 0.0;
                let mut busy = 0.0;
                // Alternate which run goes first, so a change of machine load hits both sides of a pair.
                for busy_run in if pair % 2 == 0 { [false, true] } else { [true, false] } {
                    let load = tokio::task::spawn_blocking(move || wrk(http));
                    if busy_run {
                        let gap = Duration::from_millis(SECONDS * 1000 * 8 / 10 / CHANGES as u64);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        for c in 0..CHANGES {
                            let body = format!(r#"{{"entries": ["10.{}.0.0/16"]}}"#, c % 200);
                            assert_eq!(api(http, "PUT", "/v1/ip/sets/churn", body).await, 200, "change {c}");
                            changes_made += 1;
                            tokio::time::sleep(gap).await;
                        }
                    }
                    let (rps, failed) = load.await.expect("wrk");
                    failed_total += failed;
                    if busy_run { busy = rps } else { quiet = rps }
                }
                ratios.push(busy / quiet);
                report(&format!("pair_{pair}_quiet"), quiet, "requests/s");
                report(&format!("pair_{pair}_with_changes"), busy, "requests/s");
            }
            let (med, _) = median(ratios);
            #[allow(clippy::cast_precision_loss)]
            report("changes_made", changes_made as f64, "changes");
            report("changes_under_load_throughput_ratio", med, "ratio");
            #[allow(clippy::cast_precision_loss)]
            report("changes_under_load_failed_requests", failed_total as f64, "requests");
        }
        let _ = stop.send(());
        let _ = server.await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
