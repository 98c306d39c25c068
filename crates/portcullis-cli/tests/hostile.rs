//! `portcullis serve` against a hostile client: raw HTTP/1.1 requests over loopback that try to get a
//! header the proxy owns past it to the upstream.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::{Request, Response};
use http_body_util::BodyExt;
use portcullis_test_support::bounded;
use portcullis_test_support::client::{VNET, tcp_from};
use portcullis_test_support::pki::Pki;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The headers the upstream received, as JSON (`{"name": ["value", ...]}`).
async fn echo_headers(req: Request<Body>) -> Response<Body> {
    Response::new(Body::from(json!({ "headers": map(req.headers()) }).to_string()))
}

/// The trailers of the request body the upstream received, as JSON.
async fn echo_trailers(body: Body) -> Response<Body> {
    let mut trailers = serde_json::Map::new();
    let mut body = body;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(t) = frame.into_trailers() {
            trailers = map(&t);
        }
    }
    Response::new(Body::from(json!({ "trailers": trailers }).to_string()))
}

fn map(headers: &http::HeaderMap) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for (name, value) in headers {
        let entry = out.entry(name.as_str().to_owned()).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(json!(String::from_utf8_lossy(value.as_bytes())));
        }
    }
    out
}

async fn upstream() -> SocketAddr {
    let app = Router::new().route("/headers", get(echo_headers)).route("/trailers", post(echo_trailers));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// An upstream that answers every request with `101` and then echoes what it reads, until the other side
/// closes.
async fn tunnel_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut io, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if io.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let switched =
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
                if io.write_all(switched).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

struct Sidecar {
    _child: tokio::process::Child,
    http: SocketAddr,
    _dir: Pki,
}

/// `portcullis serve` in front of `up`: `api.contoso.example` over HTTP/1.1, `h2.contoso.example` over h2c.
async fn sidecar(up: SocketAddr) -> Sidecar {
    sidecar_with(up, "").await
}

/// [`sidecar`] with `listener` appended to the listener's table (`[listener.limits]`...), and
/// `ws.contoso.example` going to an upstream that switches protocols ([`tunnel_upstream`]).
async fn sidecar_with(up: SocketAddr, listener: &str) -> Sidecar {
    let ws = tunnel_upstream().await;
    let dir = Pki::new();
    let config = format!(
        r#"resource = "Microsoft.ApiManagement/service/contoso"

[[listener]]
name = "http"
address = "127.0.0.1:0"
{listener}

[private_networks.networks]
vnet = ["127.0.0.1"]

[public_access]
enabled = false

[hosts.endpoint.gateway]
names = ["api.contoso.example"]
upstream = "http://{up}"

[hosts.endpoint.h2]
names = ["h2.contoso.example"]
upstream = "http://{up}"
upstream_protocol = "h2c"

[hosts.endpoint.ws]
names = ["ws.contoso.example"]
upstream = "http://{ws}"
"#
    );
    let path = dir.path("sidecar.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = tokio::process::Command::new(common::BIN)
        .args(["serve", "--config", &path.display().to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start portcullis serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut http = None;
    for _ in 0..30 {
        let line =
            bounded("the sidecar's start lines", lines.next_line()).await.expect("read").expect("a line");
        if let Some(addr) = line.strip_prefix("portcullis: listener `http` on ") {
            http = addr.parse().ok();
        }
        if line.starts_with("portcullis: endpoint") {
            break;
        }
    }
    Sidecar { _child: child, http: http.expect("the `http` listener"), _dir: dir }
}

/// Sends `request` as it is and reads the whole answer (the request asks to close the connection); a
/// connection closed unread (reset) answers nothing.
async fn raw(to: SocketAddr, request: &str) -> (String, Value) {
    let mut io = tcp_from(VNET, to).await;
    let mut answer = Vec::new();
    if io.write_all(request.as_bytes()).await.is_ok() {
        let _ = bounded("the answer", io.read_to_end(&mut answer)).await;
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (head.to_owned(), serde_json::from_str(body).unwrap_or(Value::Null))
}

fn names(v: &Value, member: &str) -> Vec<String> {
    v[member].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

/// A name that differs from a forwarded or origin header only by `_` for `-` (in any position) is the same
/// name to servers that fold them (CGI and WSGI's `HTTP_X_FORWARDED_FOR`, PHP, some Node frameworks): it
/// never reaches the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn mixed_underscore_spellings_never_reach_the_upstream() {
    let s = sidecar(upstream().await).await;
    let (head, v) = raw(
        s.http,
        "GET /headers HTTP/1.1\r\nHost: api.contoso.example\r\nConnection: close\r\n\
         X-Forwarded_For: 10.9.9.9\r\nX_Forwarded-For: 10.8.8.8\r\nX-Forwarded_Proto: https\r\n\
         X-Forwarded_Host: admin.internal\r\nX-Real_IP: 10.7.7.7\r\nX-Portcullis_Origin: private\r\n\
         X_Portcullis-Client_Cert: forged\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let owned = [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "x-portcullis-origin",
        "x-portcullis-client-cert",
    ];
    for name in names(&v, "headers") {
        let folded = name.replace('_', "-");
        assert!(!name.contains('_') || !owned.contains(&folded.as_str()), "{name} reached the upstream: {v}");
    }
    assert_eq!(v["headers"]["x-forwarded-for"], json!(["127.0.0.1"]), "{v}");
    assert_eq!(v["headers"]["x-portcullis-origin"], json!(["private; network=vnet"]), "{v}");
}

/// The other forwarded headers frameworks combine with the ones the proxy sets (Rack, Spring, Werkzeug's
/// `ProxyFix`: the port and scheme of the URL the client used) are the client's to spoof unless removed.
#[tokio::test(flavor = "multi_thread")]
async fn forwarded_port_ssl_and_scheme_never_reach_the_upstream() {
    let s = sidecar(upstream().await).await;
    let (head, v) = raw(
        s.http,
        "GET /headers HTTP/1.1\r\nHost: api.contoso.example\r\nConnection: close\r\n\
         X-Forwarded-Port: 8443\r\nX-Forwarded-Ssl: on\r\nX-Forwarded-Scheme: https\r\n\
         X_Forwarded_Port: 8443\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for name in names(&v, "headers") {
        let folded = name.replace('_', "-");
        assert!(
            !["x-forwarded-port", "x-forwarded-ssl", "x-forwarded-scheme"].contains(&folded.as_str()),
            "{name} reached the upstream: {v}"
        );
    }
    assert_eq!(v["headers"]["x-forwarded-proto"], json!(["http"]), "{v}");
}

/// `Connection` naming a header the proxy sets cannot make the proxy drop it, nor keep the client's copy.
#[tokio::test(flavor = "multi_thread")]
async fn connection_cannot_remove_what_the_proxy_sets() {
    let s = sidecar(upstream().await).await;
    let (head, v) = raw(
        s.http,
        "GET /headers HTTP/1.1\r\nHost: api.contoso.example\r\n\
         Connection: close, x-forwarded-for, x-portcullis-origin, forwarded, host, x-forwarded-proto\r\n\
         X-Forwarded-For: 10.9.9.9\r\nX-Portcullis-Origin: private; network=corp\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(v["headers"]["x-forwarded-for"], json!(["127.0.0.1"]), "{v}");
    assert_eq!(v["headers"]["x-portcullis-origin"], json!(["private; network=vnet"]), "{v}");
    assert_eq!(v["headers"]["x-forwarded-proto"], json!(["http"]), "{v}");
    assert_eq!(v["headers"]["host"], json!(["api.contoso.example"]), "{v}");
    assert!(v["headers"]["forwarded"].is_array(), "{v}");
}

/// Request trailers are headers too: towards an h2c upstream (where trailers pass for gRPC) a client's
/// trailer cannot carry a forwarded, origin or client-certificate header.
#[tokio::test(flavor = "multi_thread")]
async fn request_trailers_cannot_carry_owned_headers() {
    let s = sidecar(upstream().await).await;
    let (head, v) = raw(
        s.http,
        "POST /trailers HTTP/1.1\r\nHost: h2.contoso.example\r\nConnection: close\r\n\
         Transfer-Encoding: chunked\r\nTrailer: x-forwarded-for, x-portcullis-origin, x-kept\r\n\r\n\
         5\r\nhello\r\n0\r\nX-Forwarded-For: 10.9.9.9\r\nX-Portcullis-Origin: private; network=corp\r\n\
         X-Forwarded_Host: admin.internal\r\nX-Portcullis-Client-Cert: forged\r\nX-Kept: yes\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let got = names(&v, "trailers");
    for name in &got {
        let folded = name.replace('_', "-");
        assert!(
            !(folded.starts_with("x-forwarded-") || folded.starts_with("x-portcullis-")),
            "the trailer {name} reached the upstream: {v}"
        );
    }
    assert_eq!(got, ["x-kept"], "other trailers pass: {v}");
}

/// A request target naming another host than `Host` is refused before anything is forwarded, whatever the
/// form (absolute-form over HTTP/1.1).
#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_and_host_disagreeing_is_refused() {
    let s = sidecar(upstream().await).await;
    let (head, _) = raw(
        s.http,
        "GET http://admin.internal/headers HTTP/1.1\r\nHost: api.contoso.example\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    assert!(!head.starts_with("HTTP/1.1 200"), "{head}");
    let (head, _) = raw(
        s.http,
        "GET /headers HTTP/1.1\r\nHost: api.contoso.example\r\nHost: admin.internal\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    assert!(!head.starts_with("HTTP/1.1 200"), "{head}");
    let (head, v) = raw(
        s.http,
        "GET http://API.contoso.example./headers HTTP/1.1\r\nHost: api.contoso.example\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(v["headers"]["host"], json!(["api.contoso.example"]), "{v}");
}

/// Opens a WebSocket tunnel through the sidecar and checks that it echoes.
async fn open_tunnel(to: SocketAddr) -> tokio::net::TcpStream {
    let mut io = tcp_from(VNET, to).await;
    let request = "GET /chat HTTP/1.1\r\nHost: ws.contoso.example\r\nConnection: Upgrade\r\n\
                   Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   Sec-WebSocket-Version: 13\r\n\r\n";
    io.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 8192, "response head too long");
        let n = bounded("the 101 head", io.read(&mut byte)).await.unwrap();
        assert_eq!(n, 1, "closed before the response head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    io.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    bounded("the echo", io.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"ping");
    io
}

/// A connection that switched protocols (a WebSocket tunnel the proxy joined to the upstream) still holds
/// its place in the connection limits: with one connection per client address, other connections are
/// closed unread for as long as the tunnel is open, and served once it is closed.
#[tokio::test(flavor = "multi_thread")]
async fn an_open_tunnel_still_counts_against_the_connection_limits() {
    let s = sidecar_with(upstream().await, "[listener.limits]\nmax_connections_per_peer = 1").await;
    let get = "GET /headers HTTP/1.1\r\nHost: api.contoso.example\r\nConnection: close\r\n\r\n";
    let mut tunnel = open_tunnel(s.http).await;
    // The place must stay taken, not only right after the switch: try for a while.
    for attempt in 0..25 {
        let (head, _) = raw(s.http, get).await;
        assert_eq!(head, "", "attempt {attempt}: another connection was served while the tunnel was open");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tunnel.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    bounded("the echo", tunnel.read_exact(&mut buf)).await.unwrap();
    drop(tunnel);
    // The tunnel's place comes back once the sidecar has seen it close.
    let mut served = false;
    for _ in 0..200 {
        let (head, _) = raw(s.http, get).await;
        if head.starts_with("HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(served, "the place of the closed tunnel never came back");
}

/// A tunnel is closed with its connection: past the listener's maximum connection age (and drain time)
/// the sidecar ends it, however busy or quiet it is.
#[tokio::test(flavor = "multi_thread")]
async fn a_tunnel_ends_with_its_connection() {
    let s = sidecar_with(upstream().await, "[listener.timeouts]\nmax_age_ms = 200\ndrain_ms = 100").await;
    let mut tunnel = open_tunnel(s.http).await;
    let mut buf = [0u8; 16];
    let n = bounded("the tunnel's end", tunnel.read(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0, "the tunnel was closed by the sidecar");
}

/// An argument that is not UTF-8 (a file name, a header) is a usage error, never a panic.
#[test]
fn non_utf8_arguments_are_usage_errors() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"\xff\xfe");
    for args in [
        vec![bad],
        vec![std::ffi::OsStr::new("check-config"), bad],
        vec![std::ffi::OsStr::new("explain"), std::ffi::OsStr::new("--config"), bad],
    ] {
        let out = std::process::Command::new(common::BIN).args(&args).output().expect("run portcullis");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("not UTF-8") && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// h2c smuggling: an `Upgrade: h2c` request the upstream accepted would leave the client speaking HTTP/2
/// straight to the upstream, every later request on it unchecked by the gateway (any host, any forwarded
/// or origin header). Upgrades to HTTP itself are not forwarded: the upstream gets a plain request, without
/// `Upgrade` or `HTTP2-Settings`, even when `Connection` does not name them.
#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_to_http2_is_not_forwarded() {
    let s = sidecar(upstream().await).await;
    for upgrade in ["h2c", "H2C", "websocket, h2c", "HTTP/2.0", "h2"] {
        let (head, v) = raw(
            s.http,
            &format!(
                "GET /headers HTTP/1.1\r\nHost: api.contoso.example\r\nConnection: Upgrade, close\r\n\
                 Upgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
            ),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 200"), "{upgrade}: {head}");
        for gone in ["upgrade", "http2-settings", "connection"] {
            assert!(v["headers"][gone].is_null(), "{upgrade}: {gone} reached the upstream: {v}");
        }
    }
}

/// Over HTTP/2 the host is `:authority`: a `host` header naming another host is refused, and the upstream
/// gets the host the stack matched.
#[tokio::test(flavor = "multi_thread")]
async fn http2_authority_and_host_cannot_disagree() {
    use portcullis_test_support::client::{get, h2};
    let s = sidecar(upstream().await).await;
    let reply = h2(
        tcp_from(VNET, s.http).await,
        get("http://api.contoso.example/headers", Some("admin.internal"), &[]),
    )
    .await
    .expect("an answer");
    assert_ne!(reply.status, 200, "{}", reply.text());
    let reply = h2(tcp_from(VNET, s.http).await, get("http://evil@api.contoso.example/headers", None, &[]))
        .await
        .expect("an answer");
    if reply.status == 200 {
        let v: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(v["headers"]["host"], json!(["api.contoso.example"]), "{v}");
    }
    let reply = h2(tcp_from(VNET, s.http).await, get("http://api.contoso.example/headers", None, &[]))
        .await
        .expect("an answer");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(v["headers"]["host"], json!(["api.contoso.example"]), "{v}");
}

/// Header shapes some servers read and others do not (a folded continuation line, white space before the
/// colon) are refused with `400` before anything is forwarded, and an upgrade to a refused host never
/// reaches the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn odd_header_shapes_and_refused_upgrades_are_not_forwarded() {
    let s = sidecar(upstream().await).await;
    for smuggled in [
        "X-Forwarded-Host: api.contoso.example\r\n admin.internal\r\n",
        "X-Forwarded-For : 10.9.9.9\r\n",
        "X-Forwarded-For\t: 10.9.9.9\r\n",
        "X-Portcullis-Origin:private\r\n\tnetwork=corp\r\n",
    ] {
        let (head, _) = raw(
            s.http,
            &format!(
                "GET /headers HTTP/1.1\r\nHost: api.contoso.example\r\n{smuggled}Connection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 400"), "{smuggled:?}: {head}");
    }
    // From the public side, where public access is disabled: refused, not switched.
    let mut io = tcp_from(portcullis_test_support::client::PUBLIC, s.http).await;
    io.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.contoso.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 12];
    bounded("the refusal", io.read_exact(&mut answer)).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 403", "{}", String::from_utf8_lossy(&answer));
}

/// A tunnel is bounded like an idle connection: with no byte either way for the listener's idle time,
/// the sidecar closes it (without a maximum age, a quiet tunnel would otherwise hold its place forever).
#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_tunnel_is_closed_after_the_idle_time() {
    let s = sidecar_with(upstream().await, "[listener.timeouts]\nidle_ms = 300").await;
    let mut tunnel = open_tunnel(s.http).await;
    let mut buf = [0u8; 16];
    let n = bounded("the tunnel's end", tunnel.read(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0, "the quiet tunnel was closed by the sidecar");
}

/// CONNECT asks for a raw tunnel to an address: the proxy forwards HTTP to its upstreams only, so it is
/// answered 405 and never reaches the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn connect_is_refused_not_forwarded() {
    let s = sidecar(upstream().await).await;
    let (head, v) = raw(
        s.http,
        "CONNECT api.contoso.example:80 HTTP/1.1\r\nHost: api.contoso.example:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert_eq!(v["type"], json!("urn:portcullis:denial:sidecar.connect"), "{v}");
}
