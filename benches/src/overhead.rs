//! The `overhead` group: what the whole gateway stack costs per request over a bare axum application.
//!
//! Both are served in-process by hyper (HTTP/1.1 server connection, `TowerToHyperService`, the
//! connection's `ConnInfo` put into every request as `portcullis::serve` does) to a hyper HTTP/1.1 client
//! over a `tokio::io::duplex` pipe, on one current-thread runtime, one keep-alive connection, the same
//! request every time (see `overhead_stack.rs` for the stacks and the request). Everything but the stack
//! is the same on both sides, so differences are the stack's cost.
//!
//! Figures (each variant: `bare`, `stack` = `Gateway::layer()` with all layers on, `layers` = the five
//! layers added one by one with `Router::layer`):
//! - `<variant>_instructions_per_request`: callgrind instruction counts. This binary re-runs itself under
//!   `valgrind --tool=callgrind` (`PORTCULLIS_OVERHEAD_CALLGRIND=<variant>:<n>`) for 500 and 2 500 requests
//!   and divides the difference by 2 000, so setup (100k rules, connection, warm-up) cancels. Client,
//!   server, runtime and application are all counted; they are the same on both sides.
//! - `stack_extra_instructions_per_request` = stack − bare (target ≤ 2 500);
//!   `layers_extra_instructions_per_request` = layers − bare (information: most of it is axum's own price
//!   for five `Router::layer` calls).
//! - `layers_over_noop_instructions_per_request` = builder − noop (target ≤ 2 500): the five layers in one
//!   `ServiceBuilder` (`builder`) against five no-op layers in the same position (`noop`), which is what a
//!   user composing the layers by hand pays for portcullis itself.
//! - `<variant>_allocs_per_request` (counting allocator, 4 000 requests after warm-up) and
//!   `stack_extra_allocs_per_request` (target ≤ 2), `layers_extra_allocs_per_request`,
//!   `layers_over_noop_allocs_per_request` (target ≤ 2).
//! - `<variant>_wall_ns_per_request`: medians of 21 interleaved batches of 2 000 requests (information: a
//!   shared 2-core machine is noisy), and `stack_extra_wall_ns_per_request`.
//! - `stack_logged_allowed_wall_ns_per_request` and `stack_logged_refused_wall_ns_per_request`: the stack
//!   with a `tracing` fmt subscriber at info level writing every line to `io::sink` (formatting is paid,
//!   nothing is written), allowed requests and refused ones (a public client, 403) in interleaved
//!   batches; `refused_to_allowed_throughput` = allowed ns / refused ns (target ≥ 0.9). Refusals are logged
//!   through the per-kind log limit (`portcullis_core::ratelimit`).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use portcullis_core::{ConnInfo, ConnInfoLayer};
use tower_layer::Layer;
use tower_service::Service;

use crate::alloc::count_allocs;
use crate::overhead_stack::{CLIENT, HOST, Layers, app};
use crate::stats::report;

/// A public address: the stack refuses it (public network access is disabled).
const PUBLIC_CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
/// The peer of the in-process connection (the same as wrk's over loopback): a trusted proxy.
const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CALLGRIND_ENV: &str = "PORTCULLIS_OVERHEAD_CALLGRIND";
/// How the children run under valgrind: only [`callgrind_measured_requests`] is counted.
const CALLGRIND_ARGS: [&str; 3] =
    ["--tool=callgrind", "--collect-atstart=no", "--toggle-collect=*callgrind_measured_requests*"];
const CALLGRIND_SMALL: usize = 500;
const CALLGRIND_LARGE: usize = 2_500;
const WARM_UP: usize = 300;
const ALLOC_REQUESTS: usize = 4_000;
const ROUNDS: usize = 21;
const PER_BATCH: usize = 2_000;

/// The variants, in report order.
const VARIANTS: [&str; 5] = ["bare", "stack", "layers", "builder", "noop"];

