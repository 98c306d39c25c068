//! Every portcullis layer composes with tower-http's layers and with any response body, in either order:
//! compression, tracing, request ids (set and propagate), timeouts, CORS, axum's `from_fn`, a body type of
//! the application's own, and a plain hyper server. For each pair, an allowed request reaches the
//! application and a refused one gets the layer's refusal, whichever layer is outside.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use portcullis::core::{ClientAddrConfig, ConnInfo, Denial, ResolveClientAddrLayer};
use portcullis::host::{Endpoint, HostFilterLayer, Hosts};
use portcullis::ip::{Action, IpFilterLayer, IpRules};
use portcullis::origin::{Connections, OriginLayer, OriginPolicy, PrivateNetworks, PublicAccessLayer};
use portcullis::{GateBody, Gateway};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_http::compression::CompressionLayer;
use tower_http::cors::CorsLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

const ALLOWED_PEER: &str = "10.1.0.7:5000";
const REFUSED_PEER: &str = "192.0.2.12:5000";
const HOST: &str = "api.contoso.example";

/// A request from `peer` for `host`, as a server would hand it over (connection facts in the extensions).
fn request(host: &str, peer: &str) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .uri("/hello")
        .header("host", host)
        .header("origin", "https://portal.contoso.example")
        .body(Full::new(Bytes::from_static(b"ping")))
        .unwrap();
    req.extensions_mut().insert(ConnInfo::new(peer.parse().unwrap(), None));
    req
}

async fn app(_req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello from the private side"))))
}

fn hosts() -> HostFilterLayer {
    HostFilterLayer::new(Hosts::builder().endpoint(Endpoint::new("gateway").host(HOST)).build().unwrap())
}

fn ip_rules() -> IpRules {
    IpRules::builder(Action::Deny).allow("10.0.0.0/8").build().unwrap()
}

fn origin_policy() -> OriginPolicy {
    OriginPolicy::new(
        PrivateNetworks::builder().network("vnet", ["10.1.0.0/16".parse().unwrap()]).build().unwrap(),
        Connections::none(),
    )
}

fn gateway() -> Gateway {
    Gateway::builder().hosts(hosts()).ip(IpFilterLayer::new(ip_rules())).build()
}

#[derive(Clone, Default)]
struct Counter(Arc<AtomicU64>);

impl MakeRequestId for Counter {
    fn make_request_id<B>(&mut self, _req: &Request<B>) -> Option<RequestId> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        Some(RequestId::new(HeaderValue::from(n)))
    }
}

/// Sends the allowed and the refused request through `svc`; checks the statuses, the application's body
/// and the refusal's typed denial and code.
async fn check<S, B>(
    what: &str,
    svc: S,
    allowed: Request<Full<Bytes>>,
    refused: Request<Full<Bytes>>,
    code: &str,
) where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body,
    B::Error: std::fmt::Debug,
{
    let res = svc.clone().oneshot(allowed).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{what}: allowed");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello from the private side", "{what}: the application's body");

    let res = svc.oneshot(refused).await.unwrap();
    assert!(res.status().is_client_error(), "{what}: refused, got {}", res.status());
    let denial = res.extensions().get::<Denial>().cloned();
    assert_eq!(denial.as_ref().map(Denial::code), Some(code), "{what}: the refusal's denial");
    let is_problem = res.headers().get("content-type").is_some_and(|v| v == "application/problem+json");
    assert!(is_problem, "{what}: problem+json");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("the refusal's body is JSON");
    assert_eq!(doc["type"], format!("urn:portcullis:denial:{code}"), "{what}");
}

/// Composes `$portcullis` (a layer) with `$other` (a layer) in both orders over the application, and checks
/// both answers.
macro_rules! both_orders {
    ($name:literal, $portcullis:expr, $other:expr, $allowed:expr, $refused:expr, $code:expr) => {{
        let svc = ServiceBuilder::new().layer($portcullis).layer($other).service(service_fn(app));
        check(concat!($name, " outside"), svc, $allowed, $refused, $code).await;
        let svc = ServiceBuilder::new().layer($other).layer($portcullis).service(service_fn(app));
        check(concat!($name, " inside"), svc, $allowed, $refused, $code).await;
    }};
}

/// Every tower-http layer of the matrix with one portcullis layer (`$layer`, refusing `$refused` with
/// `$code`).
macro_rules! matrix {
    ($layer:expr, $refused:expr, $code:expr) => {{
        let allowed = || request(HOST, ALLOWED_PEER);
        both_orders!("compression", $layer, CompressionLayer::new(), allowed(), $refused, $code);
        both_orders!("trace", $layer, TraceLayer::new_for_http(), allowed(), $refused, $code);
        both_orders!(
            "set request id",
            $layer,
            SetRequestIdLayer::x_request_id(Counter::default()),
            allowed(),
            $refused,
            $code
        );
        both_orders!(
            "propagate request id",
            $layer,
            PropagateRequestIdLayer::x_request_id(),
            allowed(),
            $refused,
            $code
        );
        both_orders!(
            "timeout",
            $layer,
            TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(30)),
            allowed(),
            $refused,
            $code
        );
        both_orders!("cors", $layer, CorsLayer::permissive(), allowed(), $refused, $code);
        both_orders!(
            "map response",
            $layer,
            tower::util::MapResponseLayer::new(|res: Response<_>| res.map(AppBody::new)),
            allowed(),
            $refused,
            $code
        );
    }};
}

