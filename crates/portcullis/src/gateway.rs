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
//! All five are [`Gate`]s run by one service ([`GateLayer`] over a [`GatewayGate`], which calls each
//! layer's decision in turn without dynamic dispatch): one future and one [`Decisions`] record per request
//! for the whole stack, instead of five nested layers each with its own. The run borrows what it reads
//! ([`GateContext::with_parts`]): the connection facts from the request's `ConnInfo` copy, the header
//! values the gates read from one walk over the headers.
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
    ClientAddrConfig, Decisions, Denial, ForwardedSource, Gate, GateContext, GateLayer, GateResponseBody,
    HeadParts, Responder, ResponseFuture, Scanned,
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
        // The host router's own name strings where it has them: the match it records holds the same
        // allocation, recognised by pointer before any text is compared.
        let hosts = self.hosts.as_ref().map(HostFilterLayer::hosts);
        let shared = |name: String| hosts.and_then(|h| h.endpoint_name(&name)).unwrap_or_else(|| name.into());
        let endpoint_ip = (!self.ip_endpoints.is_empty()).then(|| {
            EndpointIp(self.ip_endpoints.into_iter().map(|(name, ip)| (shared(name), ip)).collect())
        });
        let gate = GatewayGate {
            client: self.client,
            hosts: self.hosts,
            binding: self.virtual_hosts.map(TlsBinding),
            origin: self.origin,
            public_access: self.public_access,
            ip: self.ip,
            endpoint_ip,
        };
        Gateway { gate: Arc::new(gate), responder: self.responder }
    }
}

/// The gate a [`Gateway`] runs: every configured layer's [`Gate`], in the documented order, called
/// directly (no dynamic dispatch between them) in one run that shares one [`GateContext`].
///
/// Each step is the layer's own decision (`ClientAddrConfig::decide`, `HostFilterLayer::decide`,
/// `OriginLayer::decide`, `PublicAccessLayer::decide`, `IpFilterLayer::decide`): the same code its `Gate`
/// implementation runs when the layer is used alone, on the request's parts borrowed rather than copied.
pub struct GatewayGate {
    client: ClientAddrConfig,
    hosts: Option<HostFilterLayer>,
    binding: Option<TlsBinding>,
    origin: Option<OriginLayer>,
    public_access: Option<PublicAccessLayer>,
    ip: Option<IpFilterLayer>,
    endpoint_ip: Option<EndpointIp>,
}

impl std::fmt::Debug for GatewayGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayGate")
            .field("hosts", &self.hosts.is_some())
            .field("tls_binding", &self.binding.is_some())
            .field("origin", &self.origin.is_some())
            .field("public_access", &self.public_access.is_some())
            .field("ip", &self.ip.is_some())
            .field("endpoint_ip", &self.endpoint_ip.is_some())
            .finish()
    }
}

impl GatewayGate {
    /// The run: each layer's decision on the request's borrowed parts, in the documented order. The
    /// headers are walked once for the ones the gates read (their values borrowed, not copied) while they
    /// are only read; the origin layer, which may change them, comes after the last reader.
    fn run(&self, p: &mut HeadParts<'_>) -> Result<(), Denial> {
        let HeadParts { uri, version, headers, conn, decisions, .. } = p;
        let conn = *conn;
        let header_lengths = {
            // One walk for the headers the gates read when the client-address layer reads a forwarded
            // header; otherwise the host layer looks `Host` up alone, which is cheaper.
            let scanned = match self.client.forwarded_source() {
                ForwardedSource::None => Scanned::plain(headers),
                _ => Scanned::indexed(headers),
            };
            self.client.decide(conn, &scanned, decisions)?;
            tls_refused(conn)?;
            if let Some(hosts) = &self.hosts {
                hosts.decide(uri, *version, &scanned, conn, decisions)?;
            }
            scanned.index().map(|ix| ix.lengths())
        };
        if let Some(binding) = &self.binding {
            binding.decide(decisions.host.as_ref().map(|h| &*h.host), conn.and_then(|c| c.tls.as_deref()))?;
        }
        if let Some(origin) = &self.origin {
            origin.decide(headers, header_lengths, conn, decisions)?;
        }
        if let Some(public_access) = &self.public_access {
            public_access.decide(decisions)?;
        }
        if let Some(ip) = &self.ip {
            ip.decide(conn, decisions)?;
        }
        if let Some(endpoint_ip) = &self.endpoint_ip {
            endpoint_ip.decide(conn, decisions)?;
        }
        Ok(())
    }
}

impl Gate for GatewayGate {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        GateContext::with_parts(head, |parts| self.run(parts))
    }

    fn check_in(&self, head: &mut Parts, cx: &mut GateContext) -> Result<(), Denial> {
        self.run(&mut cx.parts(head))
    }

    // Its gates are portcullis' own, each of which preserves headers or reports its changes.
    fn preserves_headers(&self) -> bool {
        true
    }
}

