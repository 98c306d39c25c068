//! The `mtls` group: what the client-chain policy costs on top of rustls-webpki.
//!
//! - `handshake_policy_ratio`: full TLS 1.3 handshakes with client auth (RSA-2048 client chain of two
//!   certificates, P-256 server certificate, ring), server verifier = `PolicyVerifier` against plain
//!   `WebPkiClientVerifier` over the same truststore, same client, same run, interleaved batches; wall-time
//!   medians. Target ≤ 1.03.
//! - `handshake_policy_ratio_callgrind`: the same ratio in instructions, when `valgrind` is installed: this
//!   binary re-runs itself under callgrind (`PORTCULLIS_MTLS_CALLGRIND=policy|plain:N`) for 8 and 24
//!   handshakes of each kind and takes the difference, so setup is not counted.
//! - `acceptor_handshake_ratio`: the whole `MtlsAcceptor` (ClientHello peek, SNI lookup, per-connection
//!   configuration, policy, identity) against tokio-rustls' `TlsAcceptor` with the plain verifier, over
//!   in-process pipes.
//! - `weak_reject_cost_ratio`: refusing a chain whose leaf is RSA-1024 against verifying the good RSA-2048
//!   chain (verifier calls). Target ≤ 0.10.
//! - `policy_check_us`: the parse-only policy checks of a verification (`PolicyVerifier::check_policy`) on
//!   a 3-certificate path (leaf, two intermediates) and its anchor. Target ≤ 10 µs.
//! - `reverse_order_ratio`: the whole verification (`PolicyVerifier::verify`) of that 3-certificate chain
//!   with the intermediates presented in reverse order, against in order (`verify_3_reverse_us` /
//!   `verify_3_in_order_us`). The policy runs on the path webpki built, so the order must not cost more.
//!   Target ≤ 1.10.
//!
//! Certificates are made with the `openssl` CLI (ring cannot generate RSA keys) in a temporary directory.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use portcullis_mtls::{
    ChainPolicy, ClientAuth, Keystore, MtlsAcceptor, PolicyVerifier, Truststore, VirtualHost, VirtualHosts,
};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection};

use crate::stats::{median_ns, report};

/// Prints a ratio with three decimals (the targets are a few percent).
fn report_ratio(name: &str, value: f64) {
    println!("{name} {value:.3} ratio");
}

const CA_EXT: &str = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n";
const LEAF_EXT: &str =
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n";
const SERVER_EXT: &str =
    "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:a.test\n";

struct Pem {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    cert_pem: String,
}

struct Certs {
    dir: PathBuf,
    root: Pem,
    int: Pem,
    int2: Pem,
    good: Pem,
    deep: Pem,
    weak: Pem,
    server_ca: Pem,
    server: Pem,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out =
        Command::new("openssl").args(args).current_dir(dir).output().expect("the openssl CLI is needed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn issue(dir: &Path, name: &str, key: &str, issuer: Option<&str>, ext: &str) -> Pem {
    let (alg, param) = key.split_once(':').unwrap_or((key, ""));
    let keyfile = format!("{name}.key");
    match alg {
        "rsa" => openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                &format!("rsa_keygen_bits:{param}"),
                "-out",
                &keyfile,
            ],
        ),
        _ => openssl(
            dir,
            &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &keyfile],
        ),
    }
    std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext");
    openssl(
        dir,
        &["req", "-new", "-key", &keyfile, "-subj", &format!("/CN={name}"), "-out", &format!("{name}.csr")],
    );
    let mut args = vec![
        "x509".to_string(),
        "-req".into(),
        "-in".into(),
        format!("{name}.csr"),
        "-days".into(),
        "30".into(),
        "-sha256".into(),
        "-extfile".into(),
        format!("{name}.ext"),
        "-out".into(),
        format!("{name}.crt"),
        "-set_serial".into(),
        format!("{}", name.len() * 7919 + 1),
    ];
    match issuer {
        Some(ca) => args.extend(["-CA".into(), format!("{ca}.crt"), "-CAkey".into(), format!("{ca}.key")]),
        None => args.extend(["-signkey".into(), keyfile.clone()]),
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    openssl(dir, &args);
    let cert_pem = std::fs::read_to_string(dir.join(format!("{name}.crt"))).expect("crt");
    let key_pem = std::fs::read_to_string(dir.join(&keyfile)).expect("key");
    Pem {
        cert: CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("crt pem"),
        key: PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key pem"),
        cert_pem,
    }
}

