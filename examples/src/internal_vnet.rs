//! An internal-VNet gateway: the four endpoints of a managed API gateway on one port, told apart by host
//! name, reachable only from the virtual network, and the management endpoint only from the admin subnet.
//!
//! - [`ServiceNames`] gives the default names: `contoso.azure-api.net` (gateway),
//!   `contoso.developer.azure-api.net` (portal), `contoso.management.azure-api.net` (management) and
//!   `contoso.scm.azure-api.net` (scm).
//! - One axum [`Router`] per endpoint, dispatched by [`Endpoints`] on the endpoint the host gate recorded
//!   (the host is parsed and matched once).
//! - [`Gateway::layer`] in front: client address → host (a bare IP or an unknown name gets 421) → IP rules
//!   for every endpoint (the virtual network) → IP rules of the management endpoint (the admin subnet).
//!
//! ```text
//! cargo run -p portcullis-examples --example internal_vnet
//! ```

use std::future::Future;
use std::io;

use axum::routing::get;
use axum::{Json, Router};
use portcullis::host::{EndpointKind, HostFilterLayer, Hosts, ServiceNames};
use portcullis::ip::{Action, IpFilterLayer, IpRules};
use portcullis::{ClientAddrConfig, ConnInfo, Decisions, Endpoints, Gateway, IpRange};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::BoxError;

/// The service name and base domain of the endpoints' host names.
pub const SERVICE: (&str, &str) = ("contoso", "azure-api.net");

/// Who may call.
#[derive(Debug, Clone)]
pub struct Options {
    /// The virtual network: every endpoint answers only these addresses.
    pub vnet: Vec<IpRange>,
    /// The admin subnet: the only addresses the management endpoint answers.
    pub admins: Vec<IpRange>,
}

impl Options {
    /// Loopback stand-ins, so that the example runs on one machine: 127.0.0.1 and 127.0.0.2 are the virtual
    /// network, 127.0.0.1 alone is the admin subnet, 127.0.0.3 (and anything else) is outside.
    ///
    /// # Panics
    /// Never: the ranges are literals.
    pub fn loopback() -> Self {
        Options {
            vnet: vec!["127.0.0.1-127.0.0.2".parse().expect("a range")],
            admins: vec!["127.0.0.1".parse().expect("an address")],
        }
    }
}

/// The gateway stack: host names of the four endpoints, the virtual network for all of them, the admin
/// subnet for management.
///
/// # Errors
/// A host table or rule set the layers refuse (duplicate names, contradictory rules).
pub fn gateway(options: &Options) -> Result<Gateway, BoxError> {
    let names = ServiceNames::new(SERVICE.0, SERVICE.1);
    let mut hosts = Hosts::builder();
    for kind in EndpointKind::ALL {
        hosts = hosts.endpoint(names.endpoint(kind));
    }
    let hosts = hosts.build()?;

    let mut vnet = IpRules::builder(Action::Deny);
    vnet.name("vnet");
    for r in &options.vnet {
        vnet.allow(*r);
    }
    let mut admins = IpRules::builder(Action::Deny);
    admins.name("management-admins");
    for r in &options.admins {
        admins.allow(*r);
    }

    Ok(Gateway::builder()
        // The socket peer is the client: no proxy in front of this gateway.
        .client_address(ClientAddrConfig::new())
        .hosts(HostFilterLayer::new(hosts))
        .ip(IpFilterLayer::new(vnet.build()?))
        .ip_for_endpoint(EndpointKind::Management.name(), IpFilterLayer::new(admins.build()?))
        .build())
}

/// What the stack decided about a request, as JSON (the same shape for every endpoint).
async fn describe(endpoint: &'static str, decisions: Decisions) -> Json<Value> {
    Json(json!({
        "served_by": endpoint,
        "endpoint": decisions.host.as_ref().map(|h| h.endpoint.to_string()),
        "host": decisions.host.as_ref().map(|h| h.host.to_string()),
        "client": decisions.client.map(|c| c.ip.to_string()),
    }))
}

/// One router per endpoint, each with its own routes, dispatched by the endpoint the host gate matched.
pub fn endpoints() -> Endpoints<axum::body::Body, axum::body::Body, std::convert::Infallible> {
    let gateway = Router::new()
        .route("/", get(|d: Decisions| describe("gateway", d)))
        .route("/echo", get(|d: Decisions| describe("gateway", d)));
    let portal = Router::new().route("/", get(|d: Decisions| describe("portal", d)));
    let management = Router::new().route("/", get(|d: Decisions| describe("management", d))).route(
        "/subscriptions",
        get(|| async { Json(json!({ "subscriptions": ["starter", "unlimited"] })) }),
    );
    let scm = Router::new().route("/", get(|d: Decisions| describe("scm", d)));
    Endpoints::new()
        .route(EndpointKind::Gateway.name(), gateway)
        .route(EndpointKind::Portal.name(), portal)
        .route(EndpointKind::Management.name(), management)
        .route(EndpointKind::Scm.name(), scm)
}

/// The whole application: the endpoints behind the gateway, as one axum router.
///
/// # Errors
/// As [`gateway`].
pub fn app(options: &Options) -> Result<Router, BoxError> {
    let gateway = gateway(options)?;
    // The dispatcher is the router's only service; the gateway runs in front of it, once per request.
    Ok(Router::new().fallback_service(endpoints()).layer(gateway.layer()))
}

/// Serves the example on `listener` until `shutdown` resolves.
///
/// The connection facts reach the gates through axum's `ConnectInfo<ConnInfo>`.
///
/// # Errors
/// A refused configuration, or an I/O error from serving.
pub async fn run(
    listener: TcpListener,
    options: &Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let app = app(options)?;
    axum::serve(listener, app.into_make_service_with_connect_info::<ConnInfo>())
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e: io::Error| e.into())
}