/// In the mTLS "refuse at HTTP" mode the handshake completed without a client identity and recorded why:
/// every request on such a connection is refused with that reason.
#[inline]
fn tls_refused(conn: Option<&portcullis_core::ConnInfo>) -> Result<(), Denial> {
    match conn.and_then(|c| c.tls.as_ref()).and_then(|t| t.refused.as_ref()) {
        Some(denial) => Err((**denial).clone()),
        None => Ok(()),
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

/// IP rules chosen by the request's endpoint. A deployment has a handful of endpoints: a linear scan of
/// short names is several times cheaper per request than hashing the name (SipHash) into a map.
struct EndpointIp(Vec<(Arc<str>, IpFilterLayer)>);

impl EndpointIp {
    /// The rules of the endpoint the host layer recorded, if it has any, decided on as the IP filter does.
    #[inline]
    fn decide(
        &self,
        conn: Option<&portcullis_core::ConnInfo>,
        decisions: &mut Decisions,
    ) -> Result<(), Denial> {
        let filter = decisions.host.as_ref().and_then(|h| {
            self.0.iter().find(|(name, _)| same_name(name, &h.endpoint)).map(|(_, filter)| filter)
        });
        match filter {
            Some(f) => f.decide(conn, decisions),
            None => Ok(()),
        }
    }
}

/// Whether two endpoint names are the same: the same allocation (the host router's, which `EndpointIp` keeps
/// alive, so an equal pointer is the same text), else the same text.
#[inline]
fn same_name(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// The request-level stack. See the [module docs](self) for the order.
#[derive(Clone, Debug)]
pub struct Gateway {
    gate: Arc<GatewayGate>,
    responder: Responder,
}

impl Gateway {
    /// A builder.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// The tower layer running the whole stack in front of an application.
    pub fn layer(&self) -> GateLayer<GatewayGate> {
        GateLayer::shared(self.gate.clone()).responder(self.responder.clone())
    }

    /// The stack as one [`Gate`], to run inside a [`Gates`](portcullis_core::Gates) of your own (your gates
    /// before or after it see the same [`Decisions`]).
    pub fn gate(&self) -> Arc<GatewayGate> {
        self.gate.clone()
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
    R: GateResponseBody + 'static,
    E: 'static,
{
    type Response = Response<R::Body>;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::request::Parts;
    use http::{Request, StatusCode};
    use portcullis_core::{ConnInfo, Decisions, Denial, Gate, Gates};
    use portcullis_host::{Endpoint, HostFilterLayer, Hosts};

    use super::*;

    /// An application's gate after the stack: refuses unless the stack recorded a client and a host.
    struct NeedsDecisions;
    impl Gate for NeedsDecisions {
        fn check(&self, head: &mut Parts) -> Result<(), Denial> {
            let d = Decisions::get(&head.extensions);
            match d.is_some_and(|d| d.client.is_some() && d.host.is_some()) {
                true => Ok(()),
                false => {
                    Err(Denial::new("app", "app.no-decisions", StatusCode::FORBIDDEN, "nothing recorded"))
                }
            }
        }
    }

    fn head(host: &str, forwarded: &str) -> Parts {
        let mut req =
            Request::builder().header("host", host).header("x-forwarded-for", forwarded).body(()).unwrap();
        req.extensions_mut().insert(ConnInfo::new("10.0.0.2:4000".parse().unwrap(), None));
        req.into_parts().0
    }

    /// `Gateway::gate()` composed with an application's own gate: the stack decides first, the application's
    /// gate sees its decisions, and a refusal of the stack stops the run before the application's gate.
    #[test]
    fn the_gateway_gate_composes_with_gates_of_the_application() {
        let hosts = Hosts::builder().endpoint(Endpoint::new("gateway").host("api.example")).build().unwrap();
        let client = ClientAddrConfig::new()
            .trusted_proxies(["10.0.0.0/8".parse().unwrap()])
            .unwrap()
            .source(portcullis_core::ForwardedSource::XForwardedFor);
        let gateway = Gateway::builder().client_address(client).hosts(HostFilterLayer::new(hosts)).build();
        assert!(gateway.gate().preserves_headers());
        let gates = Gates::new([gateway.gate() as Arc<dyn Gate>, Arc::new(NeedsDecisions)]);

        let mut served = head("API.example.", "198.51.100.7");
        gates.check(&mut served).expect("a known host from a forwarded client is served");
        let d = Decisions::get(&served.extensions).unwrap();
        assert_eq!(d.client.unwrap().ip, "198.51.100.7".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(d.host.as_ref().map(|h| &*h.endpoint), Some("gateway"));

        let mut unknown = head("other.example", "198.51.100.7");
        let denial = gates.check(&mut unknown).expect_err("an unknown host is refused by the stack");
        assert_eq!(denial.code(), "host.unknown");
    }
}
