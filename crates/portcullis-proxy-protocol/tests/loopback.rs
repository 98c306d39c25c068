//! Real loopback connections: handcrafted PROXY headers sent before HTTP to an axum server on
//! `ProxyProtocolListener` (and to a hyper-util accept loop), the connection facts read back in a handler.
//!
//! No assertion is about time: deadlines are short so that tests end quickly, and every wait is bounded by a
//! generous outer timeout that only turns a hang into a failure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use portcullis_core::{ConnInfo, IpRange};
use portcullis_proxy_protocol::{ProxyProtocolConfig, ProxyProtocolListener, SourcePolicy, accept_tokio_io};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The bound on any single wait in these tests; reaching it is a failure (a hang), not a measurement.
const BOUND: Duration = Duration::from_secs(20);

const SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

fn range(s: &str) -> IpRange {
    s.parse().expect("range")
}

/// Loopback peers are trusted load balancers that must send a header.
fn trusting_loopback(timeout: Duration) -> ProxyProtocolConfig {
    ProxyProtocolConfig::builder()
        .source(range("127.0.0.0/8"), SourcePolicy::Required)
        .header_timeout(timeout)
        .max_v2_len(1024)
        .build()
        .expect("config")
}

/// Only 10.0.0.0/8 is trusted: loopback peers are refused the right to send a header.
fn trusting_elsewhere() -> ProxyProtocolConfig {
    ProxyProtocolConfig::builder()
        .source(range("10.0.0.0/8"), SourcePolicy::Required)
        .header_timeout(Duration::from_secs(5))
        .build()
        .expect("config")
}

/// What the handler saw of the connection, one `key=value` per line.
async fn describe(ConnectInfo(conn): ConnectInfo<ConnInfo>) -> String {
    let proxy = conn.proxy.as_deref();
    let show = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    [
        format!("peer={}", conn.peer.ip()),
        format!("local={}", show(conn.local.map(|a| a.to_string()))),
        format!("proxy={}", show(proxy.map(|p| format!("{:?}", p.version)))),
        format!("src={}", show(proxy.and_then(|p| p.source).map(|a| a.to_string()))),
        format!("dst={}", show(proxy.and_then(|p| p.destination).map(|a| a.to_string()))),
        format!("link={}", show(proxy.and_then(|p| p.link_id.as_ref()).map(|l| l.to_string()))),
        format!(
            "tls_cn={}",
            show(proxy.and_then(|p| p.ssl.as_ref()?.common_name.as_deref().map(str::to_owned)))
        ),
    ]
    .join("\n")
}

async fn axum_server(config: ProxyProtocolConfig) -> SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let app = Router::new().route("/", get(describe));
    let listener = ProxyProtocolListener::new(tcp, config).max_pending(64);
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<ConnInfo>()).await.expect("serve");
    });
    addr
}

/// Sends `header` (in one write) then an HTTP/1.1 request with hyper's client; returns status and body.
async fn request_after(addr: SocketAddr, header: &[u8]) -> Result<(u16, String), String> {
    let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.write_all(header).await.map_err(|e| e.to_string())?;
    http_over(tcp).await
}

async fn http_over(tcp: TcpStream) -> Result<(u16, String), String> {
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req =
            http::Request::get("/").header(http::header::HOST, "service.test").body(Empty::new()).unwrap();
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(BOUND, exchange).await.map_err(|_| "no answer within the bound".to_owned())?
}

fn field<'a>(body: &'a str, key: &str) -> &'a str {
    body.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key} in {body:?}"))
}

/// Asserts the server closes the connection without an HTTP answer; returns nothing read.
async fn assert_closed_without_answer(mut tcp: TcpStream) {
    let mut got = Vec::new();
    let read = tokio::time::timeout(BOUND, tcp.read_to_end(&mut got)).await.expect("the server never closed");
    // A close with unread bytes in the server's buffer is a reset: also a close.
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    assert!(got.is_empty(), "the server answered: {:?}", String::from_utf8_lossy(&got));
}

fn v2_tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, tlvs: &[u8]) -> Vec<u8> {
    let mut h = SIG.to_vec();
    h.extend_from_slice(&[0x21, 0x11]);
    h.extend_from_slice(&u16::try_from(12 + tlvs.len()).unwrap().to_be_bytes());
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(tlvs);
    h
}

#[tokio::test]
async fn v1_header_reaches_the_handler() {
    let addr = axum_server(trusting_loopback(Duration::from_secs(5))).await;
    let (status, body) =
        request_after(addr, b"PROXY TCP4 203.0.113.7 192.0.2.10 40001 443\r\n").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(field(&body, "peer"), "127.0.0.1");
    assert_eq!(field(&body, "local"), addr.to_string());
    assert_eq!(field(&body, "proxy"), "V1");
    assert_eq!(field(&body, "src"), "203.0.113.7:40001");
    assert_eq!(field(&body, "dst"), "192.0.2.10:443");
    assert_eq!(field(&body, "link"), "-");
}