fn make_certs() -> Certs {
    let dir = std::env::temp_dir().join(format!("portcullis-bench-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let root = issue(&dir, "root", "rsa:2048", None, CA_EXT);
    let int = issue(&dir, "int", "rsa:2048", Some("root"), CA_EXT);
    let good = issue(&dir, "good", "rsa:2048", Some("int"), LEAF_EXT);
    let int2 = issue(&dir, "int2", "rsa:2048", Some("int"), CA_EXT);
    let deep = issue(&dir, "deep", "rsa:2048", Some("int2"), LEAF_EXT);
    let weak = issue(&dir, "weak", "rsa:1024", Some("int"), LEAF_EXT);
    let server_ca = issue(&dir, "server-ca", "ec", None, CA_EXT);
    let server = issue(&dir, "server", "ec", Some("server-ca"), SERVER_EXT);
    Certs { dir, root, int, int2, good, deep, weak, server_ca, server }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn truststore(c: &Certs) -> Truststore {
    let mut ts = Truststore::new("clients");
    ts.add_pem(&c.root.cert_pem, "root.crt").expect("anchor");
    ts
}

fn policy_verifier(c: &Certs) -> Arc<PolicyVerifier> {
    Arc::new(PolicyVerifier::builder(ChainPolicy::default(), truststore(c)).build().expect("verifier"))
}

fn plain_verifier(c: &Certs) -> Arc<dyn ClientCertVerifier> {
    let mut roots = RootCertStore::empty();
    roots.add(c.root.cert.clone()).expect("root");
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), portcullis_mtls::default_provider())
        .build()
        .expect("webpki")
}

fn server_config(c: &Certs, verifier: Arc<dyn ClientCertVerifier>) -> Arc<ServerConfig> {
    let cfg = ServerConfig::builder_with_provider(portcullis_mtls::default_provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![c.server.cert.clone()], c.server.key.clone_key())
        .expect("server cert");
    Arc::new(cfg)
}

fn client_config(c: &Certs) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(c.server_ca.cert.clone()).expect("root");
    let mut cfg = ClientConfig::builder_with_provider(portcullis_mtls::default_provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![c.good.cert.clone(), c.int.cert.clone()], c.good.key.clone_key())
        .expect("client cert");
    cfg.resumption = Resumption::disabled();
    Arc::new(cfg)
}

fn pump(from: &mut Connection, to: &mut Connection, buf: &mut Vec<u8>) {
    buf.clear();
    while from.wants_write() {
        from.write_tls(buf).expect("write_tls");
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).expect("read_tls");
    }
    to.process_new_packets().expect("handshake");
}

/// One full in-memory handshake.
fn handshake(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) {
    let name = ServerName::try_from("a.test").expect("name");
    let mut c = Connection::Client(ClientConnection::new(client.clone(), name).expect("client"));
    let mut s = Connection::Server(ServerConnection::new(server.clone()).expect("server"));
    let mut buf = Vec::with_capacity(8192);
    for _ in 0..16 {
        if !c.is_handshaking() && !s.is_handshaking() {
            break;
        }
        pump(&mut c, &mut s, &mut buf);
        pump(&mut s, &mut c, &mut buf);
    }
    assert!(!c.is_handshaking() && !s.is_handshaking(), "handshake did not complete");
    black_box((c, s));
}

/// Median per-handshake nanoseconds of `a` and `b`, and the median of the per-round ratios a/b: batches
/// are interleaved (alternating which goes first), so a change of machine load hits both sides of a round.
fn interleaved(rounds: usize, per: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64, f64) {
    let (mut ta, mut tb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let run = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..per {
            f();
        }
        t.elapsed().as_nanos() as f64 / per as f64
    };
    for round in 0..rounds {
        let (x, y) = if round % 2 == 0 {
            let x = run(&mut a);
            (x, run(&mut b))
        } else {
            let y = run(&mut b);
            (run(&mut a), y)
        };
        ta.push(x);
        tb.push(y);
        ratios.push(x / y);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut ta), median(&mut tb), median(&mut ratios))
}

