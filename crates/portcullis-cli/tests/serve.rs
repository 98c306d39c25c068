//! `portcullis serve` in front of a real upstream over loopback: the built binary, an axum service behind
//! it, curl and hyper clients in front.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Stdio;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::{get, post};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use portcullis_test_support::client::{PUBLIC, VNET, curl, get as get_request, h1, h2, tcp_from};
use portcullis_test_support::pki::Pki;
use portcullis_test_support::{bounded, skip_without};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The headers the upstream received, as JSON (`{"name": ["value", ...]}`), with the HTTP version.
async fn echo_headers(req: Request<Body>) -> Response<Body> {
    let mut headers = serde_json::Map::new();
    for (name, value) in req.headers() {
        let entry = headers.entry(name.as_str().to_owned()).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(json!(String::from_utf8_lossy(value.as_bytes())));
        }
    }
    let body = json!({ "version": format!("{:?}", req.version()), "path": req.uri().to_string(), "headers": headers });
    Response::builder().header("content-type", "application/json").body(Body::from(body.to_string())).unwrap()
}

/// Counts the bytes of a request body as they stream in.
async fn count(body: Body) -> String {
    let mut body = body;
    let mut n: u64 = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body frame").into_data() {
            n += data.len() as u64;
        }
    }
    n.to_string()
}

/// `n` MiB, streamed in 64 KiB chunks.
async fn download(Path(mib): Path<usize>) -> Response<Body> {
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let stream = futures_util::stream::iter((0..mib * 16).map(move |_| Ok::<_, Infallible>(chunk.clone())));
    Response::new(Body::from_stream(stream))
}

/// Never answers (the sidecar's response deadline applies).
async fn slow() -> &'static str {
    std::future::pending::<()>().await;
    "never"
}