/// One client connection to one in-process server connection.
struct Harness {
    rt: tokio::runtime::Runtime,
    sender: SendRequest<Empty<Bytes>>,
}

impl Harness {
    fn new<S, B>(svc: S) -> Harness
    where
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let svc =
            ConnInfoLayer::new(ConnInfo::new(PEER, Some("127.0.0.1:8080".parse().expect("addr")))).layer(svc);
        let sender = rt.block_on(async move {
            let (client_io, server_io) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(server_io), TowerToHyperService::new(svc));
                if let Err(e) = conn.await {
                    eprintln!("overhead: server connection failed: {e}");
                }
            });
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(client_io)).await.expect("handshake");
            tokio::spawn(async move {
                let _ = conn.await;
            });
            sender
        });
        Harness { rt, sender }
    }

    /// Sends `n` requests for `host` from `client`, one after the other; each must answer `expect`.
    fn send(&mut self, n: usize, host: &str, client: &str, expect: StatusCode) {
        let sender = &mut self.sender;
        self.rt.block_on(async {
            for _ in 0..n {
                sender.ready().await.expect("connection ready");
                let req = Request::get("/")
                    .header("host", host)
                    .header("user-agent", "portcullis-bench/1")
                    .header("accept", "*/*")
                    .header("x-forwarded-for", client)
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let res = sender.send_request(req).await.expect("response");
                let status = res.status();
                let body = res.into_body().collect().await.expect("body").to_bytes();
                assert_eq!(status, expect, "unexpected answer: {}", String::from_utf8_lossy(&body));
            }
        });
    }

    /// `n` allowed requests.
    fn run(&mut self, n: usize) {
        self.send(n, HOST, &CLIENT.to_string(), StatusCode::OK);
    }
}

fn harness(variant: &str, layers: &Layers) -> Harness {
    match variant {
        "bare" => Harness::new(app()),
        "stack" => Harness::new(layers.gateway().layer().layer(app())),
        "layers" => Harness::new(layers.router_layers(app())),
        // The five layers in one `ServiceBuilder`, in the gateway's order (the first added runs first).
        "builder" => Harness::new(
            tower::ServiceBuilder::new()
                .layer(portcullis_core::ResolveClientAddrLayer::new(layers.client.clone()))
                .layer(layers.hosts.clone())
                .layer(layers.origin.clone())
                .layer(layers.public.clone())
                .layer(layers.ip.clone())
                .service(app()),
        ),
        "noop" => {
            let noop = || tower::util::MapRequestLayer::new(std::convert::identity::<Request<Incoming>>);
            Harness::new(
                tower::ServiceBuilder::new()
                    .layer(noop())
                    .layer(noop())
                    .layer(noop())
                    .layer(noop())
                    .layer(noop())
                    .service(app()),
            )
        }
        // Probes for `scripts/cg-profile.sh` (not reported): the gate service with no gate (the fixed cost
        // of one gate run), and the gateway with the client-address gate alone.
        "plumbing" => {
            Harness::new(portcullis::core::GateLayer::new(portcullis::core::Rules::new([])).layer(app()))
        }
        "client" => Harness::new(
            portcullis::Gateway::builder().client_address(layers.client.clone()).build().layer().layer(app()),
        ),
        other => panic!("unknown variant {other}"),
    }
}

/// Under callgrind: warm up, then `n` requests of one variant, then exit.
fn callgrind_child(spec: &str) {
    let (variant, n) = spec.split_once(':').expect("variant:n");
    let n: usize = n.parse().expect("n");
    // `stack_prometheus`: the stack with the Prometheus recorder installed, as the binaries do.
    let variant = match variant.strip_suffix("_prometheus") {
        Some(v) => {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            metrics::set_global_recorder(recorder).expect("the first recorder");
            v
        }
        None => variant,
    };
    let layers = Layers::new();
    // `refused`: the stack answering a public client 403 (a probe for `scripts/cg-profile.sh`).
    let refused = variant == "refused";
    let mut h = harness(if refused { "stack" } else { variant }, &layers);
    h.run(WARM_UP);
    if refused {
        callgrind_measured_requests_refused(&mut h, n);
    } else {
        callgrind_measured_requests(&mut h, n);
    }
}

