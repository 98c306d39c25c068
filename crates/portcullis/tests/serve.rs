//! The serve helper's accept path over loopback: deadlines for silent peers at every step, fair connection
//! limits (127.0.0.2 plays a flooding public caller, 127.0.0.1 a private one), the untrusted PROXY budget,
//! header size limits, pipelining with half-close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::{Router, routing::get};
use portcullis::core::IpRange;
use portcullis::ip::{ConnectionLimits, PeerBudget};
use portcullis::proxy_protocol::{ProxyProtocolConfig, SourcePolicy};
use portcullis::serve::{ListenerSpec, serve_listeners};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;

/// Only turns a hang into a failure.
const BOUND: Duration = Duration::from_secs(20);
/// The deadline the tests configure for the step they hold.
const SHORT: Duration = Duration::from_millis(200);
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
const GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start(spec: ListenerSpec) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/", get(|| async { "served" }))
        .route(
            "/upload",
            axum::routing::post(|body: bytes::Bytes| async move { format!("got {}", body.len()) }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(BOUND * 2).await;
                "too late"
            }),
        )
        .into_service();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_listeners(
        vec![(listener, spec)],
        app,
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));
    Server { addr, stop: Some(stop) }
}

/// Long deadlines everywhere: a test shortens the one it holds.
fn patient(name: &str) -> ListenerSpec {
    let mut spec = ListenerSpec::new(name);
    spec.timeouts.first_byte = BOUND;
    spec.timeouts.http_preface = BOUND;
    spec.timeouts.header_read = BOUND;
    spec.timeouts.idle = BOUND;
    spec
}

fn lb_config(header_timeout: Duration) -> Arc<ProxyProtocolConfig> {
    Arc::new(
        ProxyProtocolConfig::builder()
            .source("127.0.0.1".parse::<IpRange>().unwrap(), SourcePolicy::Required)
            .header_timeout(header_timeout)
            .build()
            .unwrap(),
    )
}

async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source.parse().unwrap(), 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Sends `bytes` from `source` and reads to the end.
async fn call(source: &str, addr: SocketAddr, bytes: &[u8]) -> String {
    let mut tcp = connect_from(source, addr).await;
    tcp.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(BOUND, tcp.read_to_end(&mut answer)).await.expect("answered");
    String::from_utf8_lossy(&answer).into_owned()
}

fn served(answer: &str) -> bool {
    answer.starts_with("HTTP/1.1 200") && answer.ends_with("served")
}

