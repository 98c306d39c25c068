//! Reloading a large configuration: parse, build and swap one with 100,000 IP rule entries, 1,000 host
//! names and 50 TLS virtual hosts (50 keystores of P-256 certificates and keys, one client truststore), the
//! way a running server does on SIGHUP or a file change (`ServeHandle::reload`: read the file, parse,
//! check and build everything, then swap the virtual hosts, the listener's accept path and the request
//! rules).
//!
//! Figures (median and worst of 7 reloads after one warm-up):
//! - `reload_100k_ip_1k_hosts_50_vhosts`: the whole reload (target ≤ 250 ms);
//! - `parse_only`, `build_only`: its parts, without the swap.
//!
//! Then the same server serves a plain axum handler on its HTTP listener and wrk (`-t1 -c16`, 3 s per
//! run, over loopback) drives it in alternating runs, quiet and with the configuration reloaded every
//! second from another thread (SIGHUP's path: `ServeHandle::reload`), 3 runs each:
//! - `reloading_over_quiet_throughput`: median requests/s reloading over median quiet (target ≥ 0.9);
//! - `failed_requests_while_reloading`: non-2xx answers and socket errors in the reloading runs (target 0);
//! - `reloads_under_load`: how many reloads those runs saw.
//!
//! Without wrk (Debian package `wrk`) the load part is skipped and says so.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use portcullis::config::GatewayConfig;
use portcullis::serve::Bound;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};

use crate::stats::{Rng, report};

const IP_RULES: usize = 100_000;
const HOST_NAMES: usize = 1_000;
const VHOSTS: usize = 50;
const RUNS: usize = 7;

/// Writes the certificates into `dir` and returns the configuration text.
fn config(dir: &Path) -> String {
    let mut t = String::from(
        "resource = \"Microsoft.ApiManagement/service/contoso\"\n\n[[listener]]\nname = \"https\"\naddress = \
         \"127.0.0.1:0\"\ntls = true\n\n[[listener]]\nname = \"http\"\naddress = \"127.0.0.1:0\"\n\n\
         [private_networks.networks]\nvnet = [\"10.0.0.0/8\"]\n\n",
    );
    // 1,000 host names over 20 endpoints; endpoint i is served by virtual host i % 50.
    for e in 0..20 {
        let _ = writeln!(t, "[hosts.endpoint.e{e}]\nnames = [");
        for n in 0..HOST_NAMES / 20 {
            let _ = writeln!(t, "  \"api-{n}.e{e}.v{}.example\",", e % VHOSTS);
        }
        let _ = writeln!(t, "]\n");
    }
    // 100,000 rule entries: random /32s and /24s, allow and deny.
    let mut rng = Rng::new(16);
    let _ = writeln!(t, "[ip.rules]\ndefault = \"allow\"\ndeny = [");
    for i in 0..IP_RULES / 2 {
        // Denied addresses in the lower half of the space, allowed ones in the upper: no entry contradicts another.
        let a = std::net::Ipv4Addr::from(rng.next_u32() & 0x7fff_ffff);
        if i % 4 == 0 {
            let o = a.octets();
            let _ = writeln!(t, "  \"{}.{}.{}.0/24\",", o[0], o[1], o[2]);
        } else {
            let _ = writeln!(t, "  \"{a}\",");
        }
    }
    let _ = writeln!(t, "]\nallow = [");
    for _ in 0..IP_RULES / 2 {
        let _ = writeln!(t, "  \"{}\",", std::net::Ipv4Addr::from(rng.next_u32() | 0x8000_0000));
    }
    let _ = writeln!(t, "]\n");
    // One client CA; 50 server certificates, one per virtual host.
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(vec![]).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca.self_signed(&ca_key).expect("ca");
    std::fs::write(dir.join("ca.crt"), ca.pem()).expect("write");
    let _ =
        writeln!(t, "[[truststore]]\nname = \"clients\"\ncerts = [\"{}\"]\n", dir.join("ca.crt").display());
    for v in 0..VHOSTS {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![format!("*.v{v}.example")])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        std::fs::write(dir.join(format!("v{v}.crt")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("v{v}.key")), key.serialize_pem()).expect("write");
        let _ = writeln!(
            t,
            "[[keystore]]\nname = \"v{v}\"\ncert = \"{d}/v{v}.crt\"\nkey = \"{d}/v{v}.key\"\n\n\
             [[virtual_host]]\nname = \"v{v}\"\nhosts = [\"v{v}.example\", \"*.v{v}.example\"]\nkeystore = \"v{v}\"\n\
             client_auth = \"optional\"\ntruststore = \"clients\"\n{}\n",
            if v == 0 { "default = true" } else { "" },
            d = dir.display(),
        );
    }
    t
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    report(name, ms[ms.len() / 2], "ms");
    report(&format!("{name}_worst"), ms[ms.len() - 1], "ms");
}

