//! The portcullis demo gateway: every guarantee on loopback, in a minute.
//!
//! ```text
//! cargo run -p portcullis-examples --bin portcullis-demo                  # serve until Ctrl-C
//! cargo run -p portcullis-examples --bin portcullis-demo -- --check       # run the printed curl commands, then exit
//! cargo run -p portcullis-examples --bin portcullis-demo -- --config FILE # serve a configuration of yours
//! cargo run -p portcullis-examples --bin portcullis-demo -- --check-config FILE
//! cargo run -p portcullis-examples --bin portcullis-demo -- --http-port 9080 --https-port 9443
//! ```
//!
//! The ops listener answers `/healthz`, `/readyz` and `/metrics` (Prometheus text) on 127.0.0.1:9901;
//! `kill -HUP` or an edit of the configuration file (`--config`) reloads it, and `/echo` shows the
//! generation in force.
//!
//! The embedded configuration (`demo.toml`) serves the four endpoints of a managed gateway by host name on
//! an HTTP and an HTTPS listener, treats 127.0.0.1 as the virtual network and 127.0.0.2 as the public
//! internet, and disables public network access. At start it makes a demo CA with `openssl`: a server
//! certificate, a good client chain (P-256) and two weak ones (a SHA-1 signature, an RSA-1024 key). They
//! are written to a temporary folder, removed when the demo exits, whichever way it exits (an error such as
//! a port already taken, Ctrl-C, a panic), short of being killed.
//!
//! The management API is on `contoso.management.azure-api.net` (`[management]` in `demo.toml`): the good
//! client certificate is its administrator, a token written to the folder (`reader.token`) a reader's.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use axum::extract::State;
use axum::{Json, Router, routing::get};
use portcullis::config::{GatewayConfig, Source};
use portcullis::core::extract::PeerCert;
use portcullis::serve::{Bound, ServeHandle, shutdown_signal};
use portcullis::{ClientAddr, ConnInfo, Decisions};
use serde_json::{Value, json};

const DEMO_CONFIG: &str = include_str!("demo.toml");

/// Returns what the stack decided, as JSON.
async fn echo(
    State(handle): State<ServeHandle>,
    decisions: Decisions,
    conn: ConnInfo,
    cert: Option<PeerCert>,
) -> Json<Value> {
    let client: Option<ClientAddr> = decisions.client;
    Json(json!({
        "config_generation": handle.generation(),
        "endpoint": decisions.host.as_ref().map(|h| h.endpoint.to_string()),
        "host": decisions.host.as_ref().map(|h| h.host.to_string()),
        "pattern": decisions.host.as_ref().map(|h| h.pattern.to_string()),
        "client": client.map(|c| c.ip.to_string()),
        "learnt_via": client.map(|c| c.learnt_via.to_string()),
        "origin": decisions.origin.as_ref().map(|o| o.to_string()),
        "tls": conn.tls.as_ref().map(|t| json!({
            "sni": t.sni.as_deref(),
            "virtual_host": t.vhost.as_deref(),
        })),
        "client_certificate": cert.map(|c| json!({
            "subject": c.0.subject,
            "issuer": c.0.issuer,
            "sha256": c.0.sha256,
        })),
        "shadow_refusals": decisions.shadow.iter().map(|d| d.code()).collect::<Vec<_>>(),
    }))
}

fn app(handle: ServeHandle) -> Router {
    Router::new().route("/", get(echo)).route("/echo", get(echo)).with_state(handle)
}