#[tokio::test]
async fn v1_tcp6_v4_mapped_source_is_folded() {
    let addr = axum_server(trusting_loopback(Duration::from_secs(5))).await;
    let header = b"PROXY TCP6 ::ffff:198.51.100.4 2001:db8::1 5000 443\r\n";
    let (_, body) = request_after(addr, header).await.unwrap();
    assert_eq!(field(&body, "src"), "198.51.100.4:5000");
    assert_eq!(field(&body, "dst"), "[2001:db8::1]:443");
}

#[tokio::test]
async fn v2_azure_link_id_reaches_the_handler() {
    let addr = axum_server(trusting_loopback(Duration::from_secs(5))).await;
    // Azure Private Link: TLV 0xEE, length 5, subtype 0x01, LinkID 0x2200_0A0B little-endian.
    let header = v2_tcp4(
        [10, 20, 0, 5],
        50123,
        [10, 20, 0, 1],
        443,
        &[0xee, 0x00, 0x05, 0x01, 0x0b, 0x0a, 0x00, 0x22],
    );
    let (status, body) = request_after(addr, &header).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(field(&body, "proxy"), "V2");
    assert_eq!(field(&body, "src"), "10.20.0.5:50123");
    assert_eq!(field(&body, "link"), format!("azure:{}", 0x2200_0a0b_u32));
}

#[tokio::test]
async fn v2_aws_vpce_id_with_crc32c_reaches_the_handler() {
    let addr = axum_server(trusting_loopback(Duration::from_secs(5))).await;
    // AWS PrivateLink: TLV 0xEA, subtype 0x01, the endpoint id in ASCII; plus a CRC32C TLV over the header.
    let mut tlvs = vec![0xea, 0x00, 0x17, 0x01];
    tlvs.extend_from_slice(b"vpce-0a1b2c3d4e5f60718");
    tlvs.extend_from_slice(&[0x03, 0x00, 0x04, 0, 0, 0, 0]);
    let mut header = v2_tcp4([172, 31, 7, 113], 51442, [172, 31, 10, 31], 80, &tlvs);
    let crc = crc32c_of(&header);
    let n = header.len();
    header[n - 4..].copy_from_slice(&crc.to_be_bytes());
    let (status, body) = request_after(addr, &header).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(field(&body, "src"), "172.31.7.113:51442");
    assert_eq!(field(&body, "link"), "aws:vpce-0a1b2c3d4e5f60718");

    // The same header with one address bit flipped: the checksum no longer matches, the connection is closed.
    header[17] ^= 0x01;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&header).await.unwrap();
    assert_closed_without_answer(tcp).await;
}

/// CRC32C (Castagnoli), bit by bit: independent of the crate the parser uses.
fn crc32c_of(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
        }
    }
    !crc
}

#[tokio::test]
async fn v2_gcp_psc_id_over_ipv6_reaches_the_handler() {
    let addr = axum_server(trusting_loopback(Duration::from_secs(5))).await;
    let mut header = SIG.to_vec();
    header.extend_from_slice(&[0x21, 0x21, 0x00, 36 + 11]);
    header.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99]); // 2001:db8::99
    header.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]); // 2001:db8::1
    header.extend_from_slice(&[0x9c, 0x40, 0x01, 0xbb]); // 40000 -> 443
    // GCP Private Service Connect: TLV 0xE0, 8 bytes, big-endian, no subtype.
    header.extend_from_slice(&[0xe0, 0x00, 0x08, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x78, 0x9a]);
    let (status, body) = request_after(addr, &header).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(field(&body, "src"), "[2001:db8::99]:40000");
    assert_eq!(field(&body, "link"), format!("gcp:{}", 0x12_3456_789a_u64));
}

#[tokio::test]
async fn v2_ssl_tlv_and_local_command() {
    let addr = axum_server(trusting_loopback(Duration::from_secs(5))).await;
    let mut ssl = vec![0x20, 0x00, 0x00, 0x07, 0, 0, 0, 0, 0x22, 0x00, 0x06];
    ssl.extend_from_slice(b"client");
    ssl[2] = u8::try_from(ssl.len() - 3).unwrap();
    let header = v2_tcp4([192, 0, 2, 50], 1234, [192, 0, 2, 1], 443, &ssl);
    let (_, body) = request_after(addr, &header).await.unwrap();
    assert_eq!(field(&body, "tls_cn"), "client");

    // LOCAL (the balancer's own health check): a header, but no client address.
    let (status, body) = request_after(addr, b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!((field(&body, "proxy"), field(&body, "src")), ("V2", "-"));
}

#[tokio::test]
async fn header_from_an_untrusted_peer_is_refused() {
    let addr = axum_server(trusting_elsewhere()).await;
    for header in [
        &b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 443\r\n"[..],
        &v2_tcp4([10, 0, 0, 1], 1000, [10, 0, 0, 2], 443, &[0xee, 0, 5, 1, 1, 0, 0, 0]),
    ] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: service.test\r\n\r\n");
        tcp.write_all(&bytes).await.unwrap();
        assert_closed_without_answer(tcp).await;
    }
    // The same untrusted peer without a header is served as itself.
    let (status, body) = request_after(addr, b"").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!((field(&body, "peer"), field(&body, "proxy")), ("127.0.0.1", "-"));
}

