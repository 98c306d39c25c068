//! The `PrivateEndpointConnection` extractor on an axum router (called with `oneshot`).

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use portcullis_core::{ClientAddrConfig, ConnInfo, LinkId, ProxyInfo, ProxyVersion, ResolveClientAddrLayer};
use portcullis_origin::{
    Connection, Connections, OriginLayer, OriginPolicy, PrivateEndpointConnection, PrivateNetworks, Targets,
};
use tower::{ServiceBuilder, ServiceExt};

fn routes() -> Router {
    Router::new()
        .route(
            "/optional",
            get(|pe: Option<PrivateEndpointConnection>| async move {
                pe.map_or_else(
                    || "null".to_owned(),
                    |pe| format!("{} {} {}", pe.name, pe.group_id, pe.link_id),
                )
            }),
        )
        .route("/required", get(|pe: PrivateEndpointConnection| async move { pe.name.to_string() }))
}

fn stacked() -> Router {
    let policy = OriginPolicy::new(
        PrivateNetworks::builder().network("vnet", ["10.1.0.0/16".parse().unwrap()]).build().unwrap(),
        Connections::builder()
            .connection(
                Connection::approved("pe-1", LinkId::Aws("vpce-1".into()))
                    .with_group_id("Gateway")
                    .with_targets(Targets::Any),
            )
            .build()
            .unwrap(),
    );
    routes().layer(
        ServiceBuilder::new()
            .layer(ResolveClientAddrLayer::new(ClientAddrConfig::new()))
            .layer(OriginLayer::new(policy)),
    )
}

fn direct(path: &str, peer: &str) -> Request<Body> {
    let mut req = Request::builder().uri(path).body(Body::empty()).unwrap();
    req.extensions_mut().insert(ConnInfo::new(peer.parse().unwrap(), None));
    req
}

fn over_link(path: &str, link: LinkId) -> Request<Body> {
    let mut proxy = ProxyInfo::new(ProxyVersion::V2, Some("192.0.2.7:1000".parse().unwrap()), None);
    proxy.link_id = Some(link);
    let mut req = Request::builder().uri(path).body(Body::empty()).unwrap();
    req.extensions_mut().insert(ConnInfo::new("10.0.0.4:1".parse().unwrap(), None).with_proxy(proxy));
    req
}

async fn call(app: Router, req: Request<Body>) -> (StatusCode, String) {
    let res = app.oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn over_a_connection_both_forms_see_it() {
    let (status, body) = call(stacked(), over_link("/optional", LinkId::Aws("vpce-1".into()))).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "pe-1 Gateway aws:vpce-1"));
    let (status, body) = call(stacked(), over_link("/required", LinkId::Aws("vpce-1".into()))).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "pe-1"));
}

#[tokio::test]
async fn public_and_network_callers_have_none_as_in_azure() {
    for peer in ["192.0.2.12:1", "10.1.0.9:1"] {
        let (status, body) = call(stacked(), direct("/optional", peer)).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "null"), "{peer}");
        let (status, body) = call(stacked(), direct("/required", peer)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{peer}");
        assert!(body.contains("did not come over a private endpoint connection"), "{body}");
    }
}

#[tokio::test]
async fn without_the_origin_layer_neither_form_guesses() {
    for path in ["/optional", "/required"] {
        let (status, body) = call(routes(), over_link(path, LinkId::Aws("vpce-1".into()))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert!(body.contains("OriginLayer"), "{body}");
    }
}