/// Under callgrind: `policy:N` or `plain:N` handshakes, then exit.
fn callgrind_child(spec: &str, dir: &str) {
    let (kind, n) = spec.split_once(':').expect("kind:n");
    let n: usize = n.parse().expect("n");
    let certs = load_certs(Path::new(dir));
    if kind == "acceptor" || kind == "tlsacceptor" {
        let b = AcceptorBench::new(&certs).expect("acceptor bench");
        for _ in 0..n {
            if kind == "acceptor" { b.mtls() } else { b.plain() }
        }
    } else {
        let verifier: Arc<dyn ClientCertVerifier> =
            if kind == "policy" { policy_verifier(&certs) } else { plain_verifier(&certs) };
        let server = server_config(&certs, verifier);
        let client = client_config(&certs);
        for _ in 0..n {
            handshake(&server, &client);
        }
    }
    std::mem::forget(certs); // the parent owns the directory
}

fn load_certs(dir: &Path) -> Certs {
    let load = |name: &str| {
        let cert_pem = std::fs::read_to_string(dir.join(format!("{name}.crt"))).expect("crt");
        let key_pem = std::fs::read_to_string(dir.join(format!("{name}.key"))).expect("key");
        Pem {
            cert: CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("crt"),
            key: PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key"),
            cert_pem,
        }
    };
    Certs {
        dir: dir.to_path_buf(),
        root: load("root"),
        int: load("int"),
        int2: load("int2"),
        good: load("good"),
        deep: load("deep"),
        weak: load("weak"),
        server_ca: load("server-ca"),
        server: load("server"),
    }
}

/// Instructions counted by callgrind for one run of this binary in child mode.
fn callgrind_instructions(spec: &str, dir: &Path) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let out_file = dir.join(format!("callgrind.{}.out", spec.replace(':', "-")));
    let out = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(exe)
        .arg("mtls")
        .env("PORTCULLIS_MTLS_CALLGRIND", spec)
        .env("PORTCULLIS_MTLS_CERTS", dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    // "==pid== Collected : 123456"
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| l.split("Collected :").nth(1).and_then(|n| n.trim().parse().ok()))
}

struct AcceptorBench {
    rt: tokio::runtime::Runtime,
    mtls: MtlsAcceptor,
    plain: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl AcceptorBench {
    fn new(certs: &Certs) -> Option<Self> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        let hosts = VirtualHosts::new();
        hosts
            .put_keystore(Keystore::new("srv", vec![certs.server.cert.clone()], certs.server.key.clone_key()))
            .ok()?;
        hosts.put_truststore(truststore(certs)).ok()?;
        hosts
            .put(
                VirtualHost::new("a", ["a.test"], "srv")
                    .client_auth(ClientAuth::Required)
                    .truststore("clients"),
            )
            .ok()?;
        let mtls = MtlsAcceptor::new(hosts);
        let plain = tokio_rustls::TlsAcceptor::from(server_config(certs, plain_verifier(certs)));
        let connector = tokio_rustls::TlsConnector::from(client_config(certs));
        let name = ServerName::try_from("a.test").ok()?;
        Some(AcceptorBench { rt, mtls, plain, connector, name })
    }

    /// One handshake through `MtlsAcceptor`.
    fn mtls(&self) {
        self.rt.block_on(async {
            let (c, s) = tokio::io::duplex(16 * 1024);
            let (client, server) =
                tokio::join!(self.connector.connect(self.name.clone(), c), self.mtls.accept(s));
            black_box((client.expect("client"), server.expect("server")));
        })
    }

    /// One handshake through tokio-rustls' `TlsAcceptor` with the plain verifier.
    fn plain(&self) {
        self.rt.block_on(async {
            let (c, s) = tokio::io::duplex(16 * 1024);
            let (client, server) =
                tokio::join!(self.connector.connect(self.name.clone(), c), self.plain.accept(s));
            black_box((client.expect("client"), server.expect("server")));
        })
    }
}

fn acceptor_ratio(certs: &Certs) -> Option<(f64, f64, f64)> {
    let b = AcceptorBench::new(certs)?;
    Some(interleaved(21, 10, || b.mtls(), || b.plain()))
}

