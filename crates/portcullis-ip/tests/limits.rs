//! `LimitedListener` under `axum::serve` over loopback: a flood of idle connections from 127.0.0.2 at and
//! past its cap while 127.0.0.1 keeps being served (feature `axum`).
#![cfg(feature = "axum")]

use std::net::SocketAddr;
use std::time::Duration;

use axum::{Router, routing::get};
use portcullis_core::ConnInfo;
use portcullis_ip::{ConnectionLimits, LimitedListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use portcullis_test_support::loopback::connect_from;

/// Only turns a hang into a failure.
const BOUND: Duration = Duration::from_secs(20);

async fn serve(limits: ConnectionLimits) -> (SocketAddr, portcullis_ip::ConnectionLimiter) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = LimitedListener::new(tcp, limits);
    let limiter = listener.limiter().clone();
    let app = Router::new().route("/", get(|| async { "served" }));
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<ConnInfo>()).await.unwrap();
    });
    (addr, limiter)
}

async fn get_from(source: &str, addr: SocketAddr) -> String {
    let mut tcp = connect_from(source, addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(BOUND, tcp.read_to_string(&mut answer)).await.expect("answered").unwrap();
    answer
}

/// How many of `conns` the server has closed (end of stream or reset); the others stay open and silent.
async fn closed(conns: &mut [TcpStream]) -> usize {
    let mut n = 0;
    // One shared deadline: closed connections answer at once, open ones all wait for the same instant.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
    for tcp in conns {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn one_address_holds_its_share_and_no_more() {
    let limits = ConnectionLimits { max_connections: 100, max_per_peer: 20, ..ConnectionLimits::default() };
    let (addr, limiter) = serve(limits).await;
    let mut flood = Vec::new();
    for _ in 0..60 {
        flood.push(connect_from("127.0.0.2", addr).await.unwrap());
    }
    // Accepts are handled in order: once 127.0.0.1 is answered, every flood connection has been judged.
    let answer = get_from("127.0.0.1", addr).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("served"), "{answer}");
    assert_eq!(closed(&mut flood).await, 40, "20 may stay, the rest are closed at accept");
    assert_eq!(limiter.clients().in_use_by("127.0.0.2".parse().unwrap()), 20);
    // Its slots come back when it goes away.
    drop(flood);
    let answer = get_from("127.0.0.2", addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn at_the_listener_cap_accepting_waits_for_a_free_slot() {
    let limits = ConnectionLimits { max_connections: 10, max_per_peer: 10, ..ConnectionLimits::default() };
    let (addr, limiter) = serve(limits).await;
    let mut flood = Vec::new();
    for _ in 0..10 {
        flood.push(connect_from("127.0.0.2", addr).await.unwrap());
    }
    // The cap is reached: the next caller waits in the accept queue (not closed) ...
    let waiting = tokio::spawn(get_from("127.0.0.1", addr));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "no slot is free");
    assert_eq!(limiter.available(), 0);
    // ... and is served as soon as one is given back.
    drop(flood.pop());
    let answer = tokio::time::timeout(BOUND, waiting).await.expect("served").unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
