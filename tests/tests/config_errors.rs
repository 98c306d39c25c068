//! Configuration errors, checked before anything starts: each names the file, the line and the key.
//!
//! Every test starts from a valid configuration, changes one thing, and asserts the exact line (found by
//! searching the text for the offending line, so the expectation does not drift with edits) and key.

use portcullis::config::ConfigError;
use portcullis_tests::pki::{CA_EXT, Pki};
use portcullis_tests::server::check_config;
use portcullis_tests::skip_without;

const FILE: &str = "gateway-under-test.toml";

/// A valid configuration the tests break one way at a time.
const BASE: &str = r#"resource = "Microsoft.ApiManagement/service/contoso"

[[listener]]
name = "http"
address = "127.0.0.1:0"

[client_address]
trusted_proxies = ["127.0.0.1"]
forwarded = "x-forwarded-for"

[private_networks.networks]
vnet = ["10.0.0.0/16"]

[public_access]
enabled = false

[ip.sets]
admins = ["10.0.9.0/24"]

[ip.rules]
default = "allow"
deny = ["10.0.66.0/24"]

[ip.endpoint.management]
default = "deny"
allow = ["@admins"]

[hosts.service]
name = "contoso"
domain = "azure-api.net"
"#;

/// The 1-based line of the first line of `text` containing `needle` (after `after`, when given).
fn line_of(text: &str, needle: &str, after: Option<&str>) -> usize {
    let start = after.map_or(0, |a| text.find(a).unwrap_or_else(|| panic!("no {a:?} in the text")));
    let at = start + text[start..].find(needle).unwrap_or_else(|| panic!("no {needle:?} in the text"));
    text[..at].matches('\n').count() + 1
}

fn refused(text: &str) -> ConfigError {
    match check_config(FILE, text) {
        Ok(_) => panic!("the configuration must be refused:\n{text}"),
        Err(e) => e,
    }
}

/// Asserts the error is about `key` on the line holding `needle` (after `after`), in [`FILE`], and that its
/// message mentions each of `mentions`.
fn assert_error(text: &str, needle: &str, after: Option<&str>, key: &str, mentions: &[&str]) -> ConfigError {
    let e = refused(text);
    let shown = e.to_string();
    assert_eq!(e.file, FILE, "{shown}");
    assert_eq!(e.line, line_of(text, needle, after), "the line of {needle:?}: {shown}");
    assert_eq!(e.key, key, "{shown}");
    assert!(shown.starts_with(&format!("{FILE}:{}:", e.line)), "file:line first: {shown}");
    for m in mentions {
        assert!(shown.contains(m), "{m:?} must be mentioned: {shown}");
    }
    e
}

