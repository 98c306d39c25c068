//! Whole-stack tests over real loopback TCP: an axum server with the client-address, origin and
//! public-access layers, called by a hyper client, directly and through portcullis' PROXY protocol listener
//! with handcrafted v2 headers carrying Azure, AWS and GCP private link TLVs.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use portcullis_core::{ClientAddrConfig, ConnInfo, IpRange, LinkId, Origin, ResolveClientAddrLayer};
use portcullis_origin::{
    Connection, Connections, OriginLayer, OriginPolicy, Preset, PrivateEndpointConnection, PrivateNetworks,
    PublicAccessLayer, Targets,
};
use portcullis_proxy_protocol::{ProxyProtocolConfig, ProxyProtocolListener, SourcePolicy};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;

const RESOURCE: &str = "Microsoft.ApiManagement/service/my-apim-service";

async fn describe(origin: Origin, pe: Option<PrivateEndpointConnection>, headers: HeaderMap) -> String {
    let pe = pe.map(|pe| format!("{}/{}", pe.name, pe.group_id)).unwrap_or_else(|| "none".into());
    let tags: Vec<_> = headers.get_all("x-portcullis-origin").iter().map(|v| v.to_str().unwrap()).collect();
    let underscore = headers.contains_key("x_portcullis_origin");
    format!("origin={origin:?} pe={pe} tags={tags:?} underscore={underscore}")
}

fn app(policy: OriginPolicy, access: PublicAccessLayer) -> Router {
    Router::new().route("/", get(describe)).layer(
        ServiceBuilder::new()
            .layer(ResolveClientAddrLayer::new(ClientAddrConfig::new()))
            .layer(OriginLayer::new(policy).forward_header(true))
            .layer(access),
    )
}

/// Served directly (`ConnInfo` from the socket).
async fn serve_direct(app: Router) -> SocketAddr {
    portcullis_test_support::loopback::serve_axum(app).await
}

/// Behind portcullis' PROXY listener, trusting loopback as the load balancer (header required).
async fn serve_proxied(app: Router) -> SocketAddr {
    let config = ProxyProtocolConfig::builder()
        .source("127.0.0.0/8".parse::<IpRange>().unwrap(), SourcePolicy::Required)
        .build()
        .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        let listener = ProxyProtocolListener::new(tcp, config);
        axum::serve(listener, app.into_make_service_with_connect_info::<ConnInfo>()).await.unwrap();
    });
    addr
}