/// Runs openssl in `dir`; panics with its output when it fails (the demo cannot go on without certificates).
fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run openssl (install the Debian package `openssl`): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// The demo PKI: a CA, the server certificate for the four endpoints, a good and a weak client chain.
fn make_certificates(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let o = |args: &[&str]| openssl(dir, args);
    // The demo CA (signs the server certificate and the client certificates).
    o(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"])?;
    o(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-sha256",
        "-days",
        "30",
        "-subj",
        "/CN=portcullis demo CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        "ca.crt",
    ])?;
    let names = "DNS:contoso.azure-api.net,DNS:contoso.developer.azure-api.net,\
                 DNS:contoso.management.azure-api.net,DNS:contoso.scm.azure-api.net,\
                 DNS:contoso.privatelink.azure-api.net";
    std::fs::write(
        dir.join("server.ext"),
        format!("subjectAltName={names}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
        .map_err(|e| e.to_string())?;
    let issue_with =
        |name: &str, key_args: &[&str], subj: &str, ext: &str, digest: &str| -> Result<(), String> {
            let key = format!("{name}.key");
            let mut args = key_args.to_vec();
            args.extend(["-out", key.as_str()]);
            o(&args)?;
            let csr = format!("{name}.csr");
            o(&["req", "-new", "-key", &key, "-subj", subj, "-out", &csr])?;
            o(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                digest,
                "-days",
                "30",
                "-extfile",
                ext,
                "-out",
                &format!("{name}.crt"),
            ])
        };
    let issue = |name: &str, key_args: &[&str], subj: &str, ext: &str| {
        issue_with(name, key_args, subj, ext, "-sha256")
    };
    std::fs::write(
        dir.join("seclevel0.cnf"),
        "openssl_conf = init\n[init]\nssl_conf = ssl\n[ssl]\nsystem_default = sys\n[sys]\nCipherString = DEFAULT@SECLEVEL=0\n",
    )
    .map_err(|e| e.to_string())?;
    issue(
        "server",
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
        "/CN=contoso.azure-api.net",
        "server.ext",
    )?;
    issue(
        "good-client",
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
        "/CN=partner-app/O=Fabrikam",
        "client.ext",
    )?;
    // Two weak chains the default policy refuses: a leaf signed with SHA-1, and an RSA-1024 key.
    issue_with(
        "sha1-client",
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
        "/CN=old-signer/O=Fabrikam",
        "client.ext",
        "-sha1",
    )?;
    issue(
        "weak-client",
        &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
        "/CN=legacy-app/O=Fabrikam",
        "client.ext",
    )?;
    // The management API's reader token: random bytes from openssl, as hex.
    o(&["rand", "-hex", "-out", "reader.token", "24"])?;
    Ok(())
}

/// The SHA-256 thumbprint of a certificate file, as `openssl x509 -fingerprint` prints it.
fn thumbprint(dir: &Path, cert: &str) -> Result<String, String> {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in", cert])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().rsplit_once('=') {
        Some((_, print)) if out.status.success() => Ok(print.to_owned()),
        _ => Err(format!("openssl x509 -fingerprint {cert}: {}", String::from_utf8_lossy(&out.stderr))),
    }
}

struct Try {
    what: &'static str,
    expect: &'static str,
    curl: Vec<String>,
}

