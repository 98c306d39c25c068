//! The serve helper's accept path over loopback: connections from peers that are not trusted load balancers
//! wait for their PROXY header on a budget of their own.

use std::sync::Arc;
use std::time::Duration;

use axum::{Router, routing::get};
use portcullis::core::IpRange;
use portcullis::proxy_protocol::{ProxyProtocolConfig, SourcePolicy};
use portcullis::serve::{ListenerSpec, serve_listeners};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Only turns a hang into a failure.
const BOUND: Duration = Duration::from_secs(20);

#[tokio::test]
async fn silent_untrusted_connections_cannot_hold_the_load_balancers_slots() {
    let config = ProxyProtocolConfig::builder()
        .source("127.0.0.1".parse::<IpRange>().unwrap(), SourcePolicy::Required)
        .header_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut spec = ListenerSpec::new("lb");
    spec.proxy = Some(Arc::new(config));
    spec.untrusted = Arc::new(tokio::sync::Semaphore::new(2));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/", get(|| async { "served" })).into_service();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_listeners(
        vec![(listener, spec)],
        app,
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));
    // Six silent connections from 127.0.0.2, which is not a load balancer: two may wait, four are closed.
    let mut silent = Vec::new();
    for _ in 0..6 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        silent.push(socket.connect(addr).await.unwrap());
    }
    // The load balancer is served.
    let mut lb = TcpStream::connect(addr).await.unwrap();
    lb.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(BOUND, lb.read_to_string(&mut answer)).await.expect("answered").unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("served"), "{answer}");
    let mut closed = 0;
    for mut tcp in silent {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut buf)).await
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 4, "two untrusted connections may wait for their first bytes, the rest are closed");
    let _ = stop.send(());
    tokio::time::timeout(BOUND, server).await.expect("stops").unwrap().unwrap();
}
