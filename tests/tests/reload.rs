//! Live reload of the whole configuration over loopback: a running server, its configuration file edited
//! (host names, IP rules, public access), the next request decided by the new configuration with no failed
//! request in between; an invalid edit keeps the running configuration; a moved listener needs a restart;
//! a Kubernetes-style `..data` symlink swap is followed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use portcullis::config::GatewayConfig;
use portcullis::serve::{Bound, ServeHandle};
use portcullis_tests::bounded;
use portcullis_tests::client::{BLOCKED, PUBLIC, VNET, get, get_from, tcp_from};
use portcullis_tests::server::echo_app;

/// Version 1: `old.example` and `stable.example` on the gateway, public access disabled, no IP rules.
const V1: &str = r#"
resource = "Microsoft.ApiManagement/service/contoso"

[[listener]]
name = "http"
address = "127.0.0.1:0"

[private_networks.networks]
vnet = ["127.0.0.1"]

[public_access]
enabled = false

[hosts.endpoint.gateway]
names = ["old.example", "stable.example"]
"#;

/// Version 2: `new.example` replaces `old.example`, public access enabled, 127.0.0.3 denied.
const V2: &str = r#"
resource = "Microsoft.ApiManagement/service/contoso"

[[listener]]
name = "http"
address = "127.0.0.1:0"

[private_networks.networks]
vnet = ["127.0.0.1"]

[public_access]
enabled = true

[ip.rules]
default = "allow"
deny = ["127.0.0.3"]

[hosts.endpoint.gateway]
names = ["new.example", "stable.example"]
"#;

/// A directory of its own under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("portcullis-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `text` to `path` the way editors and config management do: a new file renamed over the old one.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A server started from the configuration file `path`, watching it every 50 ms.
async fn start(
    path: &Path,
    watch: Option<Duration>,
) -> (ServeHandle, SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (config, source) = GatewayConfig::load(path).unwrap_or_else(|e| panic!("{e}"));
    let bound =
        Bound::from_config(&config, &source).await.unwrap_or_else(|e| panic!("{e}")).watch_interval(watch);
    let handle = bound.handle();
    let addr = bound.local_addrs()[0].1;
    assert!(!handle.is_ready(), "not ready before serving");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(bound.serve(echo_app(), async move {
        let _ = stop_rx.await;
    }));
    until("ready", || handle.is_ready()).await;
    (handle, addr, stop_tx)
}

/// The 1-based line of the first line of `text` that starts with `start`.
fn line_of(text: &str, start: &str) -> usize {
    text.lines().position(|l| l.starts_with(start)).expect("line") + 1
}