async fn upstream() -> SocketAddr {
    let app = Router::new()
        .route("/headers", get(echo_headers))
        .route("/count", post(count))
        .route("/echo", post(|body: Body| async move { Response::new(body) }))
        .route("/download/{mib}", get(download))
        .route("/slow", get(slow))
        .route(
            "/status",
            get(|| async {
                (StatusCode::IM_A_TEAPOT, [("connection", "close"), ("x-upstream", "yes")], "teapot")
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// An upstream that switches to an echo protocol on `Upgrade: websocket` (hyper's upgrade API), and tells
/// in a response header which forwarded address it saw.
async fn upgrade_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|mut req: Request<hyper::body::Incoming>| async move {
                    let wants = req
                        .headers()
                        .get("upgrade")
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
                    if !wants {
                        return Ok::<_, Infallible>(
                            Response::builder().status(400).body(Empty::<Bytes>::new()).unwrap(),
                        );
                    }
                    let seen = req
                        .headers()
                        .get("x-forwarded-for")
                        .cloned()
                        .unwrap_or_else(|| "none".parse().unwrap());
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let Ok(upgraded) = on.await else { return };
                        let mut io = TokioIo::new(upgraded);
                        let mut buf = [0u8; 1024];
                        // Echo until the client closes (bounded by the client's messages).
                        while let Ok(n) = io.read(&mut buf).await {
                            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                    Ok(Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .header("connection", "upgrade")
                        .header("upgrade", "websocket")
                        .header("x-seen-forwarded-for", seen)
                        .body(Empty::<Bytes>::new())
                        .unwrap())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// The gRPC health service (tonic, with its own gateway allowing 127.0.0.1 on `grpc.contoso.test`).
async fn grpc_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let allowed = ["127.0.0.1".parse().unwrap()];
        let _ = portcullis_examples::tonic_health::run(listener, &allowed, std::future::pending()).await;
    });
    addr
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

struct Sidecar {
    _child: tokio::process::Child,
    http: SocketAddr,
    ops: SocketAddr,
    listeners: std::collections::HashMap<String, SocketAddr>,
    _dir: Option<Pki>,
}

/// Starts `portcullis serve --config path` and reads the addresses it prints.
async fn spawn_sidecar(path: &std::path::Path) -> Sidecar {
    spawn_sidecar_with(path, &[]).await
}

/// [`spawn_sidecar`] with more arguments to `serve`.
async fn spawn_sidecar_with(path: &std::path::Path, extra: &[&str]) -> Sidecar {
    let mut child = tokio::process::Command::new(common::BIN)
        .args(["serve", "--config", &path.display().to_string()])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start portcullis serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut listeners = std::collections::HashMap::new();
    let mut ops = None;
    for _ in 0..30 {
        let line =
            bounded("the sidecar's start lines", lines.next_line()).await.expect("read").expect("a line");
        if let Some((name, addr)) =
            line.strip_prefix("portcullis: listener `").and_then(|l| l.split_once("` on "))
        {
            listeners.insert(name.to_owned(), addr.parse().expect("address"));
        }
        if let Some(a) = line.strip_prefix("portcullis: ops listener on ") {
            ops = a.parse().ok();
        }
        if line.starts_with("portcullis: endpoint") {
            break;
        }
    }
    let http = listeners.get("http").copied().expect("an `http` listener");
    Sidecar { _child: child, http, ops: ops.unwrap_or(http), listeners, _dir: None }
}

async fn sidecar(up: SocketAddr, ws: SocketAddr, dead: u16, grpc: SocketAddr) -> Sidecar {
    let dir = Pki::new();
    let config = format!(
        r#"resource = "Microsoft.ApiManagement/service/contoso"

[[listener]]
name = "http"
address = "127.0.0.1:0"

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

[hosts.endpoint.grpc]
names = ["grpc.contoso.test"]
upstream = "http://{grpc}"
upstream_protocol = "h2c"

[hosts.endpoint.ws]
names = ["ws.contoso.example"]
upstream = "http://{ws}"

[hosts.endpoint.down]
names = ["down.contoso.example"]
upstream = "http://127.0.0.1:{dead}"

[hosts.endpoint.none]
names = ["none.contoso.example"]

[sidecar]
origin_header = "x-origin"
client_cert_header = "x-client-cert"
response_timeout_ms = 500

[ops]
listen = "127.0.0.1:0"
"#
    );
    let path = dir.path("sidecar.toml");
    std::fs::write(&path, config).unwrap();
    let mut s = spawn_sidecar(&path).await;
    s._dir = Some(dir);
    s
}

async fn start() -> Sidecar {
    sidecar(upstream().await, upgrade_upstream().await, closed_port().await, grpc_upstream().await).await
}

fn values(v: &Value, name: &str) -> Vec<String> {
    v["headers"][name]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_through_the_sidecar_and_spoofed_headers_never_reach_the_upstream() {
    if skip_without("curl", "curl_through_the_sidecar") {
        return;
    }
    let s = start().await;
    let url = format!("http://{}/headers", s.http);
    let plain = curl(&["-H", "Host: api.contoso.example", &url], None).await;
    assert_eq!(plain.code, 200, "{plain:?}");
    let v = plain.json();
    assert_eq!(values(&v, "host"), ["api.contoso.example"]);
    assert_eq!(values(&v, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(values(&v, "x-origin"), ["private; network=vnet"]);
    assert_eq!(values(&v, "forwarded"), ["for=127.0.0.1;proto=http;host=\"api.contoso.example\""]);

    // Every copy a client sends, in every spelling, is replaced or removed.
    let spoofed = curl(
        &[
            "-H",
            "Host: api.contoso.example",
            "-H",
            "X-Forwarded-For: 10.9.9.9",
            "-H",
            "X-Forwarded-For: 10.8.8.8",
            "-H",
            "X_Forwarded_For: 10.7.7.7",
            "-H",
            "Forwarded: for=10.6.6.6;proto=https",
            "-H",
            "X-Forwarded-Proto: https",
            "-H",
            "X-Forwarded-Host: admin.internal",
            "-H",
            "X-Real-IP: 10.5.5.5",
            "-H",
            "X-Origin: private; network=corp",
            "-H",
            "X_Origin: private",
            "-H",
            "X-Portcullis-Origin: private; network=corp",
            "-H",
            "X-Client-Cert: -----BEGIN%20CERTIFICATE-----forged",
            "-H",
            "Connection: keep-alive, X-Secret-Hop",
            "-H",
            "X-Secret-Hop: must not pass",
            "-H",
            "Proxy-Authorization: Basic Zm9vOmJhcg==",
            &url,
        ],
        None,
    )
    .await;
    assert_eq!(spoofed.code, 200, "{spoofed:?}");
    let v = spoofed.json();
    assert_eq!(values(&v, "x-forwarded-for"), ["127.0.0.1"], "{v}");
    assert_eq!(values(&v, "forwarded"), ["for=127.0.0.1;proto=http;host=\"api.contoso.example\""]);
    assert_eq!(values(&v, "x-forwarded-proto"), ["http"]);
    assert_eq!(values(&v, "x-forwarded-host"), ["api.contoso.example"]);
    assert_eq!(values(&v, "x-origin"), ["private; network=vnet"]);
    for gone in [
        "x_forwarded_for",
        "x-real-ip",
        "x_origin",
        "x-portcullis-origin",
        "x-client-cert",
        "x-secret-hop",
        "proxy-authorization",
        "connection",
    ] {
        assert!(values(&v, gone).is_empty(), "{gone} reached the upstream: {v}");
    }

    // `Connection` cannot make the proxy drop the request's host.
    let r = curl(&["-H", "Host: api.contoso.example", "-H", "Connection: host", &url], None).await;
    assert_eq!(r.code, 200, "{r:?}");
    assert_eq!(values(&r.json(), "host"), ["api.contoso.example"]);

    // From the public side (127.0.0.2) the gateway refuses before anything is forwarded.
    let public = curl(&["--interface", "127.0.0.2", "-H", "Host: api.contoso.example", &url], None).await;
    assert_eq!(public.code, 403, "{public:?}");
    assert_eq!(public.json()["type"], "urn:portcullis:denial:public-access.disabled");
}

#[tokio::test(flavor = "multi_thread")]
async fn hyper_clients_over_http1_and_http2_and_an_h2c_upstream() {
    let s = start().await;
    let r = h1(tcp_from(VNET, s.http).await, get_request("/headers", Some("api.contoso.example"), &[]))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["version"], "HTTP/1.1");
    // HTTP/2 from the client (no Host header: the authority), HTTP/1.1 to the upstream.
    let req = get_request("http://api.contoso.example/headers", None, &[("x-forwarded-for", "10.1.1.1")]);
    let r = h2(tcp_from(VNET, s.http).await, req).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(values(&v, "host"), ["api.contoso.example"]);
    assert_eq!(values(&v, "x-forwarded-for"), ["127.0.0.1"]);
    // An h2c upstream: HTTP/2 all the way.
    let r = h1(tcp_from(VNET, s.http).await, get_request("/headers", Some("h2.contoso.example"), &[]))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["version"], "HTTP/2.0");
    // The upstream's hop-by-hop headers do not reach the client; its status and other headers do.
    let r = h1(tcp_from(VNET, s.http).await, get_request("/status", Some("api.contoso.example"), &[]))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(r.headers["x-upstream"], "yes");
    // The public side is refused.
    let r = h1(tcp_from(PUBLIC, s.http).await, get_request("/headers", Some("api.contoso.example"), &[]))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The ops listener's metrics count what the gateway decided.
    let metrics =
        h1(tcp_from(VNET, s.ops).await, get_request("/metrics", Some("localhost"), &[])).await.unwrap();
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.text().contains("portcullis_"), "{}", metrics.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_is_502_and_silent_upstream_is_504_in_problem_json() {
    let s = start().await;
    for (host, path, status, code) in [
        ("down.contoso.example", "/", StatusCode::BAD_GATEWAY, "sidecar.upstream-unavailable"),
        ("none.contoso.example", "/", StatusCode::BAD_GATEWAY, "sidecar.no-upstream"),
        ("api.contoso.example", "/slow", StatusCode::GATEWAY_TIMEOUT, "sidecar.upstream-timeout"),
    ] {
        let r = h1(tcp_from(VNET, s.http).await, get_request(path, Some(host), &[])).await.unwrap();
        assert_eq!(r.status, status, "{host}: {}", r.text());
        assert_eq!(r.headers["content-type"], "application/problem+json");
        let v = r.json();
        assert_eq!(v["type"], format!("urn:portcullis:denial:{code}"), "{v}");
        assert!(!v.to_string().contains("127.0.0.1:"), "the upstream's address is not disclosed: {v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_stream_both_ways_without_buffering() {
    let s = start().await;
    // Lock-step: each chunk must come back from the upstream before the next one is sent. A proxy that
    // buffered the request (or the response) would never answer the first one.
    let io = tcp_from(VNET, s.http).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.unwrap();
    tokio::spawn(conn);
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(1);
    let req = Request::post("/echo").header("host", "api.contoso.example").body(body).unwrap();
    let res = bounded("echo response head", sender.send_request(req)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut res = res.into_body();
    for i in 0..32u32 {
        let chunk = Bytes::from(format!("chunk {i:03} {}", "y".repeat(4096)));
        bounded("send a chunk", tx.send_data(chunk.clone())).await.unwrap();
        let mut got = Vec::new();
        while got.len() < chunk.len() {
            let frame = bounded("the echoed chunk", res.frame()).await.expect("more body").unwrap();
            got.extend_from_slice(&frame.into_data().unwrap_or_default());
        }
        assert_eq!(got, chunk, "chunk {i}");
    }
    drop(tx);

    // 256 MiB up and down, counted at the other end.
    let io = tcp_from(VNET, s.http).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.unwrap();
    tokio::spawn(conn);
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(4);
    let req = Request::post("/count").header("host", "api.contoso.example").body(body).unwrap();
    let chunk = Bytes::from(vec![b'z'; 1024 * 1024]);
    tokio::spawn(async move {
        for _ in 0..256 {
            if tx.send_data(chunk.clone()).await.is_err() {
                return;
            }
        }
    });
    let res = bounded("upload", sender.send_request(req)).await.unwrap();
    let counted = bounded("upload count", res.into_body().collect()).await.unwrap().to_bytes();
    assert_eq!(counted, (256u64 * 1024 * 1024).to_string());

    let io = tcp_from(VNET, s.http).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get("/download/256")
        .header("host", "api.contoso.example")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let mut body = bounded("download head", sender.send_request(req)).await.unwrap().into_body();
    let mut n: u64 = 0;
    while let Some(frame) = bounded("download", body.frame()).await {
        n += frame.unwrap().into_data().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(n, 256 * 1024 * 1024);
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrade_through_the_sidecar() {
    let s = start().await;
    let mut io = tcp_from(VNET, s.http).await;
    let request = "GET /chat HTTP/1.1\r\nHost: ws.contoso.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                   X-Forwarded-For: 10.9.9.9\r\n\r\n";
    io.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 8192, "response head too long");
        let n = bounded("the 101 head", io.read(&mut byte)).await.unwrap();
        assert_eq!(n, 1, "closed before the response head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains("x-seen-forwarded-for: 127.0.0.1"), "the upstream saw the resolved client: {head}");
    for i in 0..5 {
        let msg = format!("message {i}");
        io.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        bounded("the echo", io.read_exact(&mut buf)).await.unwrap();
        assert_eq!(buf, msg.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_verified_client_certificate_reaches_the_upstream_and_a_forged_one_does_not() {
    if skip_without("curl", "the_verified_client_certificate_reaches_the_upstream") {
        return;
    }
    let up = upstream().await;
    let certs = common::Certs::new();
    let config = certs.config(&format!("http://{up}"));
    let s = spawn_sidecar(std::path::Path::new(&config)).await;
    let https = s.listeners["https"];
    let resolve = format!("partner.contoso.example:{}:127.0.0.1", https.port());
    let url = format!("https://partner.contoso.example:{}/headers", https.port());
    let (ca, cert, key) = (certs.path("client-ca.crt"), certs.path("good.crt"), certs.path("good.key"));
    let r = curl(
        &[
            "--resolve",
            &resolve,
            "--cacert",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "-H",
            "X-Portcullis-Client-Cert: forged",
            &url,
        ],
        None,
    )
    .await;
    assert_eq!(r.code, 200, "{r:?}");
    let v = r.json();
    let sent = values(&v, "x-portcullis-client-cert");
    assert_eq!(sent.len(), 1, "{v}");
    let pem = percent_decode(&sent[0]);
    assert_eq!(pem.trim(), certs.good.cert_pem.trim(), "the verified leaf, URL-encoded PEM");
    assert_eq!(values(&v, "x-forwarded-proto"), ["https"]);
    assert_eq!(values(&v, "x-portcullis-origin"), ["private; network=vnet"]);
    // A chain of another CA: the handshake completes (refuse at HTTP) and the gateway answers 403.
    let (cert, key) = (certs.path("stranger.crt"), certs.path("stranger.key"));
    let r = curl(&["--resolve", &resolve, "--cacert", &ca, "--cert", &cert, "--key", &key, &url], None).await;
    assert_eq!(r.code, 403, "{r:?}");
    assert_eq!(r.json()["type"], "urn:portcullis:denial:mtls.client-chain");
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_over_h2c_with_its_trailers() {
    use portcullis_examples::tonic_health::{HOST, SERVICE_NAME, check};
    use tonic_health::pb::health_check_response::ServingStatus;
    let s = start().await;
    // grpc-status travels in the trailers of the upstream's HTTP/2 response.
    let status = check(s.http, HOST, Some(VNET), "").await.expect("served through the sidecar");
    assert_eq!(status, ServingStatus::Serving);
    assert_eq!(check(s.http, HOST, Some(VNET), SERVICE_NAME).await.expect("served"), ServingStatus::Serving);
    // An unknown service: the upstream's NOT_FOUND status, from its trailers.
    let e = check(s.http, HOST, Some(VNET), "no.such.Service").await.expect_err("not found");
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    // The sidecar's own gateway answers a public caller with a gRPC status too.
    let e = check(s.http, HOST, Some(PUBLIC), "").await.expect_err("refused");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_worker_serves_too_and_bad_arguments_are_usage_errors() {
    let up = upstream().await;
    let dir = Pki::new();
    let path = dir.path("one.toml");
    std::fs::write(
        &path,
        format!(
            "resource = \"r\"\n[[listener]]\nname = \"http\"\naddress = \"127.0.0.1:0\"\n\
             [hosts.endpoint.gateway]\nnames = [\"api.contoso.example\"]\nupstream = \"http://{up}\"\n"
        ),
    )
    .unwrap();
    let s = spawn_sidecar_with(&path, &["--workers", "1"]).await;
    let r = h1(tcp_from(VNET, s.http).await, get_request("/headers", Some("api.contoso.example"), &[]))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(values(&r.json(), "x-forwarded-for"), ["127.0.0.1"]);
    let config = path.display().to_string();
    for args in [
        vec!["serve"],
        vec!["serve", "--config", &config, "--workers", "0"],
        vec!["serve", "--config", &config, "x"],
    ] {
        assert_eq!(common::run(&args).code, 2, "{args:?}");
    }
    // A configuration without any upstream has nothing to serve.
    let none = dir.path("none.toml");
    std::fs::write(&none, "resource = \"r\"\n[[listener]]\nname = \"http\"\naddress = \"127.0.0.1:0\"\n[hosts.endpoint.gateway]\nnames = [\"a.example\"]\n").unwrap();
    let r = common::run(&["serve", "--config", none.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no endpoint has an `upstream`"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_unix_socket_upstream() {
    let dir = Pki::new();
    let socket = dir.path("app.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let app = Router::new().route("/headers", get(echo_headers));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let path = dir.path("unix.toml");
    std::fs::write(
        &path,
        format!(
            "resource = \"r\"\n[[listener]]\nname = \"http\"\naddress = \"127.0.0.1:0\"\n\
             [hosts.endpoint.gateway]\nnames = [\"api.contoso.example\"]\nupstream = \"unix:{}\"\n",
            socket.display()
        ),
    )
    .unwrap();
    let s = spawn_sidecar(&path).await;
    let r = h1(tcp_from(VNET, s.http).await, get_request("/headers", Some("api.contoso.example"), &[]))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(values(&v, "host"), ["api.contoso.example"]);
    assert_eq!(values(&v, "x-forwarded-for"), ["127.0.0.1"]);
}
