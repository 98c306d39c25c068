//! Per route: the management endpoint only from the admin address, the gateway open to all, over a real
//! loopback server.

use axum::{Router, routing::get};
use http::StatusCode;
use portcullis_core::{ClientAddrConfig, ResolveClientAddrLayer};
use portcullis_ip::{Action, IpFilterLayer, IpRules, IpRulesHandle};

use portcullis_test_support::loopback::{get_from, serve_axum};

fn app(admins: IpRulesHandle) -> Router {
    let management = Router::new()
        .route("/keys", get(|| async { "keys" }))
        .route("/users", get(|| async { "users" }))
        .route_layer(IpFilterLayer::new(admins));
    Router::new()
        .route("/api", get(|| async { "gateway" }))
        .nest("/management", management)
        .layer(ResolveClientAddrLayer::new(ClientAddrConfig::new()))
}

#[tokio::test]
async fn management_only_from_the_admin_set_while_the_gateway_is_open() {
    let mut rules = IpRules::builder(Action::Deny);
    rules.set("admin", ["127.0.0.1"]).allow_set("admin");
    let handle = IpRulesHandle::new(rules.build().unwrap());
    let addr = serve_axum(app(handle.clone())).await;

    for source in ["127.0.0.1", "127.0.0.2"] {
        let a = get_from(source, addr, "/api", &[]).await;
        assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "gateway"), "{source}");
    }
    for path in ["/management/keys", "/management/users"] {
        assert_eq!(get_from("127.0.0.1", addr, path, &[]).await.status, StatusCode::OK);
        let a = get_from("127.0.0.2", addr, path, &[]).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(a.json()["refused"], "127.0.0.2");
    }
    // Path tricks reach no other handler: unknown management paths are 404 (route_layer applies to
    // matched routes only), never the protected handler.
    for path in ["/management//keys", "/management/keys/", "/Management/keys", "/management/%6beys"] {
        let a = get_from("127.0.0.2", addr, path, &[]).await;
        assert_ne!(a.status, StatusCode::OK, "{path}: {}", a.body);
    }

    // One change to the admin set moves management access, live.
    rules.set("admin", ["127.0.0.2"]);
    handle.store(rules.build().unwrap());
    assert_eq!(get_from("127.0.0.2", addr, "/management/keys", &[]).await.status, StatusCode::OK);
    assert_eq!(get_from("127.0.0.1", addr, "/management/keys", &[]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(get_from("127.0.0.1", addr, "/api", &[]).await.status, StatusCode::OK);
}