/// Waits (bounded) until `done` holds, looking every 10 ms.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    bounded(what, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edited_file_is_applied_to_the_next_request_without_a_failed_request() {
    let dir = TempDir::new("reload-edit");
    let path = dir.0.join("gateway.toml");
    std::fs::write(&path, V1).unwrap();
    let (handle, addr, _stop) = start(&path, Some(Duration::from_millis(50))).await;
    assert_eq!(handle.generation(), 1);

    // Version 1 in force.
    assert_eq!(get_from(VNET, addr, "old.example", &[]).await.status, 200);
    let r = get_from(VNET, addr, "new.example", &[]).await;
    assert_eq!((r.status.as_u16(), r.denial()), (421, "host.unknown".into()));
    let r = get_from(PUBLIC, addr, "stable.example", &[]).await;
    assert_eq!((r.status.as_u16(), r.denial()), (403, "public-access.disabled".into()));
    assert_eq!(get_from(BLOCKED, addr, "stable.example", &[]).await.status, 403, "public, access disabled");

    // A keep-alive connection opened under version 1, used again after the reload.
    let io = tcp_from(VNET, addr).await;
    let (mut kept, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io)).await.unwrap();
    tokio::spawn(conn);
    let res =
        bounded("kept request", kept.send_request(get("/echo", Some("old.example"), &[]))).await.unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();

    // Load on a host name both versions serve, through the reload: every request must be answered 200.
    let stop_load = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop_load, sent, failed) = (stop_load.clone(), sent.clone(), failed.clone());
        tokio::spawn(async move {
            // Bounded: at most 20,000 requests, and the test stops it long before.
            for _ in 0..20_000 {
                if stop_load.load(Ordering::Relaxed) {
                    break;
                }
                let io = tcp_from(VNET, addr).await;
                let ok = portcullis_tests::client::h1(io, get("/echo", Some("stable.example"), &[]))
                    .await
                    .is_ok_and(|r| r.status == 200);
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    until("some load before the edit", || sent.load(Ordering::Relaxed) >= 20).await;

    replace_file(&path, V2);
    until("the edited file applied", || handle.generation() == 2).await;
    let before = sent.load(Ordering::Relaxed);
    until("some load after the reload", || sent.load(Ordering::Relaxed) >= before + 20).await;

    // Version 2 in force, from the next request on: host names, public access, IP rules.
    let r = get_from(VNET, addr, "old.example", &[]).await;
    assert_eq!((r.status.as_u16(), r.denial()), (421, "host.unknown".into()));
    assert_eq!(get_from(VNET, addr, "new.example", &[]).await.status, 200);
    let r = get_from(PUBLIC, addr, "stable.example", &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.field("origin")),
        (200, "public".into()),
        "public access is enabled now"
    );
    let r = get_from(BLOCKED, addr, "stable.example", &[]).await;
    assert_eq!((r.status.as_u16(), r.denial()), (403, "ip.denied".into()));
    // The connection opened under version 1: its next request is decided by version 2.
    let res =
        bounded("kept request", kept.send_request(get("/echo", Some("old.example"), &[]))).await.unwrap();
    assert_eq!(res.status(), 421, "the kept connection's next request is decided by the new host names");

    // An invalid edit: reported with file, line and key; the running configuration stays.
    let invalid = V2.replace("enabled = true", "enabled = true\nshadow = \"yes\"");
    replace_file(&path, &invalid);
    until("the invalid edit refused", || handle.last_error().is_some()).await;
    let e = handle.last_error().unwrap();
    let line = line_of(&invalid, "shadow = ");
    assert_eq!(
        (e.file.as_str(), e.line, e.key.as_str()),
        (path.to_str().unwrap(), line, "public_access.shadow"),
        "{e}"
    );
    assert!(e.to_string().starts_with(&format!("{}:{line}:", path.display())), "{e}");
    assert_eq!(handle.generation(), 2, "the running configuration stays");
    assert_eq!(get_from(VNET, addr, "new.example", &[]).await.status, 200);
    let r = get_from(BLOCKED, addr, "stable.example", &[]).await;
    assert_eq!(r.denial(), "ip.denied");

    // A semantically invalid one (a deny entry that is no address) too, through the handle's result.
    std::fs::write(&path, V2.replace("\"127.0.0.3\"", "\"127.0.0.3\", \"not-an-address\"")).unwrap();
    let e = handle.reload().unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (line_of(V2, "deny = "), "ip.rules.deny"), "{e}");
    assert_eq!(handle.generation(), 2);

    // Moving a listener needs a restart, and says so.
    std::fs::write(&path, V2.replace("127.0.0.1:0", "127.0.0.1:1")).unwrap();
    let e = handle.reload().unwrap_err();
    assert_eq!(e.key, "listener.http.address", "{e}");
    assert!(e.message.contains("needs a restart"), "{e}");
    assert_eq!(handle.generation(), 2);

    // A valid file again, through the handle: generation 3.
    std::fs::write(&path, V1).unwrap();
    assert_eq!(handle.reload().unwrap(), 3);
    assert!(handle.last_error().is_none());
    assert_eq!(get_from(VNET, addr, "old.example", &[]).await.status, 200);

    stop_load.store(true, Ordering::Relaxed);
    bounded("load loop", load).await.unwrap();
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent >= 40, "{sent} requests");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed through the reloads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_configmap_symlink_swap_is_followed() {
    // A ConfigMap volume: gateway.toml -> ..data/gateway.toml, ..data -> ..<timestamp>; an update writes a new
    // timestamped directory and renames a new ..data symlink over the old one.
    let dir = TempDir::new("reload-k8s");
    let d = &dir.0;
    std::fs::create_dir(d.join("..2024_01_01_a")).unwrap();
    std::fs::write(d.join("..2024_01_01_a/gateway.toml"), V1).unwrap();
    std::os::unix::fs::symlink("..2024_01_01_a", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/gateway.toml", d.join("gateway.toml")).unwrap();
    let (handle, addr, _stop) = start(&d.join("gateway.toml"), Some(Duration::from_millis(50))).await;
    assert_eq!(get_from(VNET, addr, "old.example", &[]).await.status, 200);

    std::fs::create_dir(d.join("..2024_01_01_b")).unwrap();
    std::fs::write(d.join("..2024_01_01_b/gateway.toml"), V2).unwrap();
    std::os::unix::fs::symlink("..2024_01_01_b", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..2024_01_01_a")).unwrap();

    until("the swapped ConfigMap applied", || handle.generation() == 2).await;
    assert_eq!(get_from(VNET, addr, "new.example", &[]).await.status, 200);
    assert_eq!(get_from(VNET, addr, "old.example", &[]).await.status, 421);
}

/// A TLS gateway whose keystore and truststore are files in `dir` (`server.crt`, `server.key`, `ca.crt`),
/// the way a Kubernetes Secret volume presents them; client certificates required on `api.example`.
fn tls_config(dir: &Path, extra_vhost: &str) -> String {
    format!(
        r#"
resource = "Microsoft.ApiManagement/service/contoso"

[[listener]]
name = "https"
address = "127.0.0.1:0"
tls = true

[private_networks.networks]
vnet = ["127.0.0.1"]

[hosts.endpoint.gateway]
names = ["api.example", "next.example"]

[[keystore]]
name = "server"
cert = "{d}/server.crt"
key = "{d}/server.key"

[[truststore]]
name = "clients"
certs = ["{d}/clients-ca.crt"]

[[virtual_host]]
name = "api"
hosts = ["api.example"]
keystore = "server"
client_auth = "required"
truststore = "clients"
default = true
{extra_vhost}
"#,
        d = dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotated_certificates_and_new_virtual_hosts_apply_to_new_handshakes() {
    use portcullis_tests::client::TlsClient;
    use portcullis_tests::pki::Pki;
    if portcullis_tests::skip_without("openssl", "rotated_certificates_apply_to_new_handshakes") {
        return;
    }
    let pki = Pki::new();
    let (ca1, ca2) = (pki.ca("server-ca-1"), pki.ca("server-ca-2"));
    let clients = pki.ca("clients-ca");
    let client = pki.client("client", "partner", &clients, "ec", "-sha256");
    let server1 = pki.server("server1", &ca1, &["api.example", "next.example"]);
    let server2 = pki.server("server2", &ca2, &["api.example", "next.example"]);
    let dir = TempDir::new("reload-tls");
    let d = &dir.0;
    let put = |from: &Path, to: &str| std::fs::copy(from, d.join(to)).map(|_| ()).expect("copy");
    put(&server1.cert, "server.crt");
    put(&server1.key, "server.key");
    put(&clients.cert, "clients-ca.crt");
    let path = d.join("gateway.toml");
    std::fs::write(&path, tls_config(d, "")).unwrap();
    let (handle, addr, _stop) = start(&path, Some(Duration::from_millis(50))).await;

    let trusts1 = TlsClient::new(&ca1, Some(&client), &[b"http/1.1"]);
    let trusts2 = TlsClient::new(&ca2, Some(&client), &[b"http/1.1"]);
    let r = trusts1.get(addr, "api.example", "api.example").await.expect("served with server1");
    assert_eq!(r.status, 200);
    assert!(trusts2.get(addr, "api.example", "api.example").await.is_err(), "server1 is not signed by ca2");
    // A TLS connection made before the rotation, kept open.
    let kept_io = trusts1.connect(addr, "api.example").await.expect("handshake");
    let (mut kept, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(kept_io)).await.unwrap();
    tokio::spawn(conn);

    // The Secret rotates: a new certificate and key, both files at once (a `..data` swap writes them together).
    let staged = d.join("staged");
    std::fs::create_dir(&staged).unwrap();
    std::fs::copy(&server2.cert, staged.join("server.crt")).unwrap();
    std::fs::copy(&server2.key, staged.join("server.key")).unwrap();
    std::fs::rename(staged.join("server.key"), d.join("server.key")).unwrap();
    std::fs::rename(staged.join("server.crt"), d.join("server.crt")).unwrap();
    until("the rotated keystore applied", || handle.generation() >= 2 && handle.last_error().is_none()).await;
    let r = trusts2.get(addr, "api.example", "api.example").await.expect("served with server2");
    assert_eq!(r.status, 200);
    assert!(trusts1.get(addr, "api.example", "api.example").await.is_err(), "new handshakes use server2");
    // The connection made before the rotation keeps running.
    let res =
        bounded("kept TLS request", kept.send_request(get("/echo", Some("api.example"), &[]))).await.unwrap();
    assert_eq!(res.status(), 200);

    // A new virtual host without client authentication, for a new host name: new handshakes reach it.
    let before = handle.generation();
    replace_file(
        &path,
        &tls_config(
            d,
            "\n[[virtual_host]]\nname = \"next\"\nhosts = [\"next.example\"]\nkeystore = \"server\"\n",
        ),
    );
    until("the new virtual host applied", || handle.generation() > before).await;
    let anonymous = TlsClient::new(&ca2, None, &[b"http/1.1"]);
    let r = anonymous.get(addr, "next.example", "next.example").await.expect("no client certificate needed");
    assert_eq!((r.status.as_u16(), r.field("vhost")), (200, "next".into()));
    // ... while api.example still requires a client certificate.
    assert!(anonymous.get(addr, "api.example", "api.example").await.is_err());
    // And the TLS binding follows: a connection to `next` cannot name the client-auth host.
    let r = anonymous.get(addr, "next.example", "api.example").await.expect("exchange");
    assert_eq!(r.status, 421);

    // An anchor that is not a CA is refused by the truststore audit: the running configuration stays.
    let generation = handle.generation();
    std::fs::copy(&server1.cert, d.join("clients-ca.crt")).unwrap();
    until("the bad truststore refused", || handle.last_error().is_some()).await;
    let e = handle.last_error().unwrap();
    assert!(e.key.starts_with("truststore.clients"), "{e}");
    assert_eq!(handle.generation(), generation);
    let r = trusts2.get(addr, "api.example", "api.example").await.expect("still served");
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keep_alive_connection_whose_client_a_reload_distrusts_is_closed() {
    use portcullis_tests::client::TlsClient;
    use portcullis_tests::pki::Pki;
    if portcullis_tests::skip_without("openssl", "a_keep_alive_connection_whose_client_a_reload_distrusts") {
        return;
    }
    let pki = Pki::new();
    let server_ca = pki.ca("server-ca");
    let (clients1, clients2) = (pki.ca("clients-ca-1"), pki.ca("clients-ca-2"));
    let partner = pki.client("partner", "partner", &clients1, "ec", "-sha256");
    let server = pki.server("server", &server_ca, &["api.example", "next.example"]);
    let dir = TempDir::new("reload-distrust");
    let d = &dir.0;
    std::fs::copy(&server.cert, d.join("server.crt")).unwrap();
    std::fs::copy(&server.key, d.join("server.key")).unwrap();
    std::fs::copy(&clients1.cert, d.join("clients-ca.crt")).unwrap();
    let next = "\n[[virtual_host]]\nname = \"next\"\nhosts = [\"next.example\"]\nkeystore = \"server\"\n";
    // A short drain time: a connection being closed finishes its requests within it.
    let config = tls_config(d, next).replace(
        "tls = true\n",
        "tls = true\n[listener.timeouts]\ndrain_ms = 200\nidle_ms = 600000\nheader_read_ms = 600000\n",
    );
    let path = d.join("gateway.toml");
    std::fs::write(&path, &config).unwrap();
    let (handle, addr, _stop) = start(&path, Some(Duration::from_millis(50))).await;

    // Two keep-alive connections: the partner's on the client-auth host, an anonymous one on `next`.
    let keep = |io| async move {
        let (sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io)).await.unwrap();
        (sender, tokio::spawn(conn))
    };
    let partner_client = TlsClient::new(&server_ca, Some(&partner), &[b"http/1.1"]);
    let anonymous = TlsClient::new(&server_ca, None, &[b"http/1.1"]);
    let (mut kept, kept_conn) = keep(partner_client.connect(addr, "api.example").await.unwrap()).await;
    let (mut other, _other_conn) = keep(anonymous.connect(addr, "next.example").await.unwrap()).await;
    let res = kept.send_request(get("/echo", Some("api.example"), &[])).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(other.send_request(get("/echo", Some("next.example"), &[])).await.unwrap().status(), 200);

    // An edit that changes nothing the partner's handshake depends on keeps its connection.
    let before = handle.generation();
    replace_file(
        &path,
        &config.replace(
            "names = [\"api.example\", \"next.example\"]",
            "names = [\"api.example\", \"next.example\", \"spare.example\"]",
        ),
    );
    until("the harmless edit applied", || handle.generation() > before).await;
    let res =
        bounded("kept after a harmless edit", kept.send_request(get("/echo", Some("api.example"), &[])))
            .await
            .expect("the connection stays open");
    assert_eq!(res.status(), 200);

    // The truststore now trusts another CA only: the partner's open connection is closed, within the drain
    // time, while the anonymous connection to the unchanged host keeps being served.
    let before = handle.generation();
    std::fs::copy(&clients2.cert, d.join("clients-ca.crt")).unwrap();
    until("the new truststore applied", || handle.generation() > before).await;
    bounded("the distrusted connection closed", kept_conn).await.expect("connection task").ok();
    assert!(kept.send_request(get("/echo", Some("api.example"), &[])).await.is_err(), "closed");
    let res = bounded("the other connection", other.send_request(get("/echo", Some("next.example"), &[])))
        .await
        .expect("still open");
    assert_eq!(res.status(), 200);
    // And new handshakes with the partner's chain are refused.
    assert!(partner_client.get(addr, "api.example", "api.example").await.is_err());

    // Deleting the virtual host closes the connections it accepted.
    let (mut next_kept, next_conn) = keep(anonymous.connect(addr, "next.example").await.unwrap()).await;
    assert_eq!(next_kept.send_request(get("/", Some("next.example"), &[])).await.unwrap().status(), 200);
    let before = handle.generation();
    replace_file(&path, &config.replace(next, ""));
    until("the virtual host deleted", || handle.generation() > before).await;
    bounded("the deleted host's connection closed", next_conn).await.expect("connection task").ok();
    assert!(other.send_request(get("/", Some("next.example"), &[])).await.is_err(), "closed too");
}

#[tokio::test(flavor = "current_thread")]
async fn the_access_log_writes_one_rate_limited_line_per_request_and_follows_reloads() {
    let (logs, _guard) = portcullis_tests::logs::capture(tracing::Level::INFO);
    let dir = TempDir::new("access-log");
    let path = dir.0.join("gateway.toml");
    let with_log = format!("{V1}\n[access_log]\nlines_per_second = 5\n");
    std::fs::write(&path, &with_log).unwrap();
    let (handle, addr, _stop) = start(&path, None).await;
    assert!(handle.access_log().is_on());

    assert_eq!(get_from(VNET, addr, "stable.example", &[]).await.status, 200);
    let r = get_from(PUBLIC, addr, "stable.example", &[("x-forwarded-for", "10.9.9.9")]).await;
    assert_eq!(r.status, 403);
    let lines = logs.lines_with("portcullis::access");
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let (allowed, refused) = (&lines[0], &lines[1]);
    for want in ["status=200", "client=127.0.0.1 (peer)", "endpoint=gateway", "origin=private network vnet"] {
        assert!(allowed.contains(want), "{want:?} in {allowed}");
    }
    assert!(allowed.contains("refused=-"), "{allowed}");
    for want in ["status=403", "refused=public-access.disabled", "layer=public-access", "peer=127.0.0.2:"] {
        assert!(refused.contains(want), "{want:?} in {refused}");
    }

    // A flood writes at most the rate per second, and one line counting the rest.
    for _ in 0..30 {
        let _ = get_from(PUBLIC, addr, "stable.example", &[]).await;
    }
    let written = logs.lines_with("portcullis::access").len() - 2;
    assert!(written < 30, "rate-limited: {written} of 30 written");

    // A reload without the table turns it off.
    std::fs::write(&path, V1).unwrap();
    handle.reload().unwrap_or_else(|e| panic!("{e}"));
    assert!(!handle.access_log().is_on());
    let before = logs.lines_with("portcullis::access").len();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get_from(VNET, addr, "stable.example", &[]).await.status, 200);
    assert_eq!(logs.lines_with("portcullis::access").len(), before, "off after the reload");

    // A rate of 0 is refused, naming the key.
    std::fs::write(&path, format!("{V1}\n[access_log]\nlines_per_second = 0\n")).unwrap();
    let e = handle.reload().unwrap_err();
    assert_eq!(e.key, "access_log.lines_per_second", "{e}");
}
