//! `portcullis explain`: one golden file per decision, refusals of every kind included, from the built
//! binary on a real configuration and real certificates.

mod common;

use common::{Certs, golden, normalize, run};

/// `(golden name, flags after --config)`.
const CASES: &[(&str, &[&str])] = &[
    ("served-vnet", &["--peer", "10.0.1.5", "--host", "api.contoso.example"]),
    (
        "served-via-trusted-proxy",
        &["--peer", "127.0.0.1", "--host", "api.contoso.example", "--header", "X-Forwarded-For: 10.0.4.4"],
    ),
    ("refused-unknown-host", &["--peer", "10.0.1.5", "--host", "www.example.org"]),
    ("refused-bare-ip", &["--peer", "10.0.1.5", "--host", "10.0.0.1"]),
    ("refused-public-access", &["--peer", "203.0.113.7", "--host", "api.contoso.example"]),
    (
        "refused-spoofed-forwarded",
        &[
            "--peer",
            "203.0.113.7",
            "--host",
            "api.contoso.example",
            "--header",
            "X-Forwarded-For: 10.0.1.5",
            "--header",
            "X-Portcullis-Origin: private; network=vnet",
        ],
    ),
    (
        "refused-bad-forwarded",
        &[
            "--peer",
            "127.0.0.1",
            "--host",
            "api.contoso.example",
            "--header",
            "X-Forwarded-For: not-an-address",
        ],
    ),
    ("refused-ip-rule", &["--peer", "10.0.66.5", "--host", "api.contoso.example"]),
    ("closed-connection-filter", &["--peer", "192.0.2.99", "--host", "api.contoso.example"]),
    (
        "served-private-endpoint",
        &[
            "--listener",
            "lb",
            "--peer",
            "127.0.0.1",
            "--proxy",
            "v2",
            "--source",
            "198.51.100.7",
            "--link-id",
            "7",
            "--vendor",
            "azure",
            "--host",
            "api.contoso.example",
        ],
    ),
    (
        "refused-pending-endpoint",
        &[
            "--listener",
            "lb",
            "--peer",
            "127.0.0.1",
            "--proxy",
            "v2",
            "--source",
            "198.51.100.7",
            "--link-id",
            "8",
            "--host",
            "api.contoso.example",
        ],
    ),
    (
        "refused-unknown-link",
        &[
            "--listener",
            "lb",
            "--peer",
            "127.0.0.1",
            "--proxy",
            "v2",
            "--source",
            "198.51.100.7",
            "--link-id",
            "99",
            "--host",
            "api.contoso.example",
        ],
    ),
    (
        "closed-untrusted-proxy",
        &[
            "--listener",
            "lb",
            "--peer",
            "203.0.113.9",
            "--proxy",
            "v1",
            "--source",
            "10.0.1.5",
            "--host",
            "api.contoso.example",
        ],
    ),
    (
        "closed-missing-proxy-header",
        &["--listener", "lb", "--peer", "127.0.0.1", "--host", "api.contoso.example"],
    ),
    (
        "closed-unknown-sni",
        &[
            "--listener",
            "https",
            "--peer",
            "10.0.1.5",
            "--sni",
            "www.example.org",
            "--host",
            "api.contoso.example",
        ],
    ),
    (
        "refused-sni-host-mismatch",
        &[
            "--listener",
            "https",
            "--peer",
            "10.0.1.5",
            "--sni",
            "api.contoso.example",
            "--host",
            "partner.contoso.example",
        ],
    ),
    ("refused-required-cert-only-over-tls", &["--peer", "10.0.1.5", "--host", "partner.contoso.example"]),
];

#[test]
fn every_decision_matches_its_golden_file() {
    let certs = Certs::new();
    let config = certs.config("http://127.0.0.1:3000");
    for (name, flags) in CASES {
        let mut args = vec!["explain", "--config", config.as_str()];
        args.extend_from_slice(flags);
        let r = run(&args);
        assert!(r.stderr.is_empty(), "{name}: {}", r.stderr);
        let expected_code = if name.starts_with("served") { 0 } else { 1 };
        assert_eq!(r.code, expected_code, "{name}: {}", r.stdout);
        golden(&format!("explain-{name}"), &normalize(&r.stdout, certs.pki.dir()));
    }
}

