//! The commented example configuration, `examples/gateway.toml`, parses and builds: copied to a temporary
//! directory next to the certificates it references (made with rcgen), then loaded and built exactly as
//! `portcullis-demo --check-config` does.

mod support;

use std::path::Path;

use portcullis::config::GatewayConfig;
use portcullis_examples::pki::Ca;
use support::TempDir;

const GATEWAY_TOML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml");

/// Writes the files `gateway.toml` references, relative to `dir`.
fn certificates(dir: &Path) {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    let server_ca = Ca::new("contoso example server CA").expect("CA");
    let partners_ca = Ca::new("contoso example partners CA").expect("CA");
    let api = server_ca.server(&["api.contoso.example", "contoso.azure-api.net"]).expect("api cert");
    let mgmt =
        server_ca.server(&["mgmt.contoso.example", "contoso.management.azure-api.net"]).expect("mgmt cert");
    for (name, text) in [
        ("api.crt", api.cert_pem.as_str()),
        ("api.key", &api.key_pem),
        ("mgmt.crt", &mgmt.cert_pem),
        ("mgmt.key", &mgmt.key_pem),
        ("partners-ca.crt", partners_ca.cert_pem()),
    ] {
        std::fs::write(certs.join(name), text).expect("write certificate");
    }
}

#[test]
fn the_example_config_parses_and_builds() {
    let dir = TempDir::new("gateway-toml");
    std::fs::copy(GATEWAY_TOML, dir.0.join("gateway.toml")).expect("copy gateway.toml");
    certificates(&dir.0);

    let (config, source) = GatewayConfig::load(dir.0.join("gateway.toml")).expect("gateway.toml parses");
    let built = config.build(&source).unwrap_or_else(|e| panic!("gateway.toml does not build: {e}"));

    let listeners: Vec<(&str, bool, bool, bool)> = built
        .listeners
        .iter()
        .map(|(_, s)| (s.name.as_str(), s.tls.is_some(), s.proxy.is_some(), s.filter.is_some()))
        .collect();
    assert_eq!(
        listeners,
        [
            ("http", false, false, true),
            ("https", true, false, false),
            ("behind-load-balancer", false, true, false),
        ]
    );
    let rule_sets: Vec<&str> = built.ip_rules.keys().map(String::as_str).collect();
    assert_eq!(rule_sets, ["connection", "endpoint.management", "global"]);
    let mut vhosts = built.virtual_hosts.as_ref().expect("virtual hosts").names();
    vhosts.sort();
    assert_eq!(vhosts, ["api", "mgmt"]);

    // [management], checked as the serve helper checks it at start; the reader's token comes from the
    // environment, which this test does not set: the grant is given an identity instead.
    let text = source.text().replace(
        "token_env = \"PORTCULLIS_READER_TOKEN\"",
        "identity = { subject = \"CN=auditor, O=Contoso\" }",
    );
    let source = portcullis::config::Source::new(source.file(), text);
    let config = GatewayConfig::parse(&source).expect("parses");
    let settings = portcullis::management::Settings::from_config(&config, &source);
    let settings = settings.unwrap_or_else(|e| panic!("[management]: {e}")).expect("enabled");
    assert_eq!((settings.endpoint(), settings.mode()), ("management", portcullis::management::Mode::Single));
}

#[test]
fn the_example_config_fails_without_its_certificates_naming_the_key() {
    // The same file without the certificates: the error names the file, line and the keystore.
    let dir = TempDir::new("gateway-toml-no-certs");
    std::fs::copy(GATEWAY_TOML, dir.0.join("gateway.toml")).expect("copy gateway.toml");
    let (config, source) = GatewayConfig::load(dir.0.join("gateway.toml")).expect("gateway.toml parses");
    let err = config.build(&source).expect_err("no certificates: refused");
    assert_eq!(err.key, "keystore.api.cert", "{err}");
    assert!(err.file.ends_with("gateway.toml"), "{err}");
    let text = std::fs::read_to_string(GATEWAY_TOML).expect("read");
    let line = text.lines().nth(err.line - 1).expect("the line exists");
    assert!(line.contains("certs/api.crt"), "line {} is {line:?}", err.line);
}
