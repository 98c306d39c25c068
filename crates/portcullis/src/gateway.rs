//! The [`Gateway`]: every request-level layer in the documented order, run as one service.
//!
//! ## The order, and why
//!
//! 1. **Client address** ([`ClientAddrConfig`]): every later decision is about *who is calling*, so it is
//!    resolved first, once, from the connection facts and the trusted proxies' header. Then, on TLS
//!    connections in the mTLS "refuse at HTTP" mode, a refused client chain answers 403 with its reason.
//! 2. **Host** ([`HostFilterLayer`]): which endpoint the request is for (gateway, portal, management, scm),
//!    and the SNI ↔ Host binding. It comes before origin and IP rules because both depend on the endpoint:
//!    a private endpoint connection may reach only its target endpoints, and IP rules may differ per
//!    endpoint. An unknown host or a bare IP gets its 421 before anything else is revealed. With TLS
//!    virtual hosts, the request's host must then belong to the connection's virtual host, and the names of
//!    a virtual host that requires client certificates are never served over plain HTTP.
//! 3. **Origin** ([`OriginLayer`]): private (a named network, or an approved private endpoint connection)
//!    or public; pending and rejected connections, and connections outside their targets, are refused here.
//! 4. **Public access** ([`PublicAccessLayer`]): with public network access disabled, a public caller gets
//!    Azure's 403, which names the refused address and says how to connect privately. It comes before the
//!    IP rules so that such a caller learns the real reason rather than a generic IP refusal.
//! 5. **IP rules** ([`IpFilterLayer`]): the global rule set, then the rule set of the request's endpoint.
//!
//! All five are [`Gate`]s run by one service ([`GateLayer<Gates>`](GateLayer)): one future, one body
//! wrapper and one [`Decisions`] extension per request for the whole stack, instead of five nested layers
//! each with its own.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use portcullis::{ClientAddrConfig, ConnInfo, Gateway};
//! use portcullis::host::{Endpoint, HostFilterLayer, Hosts};
//! use portcullis::ip::{Action, IpFilterLayer, IpRules};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hosts = Hosts::builder().endpoint(Endpoint::new("gateway").host("api.contoso.example")).build()?;
//! let mut rules = IpRules::builder(Action::Deny);
//! rules.allow("10.0.0.0/8");
//! let gateway = Gateway::builder()
//!     .client_address(ClientAddrConfig::new())
//!     .hosts(HostFilterLayer::new(hosts))
//!     .ip(IpFilterLayer::new(rules.build()?))
//!     .build();
//! let app = gateway.layer().layer(service_fn(|_req: Request<()>| async {
//!     Ok::<_, Infallible>(Response::new(()))
//! }));
//! let request = |host: &str, peer: &str| {
//!     let mut req = Request::builder().header("host", host).body(()).unwrap();
//!     req.extensions_mut().insert(ConnInfo::new(peer.parse().unwrap(), None));
//!     req
//! };
//! // A caller in the allowed network, on the configured name: served.
//! assert_eq!(app.clone().oneshot(request("api.contoso.example", "10.1.2.3:5000")).await?.status(), StatusCode::OK);
//! // The bare IP: 421. An address outside the rules: 403.
//! assert_eq!(app.clone().oneshot(request("10.0.0.1", "10.1.2.3:5000")).await?.status(), StatusCode::MISDIRECTED_REQUEST);
//! assert_eq!(app.oneshot(request("api.contoso.example", "192.0.2.7:5000")).await?.status(), StatusCode::FORBIDDEN);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::request::Parts;
use http::{Request, Response, StatusCode};
use portcullis_core::{
    ClientAddrConfig, Decisions, Denial, Gate, GateBody, GateContext, GateLayer, Gates, Responder,
    ResponseFuture,
};
use portcullis_host::HostFilterLayer;
use portcullis_ip::IpFilterLayer;
use portcullis_origin::{OriginLayer, PublicAccessLayer};
use tower::Service;
use tower::util::BoxCloneSyncService;

