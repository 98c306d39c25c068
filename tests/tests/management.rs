//! The management API over real TLS (a rustls client and curl), served by the serve helper on the management
//! endpoint: a virtual host with client auth created through SAP's body is served by the next handshake with
//! a good certificate and refused without one, its truststore updated, then deleted; the default cannot be
//! deleted; a weak certificate upload is refused; approving a pending private endpoint connection turns its
//! link's requests from 403 to 200; a restart keeps every change; public callers, readers writing, wrong
//! certificates and tokens, other hosts and stale ETags are refused; a fleet serves the API read-only; a
//! reloaded file is merged with the API's state; public access keeps its guard; IP rule sets are replaced
//! whole; at most 100 private endpoint connections; the router mounted on another endpoint refuses.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use portcullis::config::GatewayConfig;
use portcullis::serve::{Bound, ServeHandle};
use portcullis_tests::client::{PUBLIC, TlsClient, VNET, get, h1, tcp_from};
use portcullis_tests::pki::{Issued, Pki};
use portcullis_tests::proxy::{azure_tlv, v2};
use portcullis_tests::server::echo_app;
use portcullis_tests::{bounded, curl, skip_without};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const GW: &str = "contoso.azure-api.net";
const MGMT: &str = "contoso.management.azure-api.net";
const PARTNER: &str = "partner.contoso.example";
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
const READER_TOKEN: &str = "reader-token-0123456789abcdef";

const CONFIG: &str = r#"
resource = "Microsoft.ApiManagement/service/contoso"

[[listener]]
name = "https"
address = "127.0.0.1:0"
tls = true

[[listener]]
name = "lb"
address = "127.0.0.1:0"
[listener.proxy_protocol]
required_from = ["127.0.0.1"]

[private_networks.networks]
vnet = ["127.0.0.1"]

[public_access]
enabled = false

[[private_endpoint_connection]]
name = "pe-partner"
azure_link_id = 42
state = "pending"

[hosts.service]
name = "contoso"
domain = "azure-api.net"

[ip.endpoint.management]
default = "deny"
allow = ["127.0.0.1"]

[[keystore]]
name = "server"
cert = "server.crt"
key = "server.key"

[[truststore]]
name = "clients"
certs = ["ca.crt"]

[[virtual_host]]
name = "contoso"
hosts = ["contoso.azure-api.net"]
keystore = "server"
default = true

[[virtual_host]]
name = "mgmt"
hosts = ["contoso.management.azure-api.net"]
keystore = "server"
client_auth = "optional"
truststore = "clients"

[management]
mode = "{mode}"
state_file = "state/management.json"
audit_file = "audit.jsonl"
allow_from = ["127.0.0.0/8"]

[[management.grant]]
name = "ops"
role = "admin"
identity = { sha256 = "{admin}" }

[[management.grant]]
role = "admin"
token_file = "admin.token"

[[management.grant]]
role = "reader"
identity = { sha256 = "{reader}" }

[[management.grant]]
role = "reader"
token_file = "reader.token"
"#;

struct Setup {
    pki: Pki,
    ca: Issued,
    admin: Issued,
    reader: Issued,
    stranger: Issued,
    config: PathBuf,
}

fn fingerprint(cert: &Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().rsplit('=').next().expect("fingerprint").to_owned()
}

fn setup(mode: &str) -> Setup {
    setup_with(mode, |text| text)
}

/// [`setup`] with the configuration text edited by `edit`.
fn setup_with(mode: &str, edit: impl Fn(String) -> String) -> Setup {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    pki.server("server", &ca, &[GW, MGMT]);
    let admin = pki.client("admin", "operator", &ca, "ec", "-sha256");
    let reader = pki.client("reader", "auditor", &ca, "ec", "-sha256");
    // Trusted by the gateway, granted nothing.
    let stranger = pki.client("stranger", "stranger", &ca, "ec", "-sha256");
    std::fs::write(pki.path("admin.token"), format!("{ADMIN_TOKEN}\n")).expect("token");
    std::fs::write(pki.path("reader.token"), READER_TOKEN).expect("token");
    let text = edit(
        CONFIG
            .replace("{mode}", mode)
            .replace("{admin}", &fingerprint(&admin.cert))
            .replace("{reader}", &fingerprint(&reader.cert)),
    );
    let config = pki.path("gateway.toml");
    std::fs::write(&config, text).expect("config");
    Setup { pki, ca, admin, reader, stranger, config }
}

struct Server {
    handle: ServeHandle,
    https: SocketAddr,
    lb: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(config: &Path) -> Server {
        let (config, source) = GatewayConfig::load(config).unwrap_or_else(|e| panic!("{e}"));
        let bound =
            Bound::from_config(&config, &source).await.unwrap_or_else(|e| panic!("{e}")).watch_interval(None);
        assert!(bound.management().is_some(), "[management] enables the API");
        let handle = bound.handle();
        let addr = |name: &str| bound.local_addrs().into_iter().find(|(n, _)| n == name).expect("listener").1;
        let (https, lb) = (addr("https"), addr("lb"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(echo_app(), async move {
            let _ = stopped.await;
        }));
        bounded("ready", async {
            while !handle.is_ready() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        Server { handle, https, lb, stop: Some(stop), task }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = bounded("shutdown", self.task).await;
    }
}

/// Who calls the API.
#[derive(Clone, Copy)]
enum As<'a> {
    Cert(&'a Issued),
    Token(&'a str),
    CertAndToken(&'a Issued, &'a str),
    Nobody,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn etag(&self) -> String {
        self.headers.get("etag").and_then(|v| v.to_str().ok()).expect("ETag").to_owned()
    }

    fn code(&self) -> String {
        self.body["type"].as_str().unwrap_or("").trim_start_matches("urn:portcullis:denial:").to_owned()
    }
}

/// One API call over a new rustls connection from `from` to `addr`, SNI and Host `host`.
async fn call_from(
    (from, addr, host): (IpAddr, SocketAddr, &str),
    s: &Setup,
    who: As<'_>,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let (cert, token) = match who {
        As::Cert(c) => (Some(c), None),
        As::Token(t) => (None, Some(t)),
        As::CertAndToken(c, t) => (Some(c), Some(t)),
        As::Nobody => (None, None),
    };
    let tls =
        TlsClient::new(&s.ca, cert, &[b"http/1.1"]).connect_from(from, addr, host).await.expect("handshake");
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tls)).await.expect("http");
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path).header("host", host);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    if !bytes.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let res = bounded("response", send.send_request(req.body(Full::new(bytes)).expect("request")))
        .await
        .expect("response");
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    Answer { status, headers, body }
}

