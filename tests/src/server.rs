//! A gateway built from a TOML text, served on loopback in front of an echo application.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;

use axum::extract::State;
use axum::{Json, Router};
use http::{HeaderMap, Version};
use portcullis::config::{ConfigError, GatewayConfig, Source};
use portcullis::ip::{ConnectionFilter, IpRulesHandle};
use portcullis::serve::Bound;
use portcullis::{ConnInfo, Decisions, Endpoints};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The endpoints of a managed gateway; the echo application serves each with its own router.
pub const ENDPOINTS: [&str; 4] = ["gateway", "portal", "management", "scm"];

/// Returns, as JSON, which router served the request and what the stack decided about it.
async fn echo(
    State(served_by): State<&'static str>,
    version: Version,
    headers: HeaderMap,
    decisions: Decisions,
    conn: ConnInfo,
) -> Json<Value> {
    let tls = conn.tls.as_ref();
    let cert = tls.and_then(|t| t.client_cert.as_ref());
    let origin_headers: Vec<String> = ["x-portcullis-origin", "x_portcullis_origin"]
        .iter()
        .flat_map(|n| headers.get_all(*n).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    Json(json!({
        "served_by": served_by,
        "version": format!("{version:?}"),
        "endpoint": decisions.host.as_ref().map(|h| h.endpoint.to_string()),
        "host": decisions.host.as_ref().map(|h| h.host.to_string()),
        "client": decisions.client.map(|c| c.ip.to_string()),
        "learnt_via": decisions.client.map(|c| c.learnt_via.to_string()),
        "origin": decisions.origin.as_ref().map(|o| o.to_string()),
        "private_endpoint": decisions.origin.as_ref().and_then(|o| o.private_endpoint()).map(|p| p.name.to_string()),
        "peer": conn.peer.to_string(),
        "proxy_source": conn.proxy.as_ref().and_then(|p| p.source).map(|s| s.to_string()),
        "sni": tls.and_then(|t| t.sni.as_deref()),
        "vhost": tls.and_then(|t| t.vhost.as_deref()),
        "client_subject": cert.map(|c| c.subject.clone()),
        "client_sha256": cert.map(|c| c.sha256.clone()),
        "origin_headers": origin_headers,
        "shadow": decisions.shadow.iter().map(|d| d.code().to_owned()).collect::<Vec<_>>(),
    }))
}

/// The application behind the stack: one axum router per endpoint of [`ENDPOINTS`], dispatched by
/// [`Endpoints`] on the endpoint the host gate recorded (no fallback: an unrouted request is refused).
pub fn echo_app() -> Endpoints<portcullis::serve::RequestBody, axum::body::Body, Infallible> {
    let mut app = Endpoints::new();
    for ep in ENDPOINTS {
        let router: Router = Router::new().fallback(echo).with_state(ep);
        app = app.route(ep, router);
    }
    app
}

/// Parses and builds `toml` as file `file`: the first configuration error, if any.
///
/// # Errors
/// The [`ConfigError`] of parsing or building.
pub fn check_config(file: &str, toml: &str) -> Result<portcullis::build::Built, ConfigError> {
    let source = Source::new(file, toml);
    let config = GatewayConfig::parse(&source)?;
    config.build(&source)
}

/// A running gateway; stops (without waiting) on drop.
#[derive(Debug)]
pub struct TestGateway {
    addrs: Vec<(String, SocketAddr)>,
    filters: Vec<(String, ConnectionFilter)>,
    ip_rules: BTreeMap<String, IpRulesHandle>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl TestGateway {
    /// Builds the gateway of `toml` (listeners on `127.0.0.1:0`), binds and serves [`echo_app`] behind it.
    /// Panics with the configuration error, naming file, line and key, if the text is refused.
    pub async fn start(toml: &str) -> TestGateway {
        let built =
            check_config("whole-stack-test.toml", toml).unwrap_or_else(|e| panic!("config refused: {e}"));
        let filters = built
            .listeners
            .iter()
            .filter_map(|(_, spec)| spec.filter.clone().map(|f| (spec.name.clone(), f)))
            .collect();
        let ip_rules = built.ip_rules.clone();
        let bound = Bound::bind(built).await.unwrap_or_else(|e| panic!("bind: {e}"));
        let addrs = bound.local_addrs();
        for (name, addr) in &addrs {
            assert!(addr.ip().is_loopback(), "listener {name} must bind loopback only, got {addr}");
        }
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(echo_app(), async move {
            let _ = stop_rx.await;
        }));
        TestGateway { addrs, filters, ip_rules, stop: Some(stop_tx), task: Some(task) }
    }

    /// The bound address of listener `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no listener named {name}: {:?}", self.addrs))
    }

    /// The port of listener `name`.
    pub fn port(&self, name: &str) -> u16 {
        self.addr(name).port()
    }

    /// The connection filter of listener `name` (for its counters).
    pub fn filter(&self, name: &str) -> &ConnectionFilter {
        self.filters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| f)
            .unwrap_or_else(|| panic!("listener {name} has no connection filter"))
    }

    /// The live IP rule set `name` (`global`, `connection`, `endpoint.<name>`), to swap while serving.
    pub fn ip_rules(&self, name: &str) -> &IpRulesHandle {
        self.ip_rules.get(name).unwrap_or_else(|| panic!("no IP rule set {name}: {:?}", self.ip_rules.keys()))
    }

    /// Stops accepting and waits for the serve task to end (open connections must be closed first).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            crate::bounded("gateway shutdown", task).await.expect("serve task").expect("serve");
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
