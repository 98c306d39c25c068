//! `FilteredListener` under `axum::serve`, over real loopback sockets (feature `axum`).
#![cfg(feature = "axum")]

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::serve::Listener;
use axum::{Router, routing::get};
use http::StatusCode;
use portcullis_core::{ConnInfo, ConnectionFacts, ProxyInfo, ProxyVersion};
use portcullis_ip::{Action, ConnectionFilter, FilteredListener, IpRules};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use portcullis_test_support::loopback::connect_from;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";

/// A stream that counts the bytes the server reads from it, and may claim a PROXY protocol source (standing
/// in for a PROXY protocol listener's stream).
struct Recorded {
    io: TcpStream,
    read: Arc<AtomicU64>,
    proxy_source: Option<SocketAddr>,
}

impl AsyncRead for Recorded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        self.read.fetch_add((buf.filled().len() - before) as u64, Ordering::SeqCst);
        res
    }
}

impl AsyncWrite for Recorded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl ConnectionFacts for Recorded {
    fn conn_info(&self, remote: SocketAddr) -> ConnInfo {
        let info = self.io.conn_info(remote);
        match self.proxy_source {
            Some(src) => info.with_proxy(ProxyInfo::new(ProxyVersion::V2, Some(src), None)),
            None => info,
        }
    }
}

/// Bytes read per peer, and the PROXY source to claim per peer.
#[derive(Clone, Default)]
struct Book {
    read: Arc<Mutex<HashMap<SocketAddr, Arc<AtomicU64>>>>,
    proxy: Arc<Mutex<HashMap<SocketAddr, SocketAddr>>>,
}

impl Book {
    fn bytes_read(&self, peer: SocketAddr) -> Option<u64> {
        self.read.lock().unwrap().get(&peer).map(|c| c.load(Ordering::SeqCst))
    }
}

struct RecordingListener {
    inner: TcpListener,
    book: Book,
}

impl Listener for RecordingListener {
    type Io = Recorded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Ok((io, peer)) = self.inner.accept().await {
                let read = Arc::new(AtomicU64::new(0));
                self.book.read.lock().unwrap().insert(peer, read.clone());
                let proxy_source = self.book.proxy.lock().unwrap().get(&peer).copied();
                return (Recorded { io, read, proxy_source }, peer);
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

fn app() -> Router {
    Router::new().route(
        "/",
        get(|ConnectInfo(conn): ConnectInfo<ConnInfo>| async move {
            let proxy = conn.proxy.and_then(|p| p.source).map(|s| s.ip().to_string()).unwrap_or_default();
            format!("peer={} proxy={proxy}", conn.peer.ip())
        }),
    )
}

fn start(listener: FilteredListener<RecordingListener>) {
    tokio::spawn(async move {
        axum::serve(listener, app().into_make_service_with_connect_info::<ConnInfo>()).await.unwrap();
    });
}

async fn read_all(stream: &mut TcpStream) -> io::Result<String> {
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    Ok(String::from_utf8(buf).unwrap())
}

#[tokio::test]
async fn refused_peer_is_closed_at_accept_without_a_byte_read() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let book = Book::default();
    let filter = ConnectionFilter::new(IpRules::builder(Action::Deny).allow("127.0.0.1").build().unwrap());
    let listener = FilteredListener::new(RecordingListener { inner: tcp, book: book.clone() }, filter);
    let stats = listener.stats();

    // Requests are sent before the server starts accepting: the refused one sits unread in the kernel.
    let mut refused = connect_from("127.0.0.2", addr).await.unwrap();
    refused.write_all(REQUEST).await.unwrap();
    let mut allowed = connect_from("127.0.0.1", addr).await.unwrap();
    allowed.write_all(REQUEST).await.unwrap();
    start(listener);

    // Unread bytes at close make the kernel reset the connection: the server never read them.
    let err = read_all(&mut refused).await.expect_err("the refused peer must be reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    let answer = read_all(&mut allowed).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("peer=127.0.0.1 proxy="), "{answer}");

    assert_eq!(book.bytes_read(refused.local_addr().unwrap()), Some(0), "accepted, then dropped unread");
    assert_eq!(book.bytes_read(allowed.local_addr().unwrap()), Some(REQUEST.len() as u64));
    assert_eq!((stats.dropped(), stats.admitted()), (1, 1));
}

#[tokio::test]
async fn with_a_proxy_protocol_source_the_source_is_filtered_not_the_load_balancer() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let book = Book::default();
    // The load balancer (127.0.0.1) itself is not allowed: only its clients in 198.51.100.0/24.
    let rules = IpRules::builder(Action::Deny).allow("198.51.100.0/24").build().unwrap();
    let listener =
        ConnectionFilter::new(rules).listener(RecordingListener { inner: tcp, book: book.clone() });
    let stats = listener.stats();

    let mut good = connect_from("127.0.0.1", addr).await.unwrap();
    let mut bad = connect_from("127.0.0.1", addr).await.unwrap();
    let mut health = connect_from("127.0.0.1", addr).await.unwrap(); // a LOCAL header: no source
    {
        let mut proxy = book.proxy.lock().unwrap();
        proxy.insert(good.local_addr().unwrap(), "198.51.100.7:5555".parse().unwrap());
        proxy.insert(bad.local_addr().unwrap(), "203.0.113.9:5555".parse().unwrap());
    }
    for s in [&mut good, &mut bad, &mut health] {
        s.write_all(REQUEST).await.unwrap();
    }
    start(listener);

    let answer = read_all(&mut good).await.unwrap();
    assert!(answer.ends_with("peer=127.0.0.1 proxy=198.51.100.7"), "{answer}");
    assert_eq!(read_all(&mut bad).await.unwrap_err().kind(), ErrorKind::ConnectionReset);
    assert_eq!(read_all(&mut health).await.unwrap_err().kind(), ErrorKind::ConnectionReset);
    assert_eq!(book.bytes_read(bad.local_addr().unwrap()), Some(0));
    assert_eq!(stats.dropped(), 2);
}

#[tokio::test]
async fn filtered_tcp_listener_serves_axum_with_conn_info() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = FilteredListener::new(
        tcp,
        ConnectionFilter::new(IpRules::builder(Action::Allow).deny("127.0.0.2").build().unwrap()),
    );
    let stats = listener.stats();
    let router = Router::new()
        .route("/", get(|ConnectInfo(c): ConnectInfo<ConnInfo>| async move { c.peer.ip().to_string() }));
    tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<ConnInfo>()).await.unwrap();
    });
    let a = portcullis_test_support::loopback::get_from("127.0.0.3", addr, "/", &[]).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "127.0.0.3"));
    let mut refused = connect_from("127.0.0.2", addr).await.unwrap();
    let mut buf = [0u8; 1];
    match refused.read(&mut buf).await {
        Ok(n) => assert_eq!(n, 0),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
    }
    assert_eq!(stats.dropped(), 1);
}