fn tries(http: u16, https: u16, ops: u16, dir: &Path, reader_token: &str) -> Vec<Try> {
    let d = dir.display();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mgmt = "contoso.management.azure-api.net";
    let mgmt_tls = format!("{mgmt}:{https}:127.0.0.1");
    let api = |path: &str| format!("https://{mgmt}:{https}{path}");
    // The good client certificate is the management API's administrator.
    let admin = |extra: &[&str]| {
        let mut v: Vec<String> = [
            "curl",
            "-s",
            "--cacert",
            &format!("{d}/ca.crt"),
            "--cert",
            &format!("{d}/good-client.crt"),
            "--key",
            &format!("{d}/good-client.key"),
            "--resolve",
            &mgmt_tls,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let bearer = format!("Authorization: Bearer {reader_token}");
    let reader = |extra: &[&str]| {
        let mut v: Vec<String> =
            ["curl", "-s", "--cacert", &format!("{d}/ca.crt"), "--resolve", &mgmt_tls, "-H", &bearer]
                .iter()
                .map(|x| x.to_string())
                .collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let sap = r#"{"accountId":"contoso","virtualHostUrl":"https://partner.contoso.example","isDefaultVirtualHostRequest":false,"isClientAuthEnabled":true,"keyStore":"server","trustStore":"demo-clients","virtualHostId":"partner","operation":"CREATE"}"#;
    let management = vec![
        Try {
            what: "the management API lists the virtual hosts, to the admin network and its client certificate",
            expect: "200",
            curl: admin(&[&api("/v1/virtual-hosts")]),
        },
        Try {
            what: "SAP's VirtualHostRequests body creates a virtual host with client auth, served from the next handshake",
            expect: "201",
            curl: admin(&[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-d",
                sap,
                &api("/apiportal/operations/1.0/Configuration.svc/VirtualHostRequests"),
            ]),
        },
        Try {
            what: "a write with a stale ETag (If-Match) is refused with 412",
            expect: "412",
            curl: admin(&[
                "-X",
                "PUT",
                "-H",
                "If-Match: \"stale\"",
                "-H",
                "Content-Type: application/json",
                "-d",
                r#"{"publicNetworkAccess":"Disabled"}"#,
                &api("/v1/public-network-access"),
            ]),
        },
        Try {
            what: "a reader token reads the private endpoint connections and the effective configuration",
            expect: "200",
            curl: reader(&[&api("/v1/effective-config?format=toml")]),
        },
        Try {
            what: "a reader token cannot write: 403",
            expect: "403",
            curl: reader(&[
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/json",
                "-d",
                r#"{"entries":["127.0.0.1","10.0.0.0/8"]}"#,
                &api("/v1/ip/sets/admins"),
            ]),
        },
        Try {
            what: "a caller without a granted certificate or token is refused: 401",
            expect: "401",
            curl: s(&[
                "curl",
                "-s",
                "--cacert",
                &format!("{d}/ca.crt"),
                "--resolve",
                &mgmt_tls,
                &api("/v1/virtual-hosts"),
            ]),
        },
    ];
    let gw = "contoso.azure-api.net";
    let resolve_http = format!("{gw}:{http}:127.0.0.1");
    let resolve_https = format!("{gw}:{https}:127.0.0.1");
    let mgmt_resolve = format!("contoso.management.azure-api.net:{http}:127.0.0.1");
    vec![
        Try {
            what: "the ops listener says ready (the configuration is built), outside the host and IP layers",
            expect: "200",
            curl: s(&["curl", "-s", &format!("http://127.0.0.1:{ops}/readyz")]),
        },
        Try {
            what: "a caller inside the virtual network (127.0.0.1) is served, tagged private",
            expect: "200",
            curl: s(&["curl", "-s", "--resolve", &resolve_http, &format!("http://{gw}:{http}/echo")]),
        },
        Try {
            what: "a public caller (127.0.0.2) gets Azure's 403: public network access is disabled",
            expect: "403",
            curl: s(&[
                "curl",
                "-s",
                "--interface",
                "127.0.0.2",
                "--resolve",
                &resolve_http,
                &format!("http://{gw}:{http}/echo"),
            ]),
        },
        Try {
            what: "a bare-IP request (a scanner) gets 421: the gateway answers only on its host names",
            expect: "421",
            curl: s(&["curl", "-s", &format!("http://127.0.0.1:{http}/echo")]),
        },
        Try {
            what: "an unknown host name (DNS rebinding) gets 421",
            expect: "421",
            curl: s(&[
                "curl",
                "-s",
                "-H",
                "Host: attacker.example",
                &format!("http://127.0.0.1:{http}/echo"),
            ]),
        },
        Try {
            what: "a spoofed X-Forwarded-For from an untrusted public caller changes nothing",
            expect: "403",
            curl: s(&[
                "curl",
                "-s",
                "--interface",
                "127.0.0.2",
                "-H",
                "X-Forwarded-For: 127.0.0.1",
                "--resolve",
                &resolve_http,
                &format!("http://{gw}:{http}/echo"),
            ]),
        },
        Try {
            what: "the management endpoint is served by host name, to the admin network only (a public caller: 403)",
            expect: "403",
            curl: s(&[
                "curl",
                "-s",
                "--interface",
                "127.0.0.2",
                "--resolve",
                &mgmt_resolve,
                &format!("http://contoso.management.azure-api.net:{http}/v1/virtual-hosts"),
            ]),
        },
        Try {
            what: "a weak client chain (leaf signed with SHA-1) is refused by the chain policy: 403 with the reason",
            expect: "403",
            // OpenSSL's default security level refuses to send a SHA-1 or RSA-1024 certificate; a configuration
            // at level 0 lets curl send it, so that the refusal shown is the gateway's.
            curl: s(&[
                &format!("OPENSSL_CONF={d}/seclevel0.cnf"),
                "curl",
                "-s",
                "--cacert",
                &format!("{d}/ca.crt"),
                "--cert",
                &format!("{d}/sha1-client.crt"),
                "--key",
                &format!("{d}/sha1-client.key"),
                "--resolve",
                &resolve_https,
                &format!("https://{gw}:{https}/echo"),
            ]),
        },
        Try {
            what: "a weak client chain (RSA-1024 key) is refused by the chain policy: 403 with the reason",
            expect: "403",
            curl: s(&[
                &format!("OPENSSL_CONF={d}/seclevel0.cnf"),
                "curl",
                "-s",
                "--cacert",
                &format!("{d}/ca.crt"),
                "--cert",
                &format!("{d}/weak-client.crt"),
                "--key",
                &format!("{d}/weak-client.key"),
                "--resolve",
                &resolve_https,
                &format!("https://{gw}:{https}/echo"),
            ]),
        },
        Try {
            what: "the good client chain (P-256) is served, and the handler sees its identity",
            expect: "200",
            curl: s(&[
                "curl",
                "-s",
                "--cacert",
                &format!("{d}/ca.crt"),
                "--cert",
                &format!("{d}/good-client.crt"),
                "--key",
                &format!("{d}/good-client.key"),
                "--resolve",
                &resolve_https,
                &format!("https://{gw}:{https}/echo"),
            ]),
        },
    ]
    .into_iter()
    .chain(management)
    .collect()
}

fn shell_quote(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.contains([' ', ':', '\'']) && !a.starts_with("http") { format!("'{a}'") } else { a.clone() }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The demo's temporary folder (the CA's private key is in it): removed when dropped, so on every way out
/// of `main`, early returns on an error included.
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn port_arg(name: &str, default: u16) -> Result<u16, String> {
    match arg_value(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| format!("{name}: not a port number: {v:?}")),
    }
}

fn arg_value(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Errors for humans: `file:line:col: key: message`, not a Debug struct, and a failing exit status.
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "portcullis=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let check = std::env::args().any(|a| a == "--check");

    if let Some(file) = arg_value("--check-config") {
        let (config, source) = GatewayConfig::load(&file)?;
        config.check(&source)?;
        println!("{file}: ok");
        return Ok(());
    }

    let (config, source, dir) = match arg_value("--config") {
        Some(file) => {
            let (config, source) = GatewayConfig::load(&file)?;
            (config, source, None)
        }
        None => {
            let dir = TempDir(std::env::temp_dir().join(format!("portcullis-demo-{}", std::process::id())));
            make_certificates(dir.path())?;
            let good_sha256 = thumbprint(dir.path(), "good-client.crt")?;
            let (http, https, ops) = if check { (0, 0, 0) } else { (8080, 8443, 9901) };
            let (http, https) = (port_arg("--http-port", http)?, port_arg("--https-port", https)?);
            let text = DEMO_CONFIG
                .replace("{dir}", &dir.path().display().to_string())
                .replace("{http}", &http.to_string())
                .replace("{https}", &https.to_string())
                .replace("{ops}", &ops.to_string())
                .replace("{good_sha256}", &good_sha256);
            let source = Source::new("<embedded demo.toml>", text);
            (GatewayConfig::parse(&source)?, source, Some(dir))
        }
    };
    // The binary chooses the exporter: Prometheus text, rendered by the ops listener at /metrics.
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let bound = Bound::from_config(&config, &source).await?.metrics(move || prometheus.render());
    let handle = bound.handle();
    let addrs = bound.local_addrs();
    let port = |name: &str| addrs.iter().find(|(n, _)| n == name).map_or(0, |(_, a)| a.port());
    for (name, addr) in &addrs {
        println!("listening: {name} on {addr}");
    }
    let handle_ops = bound.ops_addr();
    if let Some(ops) = handle_ops {
        println!("ops: http://{ops}/healthz, /readyz, /metrics");
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.serve(app(handle.clone()).into_service(), async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = stop_rx => {}
        }
    }));

    let mut failures = 0;
    if let Some(dir) = &dir {
        println!("\nThe demo CA and client certificates are in {}\n", dir.path().display());
        let ops = handle_ops.map_or(0, |a| a.port());
        let reader_token = std::fs::read_to_string(dir.path().join("reader.token"))?;
        for t in tries(port("http"), port("https"), ops, dir.path(), reader_token.trim()) {
            println!("# {}\n{}", t.what, shell_quote(&t.curl));
            if check {
                let (env, argv) = match t.curl[0].split_once('=') {
                    Some((k, v)) => (Some((k.to_owned(), v.to_owned())), &t.curl[1..]),
                    None => (None, &t.curl[..]),
                };
                let mut cmd = Command::new(&argv[0]);
                cmd.args(&argv[1..]).args(["-o", "-", "-w", "\n%{http_code}"]);
                if let Some((k, v)) = env {
                    cmd.env(k, v);
                }
                let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
                let text = String::from_utf8_lossy(&out.stdout);
                let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
                let ok = code == t.expect;
                if !ok {
                    failures += 1;
                }
                println!(
                    "  -> {} {code} (expected {})\n     {body}",
                    if ok { "ok" } else { "UNEXPECTED" },
                    t.expect
                );
            }
            println!();
        }
    }
    if check {
        let _ = stop_tx.send(());
        server.await??;
        if failures > 0 {
            return Err(format!("{failures} demo request(s) did not answer as expected").into());
        }
        println!("every demo request answered as expected");
        return Ok(());
    }
    println!("Ctrl-C stops the demo.");
    server.await??;
    Ok(())
}