#[test]
fn client_certificates_are_judged_by_the_virtual_hosts_verifier() {
    let certs = Certs::new();
    let config = certs.config("http://127.0.0.1:3000");
    let cases: &[(&str, &str, &str, i32)] = &[
        ("served-partner-good-cert", "partner.contoso.example", "good.crt", 0),
        ("refused-partner-sha1-at-http", "partner.contoso.example", "sha1.crt", 1),
        ("refused-partner-stranger-at-http", "partner.contoso.example", "stranger.crt", 1),
        ("closed-mtls-rsa1024-at-handshake", "mtls.contoso.example", "rsa1024.crt", 1),
    ];
    for (name, host, cert, code) in cases {
        let cert = certs.path(cert);
        let r = run(&[
            "explain",
            "--config",
            &config,
            "--listener",
            "https",
            "--peer",
            "10.0.1.5",
            "--sni",
            host,
            "--host",
            host,
            "--cert",
            &cert,
        ]);
        assert!(r.stderr.is_empty(), "{name}: {}", r.stderr);
        assert_eq!(r.code, *code, "{name}: {}", r.stdout);
        golden(&format!("explain-{name}"), &normalize(&r.stdout, certs.pki.dir()));
    }
    // No certificate: the partner host (refuse at HTTP) answers 403, the mtls host fails the handshake.
    let r = run(&[
        "explain",
        "--config",
        &config,
        "--listener",
        "https",
        "--peer",
        "10.0.1.5",
        "--sni",
        "partner.contoso.example",
        "--host",
        "partner.contoso.example",
    ]);
    golden("explain-refused-partner-no-cert", &normalize(&r.stdout, certs.pki.dir()));
    let r = run(&[
        "explain",
        "--config",
        &config,
        "--listener",
        "https",
        "--peer",
        "10.0.1.5",
        "--sni",
        "mtls.contoso.example",
        "--host",
        "mtls.contoso.example",
    ]);
    golden("explain-closed-mtls-no-cert", &normalize(&r.stdout, certs.pki.dir()));
}

#[test]
fn json_output_carries_the_steps_and_the_denial() {
    let certs = Certs::new();
    let config = certs.config("http://127.0.0.1:3000");
    let r = run(&[
        "explain",
        "--config",
        &config,
        "--peer",
        "10.0.66.5",
        "--host",
        "api.contoso.example",
        "--json",
    ]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    let steps = v["steps"].as_array().expect("steps");
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(
        names,
        [
            "listener",
            "connection-filter",
            "client-address",
            "tls-refused-at-http",
            "host",
            "origin",
            "public-access",
            "ip"
        ]
    );
    let ip = steps.last().expect("the refusing step");
    assert_eq!(ip["verdict"], "refused");
    assert_eq!(ip["denial"]["code"], "ip.denied");
    assert_eq!(ip["denial"]["refused"], "10.0.66.5");
    assert_eq!(v["result"]["outcome"], "refused");
    assert_eq!(v["result"]["status"], 403);
    let body: serde_json::Value =
        serde_json::from_str(v["result"]["body"].as_str().expect("body")).expect("problem+json");
    assert_eq!(body["status"], 403);

    let r = run(&[
        "explain",
        "--config",
        &config,
        "--peer",
        "10.0.1.5",
        "--host",
        "api.contoso.example",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v["result"]["endpoint"], "gateway");
    let headers: Vec<&str> =
        v["result"]["upstream_headers"].as_array().unwrap().iter().filter_map(|h| h.as_str()).collect();
    assert!(headers.contains(&"x-forwarded-for: 10.0.1.5"), "{headers:?}");
    assert!(headers.contains(&"x-portcullis-origin: private; network=vnet"), "{headers:?}");
}

#[test]
fn usage_and_input_errors_exit_2() {
    let certs = Certs::new();
    let config = certs.config("http://127.0.0.1:3000");
    assert_eq!(run(&["explain", "--config", &config]).code, 2, "no --peer");
    assert_eq!(run(&["explain", "--config", &config, "--peer", "nope"]).code, 2);
    assert_eq!(run(&["explain", "--config", &config, "--peer", "10.0.0.1", "--bogus"]).code, 2);
    assert_eq!(run(&["explain", "--config", "/nonexistent.toml", "--peer", "10.0.0.1"]).code, 2);
    let r = run(&[
        "explain",
        "--config",
        &config,
        "--peer",
        "10.0.0.1",
        "--listener",
        "lb",
        "--proxy",
        "v3",
        "--source",
        "1.2.3.4",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

/// Shadow mode: the IP rule that would refuse is recorded and named, and the request is served.
#[test]
fn shadow_refusals_are_shown_and_the_request_served() {
    let certs = Certs::new();
    let text =
        common::gateway_toml("http://127.0.0.1:3000").replace("[ip.rules]\n", "[ip.rules]\nshadow = true\n");
    let path = certs.pki.path("shadow.toml");
    std::fs::write(&path, text).unwrap();
    let r = run(&[
        "explain",
        "--config",
        path.to_str().unwrap(),
        "--peer",
        "10.0.66.5",
        "--host",
        "api.contoso.example",
    ]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    golden("explain-served-shadow-ip", &normalize(&r.stdout, certs.pki.dir()));
}