/// Runs the group and prints its figures.
pub(crate) fn run() {
    if let (Ok(spec), Ok(dir)) =
        (std::env::var("PORTCULLIS_MTLS_CALLGRIND"), std::env::var("PORTCULLIS_MTLS_CERTS"))
    {
        callgrind_child(&spec, &dir);
        return;
    }
    let certs = make_certs();
    let verifier = policy_verifier(&certs);
    let now = UnixTime::now();
    let int = [certs.int.cert.clone()];

    // Sanity: the good chain passes, the weak one is refused for its key size.
    verifier.verify(&certs.good.cert, &int, now).map_err(|(r, _)| r).expect("good chain verifies");
    let (refusal, _) = verifier.verify(&certs.weak.cert, &int, now).expect_err("weak chain refused");
    assert_eq!(refusal.rule.code(), "rsa-key-size");

    // The 3-certificate chain: leaf, int2, int (root is the anchor), in order and reversed.
    let in_order = [certs.int2.cert.clone(), certs.int.cert.clone()];
    let reversed = [certs.int.cert.clone(), certs.int2.cert.clone()];
    verifier.verify(&certs.deep.cert, &reversed, now).map_err(|(r, _)| r).expect("reversed chain verifies");
    let policy_ns = median_ns(31, 2000, |_| {
        black_box(verifier.check_policy(black_box(&certs.deep.cert), black_box(&in_order), Some(0), now))
            .expect("policy");
    });
    report("policy_check_us", policy_ns / 1000.0, "us");
    let (rev, fwd, ratio) = interleaved(
        31,
        100,
        || {
            black_box(verifier.verify(black_box(&certs.deep.cert), black_box(&reversed), now))
                .map_err(|(r, _)| r)
                .expect("reversed");
        },
        || {
            black_box(verifier.verify(black_box(&certs.deep.cert), black_box(&in_order), now))
                .map_err(|(r, _)| r)
                .expect("in order");
        },
    );
    report("verify_3_in_order_us", fwd / 1000.0, "us");
    report("verify_3_reverse_us", rev / 1000.0, "us");
    report_ratio("reverse_order_ratio", ratio);

    let good_ns = median_ns(31, 200, |_| {
        black_box(verifier.verify(black_box(&certs.good.cert), &int, now)).map_err(|(r, _)| r).expect("good");
    });
    let weak_ns = median_ns(31, 2000, |_| {
        let _ = black_box(verifier.verify(black_box(&certs.weak.cert), &int, now));
    });
    report("good_chain_verify_us", good_ns / 1000.0, "us");
    report("weak_chain_reject_us", weak_ns / 1000.0, "us");
    report_ratio("weak_reject_cost_ratio", weak_ns / good_ns);

    let client = client_config(&certs);
    let with_policy = server_config(&certs, verifier.clone());
    let plain = server_config(&certs, plain_verifier(&certs));
    let (p, w, r) = interleaved(31, 20, || handshake(&with_policy, &client), || handshake(&plain, &client));
    report("handshake_policy_us", p / 1000.0, "us");
    report("handshake_plain_us", w / 1000.0, "us");
    report_ratio("handshake_policy_ratio", r);

    match acceptor_ratio(&certs) {
        Some((m, t, r)) => {
            report("acceptor_handshake_us", m / 1000.0, "us");
            report("tls_acceptor_handshake_us", t / 1000.0, "us");
            report_ratio("acceptor_handshake_ratio", r);
        }
        None => eprintln!("mtls: acceptor comparison could not run"),
    }

    let ir = |kind: &str, n: usize| callgrind_instructions(&format!("{kind}:{n}"), &certs.dir);
    match (ir("policy", 8), ir("policy", 24), ir("plain", 8), ir("plain", 24)) {
        (Some(p8), Some(p24), Some(w8), Some(w24)) if p24 > p8 && w24 > w8 => {
            let (p, w) = ((p24 - p8) as f64 / 16.0, (w24 - w8) as f64 / 16.0);
            report("handshake_policy_instructions", p, "instructions");
            report("handshake_plain_instructions", w, "instructions");
            report_ratio("handshake_policy_ratio_callgrind", p / w);
        }
        _ => eprintln!("mtls: valgrind not available; handshake_policy_ratio_callgrind skipped"),
    }
    match (ir("acceptor", 8), ir("acceptor", 24), ir("tlsacceptor", 8), ir("tlsacceptor", 24)) {
        (Some(a8), Some(a24), Some(t8), Some(t24)) if a24 > a8 && t24 > t8 => {
            let (a, t) = ((a24 - a8) as f64 / 16.0, (t24 - t8) as f64 / 16.0);
            report("acceptor_handshake_instructions", a, "instructions");
            report("tls_acceptor_handshake_instructions", t, "instructions");
            report_ratio("acceptor_handshake_ratio_callgrind", a / t);
        }
        _ => eprintln!("mtls: valgrind not available; acceptor_handshake_ratio_callgrind skipped"),
    }
}