#[tokio::test]
async fn the_gateway_composes_with_tower_http() {
    matrix!(gateway().layer(), request("evil.example", ALLOWED_PEER), "host.unknown");
    matrix!(gateway().layer(), request(HOST, REFUSED_PEER), "ip.no-rule-matched");
}

#[tokio::test]
async fn each_layer_composes_with_tower_http() {
    matrix!(hosts(), request("evil.example", ALLOWED_PEER), "host.unknown");
    matrix!(IpFilterLayer::new(ip_rules()).direct_peer(), request(HOST, REFUSED_PEER), "ip.no-rule-matched");
    let trusted = ClientAddrConfig::new()
        .trusted_proxies(["10.0.0.0/8".parse().unwrap()])
        .unwrap()
        .source(portcullis::core::ForwardedSource::XForwardedFor);
    let mut garbage = request(HOST, ALLOWED_PEER);
    garbage.headers_mut().insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4, nonsense"));
    matrix!(ResolveClientAddrLayer::new(trusted.clone()), clone_request(&garbage), "client-addr.bad-entry");
}

/// The origin and public-access layers need the client address resolved first: stacked as a user would.
#[tokio::test]
async fn the_origin_layers_compose_with_tower_http() {
    let stack = || {
        ServiceBuilder::new()
            .layer(ResolveClientAddrLayer::new(ClientAddrConfig::new()))
            .layer(OriginLayer::new(origin_policy()))
            .layer(
                PublicAccessLayer::disabled("Microsoft.ApiManagement/service/contoso", &origin_policy())
                    .unwrap(),
            )
            .into_inner()
    };
    matrix!(stack(), request(HOST, REFUSED_PEER), "public-access.disabled");
}

/// axum's `from_fn` middleware on either side, over axum's own body type.
#[tokio::test]
async fn axum_from_fn_composes() {
    async fn tag(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
        let mut res = next.run(req).await;
        res.headers_mut().insert("x-tagged", HeaderValue::from_static("1"));
        res
    }
    let router = |outer: bool| {
        let r = axum::Router::new()
            .route("/hello", axum::routing::get(|| async { "hello from the private side" }));
        match outer {
            true => r.layer(gateway().layer()).layer(axum::middleware::from_fn(tag)),
            false => r.layer(axum::middleware::from_fn(tag)).layer(gateway().layer()),
        }
    };
    for outer in [true, false] {
        let req = |host: &str| {
            let mut req = Request::builder()
                .uri("/hello")
                .header("host", host)
                .body(axum::body::Body::empty())
                .unwrap();
            req.extensions_mut().insert(ConnInfo::new(ALLOWED_PEER.parse().unwrap(), None));
            req
        };
        let res = router(outer).oneshot(req(HOST)).await.unwrap();
        assert_eq!((res.status(), res.headers().contains_key("x-tagged")), (StatusCode::OK, true));
        let res = router(outer).oneshot(req("evil.example")).await.unwrap();
        assert_eq!(res.status(), StatusCode::MISDIRECTED_REQUEST);
        // Outside the gateway, from_fn sees the refusal too; inside, the refusal never reaches it.
        assert_eq!(res.headers().contains_key("x-tagged"), outer, "from_fn outer: {outer}");
    }
}

/// A plain hyper server (no axum) serving a tower service behind the gateway, over loopback, with a hyper
/// client.
#[tokio::test]
async fn a_plain_hyper_server_serves_the_stack() {
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let (stream, peer) = listener.accept().await.unwrap();
            let svc = ServiceBuilder::new()
                .layer(portcullis::core::ConnInfoLayer::new(ConnInfo::new(peer, Some(addr))))
                .layer(
                    Gateway::builder()
                        .hosts(hosts())
                        .ip(IpFilterLayer::new(
                            IpRules::builder(Action::Deny).allow("127.0.0.0/8").build().unwrap(),
                        ))
                        .build()
                        .layer(),
                )
                .service(service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"hello from the private side",
                    ))))
                }));
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    for (host, status) in [(HOST, StatusCode::OK), ("evil.example", StatusCode::MISDIRECTED_REQUEST)] {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let req = Request::builder()
            .uri("/")
            .header("host", host)
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let res = portcullis_tests::bounded("hyper answer", sender.send_request(req)).await.unwrap();
        assert_eq!(res.status(), status, "{host}");
    }
    server.await.unwrap();
}

fn clone_request(req: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut out =
        Request::builder().uri(req.uri().clone()).body(Full::new(Bytes::from_static(b"ping"))).unwrap();
    *out.headers_mut() = req.headers().clone();
    *out.extensions_mut() = req.extensions().clone();
    out
}

/// A response body type of the application's own, which no portcullis code knows.
struct AppBody<B>(B);

impl<B> AppBody<B> {
    fn new(body: B) -> Self {
        AppBody(body)
    }
}

impl<B: Body + Unpin> Body for AppBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }
}

/// `GateBody` holds the application's body as it is, and a refusal's bytes.
#[test]
fn gate_body_wraps_any_body() {
    let body: GateBody<AppBody<Full<Bytes>>> =
        GateBody::inner(AppBody::new(Full::new(Bytes::from_static(b"x"))));
    assert!(body.into_inner().is_some());
    let default: GateBody<String> = GateBody::default();
    assert!(matches!(default, GateBody::Inner { .. }));
    let _ = SocketAddr::from(([127, 0, 0, 1], 0));
}