#[tokio::test]
async fn missing_header_from_a_required_source_is_refused() {
    let addr = axum_server(trusting_loopback(Duration::from_secs(5))).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: service.test\r\n\r\n").await.unwrap();
    assert_closed_without_answer(tcp).await;
}

#[tokio::test]
async fn slow_header_is_closed_at_the_deadline_and_does_not_stall_others() {
    // Deadline 300 ms for the slow-header check.
    let addr = axum_server(trusting_loopback(Duration::from_millis(300))).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"PROXY TCP4 192.0.2.1 ").await.unwrap();
    assert_closed_without_answer(slow).await;

    // A long deadline: a stalled header is still pending while another client is served.
    let addr = axum_server(trusting_loopback(Duration::from_secs(600))).await;
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(&SIG[..7]).await.unwrap();
    let (status, body) = request_after(addr, b"PROXY TCP4 192.0.2.2 192.0.2.1 7 443\r\n").await.unwrap();
    assert_eq!((status, field(&body, "src")), (200, "192.0.2.2:7"));
    // The stalled connection got no answer and is still open.
    let mut one = [0u8; 1];
    assert!(tokio::time::timeout(Duration::from_millis(50), stalled.read(&mut one)).await.is_err());
}

#[tokio::test]
async fn header_split_across_segments() {
    let addr = axum_server(trusting_loopback(Duration::from_secs(10))).await;
    let header = v2_tcp4([198, 51, 100, 9], 6000, [198, 51, 100, 1], 443, &[0xee, 0, 5, 1, 7, 0, 0, 0]);
    let v1 = b"PROXY TCP4 198.51.100.8 198.51.100.1 6001 443\r\n".to_vec();
    for (bytes, cuts, src) in [
        (header, vec![1, 11, 13, 15, 16, 30], "198.51.100.9:6000"),
        (v1, vec![3, 6, 20, 46], "198.51.100.8:6001"),
    ] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut tcp = tcp;
        let mut from = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            tcp.write_all(&bytes[from..cut]).await.unwrap();
            tcp.flush().await.unwrap();
            // Let the server read each piece on its own (a separate segment and a separate read).
            tokio::time::sleep(Duration::from_millis(20)).await;
            from = cut;
        }
        let (status, body) = http_over(tcp).await.unwrap();
        assert_eq!((status, field(&body, "src")), (200, src));
    }
}

#[tokio::test]
async fn oversized_headers_are_closed() {
    let addr = axum_server(trusting_loopback(Duration::from_secs(10))).await;
    // v2 length 2000 > the 1024 cap: closed as soon as the length field arrives (the body is never sent).
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut fixed = SIG.to_vec();
    fixed.extend_from_slice(&[0x21, 0x11, 0x07, 0xd0]);
    tcp.write_all(&fixed).await.unwrap();
    assert_closed_without_answer(tcp).await;

    // v1: no CRLF within 107 bytes.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut line = b"PROXY UNKNOWN ".to_vec();
    line.resize(200, b'a');
    tcp.write_all(&line).await.unwrap();
    assert_closed_without_answer(tcp).await;
}