/// As [`callgrind_measured_requests`], for refused requests.
#[inline(never)]
fn callgrind_measured_requests_refused(h: &mut Harness, n: usize) {
    h.send(n, HOST, &PUBLIC_CLIENT.to_string(), StatusCode::FORBIDDEN);
}

/// The measured requests. Callgrind collects inside this function only (`--collect-atstart=no` and
/// `--toggle-collect`, see [`CALLGRIND_ARGS`]): building the layers (100k rules, hash tables with random
/// seeds) costs a different number of instructions in every process, and left in the count it would add
/// a few instructions of noise to the per-request difference of two runs.
#[inline(never)]
fn callgrind_measured_requests(h: &mut Harness, n: usize) {
    h.run(n);
}

/// Instructions counted by callgrind for one child run.
fn callgrind_instructions(variant: &str, n: usize) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let out = Command::new("valgrind")
        .args(CALLGRIND_ARGS)
        .arg("--callgrind-out-file=/dev/null")
        .arg(exe)
        .arg("overhead")
        .env(CALLGRIND_ENV, format!("{variant}:{n}"))
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("overhead: callgrind run {variant}:{n} failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    // "==pid== Collected : 123456"
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| l.split("Collected :").nth(1).and_then(|n| n.trim().parse().ok()))
}