/// Builds a [`Gateway`]. Every part is optional except the client address (which defaults to "the peer,
/// no forwarded header").
#[derive(Default)]
pub struct GatewayBuilder {
    client: ClientAddrConfig,
    hosts: Option<HostFilterLayer>,
    origin: Option<OriginLayer>,
    public_access: Option<PublicAccessLayer>,
    ip: Option<IpFilterLayer>,
    ip_endpoints: HashMap<String, IpFilterLayer>,
    virtual_hosts: Option<portcullis_mtls::VirtualHosts>,
    responder: Responder,
}

impl GatewayBuilder {
    /// The TLS virtual hosts the listeners serve: each request's host is then bound to its connection's
    /// virtual host, and the names of virtual hosts that require client certificates are refused over
    /// plain HTTP (see the module docs).
    pub fn virtual_hosts(mut self, virtual_hosts: portcullis_mtls::VirtualHosts) -> Self {
        self.virtual_hosts = Some(virtual_hosts);
        self
    }

    /// How the client address is resolved.
    pub fn client_address(mut self, config: ClientAddrConfig) -> Self {
        self.client = config;
        self
    }

    /// Host-name routing (filter mode: the endpoint is recorded for [`Endpoints`] and later gates).
    pub fn hosts(mut self, hosts: HostFilterLayer) -> Self {
        self.hosts = Some(hosts);
        self
    }

    /// Origin tagging.
    pub fn origin(mut self, origin: OriginLayer) -> Self {
        self.origin = Some(origin);
        self
    }

    /// Public network access.
    pub fn public_access(mut self, public_access: PublicAccessLayer) -> Self {
        self.public_access = Some(public_access);
        self
    }

    /// IP rules for every endpoint.
    pub fn ip(mut self, ip: IpFilterLayer) -> Self {
        self.ip = Some(ip);
        self
    }

    /// IP rules for one endpoint, checked after the global ones.
    pub fn ip_for_endpoint(mut self, endpoint: impl Into<String>, ip: IpFilterLayer) -> Self {
        self.ip_endpoints.insert(endpoint.into(), ip);
        self
    }

    /// The responder for every refusal (default problem+json).
    pub fn responder(mut self, responder: Responder) -> Self {
        self.responder = responder;
        self
    }

    /// The gateway.
    pub fn build(self) -> Gateway {
        let mut gates: Vec<Arc<dyn Gate>> = vec![Arc::new(self.client), Arc::new(TlsRefusal)];
        if let Some(h) = self.hosts {
            gates.push(Arc::new(h));
        }
        if let Some(v) = self.virtual_hosts {
            gates.push(Arc::new(TlsBinding(v)));
        }
        if let Some(o) = self.origin {
            gates.push(Arc::new(o));
        }
        if let Some(p) = self.public_access {
            gates.push(Arc::new(p));
        }
        if let Some(ip) = self.ip {
            gates.push(Arc::new(ip));
        }
        if !self.ip_endpoints.is_empty() {
            gates.push(Arc::new(EndpointIp(self.ip_endpoints.into_iter().collect())));
        }
        Gateway { gates: Gates::new(gates), responder: self.responder }
    }
}

/// In the mTLS "refuse at HTTP" mode the handshake completed without a client identity and recorded why:
/// every request on such a connection is refused with that reason.
struct TlsRefusal;

impl Gate for TlsRefusal {
    fn check_in(&self, _head: &mut Parts, cx: &mut GateContext) -> Result<(), Denial> {
        match cx.conn.as_ref().and_then(|c| c.tls.as_ref()).and_then(|t| t.refused.as_ref()) {
            Some(denial) => Err((**denial).clone()),
            None => Ok(()),
        }
    }

    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        let refused = match head.extensions.get::<portcullis_core::ConnInfo>() {
            Some(c) => c.tls.as_ref().and_then(|t| t.refused.clone()),
            // axum's ConnectInfo<ConnInfo>, tonic's connect info: a cheap clone of two Arcs.
            None => portcullis_core::ConnInfo::from_extensions(&head.extensions)
                .and_then(|c| c.tls.and_then(|t| t.refused.clone())),
        };
        match refused {
            Some(denial) => Err((*denial).clone()),
            None => Ok(()),
        }
    }
}