#[tokio::test]
async fn trailing_payload_is_preserved_and_a_second_header_is_payload() {
    let addr = axum_server(trusting_loopback(Duration::from_secs(5))).await;
    // Header and request in one write (one segment): the request bytes read with the header are replayed.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut bytes = b"PROXY TCP4 192.0.2.77 192.0.2.1 1111 443\r\n".to_vec();
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: service.test\r\nConnection: close\r\n\r\n");
    tcp.write_all(&bytes).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(BOUND, tcp.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("src=192.0.2.77:1111"), "{answer}");

    // Only the first header is parsed: a second one is payload, and HTTP refuses it as a request.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut bytes = b"PROXY TCP4 192.0.2.77 192.0.2.1 1111 443\r\n".to_vec();
    bytes.extend_from_slice(b"PROXY TCP4 192.0.2.99 192.0.2.1 2222 443\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    tcp.write_all(&bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(BOUND, tcp.read_to_end(&mut answer)).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains("192.0.2.99"), "{answer}");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[tokio::test]
async fn hyper_util_accept_loop() {
    use hyper_util::service::TowerToHyperService;
    use portcullis_core::AddConnInfo;

    let config = Arc::new(trusting_loopback(Duration::from_secs(5)));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = tcp.accept().await else { continue };
            let config = Arc::clone(&config);
            tokio::spawn(async move {
                let Ok((io, conn)) = accept_tokio_io(&config, stream, peer).await else { return };
                let app = tower::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let conn = ConnInfo::from_extensions(req.extensions()).expect("conn info");
                    let src = conn.proxy.and_then(|p| p.source).map(|s| s.to_string()).unwrap_or_default();
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                        Bytes::from(format!("peer={}\nsrc={src}", conn.peer.ip())),
                    )))
                });
                let svc = TowerToHyperService::new(AddConnInfo::new(app, conn));
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
            });
        }
    });
    let (status, body) = request_after(addr, b"PROXY TCP4 192.0.2.31 192.0.2.1 3131 443\r\n").await.unwrap();
    assert_eq!((status, field(&body, "peer"), field(&body, "src")), (200, "127.0.0.1", "192.0.2.31:3131"));
    // A refused header closes the connection before hyper sees it.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PROXY TCP4 nonsense\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_closed_without_answer(tcp).await;
}

/// Silent connections from untrusted peers cannot hold the slots a trusted load balancer needs: they have
/// their own (small) budget, and past it new untrusted connections are closed at once.
#[tokio::test]
async fn silent_untrusted_peers_cannot_starve_the_load_balancer() {
    // 127.0.0.1 is the trusted load balancer; 127.0.0.2 is anyone else. Deadlines are long, so that a
    // silent connection would hold its slot for the whole test.
    let config = ProxyProtocolConfig::builder()
        .source(range("127.0.0.1"), SourcePolicy::Required)
        .header_timeout(Duration::from_secs(60))
        .build()
        .expect("config");
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let app = Router::new().route("/", get(describe));
    let listener = ProxyProtocolListener::new(tcp, config).max_pending(4).max_pending_untrusted(3);
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<ConnInfo>()).await.expect("serve");
    });
    let from_untrusted = || async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.2:0".parse().expect("addr")).expect("bind 127.0.0.2");
        socket.connect(addr).await.expect("connect")
    };
    // More silent untrusted connections than both budgets together.
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(from_untrusted().await);
    }
    // The load balancer is still served at once (within the bound, far below the 60 s deadline).
    let header = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n";
    let (status, body) = request_after(addr, header).await.expect("the load balancer is served");
    assert_eq!(status, 200);
    assert_eq!(field(&body, "src"), "203.0.113.7:40000");
    // The untrusted connections past their budget were closed without a byte read or written.
    let mut closed = 0;
    for mut tcp in silent {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut buf)).await
        {
            closed += 1;
        }
    }
    assert!(closed >= 7, "at most 3 untrusted connections may wait, {closed} of 10 were closed");
}

/// One untrusted address holds at most its share of the untrusted budget; another untrusted address is
/// still answered, and a share goes back as soon as the first bytes are judged (keep-alive connections
/// from an untrusted peer do not hold it).
#[tokio::test]
async fn one_untrusted_address_holds_only_its_share() {
    let config = ProxyProtocolConfig::builder()
        .source(range("127.0.0.1"), SourcePolicy::Required)
        .header_timeout(Duration::from_secs(60))
        .build()
        .expect("config");
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let app = Router::new().route("/", get(describe));
    let listener =
        ProxyProtocolListener::new(tcp, config).max_pending_untrusted(10).max_pending_untrusted_per_peer(2);
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<ConnInfo>()).await.expect("serve");
    });
    let from = |source: &'static str| async move {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(format!("{source}:0").parse().expect("addr")).expect("bind");
        socket.connect(addr).await.expect("connect")
    };
    let mut silent = Vec::new();
    for _ in 0..6 {
        silent.push(from("127.0.0.2").await);
    }
    // Another untrusted address is answered (its plain request is judged and served).
    let (status, _) = http_over(from("127.0.0.3").await).await.expect("127.0.0.3 is served");
    assert_eq!(status, 200);
    // Keep-alive connections from 127.0.0.3, served one after the other and left open: each gave its share
    // back once judged, so all of them are served.
    let mut open = Vec::new();
    for i in 0..4 {
        let mut tcp = from("127.0.0.3").await;
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(BOUND, tcp.read(&mut buf)).await.expect("answered").expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "keep-alive connection {i}");
        open.push(tcp);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
    let mut closed = 0;
    for mut tcp in silent {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 4, "two silent connections from 127.0.0.2 may wait, the other four are closed");
}