/// Instructions per request of `variant`, from two child runs.
fn instructions_per_request(variant: &str) -> Option<f64> {
    let small = callgrind_instructions(variant, CALLGRIND_SMALL)?;
    let large = callgrind_instructions(variant, CALLGRIND_LARGE)?;
    (large > small).then(|| (large - small) as f64 / (CALLGRIND_LARGE - CALLGRIND_SMALL) as f64)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The `recorder` group: instructions per allowed request of the whole stack with the Prometheus recorder
/// installed (`metrics-exporter-prometheus`, as the demo installs it) over the same stack without a
/// recorder (the `metrics` facade's no-op): `prometheus_extra_instructions_per_request` (target ≤ 300).
pub(crate) fn run_recorder() {
    match (instructions_per_request("stack"), instructions_per_request("stack_prometheus")) {
        (Some(plain), Some(recorded)) => {
            report("stack_instructions_per_request", plain.round(), "instructions");
            report("stack_prometheus_instructions_per_request", recorded.round(), "instructions");
            report("prometheus_extra_instructions_per_request", (recorded - plain).round(), "instructions");
        }
        _ => eprintln!("recorder: valgrind not available; instruction counts skipped"),
    }
}

/// Runs the group and prints its figures.
pub(crate) fn run() {
    if let Ok(spec) = std::env::var(CALLGRIND_ENV) {
        callgrind_child(&spec);
        return;
    }
    let layers = Layers::new();
    let mut harnesses: Vec<Harness> = VARIANTS.iter().map(|v| harness(v, &layers)).collect();

    // The stacks are live: a public client and an unknown host are refused, the private client served; the
    // bare application and the no-op layers serve everyone.
    let public = PUBLIC_CLIENT.to_string();
    for (variant, h) in VARIANTS.iter().zip(harnesses.iter_mut()) {
        match *variant {
            "bare" | "noop" => h.send(1, HOST, &public, StatusCode::OK),
            _ => {
                h.send(1, HOST, &public, StatusCode::FORBIDDEN);
                h.send(1, "unknown.contoso.com", &CLIENT.to_string(), StatusCode::MISDIRECTED_REQUEST);
            }
        }
        h.run(WARM_UP);
    }

    // Allocations per request.
    let (_, probe) = count_allocs(|| std::hint::black_box(Box::new(std::hint::black_box(7u64))));
    assert!(probe >= 1, "the counting allocator is not installed");
    let allocs: Vec<f64> = harnesses
        .iter_mut()
        .map(|h| {
            let ((), n) = count_allocs(|| h.run(ALLOC_REQUESTS));
            n as f64 / ALLOC_REQUESTS as f64
        })
        .collect();

    // Wall time: interleaved batches, rotating which variant goes first.
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
    for round in 0..ROUNDS {
        for k in 0..VARIANTS.len() {
            let i = (round + k) % VARIANTS.len();
            let t = std::time::Instant::now();
            harnesses[i].run(PER_BATCH);
            wall[i].push(t.elapsed().as_nanos() as f64 / PER_BATCH as f64);
        }
    }
    let wall: Vec<f64> = wall.iter_mut().map(|v| median(v)).collect();

    // Refused against allowed, with a log subscriber that formats every line it is given.
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_ansi(false)
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .finish();
    let (allowed_ns, refused_ns) = tracing::subscriber::with_default(subscriber, || {
        let stack = &mut harnesses[1];
        let (mut allowed, mut refused) = (Vec::new(), Vec::new());
        stack.send(WARM_UP, HOST, &public, StatusCode::FORBIDDEN);
        for round in 0..ROUNDS {
            for k in 0..2 {
                let t = std::time::Instant::now();
                if (round + k) % 2 == 0 {
                    stack.run(PER_BATCH);
                    allowed.push(t.elapsed().as_nanos() as f64 / PER_BATCH as f64);
                } else {
                    stack.send(PER_BATCH, HOST, &public, StatusCode::FORBIDDEN);
                    refused.push(t.elapsed().as_nanos() as f64 / PER_BATCH as f64);
                }
            }
        }
        (median(&mut allowed), median(&mut refused))
    });
    drop(harnesses);

    for (i, v) in VARIANTS.iter().enumerate() {
        report(&format!("{v}_wall_ns_per_request"), wall[i], "ns");
    }
    report("stack_extra_wall_ns_per_request", wall[1] - wall[0], "ns");
    report("layers_extra_wall_ns_per_request", wall[2] - wall[0], "ns");
    report("layers_over_noop_wall_ns_per_request", wall[3] - wall[4], "ns");
    report("stack_logged_allowed_wall_ns_per_request", allowed_ns, "ns");
    report("stack_logged_refused_wall_ns_per_request", refused_ns, "ns");
    report("refused_to_allowed_throughput", allowed_ns / refused_ns, "ratio");
    for (i, v) in VARIANTS.iter().enumerate() {
        report(&format!("{v}_allocs_per_request"), allocs[i], "count");
    }
    report("stack_extra_allocs_per_request", allocs[1] - allocs[0], "count");
    report("layers_extra_allocs_per_request", allocs[2] - allocs[0], "count");
    report("layers_over_noop_allocs_per_request", allocs[3] - allocs[4], "count");

    let ir: Vec<Option<f64>> = VARIANTS.iter().map(|v| instructions_per_request(v)).collect();
    match (ir[0], ir[1], ir[2], ir[3], ir[4]) {
        (Some(bare), Some(stack), Some(layers), Some(builder), Some(noop)) => {
            report("bare_instructions_per_request", bare.round(), "instructions");
            report("stack_instructions_per_request", stack.round(), "instructions");
            report("layers_instructions_per_request", layers.round(), "instructions");
            report("stack_extra_instructions_per_request", (stack - bare).round(), "instructions");
            report("layers_extra_instructions_per_request", (layers - bare).round(), "instructions");
            report("builder_instructions_per_request", builder.round(), "instructions");
            report("noop_instructions_per_request", noop.round(), "instructions");
            report("layers_over_noop_instructions_per_request", (builder - noop).round(), "instructions");
        }
        _ => eprintln!("overhead: valgrind not available; instruction counts skipped"),
    }
}