/// Binds a request's host to the TLS virtual host of its connection, with the virtual hosts' own name
/// table (exact, wildcard, default), whatever the host routes look like:
///
/// - over TLS, the host must select the same virtual host as the connection did (its SNI, or the default
///   virtual host without SNI): otherwise a client could complete the handshake with a host that asks for no
///   client certificate and then name a host that requires one;
/// - over plain HTTP, a host whose virtual host requires client certificates is refused: none of its
///   certificate, client authentication or chain policy would apply.
///
/// Both refusals are 421, with the host layer's typed reason.
struct TlsBinding(portcullis_mtls::VirtualHosts);

impl TlsBinding {
    fn decide(&self, host: Option<&str>, tls: Option<&portcullis_core::TlsInfo>) -> Result<(), Denial> {
        use portcullis_host::{HostRefusal, SniMismatch};
        use portcullis_mtls::ClientAuth;
        // No host decision: the host gate refused (or, in shadow mode, recorded) the request already.
        let Some(host) = host else { return Ok(()) };
        let refusal = match tls {
            Some(tls) => {
                let selected = self.0.select(Some(host)).map(|(name, _)| name);
                if selected.as_deref() == tls.vhost.as_deref() {
                    return Ok(());
                }
                HostRefusal::Sni(SniMismatch {
                    host: host.to_owned(),
                    sni: tls.sni.as_deref().map(str::to_owned),
                    vhost: tls.vhost.as_deref().map(str::to_owned),
                })
            }
            None => match self.0.select_named(host) {
                Some((vhost, ClientAuth::Required)) => {
                    HostRefusal::NotTls { host: host.to_owned(), vhost: vhost.to_string() }
                }
                _ => return Ok(()),
            },
        };
        Err(refusal.into_denial())
    }
}

impl Gate for TlsBinding {
    fn check_in(&self, _head: &mut Parts, cx: &mut GateContext) -> Result<(), Denial> {
        let host = cx.decisions.host.as_ref().map(|h| &*h.host);
        let tls = cx.conn.as_ref().and_then(|c| c.tls.as_deref());
        self.decide(host, tls)
    }

    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        let host = Decisions::get(&head.extensions).and_then(|d| d.host.as_ref()).map(|h| h.host.clone());
        let conn = portcullis_core::ConnInfo::from_extensions(&head.extensions);
        self.decide(host.as_deref(), conn.as_ref().and_then(|c| c.tls.as_deref()))
    }
}

/// IP rules chosen by the request's endpoint. A deployment has a handful of endpoints: a linear scan of
/// short names is several times cheaper per request than hashing the name (SipHash) into a map.
struct EndpointIp(Vec<(String, IpFilterLayer)>);

impl Gate for EndpointIp {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        let filter = Decisions::get(&head.extensions).and_then(|d| d.host.as_ref()).and_then(|h| {
            self.0.iter().find(|(name, _)| name.as_str() == &*h.endpoint).map(|(_, filter)| filter)
        });
        match filter {
            Some(f) => f.check(head),
            None => Ok(()),
        }
    }

    fn check_in(&self, head: &mut Parts, cx: &mut GateContext) -> Result<(), Denial> {
        let filter = cx.decisions.host.as_ref().and_then(|h| {
            self.0.iter().find(|(name, _)| name.as_str() == &*h.endpoint).map(|(_, filter)| filter)
        });
        match filter {
            Some(f) => f.check_in(head, cx),
            None => Ok(()),
        }
    }
}

/// The request-level stack. See the [module docs](self) for the order.
#[derive(Clone, Debug)]
pub struct Gateway {
    gates: Gates,
    responder: Responder,
}