#[test]
fn the_base_configuration_is_valid() {
    check_config(FILE, BASE).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn unknown_keys_are_refused_where_they_are() {
    let text = BASE.replace(
        "forwarded = \"x-forwarded-for\"",
        "forwarded = \"x-forwarded-for\"\ntrusted_proxy = [\"10.0.0.1\"]",
    );
    assert_error(&text, "trusted_proxy =", None, "client_address.trusted_proxy", &["trusted_proxy"]);

    let text = BASE.replace("address = \"127.0.0.1:0\"", "address = \"127.0.0.1:0\"\nproxy_protocl = true");
    assert_error(&text, "proxy_protocl", None, "listener.proxy_protocl", &["proxy_protocl"]);

    let text = format!(
        "{BASE}\n[hosts.endpoint.portal]\nnames = [\"portal.contoso.example\"]\nvirtualhost = \"x\"\n"
    );
    assert_error(&text, "virtualhost", None, "hosts.endpoint.portal.virtualhost", &["virtualhost"]);

    let text = BASE.replace("resource =", "resorce = \"typo\"\nresource =");
    assert_error(&text, "resorce", None, "resorce", &["resorce"]);
}

#[test]
fn duplicate_host_names_are_refused() {
    // A custom domain of the portal that is already the gateway's default name.
    let text = format!("{BASE}\n[hosts.endpoint.portal]\nnames = [\"Contoso.Azure-API.net.\"]\n");
    assert_error(
        &text,
        "names = [\"Contoso",
        None,
        "hosts.endpoint.portal.names",
        &["contoso.azure-api.net"],
    );
    // The same custom domain on two endpoints.
    let text = format!(
        "{BASE}\n[hosts.endpoint.gateway]\nnames = [\"api.contoso.example\"]\n\n\
         [hosts.endpoint.scm]\nnames = [\"api.contoso.example\"]\n"
    );
    assert_error(
        &text,
        "names = [\"api.contoso.example\"]",
        Some("[hosts.endpoint.scm]"),
        "hosts.endpoint.scm.names",
        &["api.contoso.example"],
    );
}

#[test]
fn weak_trust_anchors_are_refused_with_file_and_rule() {
    if skip_without("openssl", "weak_trust_anchors_are_refused_with_file_and_rule") {
        return;
    }
    let pki = Pki::new();
    let ca = pki.ca("server-ca");
    pki.server("server", &ca, &["contoso.azure-api.net"]);
    let rsa1024 = pki.issue("rsa1024-ca", "rsa:1024", "/CN=weak rsa ca", None, "-sha256", CA_EXT);
    let sha1 = pki.issue("sha1-ca", "ec", "/CN=sha1 ca", None, "-sha1", CA_EXT);
    let leaf = pki.client("leaf", "pinned-leaf", &ca, "ec", "-sha256");
    let dir = pki.dir().display().to_string();
    for (anchor, mention) in [(&rsa1024, "weak rsa ca"), (&sha1, "sha1 ca"), (&leaf, "pinned-leaf")] {
        let text = format!(
            "{BASE}\n[[listener]]\nname = \"https\"\naddress = \"127.0.0.1:0\"\ntls = true\n\n\
             [[keystore]]\nname = \"server\"\ncert = \"{dir}/server.crt\"\nkey = \"{dir}/server.key\"\n\n\
             [[truststore]]\nname = \"partners\"\ncerts = [\"{}\"]\n\n\
             [[virtual_host]]\nname = \"api\"\nhosts = [\"contoso.azure-api.net\"]\nkeystore = \"server\"\n\
             client_auth = \"required\"\ntruststore = \"partners\"\n",
            anchor.cert.display()
        );
        let file_name = anchor.cert.file_name().and_then(|f| f.to_str()).unwrap_or_default();
        assert_error(&text, "certs = [", None, "truststore.partners.certs", &[mention, file_name]);
        // Explicitly allowed, the same anchor loads.
        let allowed = text.replace(
            "name = \"partners\"\n",
            "name = \"partners\"\nallow_weak_anchors = true\nallow_leaf_anchors = true\n",
        );
        check_config(FILE, &allowed).unwrap_or_else(|e| panic!("allowed anchor {mention}: {e}"));
    }
}

#[test]
fn public_access_disabled_without_a_private_path_is_refused() {
    let text = BASE.replace("[private_networks.networks]\nvnet = [\"10.0.0.0/16\"]\n", "");
    assert_error(&text, "enabled = false", None, "public_access.enabled", &["private"]);
    // Only pending or rejected connections are no private path either.
    let text = format!(
        "{text}\n[[private_endpoint_connection]]\nname = \"pe-waiting\"\nazure_link_id = 1\nstate = \"pending\"\n"
    );
    assert_error(&text, "enabled = false", None, "public_access.enabled", &[]);
    // One approved connection is.
    let approved = text.replace("state = \"pending\"", "state = \"approved\"");
    check_config(FILE, &approved).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn client_auth_without_a_truststore_is_refused() {
    if skip_without("openssl", "client_auth_without_a_truststore_is_refused") {
        return;
    }
    let pki = Pki::new();
    let ca = pki.ca("server-ca");
    pki.server("server", &ca, &["contoso.management.azure-api.net"]);
    let dir = pki.dir().display().to_string();
    let text = format!(
        "{BASE}\n[[listener]]\nname = \"https\"\naddress = \"127.0.0.1:0\"\ntls = true\n\n\
         [[keystore]]\nname = \"server\"\ncert = \"{dir}/server.crt\"\nkey = \"{dir}/server.key\"\n\n\
         [[virtual_host]]\nname = \"mgmt\"\nhosts = [\"contoso.management.azure-api.net\"]\nkeystore = \"server\"\n\
         client_auth = \"required\"\n"
    );
    // The truststore is missing, so the error points at the virtual host's table.
    assert_error(&text, "[[virtual_host]]", None, "virtual_host.mgmt.truststore", &["truststore"]);
    // A truststore name that does not exist.
    let text =
        text.replace("client_auth = \"required\"\n", "client_auth = \"required\"\ntruststore = \"nobody\"\n");
    assert_error(&text, "truststore = \"nobody\"", None, "virtual_host.mgmt.truststore", &["nobody"]);
}

#[test]
fn more_than_100_private_endpoint_connections_are_refused() {
    let mut text = BASE.to_owned();
    for i in 0..101 {
        text.push_str(&format!(
            "\n[[private_endpoint_connection]]\nname = \"pe-{i}\"\nazure_link_id = {}\nstate = \"approved\"\n",
            1000 + i
        ));
    }
    // The error points at the table of the 101st connection.
    let e = assert_error(
        &text,
        "[[private_endpoint_connection]]\nname = \"pe-100\"",
        None,
        "private_endpoint_connection",
        &["101", "100"],
    );
    assert!(e.message.contains("at most 100"), "{e}");
    // 100 are fine.
    let hundred =
        text[..text.find("\n[[private_endpoint_connection]]\nname = \"pe-100\"").expect("pe-100")].to_owned();
    check_config(FILE, &hundred).unwrap_or_else(|e| panic!("{e}"));
    // A lower configured cap is enforced the same way.
    let capped =
        hundred.replace("[public_access]", "[private_endpoints]\nmax_connections = 2\n\n[public_access]");
    assert_error(
        &capped,
        "[[private_endpoint_connection]]\nname = \"pe-2\"",
        None,
        "private_endpoint_connection",
        &["at most 2"],
    );
}

#[test]
fn a_reference_to_an_unknown_set_is_refused() {
    let text = BASE.replace("allow = [\"@admins\"]", "allow = [\"@admin\"]");
    assert_error(&text, "allow = [\"@admin\"]", None, "ip.endpoint.management.allow", &["admin"]);
    let text = BASE.replace("deny = [\"10.0.66.0/24\"]", "deny = [\"10.0.66.0/24\", \"@blocked\"]");
    assert_error(&text, "deny = [", None, "ip.rules.deny", &["blocked"]);
}

#[test]
fn bad_cidrs_are_refused_where_they_are() {
    let text = BASE.replace("deny = [\"10.0.66.0/24\"]", "deny = [\"10.0.66.0/33\"]");
    assert_error(&text, "10.0.66.0/33", None, "ip.rules.deny", &["10.0.66.0/33"]);
    let text = BASE.replace("vnet = [\"10.0.0.0/16\"]", "vnet = [\"10.0.0.0/16\",\n  \"10.0.0.300\"]");
    assert_error(&text, "10.0.0.300", None, "private_networks.networks.vnet", &["10.0.0.300"]);
    let text = BASE.replace("trusted_proxies = [\"127.0.0.1\"]", "trusted_proxies = [\"127.0.0.1/40\"]");
    assert_error(&text, "127.0.0.1/40", None, "client_address.trusted_proxies", &["127.0.0.1/40"]);
    let text = BASE.replace("admins = [\"10.0.9.0/24\"]", "admins = [\"10.0.9.0/24\", \"10.0.9.x\"]");
    assert_error(&text, "10.0.9.x", None, "ip.sets.admins", &["10.0.9.x"]);
    let text = BASE.replace(
        "address = \"127.0.0.1:0\"",
        "address = \"127.0.0.1:0\"\n[listener.proxy_protocol]\nrequired_from = [\"10.0.0.0/8\", \"lb.example\"]",
    );
    assert_error(&text, "lb.example", None, "listener.http.proxy_protocol.required_from", &["lb.example"]);
}

#[test]
fn the_shipped_example_configuration_parses() {
    // examples/gateway.toml refers to certificates that are not in the repository; it must at least parse
    // (every key known) so that users copying it start from a checked text.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/gateway.toml");
    let text = std::fs::read_to_string(path).expect("examples/gateway.toml");
    let source = portcullis::config::Source::new("examples/gateway.toml", text);
    portcullis::config::GatewayConfig::parse(&source).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_missing_file_is_named_with_the_key_that_references_it() {
    let dir = std::env::temp_dir().join(format!("portcullis-missing-{}", std::process::id()));
    let missing = |name: &str| dir.join(name).display().to_string();
    let text = format!(
        "{BASE}\n[[listener]]\nname = \"https\"\naddress = \"127.0.0.1:0\"\ntls = true\n\n\
         [[keystore]]\nname = \"server\"\ncert = \"{}\"\nkey = \"{}\"\n\n\
         [[virtual_host]]\nname = \"mgmt\"\nhosts = [\"contoso.management.azure-api.net\"]\nkeystore = \"server\"\n",
        missing("server.crt"),
        missing("server.key")
    );
    assert_error(&text, "cert = ", None, "keystore.server.cert", &[&missing("server.crt"), "cannot read"]);
    // The certificate is there, the key is not: the error moves to the key's line.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("server.crt"), "not a certificate").unwrap();
    assert_error(&text, "key = ", None, "keystore.server.key", &[&missing("server.key")]);
    // A truststore entry that names a missing file.
    let text = format!("{BASE}\n[[truststore]]\nname = \"clients\"\ncerts = [\"{}\"]\n", missing("ca.crt"));
    assert_error(&text, "certs = ", None, "truststore.clients.certs", &[&missing("ca.crt")]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_configuration_file_that_cannot_be_read_is_named_without_a_line() {
    let path = std::env::temp_dir().join(format!("portcullis-no-such-{}.toml", std::process::id()));
    let e = portcullis::config::GatewayConfig::load(&path).unwrap_err();
    let shown = e.to_string();
    assert_eq!((e.line, e.file.as_str()), (0, path.display().to_string().as_str()), "{shown}");
    assert!(
        shown.starts_with(&format!("{}: cannot read the configuration file: ", path.display())),
        "{shown}"
    );
    assert!(!shown.contains(":0:0"), "{shown}");
}

#[test]
fn an_allowed_identity_with_an_empty_field_is_refused() {
    if skip_without("openssl", "an_allowed_identity_with_an_empty_field_is_refused") {
        return;
    }
    let pki = Pki::new();
    let ca = pki.ca("server-ca");
    pki.server("server", &ca, &["contoso.management.azure-api.net"]);
    pki.ca("clients-ca");
    let dir = pki.dir().display().to_string();
    let text = format!(
        "{BASE}\n[[listener]]\nname = \"https\"\naddress = \"127.0.0.1:0\"\ntls = true\n\n\
         [[keystore]]\nname = \"server\"\ncert = \"{dir}/server.crt\"\nkey = \"{dir}/server.key\"\n\n\
         [[truststore]]\nname = \"clients\"\ncerts = [\"{dir}/clients-ca.crt\"]\n\n\
         [[virtual_host]]\nname = \"mgmt\"\nhosts = [\"contoso.management.azure-api.net\"]\nkeystore = \"server\"\n\
         client_auth = \"required\"\ntruststore = \"clients\"\nidentities = [{{ subject = \"CN=ops\" }}, {{ subject = \"\" }}]\n"
    );
    // An empty subject would admit any trusted certificate with an empty subject: the second entry is named.
    let e = assert_error(&text, "identities = ", None, "virtual_host.mgmt.identities", &["none empty"]);
    assert!(e.column > 30, "the second entry, not the array: {e}");
    let text = text.replace("{ subject = \"\" }", "{ sha256 = \"zz\" }");
    assert_error(&text, "identities = ", None, "virtual_host.mgmt.identities", &["64 hex digits"]);
    let text = text.replace(", { sha256 = \"zz\" }", "");
    check_config(FILE, &text).unwrap_or_else(|e| panic!("{e}"));
}
