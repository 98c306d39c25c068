//! Shared by the command's tests: running the built `portcullis` binary, golden files, and a gateway
//! configuration with certificates from `portcullis-test-support`.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis_test_support::pki::{CA_EXT, CLIENT_EXT, Issued, Pki};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// What a run printed and its exit status.
#[derive(Debug)]
pub struct Run {
    /// Exit status.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `portcullis args...`.
pub fn run(args: &[&str]) -> Run {
    let out = Command::new(BIN).args(args).env_remove("RUST_LOG").output().expect("run portcullis");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `text` with what changes from run to run replaced: the scratch directory, RFC 3339 times and long
/// numbers (Unix seconds).
pub fn normalize(text: &str, dir: &Path) -> String {
    let text = text.replace(&dir.display().to_string(), "<dir>");
    // The certificate itself differs from run to run (fresh keys).
    let text: String = text
        .lines()
        .map(|l| match l.split_once("x-portcullis-client-cert: ") {
            Some((indent, _)) => format!("{indent}x-portcullis-client-cert: <url-encoded PEM>\n"),
            None => format!("{l}\n"),
        })
        .collect();
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        // 2026-12-05T22:00:00Z
        if i + 20 <= chars.len() {
            let s: String = chars[i..i + 20].iter().collect();
            let b = s.as_bytes();
            let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
            if digits.iter().all(|&k| b[k].is_ascii_digit())
                && b[4] == b'-'
                && b[7] == b'-'
                && b[10] == b'T'
                && b[13] == b':'
                && b[16] == b':'
                && b[19] == b'Z'
            {
                out.push_str("<time>");
                i += 20;
                continue;
            }
        }
        if chars[i].is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if i - start >= 9 {
                out.push_str("<n>");
            } else {
                out.extend(&chars[start..i]);
            }
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Compares `actual` with `tests/golden/<name>.txt`; with `PORTCULLIS_BLESS=1` writes it instead.
pub fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.txt"));
    if std::env::var_os("PORTCULLIS_BLESS").is_some() {
        std::fs::write(&path, actual).expect("write the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with PORTCULLIS_BLESS=1 to write it)", path.display()));
    assert_eq!(actual, expected, "output differs from {} (PORTCULLIS_BLESS=1 rewrites it)", path.display());
}

/// The certificates of the test gateway.
pub struct Certs {
    /// The scratch directory.
    pub pki: Pki,
    /// The client CA.
    pub ca: Issued,
    /// A good client (P-256, SHA-256, clientAuth).
    pub good: Issued,
    /// A client signed with SHA-1.
    pub sha1: Issued,
    /// A client with an RSA-1024 key.
    pub rsa1024: Issued,
    /// A client of another CA.
    pub stranger: Issued,
}

impl Certs {
    /// Makes them.
    pub fn new() -> Certs {
        let pki = Pki::new();
        let ca = pki.ca_of("client-ca", "ec", None);
        let server = pki.server(
            "server",
            &ca,
            &["api.contoso.example", "partner.contoso.example", "mtls.contoso.example"],
        );
        let _ = server;
        let good = pki.issue("good", "ec", "/O=Fabrikam/CN=good", Some(&ca), "-sha256", CLIENT_EXT);
        let sha1 = pki.issue("sha1", "ec", "/O=Fabrikam/CN=sha1", Some(&ca), "-sha1", CLIENT_EXT);
        let rsa1024 =
            pki.issue("rsa1024", "rsa:1024", "/O=Fabrikam/CN=rsa1024", Some(&ca), "-sha256", CLIENT_EXT);
        let other = pki.issue("other-ca", "ec", "/O=Elsewhere/CN=other-ca", None, "-sha256", CA_EXT);
        let stranger =
            pki.issue("stranger", "ec", "/O=Elsewhere/CN=stranger", Some(&other), "-sha256", CLIENT_EXT);
        Certs { pki, ca, good, sha1, rsa1024, stranger }
    }

    /// A path in the scratch directory.
    pub fn path(&self, file: &str) -> String {
        self.pki.path(file).display().to_string()
    }

    /// Writes the gateway configuration (with `upstream`) and returns its path.
    pub fn config(&self, upstream: &str) -> String {
        let text = gateway_toml(upstream);
        let path = self.pki.path("gateway.toml");
        std::fs::write(&path, text).expect("write the configuration");
        path.display().to_string()
    }
}

/// The test gateway: a plain listener with a connection filter, a TLS listener, a listener behind a PROXY
/// load balancer (127.0.0.1); 10.0.0.0/16 is the virtual network, public access is disabled, 10.0.66.0/24
/// is denied by the IP rules, 192.0.2.99 is dropped at accept; two private endpoint connections (Azure 7
/// approved, Azure 8 pending); virtual hosts `api` (no client certificate), `partner` (required, refused
/// at HTTP) and `mtls` (required, refused at the handshake). Certificate paths are relative to the file.
pub fn gateway_toml(upstream: &str) -> String {
    format!(
        r#"resource = "Microsoft.ApiManagement/service/contoso"

[[listener]]
name = "http"
address = "127.0.0.1:0"
connection_filter = true

[[listener]]
name = "https"
address = "127.0.0.1:0"
tls = true

[[listener]]
name = "lb"
address = "127.0.0.1:0"
[listener.proxy_protocol]
required_from = ["127.0.0.1"]

[client_address]
trusted_proxies = ["127.0.0.1"]
forwarded = "x-forwarded-for"

[private_networks.networks]
vnet = ["127.0.0.1", "10.0.0.0/16"]

[[private_endpoint_connection]]
name = "pe-approved"
azure_link_id = 7
state = "approved"

[[private_endpoint_connection]]
name = "pe-pending"
azure_link_id = 8
state = "pending"

[public_access]
enabled = false

[ip.rules]
default = "allow"
deny = ["10.0.66.0/24"]

[ip.connection]
default = "allow"
deny = ["192.0.2.99"]

[hosts.endpoint.gateway]
names = ["api.contoso.example"]
upstream = "{upstream}"

[hosts.endpoint.partner]
names = ["partner.contoso.example"]
virtual_host = "partner"
upstream = "{upstream}"

[hosts.endpoint.mtls]
names = ["mtls.contoso.example"]
virtual_host = "mtls"

[[keystore]]
name = "server"
cert = "server.crt"
key = "server.key"

[[truststore]]
name = "clients"
certs = ["client-ca.crt"]

[[virtual_host]]
name = "api"
hosts = ["api.contoso.example"]
keystore = "server"

[[virtual_host]]
name = "partner"
hosts = ["partner.contoso.example"]
keystore = "server"
client_auth = "required"
truststore = "clients"
refuse_at_http = true

[[virtual_host]]
name = "mtls"
hosts = ["mtls.contoso.example"]
keystore = "server"
client_auth = "required"
truststore = "clients"
"#
    )
}
