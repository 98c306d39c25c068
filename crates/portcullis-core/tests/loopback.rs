//! The client-address layer over real loopback sockets: axum::serve and a hand-written hyper server, with a
//! hyper client sending every spoofing attempt.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::{Router, routing::get};
use http::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use portcullis_core::{
    ClientAddr, ClientAddrConfig, ConnInfo, ConnInfoLayer, ForwardedSource, ResolveClientAddrLayer,
};
use portcullis_test_support::loopback::serve_axum;
use tokio::net::TcpListener;
use tower_layer::Layer;

async fn echo(client: ClientAddr) -> String {
    format!("{} via {}", client.ip, client.learnt_via)
}

fn app(config: ClientAddrConfig) -> Router {
    Router::new().route("/", get(echo)).layer(ResolveClientAddrLayer::new(config))
}

/// Sends one HTTP/1.1 GET with the given extra header lines; returns status, content type and body.
async fn get_with(addr: SocketAddr, headers: &[(&str, &str)]) -> (StatusCode, String, String) {
    let answer = portcullis_test_support::loopback::get(addr, "/", headers).await;
    (answer.status, answer.content_type, answer.body)
}

fn trusting_loopback(source: ForwardedSource) -> ClientAddrConfig {
    ClientAddrConfig::new().trusted_proxies(["127.0.0.1".parse().unwrap()]).unwrap().source(source)
}

#[tokio::test]
async fn spoofed_headers_from_an_untrusted_peer_are_ignored() {
    let config = ClientAddrConfig::new()
        .trusted_proxies(["10.0.0.0/8".parse().unwrap()])
        .unwrap()
        .source(ForwardedSource::XForwardedFor);
    let addr = serve_axum(app(config)).await;
    for spoof in ["10.0.0.1", "198.51.100.7, 10.0.0.1", "::ffff:10.0.0.1"] {
        let (status, _, body) = get_with(addr, &[("x-forwarded-for", spoof)]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "127.0.0.1 via peer", "spoof {spoof:?} must be ignored");
    }
    // A Forwarded header is not the configured source either.
    let (_, _, body) = get_with(addr, &[("forwarded", "for=10.0.0.1")]).await;
    assert_eq!(body, "127.0.0.1 via peer");
}

#[tokio::test]
async fn trusted_proxy_headers_are_walked_right_to_left() {
    let addr = serve_axum(app(trusting_loopback(ForwardedSource::XForwardedFor))).await;
    let (status, _, body) = get_with(addr, &[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 127.0.0.1")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "198.51.100.7 via x-forwarded-for (2 trusted hops)");
    // Lines are joined in order; ports and mapped addresses are understood.
    let (_, _, body) =
        get_with(addr, &[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "[::ffff:192.0.2.1]:443")])
            .await;
    assert_eq!(body, "192.0.2.1 via x-forwarded-for (1 trusted hops)");
}

#[tokio::test]
async fn unusable_entries_get_a_400_problem() {
    let addr = serve_axum(app(trusting_loopback(ForwardedSource::XForwardedFor).max_entries(4))).await;
    for (spoof, code) in [
        ("1.2.3.4, garbage", "client-addr.bad-entry"),
        ("1.2.3.4, unknown", "client-addr.obfuscated-entry"),
        ("1.2.3.4, _secret", "client-addr.obfuscated-entry"),
        ("1.2.3.4, fe80::1%eth0", "client-addr.bad-entry"),
        ("127.0.0.1, 127.0.0.1, 127.0.0.1, 127.0.0.1, 127.0.0.1", "client-addr.too-many-entries"),
    ] {
        let (status, ct, body) = get_with(addr, &[("x-forwarded-for", spoof)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{spoof}");
        assert_eq!(ct, "application/problem+json");
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["type"], format!("urn:portcullis:denial:{code}"), "{spoof}");
        assert_eq!(doc["status"], 400);
    }
}

#[tokio::test]
async fn rfc7239_forwarded_over_loopback() {
    let addr = serve_axum(app(trusting_loopback(ForwardedSource::Forwarded))).await;
    let (status, _, body) =
        get_with(addr, &[("forwarded", r#"for="[2001:db8::7]:4711";proto=https, for=127.0.0.1"#)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "2001:db8::7 via forwarded (2 trusted hops)");
    let (status, _, _) = get_with(addr, &[("forwarded", "for=2001:db8::7")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unquoted IPv6 breaks RFC 7239's grammar");
}

#[tokio::test]
async fn missing_connect_info_fails_closed_with_a_hint() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app(trusting_loopback(ForwardedSource::XForwardedFor));
    // Served without connect info: the layer cannot know who is calling.
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let (status, _, body) = get_with(addr, &[("x-forwarded-for", "198.51.100.7")]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("into_make_service_with_connect_info"), "{body}");
}

#[tokio::test]
async fn plain_socket_addr_connect_info_is_understood() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app(trusting_loopback(ForwardedSource::XForwardedFor));
    tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap()
    });
    let (_, _, body) = get_with(addr, &[("x-forwarded-for", "198.51.100.9")]).await;
    assert_eq!(body, "198.51.100.9 via x-forwarded-for (1 trusted hops)");
}

#[tokio::test]
async fn hyper_server_with_conn_info_layer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app(trusting_loopback(ForwardedSource::XForwardedFor));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let info = ConnInfo::new(peer, stream.local_addr().ok());
            let svc = ConnInfoLayer::new(info).layer(router.clone());
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let mut svc = svc.clone();
                async move {
                    use tower_service::Service;
                    Ok::<_, Infallible>(svc.call(req.map(axum::body::Body::new)).await.unwrap())
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    let (_, _, body) = get_with(addr, &[("x-forwarded-for", "6.6.6.6, 198.51.100.10")]).await;
    assert_eq!(body, "198.51.100.10 via x-forwarded-for (1 trusted hops)");
    let (status, _, _) = get_with(addr, &[("x-forwarded-for", "_hidden")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