pub(crate) fn run() {
    let dir = std::env::temp_dir().join(format!("portcullis-bench-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("gateway.toml");
    let text = config(&dir);
    std::fs::write(&path, &text).expect("write");
    report("config_bytes", text.len() as f64, "bytes");

    let (config, source) = GatewayConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let bound = rt.block_on(Bound::from_config(&config, &source)).unwrap_or_else(|e| panic!("{e}"));
    let handle = bound.handle();

    let mut parse = Vec::new();
    let mut build = Vec::new();
    let mut reload = Vec::new();
    for run in 0..=RUNS {
        let t = Instant::now();
        let (c, s) = GatewayConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let parsed = t.elapsed();
        let t = Instant::now();
        let built = c.build(&s).unwrap_or_else(|e| panic!("{e}"));
        let b = t.elapsed();
        drop(built);
        let t = Instant::now();
        let generation = handle.reload().unwrap_or_else(|e| panic!("{e}"));
        let r = t.elapsed();
        assert_eq!(generation, run as u64 + 2);
        if run > 0 {
            parse.push(parsed.as_secs_f64() * 1e3);
            build.push(b.as_secs_f64() * 1e3);
            reload.push(r.as_secs_f64() * 1e3);
        }
    }
    summary("parse_only", parse);
    summary("build_only", build);
    summary("reload_100k_ip_1k_hosts_50_vhosts", reload);
    under_load(&rt, bound);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One wrk run: requests per second, and failed requests (non-2xx answers and socket errors).
fn wrk(url: &str, host: &str) -> Option<(f64, u64)> {
    let out = Command::new("wrk")
        .args(["-t1", "-c16", "-d3s", "--timeout", "2s", "-H"])
        .arg(format!("Host: {host}"))
        .arg(url)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field =
        |label: &str| text.lines().find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_owned()));
    let rps: f64 = field("Requests/sec:")?.parse().ok()?;
    let non_2xx: u64 = field("Non-2xx or 3xx responses:").and_then(|v| v.parse().ok()).unwrap_or(0);
    // "Socket errors: connect 0, read 0, write 0, timeout 0"
    let socket: u64 = field("Socket errors:")
        .map_or(0, |v| v.split(',').filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok()).sum());
    Some((rps, non_2xx + socket))
}

fn under_load(rt: &tokio::runtime::Runtime, bound: Bound) {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("reload: wrk not installed (Debian package `wrk`); throughput while reloading skipped");
        return;
    }
    let handle = bound.handle();
    let http = bound.local_addrs().into_iter().find(|(n, _)| n == "http").expect("http listener").1;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let served = rt.spawn(bound.serve(app, async move {
        let _ = stopped.await;
    }));
    // Requests come from 127.0.0.1 (allowed: every denied entry is in 0.0.0.0/1 but none covers it, and
    // the check below makes sure) for a host of endpoint e0.
    let url = format!("http://{http}/");
    let host = "api-0.e0.v0.example";
    let check = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Host: {host}"))
        .arg(&url)
        .output();
    if let Ok(out) = check
        && out.stdout != b"200"
    {
        panic!("reload: the benchmark request is not served: {}", String::from_utf8_lossy(&out.stdout));
    }
    let (mut quiet, mut reloading, mut failed) = (Vec::new(), Vec::new(), 0);
    let reloads = Arc::new(AtomicUsize::new(0));
    for round in 0..6 {
        let reload_now = round % 2 == 1;
        let running = Arc::new(AtomicBool::new(true));
        let reloader = reload_now.then(|| {
            let (handle, running, reloads) = (handle.clone(), running.clone(), reloads.clone());
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut next = Duration::from_millis(500);
                while running.load(Ordering::Relaxed) {
                    if start.elapsed() >= next {
                        handle.reload().unwrap_or_else(|e| panic!("{e}"));
                        reloads.fetch_add(1, Ordering::Relaxed);
                        next += Duration::from_secs(1);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        });
        let (rps, fails) = wrk(&url, host).expect("wrk output");
        running.store(false, Ordering::Relaxed);
        if let Some(r) = reloader {
            r.join().expect("reloader");
        }
        if reload_now {
            reloading.push(rps);
            failed += fails;
        } else {
            quiet.push(rps);
            failed += fails;
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (q, r) = (median(&mut quiet), median(&mut reloading));
    report("quiet_requests_per_s", q.round(), "req/s");
    report("reloading_requests_per_s", r.round(), "req/s");
    report("reloading_over_quiet_throughput", r / q, "ratio");
    report("failed_requests_while_reloading", failed as f64, "count");
    report("reloads_under_load", reloads.load(Ordering::Relaxed) as f64, "count");
    let _ = stop.send(());
    let _ = rt.block_on(served);
}
