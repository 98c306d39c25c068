//! The connection filter in a hand-written hyper accept loop, over real loopback sockets: a refused peer
//! (127.0.0.2) is dropped at accept without a byte read, an allowed one (127.0.0.1) is served.

use std::convert::Infallible;
use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Request, Response};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use portcullis_ip::{Action, ConnectionFilter, IpRules, IpRulesHandle, accept_filtered};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::service_fn;

use portcullis_test_support::loopback::connect_from;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";

/// Serves `listener` through `accept_filtered`; returns how many requests reached the service.
fn serve(listener: TcpListener, filter: ConnectionFilter) -> Arc<AtomicU64> {
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new("hello".to_owned())) }
    });
    tokio::spawn(async move {
        while let Ok((stream, _)) = accept_filtered(&listener, &filter).await {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc.clone()));
            tokio::spawn(conn);
        }
    });
    served
}

#[tokio::test]
async fn refused_peer_is_reset_with_its_bytes_unread_and_allowed_peer_is_served() {
    let filter = ConnectionFilter::new(IpRules::builder(Action::Deny).allow("127.0.0.1").build().unwrap());
    let stats = filter.stats();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    // Both clients connect and send a whole request BEFORE the server accepts anything, so the bytes sit
    // in the server's receive queue when the filter decides. Closing a socket with unread data makes the
    // kernel answer with a reset (not an orderly FIN): the reset proves the server read nothing.
    let mut refused = connect_from("127.0.0.2", addr).await.unwrap();
    refused.write_all(REQUEST).await.unwrap();
    let mut allowed = connect_from("127.0.0.1", addr).await.unwrap();
    allowed.write_all(REQUEST).await.unwrap();

    let served = serve(listener, filter);

    let mut answer = Vec::new();
    let err = refused.read_to_end(&mut answer).await.expect_err("the refused peer must be reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    assert!(answer.is_empty());

    let mut answer = Vec::new();
    allowed.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200 OK"), "{}", String::from_utf8_lossy(&answer));

    assert_eq!(served.load(Ordering::SeqCst), 1, "only the allowed request reached the service");
    assert_eq!((stats.dropped(), stats.admitted()), (1, 1));
}

#[tokio::test]
async fn refused_peer_that_sends_nothing_sees_the_connection_closed() {
    let filter = ConnectionFilter::new(IpRules::builder(Action::Allow).deny("127.0.0.2").build().unwrap());
    let stats = filter.stats();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = serve(listener, filter);

    let mut refused = connect_from("127.0.0.2", addr).await.unwrap();
    let mut buf = [0u8; 16];
    // EOF (or a reset): never an answer. Bounded: the server closes without waiting for anything.
    match refused.read(&mut buf).await {
        Ok(n) => assert_eq!(n, 0, "no byte may come back"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
    }
    assert_eq!(stats.dropped(), 1);
    assert_eq!(served.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn stored_rules_apply_at_the_next_accept() {
    let handle = IpRulesHandle::new(IpRules::uniform(Action::Deny));
    let filter = ConnectionFilter::new(handle.clone());
    let stats = filter.stats();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = serve(listener, filter);

    let mut first = connect_from("127.0.0.1", addr).await.unwrap();
    let mut buf = Vec::new();
    let _ = first.read_to_end(&mut buf).await; // closed at accept (EOF or reset)
    assert!(buf.is_empty());
    assert_eq!(stats.dropped(), 1);

    handle.store(IpRules::builder(Action::Deny).allow("127.0.0.0/8").build().unwrap());
    let mut second = connect_from("127.0.0.2", addr).await.unwrap();
    second.write_all(REQUEST).await.unwrap();
    second.read_to_end(&mut buf).await.unwrap();
    assert!(buf.starts_with(b"HTTP/1.1 200 OK"));
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn shadow_connection_filter_lets_the_refused_peer_through_and_counts_it() {
    let filter =
        ConnectionFilter::new(IpRules::builder(Action::Deny).allow("127.0.0.1").build().unwrap()).shadow();
    let stats = filter.stats();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = serve(listener, filter);
    let mut s = connect_from("127.0.0.2", addr).await.unwrap();
    s.write_all(REQUEST).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    assert!(buf.starts_with(b"HTTP/1.1 200 OK"));
    assert_eq!((stats.would_drop(), stats.dropped(), served.load(Ordering::SeqCst)), (1, 0, 1));
}
