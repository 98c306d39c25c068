//! Connection-level defences of the HTTPS listener, with real TLS handshakes: a TLS connection that
//! completes its handshake and then stays silent is closed at its deadline, and a flood from 127.0.0.2 (the
//! public internet) past its connection cap and its share of the TLS handshake permits does not stop the
//! good mTLS client at 127.0.0.1 from being served.

use std::time::{Duration, Instant};

use http::StatusCode;
use portcullis_tests::client::{TlsClient, tcp_from};
use portcullis_tests::configs::MTLS;
use portcullis_tests::pki::{Issued, Pki};
use portcullis_tests::server::TestGateway;
use portcullis_tests::{bounded, skip_without};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const API: &str = "contoso.azure-api.net";
/// The deadline of the step a test holds.
const SHORT: Duration = Duration::from_millis(200);

struct Certs {
    pki: Pki,
    ca: Issued,
    good: Issued,
}

fn certs() -> Certs {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    pki.server("server", &ca, &[API, "contoso.management.azure-api.net", "contoso.developer.azure-api.net"]);
    let good = pki.client("good", "partner-app", &ca, "ec", "-sha256");
    Certs { pki, ca, good }
}

/// The mTLS gateway with short deadlines and small caps for this test.
async fn start(c: &Certs) -> TestGateway {
    let limits = "tls = true\n\n[listener.timeouts]\nhttp_preface_ms = 200\ntls_handshake_ms = 5000\n\n\
                  [listener.limits]\nmax_connections_per_peer = 20\nmax_tls_handshakes = 100\n\
                  max_tls_handshakes_per_peer = 10\n";
    let toml = MTLS.replacen("tls = true\n", limits, 1).replace("{dir}", &c.pki.dir().display().to_string());
    TestGateway::start(&toml).await
}

/// How many of `conns` the server has closed by a shared short deadline (the others stay open).
async fn count_closed(conns: &mut [tokio::net::TcpStream]) -> usize {
    let deadline = tokio::time::Instant::now() + SHORT;
    let mut n = 0;
    for tcp in conns {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_after_the_tls_handshake_is_closed_at_its_deadline() {
    if skip_without("openssl", "a_silent_connection_after_the_tls_handshake_is_closed_at_its_deadline") {
        return;
    }
    let c = certs();
    let gw = start(&c).await;
    let client = TlsClient::new(&c.ca, Some(&c.good), &[b"http/1.1"]);
    let mut tls = client.connect(gw.addr("https"), API).await.expect("handshake");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = bounded("the server closes", tls.read(&mut buf)).await;
    let took = started.elapsed();
    assert!(matches!(read, Ok(0) | Err(_)), "closed without an answer: {read:?}");
    assert!(took >= SHORT - Duration::from_millis(20) && took < SHORT * 10, "closed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_caps_does_not_stop_the_good_mtls_client() {
    if skip_without("openssl", "a_flood_past_the_caps_does_not_stop_the_good_mtls_client") {
        return;
    }
    let c = certs();
    let gw = start(&c).await;
    let addr = gw.addr("https");
    let public = "127.0.0.2".parse().unwrap();
    // 30 connections from the public address, each starting a TLS record and then stalling: 20 pass the
    // connection cap, 10 of those hold handshake permits (its share), the other 10 are closed.
    let mut flood = Vec::new();
    for _ in 0..30 {
        let mut tcp = tcp_from(public, addr).await;
        tcp.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        flood.push(tcp);
    }
    let client = TlsClient::new(&c.ca, Some(&c.good), &[b"http/1.1"]);
    for _ in 0..3 {
        let r = client.get(addr, API, API).await.expect("the good client is served");
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert!(r.field("client_subject").contains("CN=partner-app"), "{}", r.text());
    }
    assert_eq!(count_closed(&mut flood).await, 20, "10 over the connection cap, 10 over the handshake share");
}