impl Gateway {
    /// A builder.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// The tower layer running the whole stack in front of an application.
    pub fn layer(&self) -> GateLayer<Gates> {
        GateLayer::new(self.gates.clone()).responder(self.responder.clone())
    }

    /// The gates, in order.
    pub fn gates(&self) -> &Gates {
        &self.gates
    }
}

// === impl Endpoints ===

type BoxedApp<B, R, E> = BoxCloneSyncService<Request<B>, Response<R>, E>;

/// Dispatches requests to one service per endpoint, on the endpoint the host gate recorded in
/// [`Decisions`]: the host is parsed and matched once, by the gate, never again here.
///
/// A request without a recorded endpoint (the host gate did not run, or let an unknown host through in
/// shadow mode) goes to the fallback service when one is set, and is otherwise refused with 421.
pub struct Endpoints<B, R, E> {
    routes: Arc<HashMap<String, BoxedApp<B, R, E>>>,
    fallback: Option<BoxedApp<B, R, E>>,
    responder: Responder,
}

impl<B, R, E> Clone for Endpoints<B, R, E> {
    fn clone(&self) -> Self {
        Endpoints {
            routes: self.routes.clone(),
            fallback: self.fallback.clone(),
            responder: self.responder.clone(),
        }
    }
}

impl<B, R, E> Default for Endpoints<B, R, E> {
    fn default() -> Self {
        Endpoints { routes: Arc::new(HashMap::new()), fallback: None, responder: Responder::default() }
    }
}

impl<B: 'static, R: 'static, E: 'static> Endpoints<B, R, E> {
    /// No endpoints yet.
    pub fn new() -> Self {
        Endpoints::default()
    }

    /// Serves `endpoint` with `service`.
    pub fn route<S>(mut self, endpoint: impl Into<String>, service: S) -> Self
    where
        S: Service<Request<B>, Response = Response<R>, Error = E> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        Arc::make_mut(&mut self.routes).insert(endpoint.into(), BoxCloneSyncService::new(service));
        self
    }

    /// Serves requests without a recorded endpoint with `service`.
    pub fn fallback<S>(mut self, service: S) -> Self
    where
        S: Service<Request<B>, Response = Response<R>, Error = E> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        self.fallback = Some(BoxCloneSyncService::new(service));
        self
    }
}

/// The future of a routed endpoint.
pub type EndpointFuture<R, E> = Pin<Box<dyn Future<Output = Result<Response<R>, E>> + Send>>;

impl<B, R, E> Service<Request<B>> for Endpoints<B, R, E>
where
    B: Send + 'static,
    R: 'static,
    E: 'static,
{
    type Response = Response<GateBody<R>>;
    type Error = E;
    type Future = ResponseFuture<EndpointFuture<R, E>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each boxed route is driven to readiness in `call` (they are cloned per call).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let endpoint =
            Decisions::get(req.extensions()).and_then(|d| d.host.as_ref()).map(|h| h.endpoint.clone());
        let svc = match endpoint.as_deref().and_then(|e| self.routes.get(e)) {
            Some(svc) => Some(svc.clone()),
            None => self.fallback.clone(),
        };
        match svc {
            Some(mut svc) => ResponseFuture::inner(Box::pin(async move {
                futures_ready(&mut svc).await?;
                svc.call(req).await
            })),
            None => {
                let detail = match endpoint {
                    Some(e) => format!("no service is configured for endpoint `{e}`"),
                    None => "no endpoint was matched for this request's host".to_owned(),
                };
                let denial =
                    Denial::new("endpoints", "endpoints.unrouted", StatusCode::MISDIRECTED_REQUEST, detail);
                ResponseFuture::denied(self.responder.respond(denial))
            }
        }
    }
}

async fn futures_ready<S, Req>(svc: &mut S) -> Result<(), S::Error>
where
    S: Service<Req>,
{
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await
}