async fn call(
    s: &Setup,
    srv: &Server,
    who: As<'_>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Answer {
    call_from((VNET, srv.https, MGMT), s, who, method, path, body, &[]).await
}

/// `GET /echo` over the load balancer listener with a PROXY v2 header carrying Azure link id 42.
async fn via_link(srv: &Server) -> StatusCode {
    let dst = match srv.lb {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("IPv4 loopback"),
    };
    let mut io = tcp_from(VNET, srv.lb).await;
    io.write_all(&v2(SocketAddrV4::new([198, 51, 100, 7].into(), 40000), dst, &[azure_tlv(42)]))
        .await
        .expect("PROXY");
    h1(io, get("/echo", Some(GW), &[])).await.expect("response").status
}

fn pem(path: &Path) -> String {
    std::fs::read_to_string(path).expect("PEM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sap_virtual_host_lifecycle_stores_private_endpoints_and_restart() {
    if skip_without("openssl", "sap_virtual_host_lifecycle_stores_private_endpoints_and_restart") {
        return;
    }
    let s = setup("single");
    let srv = Server::start(&s.config).await;
    let admin = As::Cert(&s.admin);
    let partner_ca = s.pki.ca("partner-ca");
    let partner_client = s.pki.client("partner-client", "partner-app", &partner_ca, "ec", "-sha256");
    let partner_tls = s.pki.server("partner-tls", &s.ca, &[PARTNER]);

    // Stores: a keystore and a truststore uploaded as PEM, a reference for SAP's ref:// names.
    let r = call(&s, &srv, admin, Method::PUT, "/v1/keystores/partner-tls", Some(json!({
        "certificatePem": pem(&partner_tls.cert), "privateKeyPem": pem(&partner_tls.key), "alias": "partner"
    }))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(r.body["keyFingerprint"].as_str().is_some_and(|f| f.len() == 64), "{}", r.body);
    let text = r.body.to_string();
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains(&pem(&partner_tls.key)[40..80]),
        "no key: {text}"
    );
    let r = call(
        &s,
        &srv,
        admin,
        Method::PUT,
        "/v1/truststores/partner-ca",
        Some(json!({"certificatesPem": pem(&s.ca.cert)})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = call(
        &s,
        &srv,
        admin,
        Method::PUT,
        "/v1/references/partner-trust",
        Some(json!({"store": "partner-ca"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // A weak CA is refused on upload, naming the certificate and the rule.
    let weak = s.pki.ca_of("weak-ca", "rsa:1024", None);
    let r = call(
        &s,
        &srv,
        admin,
        Method::PUT,
        "/v1/truststores/weak",
        Some(json!({"certificatesPem": pem(&weak.cert)})),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "management.weak-certificate".into()),
        "{}",
        r.body
    );
    let detail = r.body["detail"].as_str().unwrap_or("");
    assert!(detail.contains("certificate 1") && detail.contains("1024"), "{detail}");

    // SAP's body, through curl, with the admin certificate: a virtual host with client auth.
    let port = srv.https.port().to_string();
    let resolve = |h: &str| format!("{h}:{port}:127.0.0.1");
    let url = |h: &str, p: &str| format!("https://{h}:{port}{p}");
    let sap = json!({
        "accountId": "contoso", "virtualHostUrl": format!("https://{PARTNER}:443"), "isDefaultVirtualHostRequest": false,
        "isClientAuthEnabled": true, "keyStore": "partner-tls", "keyAlias": "partner", "trustStore": "ref://partner-trust",
        "virtualHostId": "partner", "operation": "CREATE"
    })
    .to_string();
    let (ca, cert, key) = (
        s.ca.cert.display().to_string(),
        s.admin.cert.display().to_string(),
        s.admin.key.display().to_string(),
    );
    let sap_url = url(MGMT, "/apiportal/operations/1.0/Configuration.svc/VirtualHostRequests");
    let r = curl(
        &[
            "--cacert",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "--resolve",
            &resolve(MGMT),
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            &sap,
            &sap_url,
        ],
        None,
    )
    .await;
    assert_eq!(r.code, 201, "{} {}", r.body, r.stderr);
    assert_eq!(r.json()["virtualHostId"], "partner");

    // The next handshake: without a certificate refused, with a good one served by the gateway endpoint.
    let none = TlsClient::new(&s.ca, None, &[b"http/1.1"]);
    assert!(none.get(srv.https, PARTNER, PARTNER).await.is_err(), "client auth is required");
    let good = TlsClient::new(&s.ca, Some(&s.admin), &[b"http/1.1"]);
    let r = good.get(srv.https, PARTNER, PARTNER).await.expect("served");
    assert_eq!(
        (r.status, r.field("vhost"), r.field("served_by")),
        (StatusCode::OK, "partner".into(), "gateway".into()),
        "{}",
        r.text()
    );

    // SAP's listing names it; the default virtual host cannot be deleted.
    let r = call(&s, &srv, admin, Method::GET, "/apiportal/api/1.0/Management.svc/VirtualHosts", None).await;
    let ids: Vec<&str> =
        r.body["d"]["results"].as_array().expect("results").iter().filter_map(|v| v["id"].as_str()).collect();
    assert_eq!(ids, ["contoso", "mgmt", "partner"]);
    let sap_delete = |id: &str| json!({"virtualHostId": id, "operation": "DELETE"});
    let r = call(
        &s,
        &srv,
        admin,
        Method::POST,
        "/apiportal/operations/1.0/Configuration.svc/VirtualHostRequests",
        Some(sap_delete("contoso")),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "management.default-virtual-host".into()),
        "{}",
        r.body
    );
    // A store in use cannot be deleted.
    let r = call(&s, &srv, admin, Method::DELETE, "/v1/truststores/partner-ca", None).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "management.store-in-use".into()), "{}", r.body);

    // The truststore updated (with its ETag): the old CA's client is refused, the new CA's served.
    let current = call(&s, &srv, admin, Method::GET, "/v1/truststores/partner-ca", None).await;
    let r = call_from(
        (VNET, srv.https, MGMT),
        &s,
        admin,
        Method::PUT,
        "/v1/truststores/partner-ca",
        Some(json!({"certificatesPem": pem(&partner_ca.cert)})),
        &[("if-match", &current.etag())],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(good.get(srv.https, PARTNER, PARTNER).await.is_err(), "the old CA is no longer trusted");
    let partner = TlsClient::new(&s.ca, Some(&partner_client), &[b"http/1.1"]);
    assert_eq!(partner.get(srv.https, PARTNER, PARTNER).await.expect("served").status, StatusCode::OK);

    // A pending private endpoint connection: 403, approved through the API: 200, without a restart.
    assert_eq!(via_link(&srv).await, StatusCode::FORBIDDEN);
    let r = call(
        &s,
        &srv,
        admin,
        Method::PUT,
        "/v1/private-endpoint-connections/pe-partner",
        Some(json!({"status": "Approved", "description": "partner onboarding"})),
    )
    .await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("Approved")), "{}", r.body);
    assert_eq!(via_link(&srv).await, StatusCode::OK);

    // Public network access: Disabled needs a private path, which there is.
    let r = call(
        &s,
        &srv,
        admin,
        Method::PUT,
        "/v1/public-network-access",
        Some(json!({"publicNetworkAccess": "Enabled"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let generation = srv.handle.generation();

    // A restart keeps every change.
    srv.stop().await;
    let state = s.pki.path("state/management.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state).expect("state file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the state file is private");
    }
    let srv = Server::start(&s.config).await;
    assert!(generation > 1);
    assert_eq!(via_link(&srv).await, StatusCode::OK, "the approval survived");
    assert_eq!(partner.get(srv.https, PARTNER, PARTNER).await.expect("served").status, StatusCode::OK);
    let r = call(&s, &srv, As::Token(READER_TOKEN), Method::GET, "/v1/public-network-access", None).await;
    assert_eq!(r.body["publicNetworkAccess"], "Enabled");

    // Deleted through SAP's body: the name is no longer served.
    let r = call(
        &s,
        &srv,
        admin,
        Method::POST,
        "/apiportal/operations/1.0/Configuration.svc/VirtualHostRequests",
        Some(sap_delete("partner")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(partner.get(srv.https, PARTNER, PARTNER).await.is_err(), "no virtual host for the name");
    let r = call(&s, &srv, admin, Method::GET, "/v1/virtual-hosts/partner", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // One audit line per change, with who did it.
    let audit = std::fs::read_to_string(s.pki.path("audit.jsonl")).expect("audit file");
    let lines: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    let ok = lines.iter().filter(|l| l["result"] == "ok").count();
    assert_eq!(ok, 8, "{audit}");
    let create = lines.iter().find(|l| l["operation"] == "sap.virtual-host.create").expect("create line");
    assert!(
        create["identity"].as_str().is_some_and(|i| i.starts_with("cert:ops (") && i.contains("CN=operator")),
        "{create}"
    );
    assert!(create["before"].is_null() && create["after"].is_string(), "{create}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_without_the_right_are_refused_and_stale_etags_get_412() {
    if skip_without("openssl", "callers_without_the_right_are_refused_and_stale_etags_get_412") {
        return;
    }
    let s = setup("single");
    let srv = Server::start(&s.config).await;
    let path = "/v1/ip/sets/admins";
    let body = || Some(json!({"entries": ["10.1.0.0/16"]}));

    // Nobody, a granted-nothing certificate, a wrong token (even with a good certificate).
    let r = call(&s, &srv, As::Nobody, Method::GET, path, None).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "management.unauthenticated".into()));
    assert_eq!(r.headers.get("www-authenticate").map(|v| v.as_bytes()), Some(&b"Bearer"[..]));
    let r = call(&s, &srv, As::Cert(&s.stranger), Method::GET, "/v1/virtual-hosts", None).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "management.unauthenticated".into()));
    let r = call(
        &s,
        &srv,
        As::CertAndToken(&s.admin, "admin-token-0123456789abcdeX"),
        Method::GET,
        "/v1/virtual-hosts",
        None,
    )
    .await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "management.unauthenticated".into()));
    let r = call(
        &s,
        &srv,
        As::Token(&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]),
        Method::GET,
        "/v1/virtual-hosts",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a prefix of the token is not the token");

    // A certificate from a CA the management host does not trust never gets a request in.
    let other_ca = s.pki.ca("other-ca");
    let outsider = s.pki.client("outsider", "operator", &other_ca, "ec", "-sha256");
    let r = TlsClient::new(&s.ca, Some(&outsider), &[b"http/1.1"]).get(srv.https, MGMT, MGMT).await;
    assert!(r.is_err(), "an untrusted client certificate is refused: {:?}", r.map(|r| r.status));

    // Readers read, and cannot write (certificate or token).
    for reader in [As::Cert(&s.reader), As::Token(READER_TOKEN)] {
        let r = call(&s, &srv, reader, Method::GET, "/v1/virtual-hosts", None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = call(&s, &srv, reader, Method::PUT, path, body()).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::FORBIDDEN, "management.forbidden".into()),
            "{}",
            r.body
        );
    }

    // A public address is refused (the management endpoint's IP rules, before the API).
    let r = call_from(
        (PUBLIC, srv.https, MGMT),
        &s,
        As::Cert(&s.admin),
        Method::GET,
        "/v1/virtual-hosts",
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);

    // Another host never reaches the API: the application answers there.
    let r =
        call_from((VNET, srv.https, GW), &s, As::Token(ADMIN_TOKEN), Method::PUT, path, body(), &[]).await;
    assert_eq!(r.body["served_by"], "gateway", "{}", r.body);
    let r = call(&s, &srv, As::Token(ADMIN_TOKEN), Method::GET, path, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "nothing was written: {}", r.body);

    // validate-only changes nothing; a bad entry is a 422.
    let r =
        call(&s, &srv, As::Token(ADMIN_TOKEN), Method::PUT, "/v1/ip/sets/admins?validate=true", body()).await;
    assert_eq!((r.status, r.body["valid"].as_bool()), (StatusCode::OK, Some(true)), "{}", r.body);
    assert_eq!(
        call(&s, &srv, As::Token(ADMIN_TOKEN), Method::GET, path, None).await.status,
        StatusCode::NOT_FOUND
    );
    let r =
        call(&s, &srv, As::Token(ADMIN_TOKEN), Method::PUT, path, Some(json!({"entries": ["10.1.0.1/16"]})))
            .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);

    // Two writers with the same ETag: one wins, the other gets 412.
    let r = call(&s, &srv, As::Token(ADMIN_TOKEN), Method::PUT, path, body()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let tag = r.etag();
    let write = |entries: &'static str| {
        let tag = tag.clone();
        let s = &s;
        let srv = &srv;
        async move {
            call_from(
                (VNET, srv.https, MGMT),
                s,
                As::Token(ADMIN_TOKEN),
                Method::PUT,
                path,
                Some(json!({"entries": [entries]})),
                &[("if-match", &tag)],
            )
            .await
            .status
        }
    };
    let (a, b) = tokio::join!(write("10.2.0.0/16"), write("10.3.0.0/16"));
    let mut statuses = [a, b];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::PRECONDITION_FAILED]);

    // The effective configuration, in TOML and JSON, carries the change.
    let r = call(&s, &srv, As::Token(READER_TOKEN), Method::GET, "/v1/effective-config", None).await;
    let entries = r.body["ip"]["sets"]["admins"].as_array().expect("set").len();
    assert_eq!(entries, 1);
    let r =
        call(&s, &srv, As::Token(READER_TOKEN), Method::GET, "/v1/effective-config?format=toml", None).await;
    assert!(
        r.body.as_str().is_some_and(|t| t.contains("[ip.sets]") && !t.contains("PRIVATE KEY")),
        "{}",
        r.body
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_file_keeps_the_api_changes_and_a_fleet_is_read_only() {
    if skip_without("openssl", "a_reloaded_file_keeps_the_api_changes_and_a_fleet_is_read_only") {
        return;
    }
    let s = setup("single");
    let srv = Server::start(&s.config).await;
    let admin = As::Token(ADMIN_TOKEN);
    let r = call(
        &s,
        &srv,
        admin,
        Method::PUT,
        "/v1/private-endpoint-connections/pe-partner",
        Some(json!({"status": "Approved"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // The file changes something the API did not (a new IP set) and something it did (the connection's state):
    // the file's new set applies, the API's approval stays.
    let text = std::fs::read_to_string(&s.config)
        .expect("config")
        .replace("[ip.endpoint.management]", "[ip.sets]\nops = [\"10.9.0.0/16\"]\n\n[ip.endpoint.management]")
        .replace("state = \"pending\"", "state = \"rejected\"");
    std::fs::write(&s.config, text).expect("edit");
    srv.handle.reload().unwrap_or_else(|e| panic!("{e}"));
    let r = call(&s, &srv, admin, Method::GET, "/v1/ip/sets/ops", None).await;
    assert_eq!(r.status, StatusCode::OK, "the file's change applies: {}", r.body);
    assert_eq!(via_link(&srv).await, StatusCode::OK, "the API's approval wins over the file's state");
    // Grants are read at start: a reload that changes [management] (here, drops the admin network) is
    // refused as needing a restart, and the running configuration stays.
    let generation = srv.handle.generation();
    let text = std::fs::read_to_string(&s.config).expect("config");
    std::fs::write(
        &s.config,
        text.replace("allow_from = [\"127.0.0.0/8\"]", "allow_from = [\"10.0.0.0/8\"]"),
    )
    .expect("edit");
    let e = srv.handle.reload().expect_err("a changed [management] needs a restart");
    assert_eq!(e.key, "management", "{e}");
    assert!(e.message.contains("needs a restart"), "{e}");
    assert_eq!(srv.handle.generation(), generation);
    let r = call(&s, &srv, admin, Method::GET, "/v1/ip/sets/ops", None).await;
    assert_eq!(r.status, StatusCode::OK, "still served under the running grants: {}", r.body);
    srv.stop().await;

    // A fleet: reads answer, writes are refused, nothing is persisted.
    let fleet = setup("fleet");
    let srv = Server::start(&fleet.config).await;
    let r = call(&fleet, &srv, As::Token(ADMIN_TOKEN), Method::GET, "/v1/private-endpoint-connections", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body[0]["status"], "Pending");
    let r = call(
        &fleet,
        &srv,
        As::Token(ADMIN_TOKEN),
        Method::PUT,
        "/v1/private-endpoint-connections/pe-partner",
        Some(json!({"status": "Approved"})),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "management.read-only".into()),
        "{}",
        r.body
    );
    assert_eq!(via_link(&srv).await, StatusCode::FORBIDDEN);
    assert!(!fleet.pki.path("state/management.json").exists());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_100_private_endpoint_connections_and_disconnected_is_refused() {
    if skip_without("openssl", "at_most_100_private_endpoint_connections_and_disconnected_is_refused") {
        return;
    }
    let s = setup("single");
    let srv = Server::start(&s.config).await;
    let admin = As::Token(ADMIN_TOKEN);
    let r = call(
        &s,
        &srv,
        admin,
        Method::PUT,
        "/v1/private-endpoint-connections/pe-partner",
        Some(json!({"status": "Approved"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(via_link(&srv).await, StatusCode::OK);
    let r = call(
        &s,
        &srv,
        admin,
        Method::PUT,
        "/v1/private-endpoint-connections/pe-partner",
        Some(json!({"status": "Disconnected", "description": "the consumer deleted its endpoint"})),
    )
    .await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("Disconnected")), "{}", r.body);
    assert_eq!(via_link(&srv).await, StatusCode::FORBIDDEN, "a disconnected link is refused");
    // A new connection needs its link id; the file's connection cannot take another.
    let r = call(
        &s,
        &srv,
        admin,
        Method::PUT,
        "/v1/private-endpoint-connections/new",
        Some(json!({"status": "Pending"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    // The file has one; 99 more are accepted, the 101st is refused.
    for i in 0..99u32 {
        let r = call(
            &s,
            &srv,
            admin,
            Method::PUT,
            &format!("/v1/private-endpoint-connections/pe-{i}"),
            Some(json!({"status": "Pending", "azureLinkId": 1000 + i})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{i}: {}", r.body);
    }
    let r = call(
        &s,
        &srv,
        admin,
        Method::PUT,
        "/v1/private-endpoint-connections/pe-100",
        Some(json!({"status": "Pending", "azureLinkId": 5000})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body["detail"].as_str().is_some_and(|d| d.contains("at most 100")), "{}", r.body);
    let r =
        call(&s, &srv, As::Token(READER_TOKEN), Method::GET, "/v1/private-endpoint-connections", None).await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(100));
    srv.stop().await;
}

/// An application that mounts the API's router itself on another endpoint does not expose it there: the
/// router checks the endpoint the host rule recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_mounted_on_another_endpoint_refuses() {
    if skip_without("openssl", "the_router_mounted_on_another_endpoint_refuses") {
        return;
    }
    let s = setup("single");
    let (config, source) = GatewayConfig::load(&s.config).unwrap_or_else(|e| panic!("{e}"));
    let bound =
        Bound::from_config(&config, &source).await.unwrap_or_else(|e| panic!("{e}")).watch_interval(None);
    let management = bound.management().expect("enabled");
    let https = bound.local_addrs().into_iter().find(|(n, _)| n == "https").expect("listener").1;
    let handle = bound.handle();
    let app: portcullis::Endpoints<
        portcullis::serve::RequestBody,
        axum::body::Body,
        std::convert::Infallible,
    > = portcullis::Endpoints::new().route("gateway", management.router());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(app, async move {
        let _ = stopped.await;
    }));
    let srv = Server { handle, https, lb: https, stop: Some(stop), task };
    bounded("ready", async {
        while !srv.handle.is_ready() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    let r = call_from(
        (VNET, srv.https, GW),
        &s,
        As::Token(ADMIN_TOKEN),
        Method::GET,
        "/v1/virtual-hosts",
        None,
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::MISDIRECTED_REQUEST, "management.endpoint".into()),
        "{}",
        r.body
    );
    let r = call(&s, &srv, As::Token(ADMIN_TOKEN), Method::GET, "/v1/virtual-hosts", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    srv.stop().await;
}

/// Public access is not disabled without a private path; IP rule sets are replaced whole (and validated
/// only on request); `allow_from` refuses other client addresses even where the IP rules would not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_access_guard_ip_rules_and_allow_from() {
    if skip_without("openssl", "public_access_guard_ip_rules_and_allow_from") {
        return;
    }
    let s = setup_with("single", |text| {
        text.replace("[private_networks.networks]\nvnet = [\"127.0.0.1\"]\n", "")
            .replace("[public_access]\nenabled = false", "[public_access]\nenabled = true")
            .replace("[ip.endpoint.management]\ndefault = \"deny\"\nallow = [\"127.0.0.1\"]\n", "")
            .replace("allow_from = [\"127.0.0.0/8\"]", "allow_from = [\"127.0.0.1\"]")
    });
    let srv = Server::start(&s.config).await;
    let admin = As::Token(ADMIN_TOKEN);

    let r = call(
        &s,
        &srv,
        admin,
        Method::PUT,
        "/v1/public-network-access",
        Some(json!({"publicNetworkAccess": "Disabled"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body["detail"].as_str().is_some_and(|d| d.contains("private")), "{}", r.body);
    let r = call(&s, &srv, admin, Method::GET, "/v1/public-network-access", None).await;
    assert_eq!(r.body["publicNetworkAccess"], "Enabled", "nothing changed");

    // A whole rule set: a bad entry is refused in validate-only mode and for real; a good one applies.
    let rules = |deny: &str| Some(json!({"default": "allow", "deny": [deny]}));
    let r =
        call(&s, &srv, admin, Method::PUT, "/v1/ip/rules/global?validate=true", rules("127.0.0.3/8")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = call(&s, &srv, admin, Method::PUT, "/v1/ip/rules/global?validate=true", rules("127.0.0.2")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let gateway = TlsClient::new(&s.ca, None, &[b"http/1.1"]);
    let public = |c: TlsClient, https: SocketAddr| async move {
        let tls = c.connect_from(PUBLIC, https, GW).await.expect("handshake");
        h1(tls, get("/echo", Some(GW), &[])).await.expect("response").status
    };
    assert_eq!(public(gateway.clone(), srv.https).await, StatusCode::OK, "validate-only changed nothing");
    let r = call(&s, &srv, admin, Method::PUT, "/v1/ip/rules/global", rules("127.0.0.2")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(public(gateway.clone(), srv.https).await, StatusCode::FORBIDDEN, "the new rule set applies");
    let r = call(&s, &srv, admin, Method::DELETE, "/v1/ip/rules/global", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(public(gateway, srv.https).await, StatusCode::OK);

    // 127.0.0.2 passes the IP rules now, but is not in allow_from.
    let r =
        call_from((PUBLIC, srv.https, MGMT), &s, admin, Method::GET, "/v1/virtual-hosts", None, &[]).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "management.address".into()), "{}", r.body);
    srv.stop().await;
}

/// One API call as [`call_from`] over the management host, with a raw body and exactly the headers given.
async fn raw(
    s: &Setup,
    srv: &Server,
    who: As<'_>,
    target: (Method, &str),
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> Answer {
    try_raw(s, srv, who, target, body, headers).await.expect("response")
}

/// [`raw`], or the client's error when the server closed the connection while the body was being sent.
async fn try_raw(
    s: &Setup,
    srv: &Server,
    who: As<'_>,
    (method, path): (Method, &str),
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> Result<Answer, hyper::Error> {
    let (cert, token) = match who {
        As::Cert(c) => (Some(c), None),
        As::Token(t) => (None, Some(t)),
        As::CertAndToken(c, t) => (Some(c), Some(t)),
        As::Nobody => (None, None),
    };
    let tls = TlsClient::new(&s.ca, cert, &[b"http/1.1"])
        .connect_from(VNET, srv.https, MGMT)
        .await
        .expect("handshake");
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tls)).await.expect("http");
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path).header("host", MGMT);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res =
        bounded("response", send.send_request(req.body(Full::new(Bytes::from(body))).expect("request")))
            .await?;
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await?.to_bytes();
    let body =
        serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into_owned()));
    Ok(Answer { status, headers, body })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_form_post_with_the_browsers_certificate_changes_nothing() {
    if skip_without("openssl", "a_cross_site_form_post_with_the_browsers_certificate_changes_nothing") {
        return;
    }
    let s = setup("single");
    let srv = Server::start(&s.config).await;
    // A page in the operator's browser can POST a "simple" cross-site request (no preflight) with a
    // text/plain or form body, and the browser presents the operator's client certificate by itself.
    let sap = json!({"virtualHostUrl": "https://csrf.example", "keyStore": "server", "operation": "CREATE"});
    let path = "/apiportal/operations/1.0/Configuration.svc/VirtualHostRequests";
    for media in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let r = raw(
            &s,
            &srv,
            As::Cert(&s.admin),
            (Method::POST, path),
            sap.to_string().into_bytes(),
            &[("content-type", media)],
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "management.media-type".into()),
            "{media}: {}",
            r.body
        );
    }
    let r = raw(&s, &srv, As::Cert(&s.admin), (Method::POST, path), sap.to_string().into_bytes(), &[]).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "no content type: {}", r.body);
    let r = call(&s, &srv, As::Cert(&s.admin), Method::GET, "/v1/virtual-hosts/csrf-example", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    // JSON, as every SAP script and curl example sends it, is served.
    let r = raw(
        &s,
        &srv,
        As::Cert(&s.admin),
        (Method::POST, path),
        sap.to_string().into_bytes(),
        &[("content-type", "Application/JSON; charset=utf-8")],
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_are_refused_without_a_5xx() {
    if skip_without("openssl", "hostile_inputs_are_refused_without_a_5xx") {
        return;
    }
    let s = setup("single");
    let srv = Server::start(&s.config).await;
    let json = [("content-type", "application/json")];
    let long = "a".repeat(300);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_unknown = format!(
        r#"{{"operation": "CREATE", "virtualHostUrl": "https://d.example", "x": {deep}, "y": {}1{}}}"#,
        "{\"a\":".repeat(100_000),
        "}".repeat(100_000)
    );
    let vh = |hosts: Value| json!({"hosts": hosts, "keystore": "server"}).to_string().into_bytes();
    let sap = |url: &str, op: &str| {
        json!({"virtualHostUrl": url, "keyStore": "server", "operation": op}).to_string().into_bytes()
    };
    let cases: Vec<(Method, String, Vec<u8>)> = vec![
        (Method::PUT, "/v1/virtual-hosts/..".into(), vh(json!(["x.example"]))),
        (Method::PUT, "/v1/virtual-hosts/a%2F..%2Fb".into(), vh(json!(["x.example"]))),
        (Method::PUT, "/v1/virtual-hosts/a%00b".into(), vh(json!(["x.example"]))),
        (Method::PUT, "/v1/virtual-hosts/%C3%A9t%C3%A9".into(), vh(json!(["x.example"]))),
        (Method::PUT, "/v1/virtual-hosts/%FF".into(), vh(json!(["x.example"]))),
        (Method::PUT, format!("/v1/virtual-hosts/{long}"), vh(json!(["x.example"]))),
        (Method::PUT, "/v1/virtual-hosts/odd".into(), vh(json!([""]))),
        (Method::PUT, "/v1/virtual-hosts/odd".into(), vh(json!(["*"]))),
        (Method::PUT, "/v1/virtual-hosts/odd".into(), vh(json!(["a b.example"]))),
        (Method::PUT, "/v1/virtual-hosts/odd".into(), vh(json!(["user@x.example"]))),
        (Method::PUT, "/v1/virtual-hosts/odd".into(), vh(json!([MGMT]))),
        (Method::PUT, "/v1/virtual-hosts/odd".into(), vh(json!(["x.example\n[evil]"]))),
        (Method::PUT, "/v1/virtual-hosts/odd".into(), vh(json!([long.clone() + ".example"]))),
        (Method::PUT, "/v1/virtual-hosts/odd".into(), b"{".to_vec()),
        (Method::PUT, "/v1/virtual-hosts/odd".into(), deep.clone().into_bytes()),
        (
            Method::PUT,
            "/v1/virtual-hosts/odd".into(),
            format!(r#"{{"hosts": {deep}, "keystore": "server"}}"#).into_bytes(),
        ),
        (
            Method::POST,
            "/apiportal/operations/1.0/Configuration.svc/VirtualHostRequests".into(),
            deep_unknown.into_bytes(),
        ),
        (Method::PUT, "/v1/virtual-hosts/odd".into(), vec![b' '; 2 * 1024 * 1024]),
        (Method::PUT, "/v1/virtual-hosts/odd".into(), json!({"hosts": ["o.example"], "keystore": "server", "identities": [{"nope": "x"}]}).to_string().into_bytes()),
        (Method::PUT, "/v1/virtual-hosts/odd".into(), json!({"hosts": ["o.example"], "keystore": "server", "identities": [{}]}).to_string().into_bytes()),
        (Method::PUT, "/v1/virtual-hosts/odd".into(), json!({"hosts": ["o.example"], "keystore": "server", "policy": "nope"}).to_string().into_bytes()),
        (Method::PUT, "/v1/virtual-hosts/odd".into(), json!({"hosts": ["o.example"], "keystore": "server", "endpoint": "nope"}).to_string().into_bytes()),
        (Method::DELETE, "/v1/keystores/server".into(), vec![]),
        (Method::PUT, "/v1/keystores/k".into(), json!({"certificatePem": "garbage", "privateKeyPem": "garbage"}).to_string().into_bytes()),
        (Method::PUT, "/v1/keystores/k".into(), json!({"certificatePem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "privateKeyPem": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}).to_string().into_bytes()),
        (Method::PUT, "/v1/keystores/k".into(), json!({"certificatePem": pem(&s.admin.cert), "privateKeyPem": pem(&s.reader.key)}).to_string().into_bytes()),
        (Method::PUT, "/v1/truststores/t".into(), json!({"certificatesPem": "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"}).to_string().into_bytes()),
        (Method::PUT, "/v1/truststores/t".into(), json!({"certificatesPem": ""}).to_string().into_bytes()),
        (Method::PUT, "/v1/private-endpoint-connections/new".into(), json!({"status": "Approved", "gcpPscConnectionId": u64::MAX}).to_string().into_bytes()),
        (Method::PUT, "/v1/private-endpoint-connections/new".into(), json!({"status": "Approved", "azureLinkId": 42}).to_string().into_bytes()),
        (Method::PUT, "/v1/private-endpoint-connections/pe-partner".into(), json!({"status": "approved"}).to_string().into_bytes()),
        (Method::PUT, "/v1/ip/rules/sets".into(), json!({"default": "deny"}).to_string().into_bytes()),
        (Method::PUT, "/v1/ip/rules/endpoint.".into(), json!({"default": "deny"}).to_string().into_bytes()),
        (Method::PUT, "/v1/ip/rules/endpoint.nope".into(), json!({"default": "deny"}).to_string().into_bytes()),
        (Method::PUT, "/v1/ip/rules/global".into(), json!({"default": "maybe"}).to_string().into_bytes()),
        (Method::PUT, "/v1/ip/rules/global".into(), json!({"default": "allow", "allow": ["@missing"]}).to_string().into_bytes()),
        (Method::PUT, "/v1/ip/sets/x".into(), json!({"entries": ["not-an-ip"]}).to_string().into_bytes()),
        (Method::PUT, "/v1/references/r".into(), json!({"store": "../../etc/passwd"}).to_string().into_bytes()),
        (Method::POST, "/apiportal/operations/1.0/Configuration.svc/VirtualHostRequests".into(), sap("", "CREATE")),
        (Method::POST, "/apiportal/operations/1.0/Configuration.svc/VirtualHostRequests".into(), sap("https://", "CREATE")),
        (Method::POST, "/apiportal/operations/1.0/Configuration.svc/VirtualHostRequests".into(), sap("https://[::1]:443/", "CREATE")),
        (Method::POST, "/apiportal/operations/1.0/Configuration.svc/VirtualHostRequests".into(), sap("https://u@x.example/", "CREATE")),
        (Method::POST, "/apiportal/operations/1.0/Configuration.svc/VirtualHostRequests".into(), sap("https://x.example/", "PATCH")),
        (Method::POST, "/apiportal/operations/1.0/Configuration.svc/VirtualHostRequests".into(), sap("https://x.example/", "\u{0130}")),
        (Method::POST, "/apiportal/operations/1.0/Configuration.svc/VirtualHostRequests".into(), json!({"virtualHostId": "contoso", "operation": "DELETE"}).to_string().into_bytes()),
        (Method::POST, "/apiportal/operations/1.0/Configuration.svc/VirtualHostRequests".into(), json!({"virtualHostUrl": "https://y.example", "keyStore": "ref://missing", "operation": "CREATE"}).to_string().into_bytes()),
        (Method::POST, "/apiportal/operations/1.0/Configuration.svc/VirtualHostRequests".into(), json!({"virtualHostId": "nope", "operation": "UPDATE"}).to_string().into_bytes()),
    ];
    let mut accepted = Vec::new();
    for (method, path, body) in cases {
        let oversized = body.len() > 1024 * 1024;
        let r = match try_raw(&s, &srv, As::Token(ADMIN_TOKEN), (method.clone(), &path), body, &json).await {
            Ok(r) => r,
            // The server answers 413 after 1 MiB and closes: the client may still be sending.
            Err(e) if oversized => {
                eprintln!("{method} {path}: closed while sending ({e})");
                continue;
            }
            Err(e) => panic!("{method} {path}: {e}"),
        };
        if !r.status.is_client_error() {
            accepted.push(format!("{method} {path}: {} {}", r.status, r.body));
        }
    }
    assert!(accepted.is_empty(), "{accepted:#?}");
    // Still serving, nothing changed the default.
    let r = call(&s, &srv, As::Token(ADMIN_TOKEN), Method::GET, "/v1/virtual-hosts/contoso", None).await;
    assert_eq!((r.status, r.body["default"].as_bool()), (StatusCode::OK, Some(true)), "{}", r.body);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_virtual_host_made_the_default_is_the_default() {
    if skip_without("openssl", "the_last_virtual_host_made_the_default_is_the_default") {
        return;
    }
    let s = setup("single");
    let srv = Server::start(&s.config).await;
    let admin = As::Token(ADMIN_TOKEN);
    let vhost = |host: &str| Some(json!({"hosts": [host], "keystore": "server", "default": true}));
    let r = call(&s, &srv, admin, Method::PUT, "/v1/virtual-hosts/zeta", vhost("zeta.example")).await;
    assert_eq!((r.status, r.body["default"].as_bool()), (StatusCode::CREATED, Some(true)), "{}", r.body);
    let r = call(&s, &srv, admin, Method::PUT, "/v1/virtual-hosts/alpha", vhost("alpha.example")).await;
    assert_eq!((r.status, r.body["default"].as_bool()), (StatusCode::CREATED, Some(true)), "{}", r.body);
    let defaults: Vec<String> = call(&s, &srv, admin, Method::GET, "/v1/virtual-hosts", None)
        .await
        .body
        .as_array()
        .expect("list")
        .iter()
        .filter(|v| v["default"] == true)
        .map(|v| v["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(defaults, ["alpha"]);
    // The former default is an ordinary virtual host now: it can be deleted.
    let r = call(&s, &srv, admin, Method::DELETE, "/v1/virtual-hosts/zeta", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    srv.stop().await;
    // And so it stays across a restart.
    let srv = Server::start(&s.config).await;
    let r = call(&s, &srv, admin, Method::GET, "/v1/virtual-hosts/alpha", None).await;
    assert_eq!(r.body["default"].as_bool(), Some(true), "{}", r.body);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_keys_are_never_stored_as_certificates_and_foreign_files_are_kept() {
    if skip_without("openssl", "private_keys_are_never_stored_as_certificates_and_foreign_files_are_kept") {
        return;
    }
    let s = setup("single");
    // An operator's file in the uploads directory is not the API's to remove.
    let files = s.pki.path("state/management.json.d");
    std::fs::create_dir_all(&files).expect("dir");
    std::fs::write(files.join("README"), "kept by the operator").expect("file");
    let srv = Server::start(&s.config).await;
    let admin = As::Token(ADMIN_TOKEN);
    let with_key = format!("{}{}", pem(&s.ca.cert), pem(&s.admin.key));
    let r =
        call(&s, &srv, admin, Method::PUT, "/v1/truststores/t", Some(json!({"certificatesPem": with_key})))
            .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "management.invalid".into()),
        "{}",
        r.body
    );
    let chain_with_key = format!("{}{}", pem(&s.admin.cert), pem(&s.admin.key));
    let r = call(
        &s,
        &srv,
        admin,
        Method::PUT,
        "/v1/keystores/k",
        Some(json!({"certificatePem": chain_with_key, "privateKeyPem": pem(&s.admin.key)})),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "management.invalid".into()),
        "{}",
        r.body
    );
    let r = call(
        &s,
        &srv,
        admin,
        Method::PUT,
        "/v1/truststores/t",
        Some(json!({"certificatesPem": pem(&s.ca.cert)})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    for entry in std::fs::read_dir(&files).expect("list").flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        assert!(!text.contains("PRIVATE KEY"), "{}", entry.path().display());
    }
    assert!(files.join("README").exists(), "the operator's file is kept");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_cannot_be_persisted_is_not_applied() {
    if skip_without("openssl", "a_change_that_cannot_be_persisted_is_not_applied") {
        return;
    }
    let s = setup("single");
    let srv = Server::start(&s.config).await;
    let admin = As::Token(ADMIN_TOKEN);
    let approve = || Some(json!({"status": "Approved", "description": "ok"}));
    let path = "/v1/private-endpoint-connections/pe-partner";
    // A validate-only answer is not the resource: it carries no ETag a later If-Match could use.
    let r = call(&s, &srv, admin, Method::PUT, &format!("{path}?validate=true"), approve()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.headers.get("etag").is_none(), "{:?}", r.headers);
    let tag = call(&s, &srv, admin, Method::GET, path, None).await.etag();

    // The state file's directory turns into a file: nothing can be written there.
    let dir = s.pki.path("state");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::write(&dir, "not a directory").expect("file");
    let r = call(&s, &srv, admin, Method::PUT, path, approve()).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::INTERNAL_SERVER_ERROR, "management.persist".into()),
        "{}",
        r.body
    );
    assert_eq!(via_link(&srv).await, StatusCode::FORBIDDEN, "nothing was applied");
    let r = call(&s, &srv, admin, Method::GET, path, None).await;
    assert_eq!((r.body["status"].as_str(), r.etag()), (Some("Pending"), tag.clone()), "{}", r.body);
    let upload = json!({"certificatesPem": pem(&s.ca.cert)});
    let r = call(&s, &srv, admin, Method::PUT, "/v1/truststores/t", Some(upload)).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    assert_eq!(
        call(&s, &srv, admin, Method::GET, "/v1/truststores/t", None).await.status,
        StatusCode::NOT_FOUND
    );

    // Writable again: the same change, with the same ETag, applies.
    std::fs::remove_file(&dir).expect("file");
    let r =
        call_from((VNET, srv.https, MGMT), &s, admin, Method::PUT, path, approve(), &[("if-match", &tag)])
            .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(via_link(&srv).await, StatusCode::OK);
    srv.stop().await;
}

/// `GET /v1/virtual-hosts` on the management host over the plain load balancer listener, from 127.0.0.1 (in
/// `allow_from` and the management IP rules), with the admin token.
async fn in_clear(srv: &Server) -> (StatusCode, String) {
    let dst = match srv.lb {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("IPv4 loopback"),
    };
    let mut io = tcp_from(VNET, srv.lb).await;
    io.write_all(&v2(SocketAddrV4::new([127, 0, 0, 1].into(), 40000), dst, &[])).await.expect("PROXY");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = h1(io, get("/v1/virtual-hosts", Some(MGMT), &[("authorization", auth.as_str())]))
        .await
        .expect("response");
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, body["type"].as_str().unwrap_or("").trim_start_matches("urn:portcullis:denial:").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_tls_is_refused_unless_a_proxy_terminates_it() {
    if skip_without("openssl", "a_call_without_tls_is_refused_unless_a_proxy_terminates_it") {
        return;
    }
    // The management host is routed on every listener, the plain one too: a bearer token sent there crosses
    // the network in clear.
    let s = setup("single");
    let srv = Server::start(&s.config).await;
    assert_eq!(in_clear(&srv).await, (StatusCode::FORBIDDEN, "management.tls-required".into()));
    srv.stop().await;
    // Behind a proxy that terminates TLS, the operator says so.
    let s =
        setup_with("single", |text| text.replace("[management]\n", "[management]\nrequire_tls = false\n"));
    let srv = Server::start(&s.config).await;
    assert_eq!(in_clear(&srv).await.0, StatusCode::OK);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_asked_for_never_applies_the_change() {
    if skip_without("openssl", "a_validation_asked_for_never_applies_the_change") {
        return;
    }
    let s = setup("single");
    let srv = Server::start(&s.config).await;
    let admin = As::Token(ADMIN_TOKEN);
    let body = || Some(json!({"entries": ["10.1.0.0/16"]}));
    for query in ["validate=True", "validate=TRUE", "validate", "a=b&validate=true"] {
        let r = call(&s, &srv, admin, Method::PUT, &format!("/v1/ip/sets/admins?{query}"), body()).await;
        assert_eq!(
            (r.status, r.body["valid"].as_bool()),
            (StatusCode::OK, Some(true)),
            "{query}: {}",
            r.body
        );
    }
    for query in ["validate=yes", "validate=1", "validate=tru", "validate=true%00"] {
        let r = call(&s, &srv, admin, Method::PUT, &format!("/v1/ip/sets/admins?{query}"), body()).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "management.bad-query".into()),
            "{query}: {}",
            r.body
        );
    }
    let r = call(&s, &srv, admin, Method::GET, "/v1/ip/sets/admins", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "nothing was applied: {}", r.body);
    let r = call(&s, &srv, admin, Method::PUT, "/v1/ip/sets/admins?validate=false", body()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_takes_a_list_and_the_bearer_scheme_any_case() {
    if skip_without("openssl", "if_match_takes_a_list_and_the_bearer_scheme_any_case") {
        return;
    }
    let s = setup("single");
    let srv = Server::start(&s.config).await;
    let path = "/v1/public-network-access";
    let token = format!("bearer {ADMIN_TOKEN}");
    let r = raw(&s, &srv, As::Nobody, (Method::GET, path), Vec::new(), &[("authorization", &token)]).await;
    assert_eq!(r.status, StatusCode::OK, "the scheme is case-insensitive (RFC 9110): {}", r.body);
    let list = format!("\"stale\", {}", r.etag());
    let body = json!({"publicNetworkAccess": "Enabled"}).to_string().into_bytes();
    let headers =
        [("authorization", token.as_str()), ("content-type", "application/json"), ("if-match", &list)];
    let r = raw(&s, &srv, As::Nobody, (Method::PUT, path), body.clone(), &headers).await;
    assert_eq!(r.status, StatusCode::OK, "one of the listed ETags is current: {}", r.body);
    let r = raw(&s, &srv, As::Nobody, (Method::PUT, path), body, &headers).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "none is now: {}", r.body);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_naming_a_certificate_and_a_token_needs_both() {
    if skip_without("openssl", "a_grant_naming_a_certificate_and_a_token_needs_both") {
        return;
    }
    const BOTH: &str = "both-token-0123456789abcdef";
    let s = setup_with("single", |text| {
        // The stranger's certificate with its own token: one grant, two factors.
        text + "\n[[management.grant]]\nname = \"two-factor\"\nrole = \"admin\"\ntoken_file = \"both.token\"\nidentity = { subject = \"O=Fabrikam, CN=stranger\" }\n"
    });
    std::fs::write(s.pki.path("both.token"), BOTH).expect("token");
    let srv = Server::start(&s.config).await;
    let path = "/v1/virtual-hosts";
    let r = call(&s, &srv, As::Token(BOTH), Method::GET, path, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the token without the certificate: {}", r.body);
    let r = call(&s, &srv, As::Cert(&s.stranger), Method::GET, path, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the certificate without the token: {}", r.body);
    let r = call(&s, &srv, As::CertAndToken(&s.reader, BOTH), Method::GET, path, None).await;
    assert_eq!(r.status, StatusCode::OK, "the reader's own grant still reads: {}", r.body);
    let r = call(
        &s,
        &srv,
        As::CertAndToken(&s.reader, BOTH),
        Method::PUT,
        "/v1/ip/sets/x",
        Some(json!({"entries": []})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "the token with another certificate: {}", r.body);
    let r = call(
        &s,
        &srv,
        As::CertAndToken(&s.stranger, BOTH),
        Method::PUT,
        "/v1/ip/sets/x",
        Some(json!({"entries": []})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "both: {}", r.body);
    let audit = std::fs::read_to_string(s.pki.path("audit.jsonl")).expect("audit");
    assert!(audit.contains("two-factor"), "{audit}");
    srv.stop().await;
}