/// One HTTP/1.1 request with a hyper client, after writing `preface` (a PROXY header, or nothing).
async fn get_with(addr: SocketAddr, preface: &[u8], headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(preface).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder().uri("/").header("host", "gw.contoso.example");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn detail(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["detail"].as_str().unwrap().to_owned()
}

fn exact_message(ip: &str) -> String {
    format!(
        "Request originated from client public IP address {ip}, public network access on this \
         'Microsoft.ApiManagement/service/my-apim-service' is disabled. To connect to \
         'Microsoft.ApiManagement/service/my-apim-service', please use the Private Endpoint from inside your \
         virtual network."
    )
}

fn policy() -> OriginPolicy {
    OriginPolicy::new(
        PrivateNetworks::builder().network("corp-vnet", ["10.1.0.0/16".parse().unwrap()]).build().unwrap(),
        Connections::builder()
            .connection(
                Connection::approved("pe-azure", LinkId::Azure(0x2200_0011)).with_targets(Targets::Any),
            )
            .connection(
                Connection::approved("pe-aws", LinkId::Aws("vpce-0a1b2c3d4e5f60718".into()))
                    .with_group_id("gw")
                    .with_targets(Targets::Any),
            )
            .connection(
                Connection::approved("psc-gcp", LinkId::Gcp(0x1122_3344_5566_7788))
                    .with_targets(Targets::Any),
            )
            .connection(Connection::pending("pe-aws-pending", LinkId::Aws("vpce-pending".into())))
            .connection(Connection::rejected("psc-rejected", LinkId::Gcp(7)))
            .build()
            .unwrap(),
    )
}

// === direct connections ===

#[tokio::test]
async fn direct_public_caller_gets_the_exact_403_and_spoofing_does_not_help() {
    let policy = policy();
    let addr =
        serve_direct(app(policy.clone(), PublicAccessLayer::disabled(RESOURCE, &policy).unwrap())).await;
    let (status, body) = get_with(addr, b"", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(detail(&body), exact_message("127.0.0.1"));

    let spoof = [
        ("x-portcullis-origin", "private; network=corp-vnet"),
        ("X-Portcullis-Origin", "private; connection=pe-azure; group-id=Gateway"),
        ("x_portcullis_origin", "private"),
        ("x-forwarded-for", "10.1.2.3"),
    ];
    let (status, body) = get_with(addr, b"", &spoof).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(detail(&body), exact_message("127.0.0.1"));
}

#[tokio::test]
async fn direct_callers_from_a_declared_network_are_private_and_see_only_our_tag() {
    let policy = OriginPolicy::new(
        PrivateNetworks::builder().preset(Preset::Loopback).build().unwrap(),
        Connections::none(),
    );
    let addr =
        serve_direct(app(policy.clone(), PublicAccessLayer::disabled(RESOURCE, &policy).unwrap())).await;
    let spoof =
        [("x-portcullis-origin", "public"), ("x_portcullis_origin", "private; connection=x; group-id=y")];
    let (status, body) = get_with(addr, b"", &spoof).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        r#"origin=Private(Network("loopback")) pe=none tags=["private; network=loopback"] underscore=false"#
    );
}

#[tokio::test]
async fn public_access_enabled_serves_and_tags_public() {
    let addr = serve_direct(app(policy(), PublicAccessLayer::enabled())).await;
    let (status, body) = get_with(addr, b"", &[("x-portcullis-origin", "private; network=corp-vnet")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, r#"origin=Public pe=none tags=["public"] underscore=false"#);
}

// === through the PROXY protocol listener ===

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A PROXY v2 `PROXY` command over TCP/IPv4 from `src` to 10.0.0.4:443, with `tlvs` after the addresses.
fn v2(src: [u8; 4], sport: u16, tlvs: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11]);
    h.extend_from_slice(&u16::try_from(12 + tlvs.len()).unwrap().to_be_bytes());
    h.extend_from_slice(&src);
    h.extend_from_slice(&[10, 0, 0, 4]);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h.extend_from_slice(tlvs);
    h
}

/// Azure Private Link: type 0xEE, subtype 0x01, LinkID as a little-endian u32.
fn azure(link: u32) -> Vec<u8> {
    let mut t = vec![0xEE, 0x00, 0x05, 0x01];
    t.extend_from_slice(&link.to_le_bytes());
    t
}

/// AWS PrivateLink: type 0xEA, subtype 0x01, the VPC endpoint id in ASCII.
fn aws(vpce: &str) -> Vec<u8> {
    let mut t = vec![0xEA];
    t.extend_from_slice(&u16::try_from(vpce.len() + 1).unwrap().to_be_bytes());
    t.push(0x01);
    t.extend_from_slice(vpce.as_bytes());
    t
}

/// GCP Private Service Connect: type 0xE0, the connection id as a big-endian u64.
fn gcp(id: u64) -> Vec<u8> {
    let mut t = vec![0xE0, 0x00, 0x08];
    t.extend_from_slice(&id.to_be_bytes());
    t
}

#[tokio::test]
async fn approved_private_endpoint_connections_of_every_vendor_are_served() {
    let policy = policy();
    let addr =
        serve_proxied(app(policy.clone(), PublicAccessLayer::disabled(RESOURCE, &policy).unwrap())).await;
    let cases = [
        (azure(0x2200_0011), "pe-azure/Gateway", "private; connection=pe-azure; group-id=Gateway"),
        (aws("vpce-0a1b2c3d4e5f60718"), "pe-aws/gw", "private; connection=pe-aws; group-id=gw"),
        (gcp(0x1122_3344_5566_7788), "psc-gcp/Gateway", "private; connection=psc-gcp; group-id=Gateway"),
    ];
    for (tlv, pe, tag) in cases {
        // The consumer's address is public-looking: the link id decides.
        let (status, body) =
            get_with(addr, &v2([203, 0, 113, 7], 40000, &tlv), &[("x-portcullis-origin", "public")]).await;
        assert_eq!(status, StatusCode::OK, "{pe}: {body}");
        assert!(body.contains(&format!("pe={pe} ")), "{body}");
        assert!(body.contains(&format!("tags=[\"{tag}\"]")), "{body}");
    }
}

#[tokio::test]
async fn pending_rejected_and_unknown_connections_are_refused() {
    let policy = policy();
    let addr =
        serve_proxied(app(policy.clone(), PublicAccessLayer::disabled(RESOURCE, &policy).unwrap())).await;
    let cases = [
        (
            aws("vpce-pending"),
            "private endpoint connection 'pe-aws-pending' is Pending: only Approved connections are served",
        ),
        (
            gcp(7),
            "private endpoint connection 'psc-rejected' is Rejected: only Approved connections are served",
        ),
        (
            azure(0xdead),
            "the private link connection azure:57005 is not a registered private endpoint connection",
        ),
    ];
    for (tlv, want) in cases {
        // Even from an address inside the private network: a link id decides alone.
        let (status, body) = get_with(addr, &v2([10, 1, 2, 3], 40000, &tlv), &[]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{want}");
        assert_eq!(detail(&body), want);
    }
}

#[tokio::test]
async fn proxied_callers_without_a_link_id_are_judged_by_their_source() {
    let policy = policy();
    let addr =
        serve_proxied(app(policy.clone(), PublicAccessLayer::disabled(RESOURCE, &policy).unwrap())).await;
    let (status, body) = get_with(addr, &v2([10, 1, 2, 3], 40000, &[]), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with(r#"origin=Private(Network("corp-vnet")) pe=none"#), "{body}");

    let (status, body) = get_with(addr, &v2([192, 0, 2, 12], 40000, &[]), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(detail(&body), exact_message("192.0.2.12"));
}

/// Only a trusted load balancer's PROXY header is evidence: a client that is not one and sends a header
/// naming an approved connection is closed by the listener before HTTP, never served as private.
#[tokio::test]
async fn a_proxy_header_from_an_untrusted_peer_never_reaches_the_origin_layer() {
    let policy = policy();
    let app = app(policy.clone(), PublicAccessLayer::disabled(RESOURCE, &policy).unwrap());
    let config = ProxyProtocolConfig::builder()
        .source("10.0.0.0/8".parse::<IpRange>().unwrap(), SourcePolicy::Required) // not loopback
        .build()
        .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        let listener = ProxyProtocolListener::new(tcp, config);
        axum::serve(listener, app.into_make_service_with_connect_info::<ConnInfo>()).await.unwrap();
    });

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut bytes = v2([10, 1, 2, 3], 40000, &azure(0x2200_0011));
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\nhost: gw.contoso.example\r\nconnection: close\r\n\r\n");
    // The server may close before reading everything: a write error is a closed connection too.
    let _ = tcp.write_all(&bytes).await;
    let mut answer = Vec::new();
    // A guard against a hang, not a timed assertion: the listener closes at once.
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut answer).await
    })
    .await
    .expect("the connection is closed, not left hanging");
    assert!(read.is_err() || answer.is_empty(), "answered: {:?}", String::from_utf8_lossy(&answer));

    // Without a header, the same client is an ordinary public caller (the listener passes it through).
    let (status, body) = get_with(addr, b"", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(detail(&body), exact_message("127.0.0.1"));
}
