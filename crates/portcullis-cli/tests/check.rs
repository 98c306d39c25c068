//! `portcullis check-chain` (golden files, one per refusal kind) and `portcullis check-config`.

mod common;

use common::{Certs, golden, normalize, run};
use portcullis_test_support::pki::{CA_EXT, CLIENT_EXT, LEAF_EXT};

#[test]
fn check_chain_judges_certificate_by_certificate() {
    let certs = Certs::new();
    let pki = &certs.pki;
    // An intermediate CA and a leaf under it, presented together.
    let inter = pki.ca_of("inter", "ec", Some(&certs.ca));
    let leaf = pki.leaf("inter-leaf", "ec", &inter);
    std::fs::write(pki.path("inter-chain.pem"), format!("{}{}", leaf.cert_pem, inter.cert_pem)).unwrap();
    // An "intermediate" that is not a CA.
    let not_ca = pki.issue_named("not-ca", "ec", Some(&certs.ca), &["-sha256"], CLIENT_EXT);
    let under = pki.leaf("under-not-ca", "ec", &not_ca);
    std::fs::write(pki.path("not-ca-chain.pem"), format!("{}{}", under.cert_pem, not_ca.cert_pem)).unwrap();
    // A CA certificate used as a client, a server-only leaf, an expired leaf, a P-384 leaf.
    pki.issue_named("ca-leaf", "ec", Some(&certs.ca), &["-sha256"], CA_EXT);
    pki.issue_named(
        "server-only",
        "ec",
        Some(&certs.ca),
        &["-sha256"],
        "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    let rcgen_ca = pki.rcgen_issue("rcgen-ca", None, true, (2020, 1, 1), (2040, 1, 1));
    pki.rcgen_issue("expired", Some(&rcgen_ca), false, (2020, 1, 1), (2021, 1, 1));
    pki.issue_named("p384", "ec:P-384", Some(&certs.ca), &["-sha384"], LEAF_EXT);
    let trust = certs.path("client-ca.crt");
    let rcgen_trust = certs.path("rcgen-ca.crt");
    let cases: &[(&str, &str, &str, &[&str], i32)] = &[
        ("accepted", "good.crt", &trust, &[], 0),
        ("accepted-intermediate", "inter-chain.pem", &trust, &[], 0),
        ("refused-sha1", "sha1.crt", &trust, &[], 1),
        ("refused-rsa1024", "rsa1024.crt", &trust, &[], 1),
        ("refused-unknown-issuer", "stranger.crt", &trust, &[], 1),
        ("refused-intermediate-not-ca", "not-ca-chain.pem", &trust, &[], 1),
        ("refused-ca-leaf", "ca-leaf.crt", &trust, &[], 1),
        ("refused-eku", "server-only.crt", &trust, &[], 1),
        ("refused-expired", "expired.crt", &rcgen_trust, &[], 1),
        ("refused-curve-cnsa", "good.crt", &trust, &["--policy", "cnsa"], 1),
    ];
    for (name, chain, truststore, extra, code) in cases {
        let chain = certs.path(chain);
        let mut args = vec!["check-chain", "--truststore", truststore];
        args.extend_from_slice(extra);
        args.push(&chain);
        let r = run(&args);
        assert_eq!(r.code, *code, "{name}: {}{}", r.stdout, r.stderr);
        golden(&format!("check-chain-{name}"), &normalize(&r.stdout, pki.dir()));
    }
}

#[test]
fn check_chain_reads_the_virtual_hosts_policy_and_truststore_from_the_config() {
    let certs = Certs::new();
    let config = certs.config("http://127.0.0.1:3000");
    let r = run(&[
        "check-chain",
        "--config",
        &config,
        "--virtual-host",
        "partner",
        "--json",
        &certs.path("good.crt"),
    ]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v["verdict"], "accepted");
    assert_eq!(v["truststore"]["name"], "clients");
    assert_eq!(v["certificates"][0]["key"], "EC P-256");
    assert_eq!(v["certificates"][0]["policy"]["verdict"], "pass");
    let r = run(&[
        "check-chain",
        "--config",
        &config,
        "--virtual-host",
        "partner",
        "--json",
        &certs.path("sha1.crt"),
    ]);
    assert_eq!(r.code, 1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v["refusal"]["rule"], "signature");
    assert_eq!(v["certificates"][0]["policy"]["rule"], "signature");
    // No truststore, an unknown virtual host, a missing file: input errors.
    assert_eq!(run(&["check-chain", &certs.path("good.crt")]).code, 2);
    assert_eq!(
        run(&["check-chain", "--config", &config, "--virtual-host", "nope", &certs.path("good.crt")]).code,
        2
    );
    assert_eq!(
        run(&["check-chain", "--truststore", &certs.path("client-ca.crt"), "/nonexistent.pem"]).code,
        2
    );
    assert_eq!(
        run(&[
            "check-chain",
            "--truststore",
            &certs.path("client-ca.crt"),
            "--policy",
            "lenient",
            &certs.path("good.crt")
        ])
        .code,
        2
    );
}

#[test]
fn check_config_exits_0_or_1_with_file_line_col() {
    let certs = Certs::new();
    let config = certs.config("http://127.0.0.1:3000");
    let r = run(&["check-config", &config]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(": ok: listeners [http 127.0.0.1:0, https 127.0.0.1:0, lb 127.0.0.1:0]"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("gateway -> http://127.0.0.1:3000 (HTTP/1.1)"), "{}", r.stdout);

    let bad = |name: &str, text: String| {
        let path = certs.pki.path(name);
        std::fs::write(&path, text).unwrap();
        let r = run(&["check-config", &path.display().to_string()]);
        assert_eq!(r.code, 1, "{name}: {}", r.stdout);
        normalize(r.stderr.trim_end(), certs.pki.dir())
    };
    let text = common::gateway_toml("https://127.0.0.1:3000");
    let line = text.lines().position(|l| l.starts_with("upstream = \"https")).unwrap() + 1;
    let e = bad("https.toml", text);
    assert!(
        e.starts_with(&format!(
            "<dir>/https.toml:{line}:12: hosts.endpoint.gateway.upstream: https upstreams"
        )),
        "{e}"
    );
    let e = bad("path.toml", common::gateway_toml("http://127.0.0.1:3000/api"));
    assert!(e.contains("hosts.endpoint.gateway.upstream: `http://127.0.0.1:3000/api`: no path"), "{e}");
    let e = bad("unix.toml", common::gateway_toml("unix:run/app.sock"));
    assert!(e.contains("`unix:run/app.sock`: unix:/absolute/path/of/the/socket expected"), "{e}");
    let e = bad(
        "proto.toml",
        common::gateway_toml("http://127.0.0.1:3000").replace(
            "upstream = \"http://127.0.0.1:3000\"\n\n[hosts.endpoint.partner]",
            "upstream = \"http://127.0.0.1:3000\"\nupstream_protocol = \"h3\"\n\n[hosts.endpoint.partner]",
        ),
    );
    assert!(e.contains("hosts.endpoint.gateway.upstream_protocol: `h3`: http1 or h2c"), "{e}");
    let e = bad(
        "header.toml",
        format!(
            "{}\n[sidecar]\norigin_header = \"x-forwarded-for\"\n",
            common::gateway_toml("http://127.0.0.1:3000")
        ),
    );
    assert!(e.contains("sidecar.origin_header: `x-forwarded-for` is a header the proxy sets"), "{e}");
    let e = bad(
        "timeout.toml",
        format!("{}\n[sidecar]\nresponse_timeout_ms = 0\n", common::gateway_toml("http://127.0.0.1:3000")),
    );
    assert!(e.contains("sidecar.response_timeout_ms: must be at least 1 ms"), "{e}");
    // The library's own checks, unknown keys included.
    let e = bad(
        "unknown.toml",
        common::gateway_toml("http://127.0.0.1:3000")
            .replace("[public_access]", "[public_access]\nenabeld = true"),
    );
    assert!(e.contains(":public_access.enabeld:") || e.contains(": public_access.enabeld:"), "{e}");
    // The management API's table is checked as a server start checks it.
    let e = bad(
        "management.toml",
        format!(
            "{}\n[management]\nendpoint = \"gateway\"\nmode = \"cluster\"\n",
            common::gateway_toml("http://127.0.0.1:3000")
        ),
    );
    assert!(e.contains("management.mode: `cluster`: single or fleet"), "{e}");
    assert_eq!(run(&["check-config", "/nonexistent.toml"]).code, 1);
    assert_eq!(run(&["check-config"]).code, 2);
}