/// Waits until the server closes `tcp` (end of stream or reset), discarding what it sends; how long it took.
async fn closed_after(tcp: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(BOUND, tcp.read(&mut buf)).await.expect("closed by the server") {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

/// How many of `conns` the server has closed by a shared short deadline (the others stay open).
async fn count_closed(conns: &mut [TcpStream]) -> usize {
    let deadline = Instant::now() + SHORT;
    let mut n = 0;
    for tcp in conns {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            n += 1;
        }
    }
    n
}

fn assert_at_deadline(took: Duration, what: &str) {
    assert!(took >= SHORT - Duration::from_millis(20), "{what}: closed after {took:?}, before its deadline");
    assert!(took < SHORT * 10, "{what}: closed after {took:?}, long after its deadline");
}

// === deadlines ===

#[tokio::test]
async fn a_silent_tcp_connection_is_closed_at_the_first_byte_deadline() {
    let mut spec = patient("http");
    spec.timeouts.first_byte = SHORT;
    let server = start(spec).await;
    let mut silent = connect_from("127.0.0.2", server.addr).await;
    assert_at_deadline(closed_after(&mut silent).await, "zero bytes");
    assert!(served(&call("127.0.0.1", server.addr, GET_CLOSE).await));
}

#[tokio::test]
async fn a_partial_http2_preface_is_closed_at_the_preface_deadline() {
    let mut spec = patient("http");
    spec.timeouts.http_preface = SHORT;
    let server = start(spec).await;
    let mut partial = connect_from("127.0.0.2", server.addr).await;
    partial.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n").await.unwrap();
    assert_at_deadline(closed_after(&mut partial).await, "partial preface");
    // The whole preface without the client's SETTINGS frame is not a start either.
    let mut no_settings = connect_from("127.0.0.2", server.addr).await;
    no_settings.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    assert_at_deadline(closed_after(&mut no_settings).await, "preface without SETTINGS");
}

#[tokio::test]
async fn silent_peers_on_a_proxy_listener_are_closed_at_the_first_byte_deadline() {
    let mut spec = patient("lb");
    spec.proxy = Some(lb_config(BOUND));
    spec.timeouts.first_byte = SHORT;
    let server = start(spec).await;
    // An untrusted peer and the trusted load balancer itself, both silent.
    for source in ["127.0.0.2", "127.0.0.1"] {
        let mut silent = connect_from(source, server.addr).await;
        assert_at_deadline(closed_after(&mut silent).await, source);
    }
}

#[tokio::test]
async fn a_silent_client_behind_the_load_balancer_is_closed_at_the_preface_deadline() {
    let mut spec = patient("lb");
    spec.proxy = Some(lb_config(BOUND));
    spec.timeouts.http_preface = SHORT;
    let server = start(spec).await;
    let mut tcp = connect_from("127.0.0.1", server.addr).await;
    tcp.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n").await.unwrap();
    assert_at_deadline(closed_after(&mut tcp).await, "header, then silence");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_deadline() {
    let mut spec = patient("http");
    spec.timeouts.idle = SHORT;
    let server = start(spec).await;
    let mut tcp = connect_from("127.0.0.1", server.addr).await;
    tcp.write_all(GET).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(BOUND, tcp.read(&mut buf)).await.expect("answered").unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert_at_deadline(closed_after(&mut tcp).await, "idle keep-alive");
}

#[tokio::test]
async fn a_connection_is_closed_gracefully_at_its_maximum_age() {
    let mut spec = patient("http");
    spec.timeouts.max_age = Some(SHORT);
    let server = start(spec).await;
    let mut tcp = connect_from("127.0.0.1", server.addr).await;
    let started = Instant::now();
    // Busy until past the age: every request is answered, then the connection is closed.
    let mut answers = 0;
    let mut buf = [0u8; 1024];
    while started.elapsed() < SHORT * 10 {
        if tcp.write_all(GET).await.is_err() {
            break;
        }
        match tokio::time::timeout(BOUND, tcp.read(&mut buf)).await.expect("answered or closed") {
            Ok(n) if n > 0 => answers += 1,
            _ => break,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    assert!(answers >= 2, "requests before the age were answered ({answers})");
    assert!(took >= SHORT && took < SHORT * 10, "closed after {took:?}");
}

#[tokio::test]
async fn a_closing_connection_is_dropped_at_the_end_of_its_drain_time() {
    let mut spec = patient("http");
    spec.timeouts.max_age = Some(SHORT);
    spec.timeouts.drain = SHORT;
    let server = start(spec).await;
    let mut tcp = connect_from("127.0.0.1", server.addr).await;
    // A request that would take longer than the age and the drain time together.
    tcp.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let (took, answer) = answer_until_closed(&mut tcp).await;
    assert!(answer.is_empty(), "no answer: {answer:?}");
    assert!(took >= SHORT * 2 && took < BOUND, "dropped at age + drain, after {took:?}");
}

#[tokio::test]
async fn on_shutdown_a_connection_is_dropped_at_its_listeners_grace() {
    let mut spec = patient("http");
    spec.timeouts.shutdown_grace = SHORT;
    let mut server = start(spec).await;
    let mut tcp = connect_from("127.0.0.1", server.addr).await;
    tcp.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    tokio::time::sleep(SHORT).await;
    let _ = server.stop.take().map(|stop| stop.send(()));
    let (took, answer) = answer_until_closed(&mut tcp).await;
    assert!(answer.is_empty(), "no answer: {answer:?}");
    assert!(took >= SHORT && took < BOUND, "dropped at the grace, after {took:?}");
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_refused_at_the_body_read_deadline() {
    let mut spec = patient("http");
    spec.timeouts.body_read = SHORT;
    let server = start(spec).await;
    // A whole body is read and answered.
    let whole = call(
        "127.0.0.1",
        server.addr,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert!(whole.starts_with("HTTP/1.1 200") && whole.ends_with("got 5"), "{whole}");
    // 10 of 100 bytes, then silence: the application's read fails at the deadline (axum answers 400) and
    // the connection, its body unread, is closed.
    let mut tcp = connect_from("127.0.0.2", server.addr).await;
    tcp.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let (took, answer) = answer_until_closed(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(took >= SHORT && took < BOUND, "after {took:?}");
}

/// Reads what the server sends until it closes `tcp`: how long that took, and the text.
async fn answer_until_closed(tcp: &mut TcpStream) -> (Duration, String) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(BOUND, tcp.read_to_end(&mut answer)).await.expect("closed by the server");
    (started.elapsed(), String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn the_header_read_deadline_holds_for_a_slow_head() {
    let mut spec = patient("http");
    spec.timeouts.header_read = SHORT;
    let server = start(spec).await;
    let mut tcp = connect_from("127.0.0.2", server.addr).await;
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    assert_at_deadline(closed_after(&mut tcp).await, "slow head");
}

// === fair limits ===

#[tokio::test]
async fn a_flood_from_one_address_stops_at_its_cap_while_others_are_served() {
    let mut spec = patient("http");
    spec.limits = ConnectionLimits { max_connections: 100, max_per_peer: 20, ..Default::default() }.limiter();
    let limiter = spec.limits.clone();
    let server = start(spec).await;
    let mut flood = Vec::new();
    for _ in 0..60 {
        flood.push(connect_from("127.0.0.2", server.addr).await);
    }
    // Accepts are handled in order: once 127.0.0.1 is answered, every flood connection has been judged.
    assert!(served(&call("127.0.0.1", server.addr, GET_CLOSE).await));
    assert_eq!(count_closed(&mut flood).await, 40, "20 may stay, the other 40 are closed at accept");
    assert_eq!(limiter.clients().in_use_by("127.0.0.2".parse().unwrap()), 20);
    // Another public address has its own share.
    let mut other = Vec::new();
    for _ in 0..20 {
        other.push(connect_from("127.0.0.3", server.addr).await);
    }
    assert!(served(&call("127.0.0.1", server.addr, GET_CLOSE).await));
    assert_eq!(count_closed(&mut other).await, 0);
}

#[tokio::test]
async fn behind_a_trusted_load_balancer_clients_are_counted_by_proxy_source() {
    let mut spec = patient("lb");
    spec.proxy = Some(lb_config(BOUND));
    spec.limits = ConnectionLimits {
        max_connections: 100,
        max_per_peer: 3,
        max_per_load_balancer: 8,
        ..Default::default()
    }
    .limiter();
    let server = start(spec).await;
    let header = |src: &str| format!("PROXY TCP4 {src} 127.0.0.1 40000 80\r\n").into_bytes();
    // One public client floods through the load balancer: three connections may stay (silent after the
    // header), the rest are closed.
    let mut flood = Vec::new();
    for _ in 0..6 {
        let mut tcp = connect_from("127.0.0.1", server.addr).await;
        tcp.write_all(&header("203.0.113.7")).await.unwrap();
        flood.push(tcp);
    }
    // Another client through the same load balancer is served.
    let mut request = header("198.51.100.9");
    request.extend_from_slice(GET_CLOSE);
    assert!(served(&call("127.0.0.1", server.addr, &request).await));
    assert_eq!(count_closed(&mut flood).await, 3, "three per client, counted by PROXY source");
    // The load balancer's own cap (8) is larger than a client's and separate: 3 held + 5 more.
    let mut more = Vec::new();
    for i in 0..5 {
        let mut tcp = connect_from("127.0.0.1", server.addr).await;
        tcp.write_all(&header(&format!("198.51.100.{}", 20 + i))).await.unwrap();
        more.push(tcp);
    }
    assert!(served(&call("127.0.0.2", server.addr, GET_CLOSE).await), "a direct caller is served");
    assert_eq!(count_closed(&mut more).await, 0);
    let mut over = connect_from("127.0.0.1", server.addr).await;
    over.write_all(&header("198.51.100.99")).await.unwrap();
    assert!(closed_after(&mut over).await < BOUND, "the ninth connection of the load balancer is closed");
}

#[tokio::test]
async fn silent_untrusted_connections_cannot_hold_the_load_balancers_slots() {
    let mut spec = patient("lb");
    spec.proxy = Some(lb_config(Duration::from_secs(60)));
    spec.untrusted = PeerBudget::new(2, 2);
    let server = start(spec).await;
    // Six silent connections from 127.0.0.2, which is not a load balancer: two may wait, four are closed.
    let mut silent = Vec::new();
    for _ in 0..6 {
        silent.push(connect_from("127.0.0.2", server.addr).await);
    }
    let mut request = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n".to_vec();
    request.extend_from_slice(GET_CLOSE);
    assert!(served(&call("127.0.0.1", server.addr, &request).await));
    assert_eq!(count_closed(&mut silent).await, 4, "two may wait for their first bytes, the rest are closed");
}

#[tokio::test]
async fn the_untrusted_budget_is_given_back_once_the_first_bytes_are_judged() {
    let mut spec = patient("lb");
    spec.proxy = Some(lb_config(Duration::from_secs(60)));
    spec.untrusted = PeerBudget::new(2, 2);
    let server = start(spec).await;
    // Keep-alive connections from an untrusted peer: each is judged (not a PROXY header) and served, and
    // stays open; they do not hold the budget, so the next ones are served too.
    let mut open = Vec::new();
    for i in 0..6 {
        let mut tcp = connect_from("127.0.0.2", server.addr).await;
        tcp.write_all(GET).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(BOUND, tcp.read(&mut buf)).await.expect("answered").unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "connection {i}");
        open.push(tcp);
    }
    assert_eq!(count_closed(&mut open).await, 0);
}

#[tokio::test]
async fn one_address_holds_only_its_share_of_the_untrusted_budget() {
    let mut spec = patient("lb");
    spec.proxy = Some(lb_config(Duration::from_secs(60)));
    spec.untrusted = PeerBudget::new(10, 3);
    let server = start(spec).await;
    let mut flood = Vec::new();
    for _ in 0..8 {
        flood.push(connect_from("127.0.0.2", server.addr).await);
    }
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(connect_from("127.0.0.3", server.addr).await);
    }
    assert!(served(&call("127.0.0.4", server.addr, GET_CLOSE).await), "another untrusted peer is answered");
    assert_eq!(count_closed(&mut flood).await, 5);
    assert_eq!(count_closed(&mut others).await, 0);
}

// === sizes ===

fn request_with_header(len: usize) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n", "a".repeat(len))
        .into_bytes()
}

#[tokio::test]
async fn oversized_heads_are_answered_431_in_problem_json() {
    let server = start(patient("http")).await;
    // Over one field's limit (16 KiB) and under hyper's buffer: the serve helper's 431.
    let answer = call("127.0.0.2", server.addr, &request_with_header(20 * 1024)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("urn:portcullis:denial:http.header-too-large"), "{answer}");
    // Over the list limit (32 KiB) with fields under the single-field limit.
    let mut many = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
    for i in 0..4 {
        many.extend_from_slice(format!("X-Part-{i}: {}\r\n", "b".repeat(10 * 1024)).as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let answer = call("127.0.0.2", server.addr, &many).await;
    assert!(answer.contains("urn:portcullis:denial:http.header-list-too-large"), "{answer}");
    // Past hyper's own buffer (list limit + 16 KiB): hyper's bare 431, documented.
    let answer = call("127.0.0.2", server.addr, &request_with_header(100 * 1024)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Under the limits: served.
    assert!(served(&call("127.0.0.2", server.addr, &request_with_header(8 * 1024)).await));
}

// === pipelining and half-close ===

#[tokio::test]
async fn every_pipelined_request_sent_before_the_fin_is_answered() {
    // hyper answers all of them only with `half_close` on: without it, the last request of this run went
    // unanswered (hyper saw the end of stream before it had answered the buffered requests).
    let server = start(patient("http")).await;
    let tcp = connect_from("127.0.0.1", server.addr).await;
    let (mut read, mut write) = tcp.into_split();
    // Read while writing, so neither side waits on a full socket buffer.
    let reader = tokio::spawn(async move {
        let mut answer = String::new();
        tokio::time::timeout(BOUND, read.read_to_string(&mut answer)).await.expect("answered").unwrap();
        answer
    });
    let n = 2000;
    write.write_all(&GET.repeat(n)).await.unwrap();
    write.shutdown().await.unwrap(); // FIN: the client sends nothing more
    let answer = reader.await.unwrap();
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), n, "every request answered");
    assert!(answer.ends_with("served"));
}
