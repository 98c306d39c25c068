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
//! All five are [`Rule`]s, and the gateway is an ordered list of them ([`GatewayRules`]): the same rule
//! objects the layers enforce alone, run by one service ([`GateLayer`] over the [`Gateway`]) with one
//! future for the whole stack.
//!
//! ## One generation per request
//!
//! Every rule set that can change at runtime (IP rules, host routes and endpoint ids, private networks and
//! private endpoint connections, public access, the virtual hosts' names) belongs to one immutable
//! [`GatewayRules`] value. A request loads the current one once and is decided by it alone;
//! [`Gateway::store`] replaces it whole, so no request ever sees half of a change.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use portcullis_core::{
    ClientAddrConfig, Decisions, Denial, GateBody, GateLayer, Responder, ResponseFuture, Rule,
};
use portcullis_host::{HostFilterLayer, HostRule};
use portcullis_ip::{IpFilterLayer, IpRule};
use portcullis_mtls::RefusedAtHttpRule;
use portcullis_origin::{OriginLayer, OriginRule, PublicAccessLayer, PublicAccessRule};
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
    ip_endpoints: Vec<(String, IpFilterLayer)>,
    virtual_hosts: Option<portcullis_mtls::VirtualHosts>,
    responder: Responder,
}

impl GatewayBuilder {
    /// The TLS virtual hosts the listeners serve: the host rule then binds each request's host to its
    /// connection's virtual host by the virtual hosts' own names, and refuses over plain HTTP the names of
    /// virtual hosts that require client certificates (it replaces the host layer's `sni_check`).
    pub fn virtual_hosts(mut self, virtual_hosts: portcullis_mtls::VirtualHosts) -> Self {
        self.virtual_hosts = Some(virtual_hosts);
        self
    }

    /// How the client address is resolved.
    pub fn client_address(mut self, config: ClientAddrConfig) -> Self {
        self.client = config;
        self
    }

    /// Host-name routing (the endpoint is recorded for [`Endpoints`] and the later rules).
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
        self.ip_endpoints.push((endpoint.into(), ip));
        self
    }

    /// The responder for every refusal (default problem+json, gRPC status for gRPC calls).
    pub fn responder(mut self, responder: Responder) -> Self {
        self.responder = responder;
        self
    }

    /// The rules of one generation, without a gateway around them (for [`Gateway::store`]).
    pub fn build_rules(self) -> GatewayRules {
        // With virtual hosts, the host rule binds hosts to them by their own names (the one TLS ↔ Host
        // binding, see `portcullis_mtls`'s `SniCheck` for `VirtualHosts`).
        let hosts = match (self.hosts, self.virtual_hosts) {
            (Some(h), Some(v)) => Some(h.sni_check(v).rule().clone()),
            (h, _) => h.map(|h| h.rule().clone()),
        };
        let mut endpoint_ip = Vec::new();
        for (name, ip) in self.ip_endpoints {
            let endpoint = match hosts.as_ref().map(|h| h.hosts().endpoint_id(&name)) {
                Some(Some(id)) => EndpointKey::Id(id),
                Some(None) => {
                    tracing::warn!(
                        endpoint = %name,
                        "portcullis: IP rules for an endpoint the host routes do not name never apply"
                    );
                    continue;
                }
                None => EndpointKey::Name(name.into()),
            };
            endpoint_ip.push((endpoint, ip.rule().clone()));
        }
        GatewayRules {
            generation: 0,
            client: self.client,
            tls_refused: RefusedAtHttpRule,
            hosts,
            origin: self.origin.map(|o| o.rule().clone()),
            public_access: self.public_access.map(|p| p.rule().clone()),
            ip: self.ip.map(|i| i.rule().clone()),
            endpoint_ip,
        }
    }

    /// The gateway.
    pub fn build(self) -> Gateway {
        let responder = self.responder.clone();
        let mut rules = self.build_rules();
        rules.generation = 1;
        Gateway {
            current: Arc::new(ArcSwap::from_pointee(rules)),
            generation: Arc::new(AtomicU64::new(1)),
            responder,
        }
    }
}

/// One generation of the gateway's rules: every configured rule, in the documented order.
///
/// Each entry is the rule the layer of the same name enforces alone ([`HostRule`] for
/// [`HostFilterLayer`], and so on): there is one decision path per rule, whichever way it is run.
pub struct GatewayRules {
    generation: u64,
    client: ClientAddrConfig,
    tls_refused: RefusedAtHttpRule,
    hosts: Option<Arc<HostRule>>,
    origin: Option<Arc<OriginRule>>,
    public_access: Option<Arc<PublicAccessRule>>,
    ip: Option<Arc<IpRule>>,
    endpoint_ip: Vec<(EndpointKey, Arc<IpRule>)>,
}

/// Which endpoint a set of IP rules applies to: by id in the gateway's own host table, or by name when the
/// gateway has no host routes (the endpoint was recorded by a host layer outside it).
#[derive(Debug)]
enum EndpointKey {
    Id(usize),
    Name(Arc<str>),
}

impl EndpointKey {
    fn matches(&self, host: &portcullis_core::MatchedHost) -> bool {
        match self {
            EndpointKey::Id(id) => host.endpoint_id == *id,
            EndpointKey::Name(name) => **name == *host.endpoint,
        }
    }
}

impl std::fmt::Debug for GatewayRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayRules")
            .field("generation", &self.generation)
            .field("hosts", &self.hosts.is_some())
            .field("origin", &self.origin.is_some())
            .field("public_access", &self.public_access.is_some())
            .field("ip", &self.ip.is_some())
            .field("endpoint_ip", &self.endpoint_ip.len())
            .finish()
    }
}

/// The steps of [`GatewayRules`] in the order [`check`](Rule::check) runs them, by name: the client address,
/// the TLS refusal at HTTP, the host, the origin, public access, the global IP rules, the endpoint's IP rules.
pub const STEPS: [&str; 7] =
    ["client-address", "tls-refused-at-http", "host", "origin", "public-access", "ip", "ip.endpoint"];

impl GatewayRules {
    /// The generation number of these rules (1 for the first, then one more per [`Gateway::store`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Runs step `step` of [`STEPS`] alone, with the rule object [`check`](Rule::check) runs, for tools that
    /// explain a decision step by step (`portcullis explain`): `None` when that step is not configured (or,
    /// for the endpoint's IP rules, when the request's endpoint has none). Running every step in order,
    /// stopping at the first refusal, is `check`.
    pub fn check_step(&self, step: usize, head: &mut Parts) -> Option<Result<(), Denial>> {
        match step {
            0 => Some(self.client.check(head)),
            1 => Some(self.tls_refused.check(head)),
            2 => self.hosts.as_ref().map(|r| r.check(head)),
            3 => self.origin.as_ref().map(|r| r.check(head)),
            4 => self.public_access.as_ref().map(|r| r.check(head)),
            5 => self.ip.as_ref().map(|r| r.check(head)),
            6 => self.endpoint_ip_rule(&head.extensions).cloned().map(|r| r.check(head)),
            _ => None,
        }
    }

    /// The IP rules of the endpoint the host rule recorded, if that endpoint has its own.
    fn endpoint_ip_rule(&self, ext: &http::Extensions) -> Option<&Arc<IpRule>> {
        let host = Decisions::get(ext).and_then(|d| d.host.as_ref())?;
        self.endpoint_ip.iter().find(|(key, _)| key.matches(host)).map(|(_, rule)| rule)
    }
}

impl Rule for GatewayRules {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        self.client.check(head)?;
        self.tls_refused.check(head)?;
        self.hosts.check(head)?;
        self.origin.check(head)?;
        self.public_access.check(head)?;
        self.ip.check(head)?;
        if !self.endpoint_ip.is_empty()
            && let Some(rule) = self.endpoint_ip_rule(&head.extensions)
        {
            rule.check(head)?;
        }
        Ok(())
    }
}

/// The request-level stack: a handle on the current [`GatewayRules`]. See the [module docs](self) for the
/// order. Clones share the handle: [`store`](Self::store) on one changes them all.
#[derive(Clone)]
pub struct Gateway {
    current: Arc<ArcSwap<GatewayRules>>,
    generation: Arc<AtomicU64>,
    responder: Responder,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("rules", &*self.current.load()).finish_non_exhaustive()
    }
}

impl Gateway {
    /// A builder.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// The tower layer running the whole stack in front of an application.
    pub fn layer(&self) -> GateLayer<Gateway> {
        GateLayer::new(self.clone()).responder(self.responder.clone())
    }

    /// The current generation of rules (a snapshot: later stores do not change it).
    pub fn rules(&self) -> Arc<GatewayRules> {
        self.current.load_full()
    }

    /// Replaces every rule at once with `rules` (built with [`GatewayBuilder::build_rules`]): requests
    /// decided from now on use them; requests in flight keep the generation they loaded. Returns the new
    /// generation number.
    pub fn store(&self, mut rules: GatewayRules) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        rules.generation = generation;
        self.current.store(Arc::new(rules));
        tracing::info!(generation, "portcullis gateway rules replaced");
        generation
    }
}

impl Rule for Gateway {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        self.current.load().check(head)
    }
}

// === impl Endpoints ===

type BoxedApp<B, R, E> = BoxCloneSyncService<Request<B>, Response<R>, E>;

/// Dispatches requests to one service per endpoint, on the endpoint the host rule recorded in
/// [`Decisions`]: the host is parsed and matched once, by the rule, never again here.
///
/// A request without a recorded endpoint (the host rule did not run, or let an unknown host through in
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
            Some(mut svc) => ResponseFuture::future(Box::pin(async move {
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
                ResponseFuture::refused(self.responder.respond_headers(denial, req.headers()))
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
    use portcullis_core::{ConnInfo, Decisions, Denial, Rule, Rules};
    use portcullis_host::{Endpoint, HostFilterLayer, Hosts};

    use super::*;

    /// An application's rule after the stack: refuses unless the stack recorded a client and a host.
    struct NeedsDecisions;
    impl Rule for NeedsDecisions {
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

    /// The gateway composed with an application's own rule: the stack decides first, the application's
    /// rule sees its decisions, and a refusal of the stack stops the run before the application's rule.
    #[test]
    fn the_gateway_composes_with_rules_of_the_application() {
        let hosts = Hosts::builder().endpoint(Endpoint::new("gateway").host("api.example")).build().unwrap();
        let client = ClientAddrConfig::new()
            .trusted_proxies(["10.0.0.0/8".parse().unwrap()])
            .unwrap()
            .source(portcullis_core::ForwardedSource::XForwardedFor);
        let gateway = Gateway::builder().client_address(client).hosts(HostFilterLayer::new(hosts)).build();
        let gates = Rules::new([Arc::new(gateway) as Arc<dyn Rule>, Arc::new(NeedsDecisions)]);

        let mut served = head("API.example.", "198.51.100.7");
        gates.check(&mut served).expect("a known host from a forwarded client is served");
        let d = Decisions::get(&served.extensions).unwrap();
        assert_eq!(d.client.unwrap().ip, "198.51.100.7".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(d.host.as_ref().map(|h| &*h.endpoint), Some("gateway"));

        let mut unknown = head("other.example", "198.51.100.7");
        let denial = gates.check(&mut unknown).expect_err("an unknown host is refused by the stack");
        assert_eq!(denial.code(), "host.unknown");
    }

    /// The steps run one at a time decide as `check` does, request by request: same refusal, same
    /// decisions, and the endpoint's own IP rules only for its endpoint.
    #[test]
    fn steps_one_at_a_time_decide_as_check_does() {
        use portcullis_ip::{Action, IpFilterLayer, IpRules};
        let hosts = Hosts::builder()
            .endpoint(Endpoint::new("gateway").host("api.example"))
            .endpoint(Endpoint::new("management").host("mgmt.example"))
            .build()
            .unwrap();
        let mut global = IpRules::builder(Action::Allow);
        global.deny("10.9.0.0/16");
        let mut mgmt = IpRules::builder(Action::Deny);
        mgmt.allow("10.0.0.2");
        let rules = Gateway::builder()
            .hosts(HostFilterLayer::new(hosts))
            .ip(IpFilterLayer::new(global.build().unwrap()))
            .ip_for_endpoint("management", IpFilterLayer::new(mgmt.build().unwrap()))
            .build()
            .rules();
        let stepwise = |head: &mut Parts| -> Result<(), Denial> {
            for step in 0..super::STEPS.len() {
                if let Some(result) = rules.check_step(step, head) {
                    result?;
                }
            }
            Ok(())
        };
        for (host, peer) in [
            ("api.example", "10.0.0.2:1"),
            ("mgmt.example", "10.0.0.2:1"),
            ("mgmt.example", "10.0.0.3:1"),
            ("api.example", "10.9.1.1:1"),
            ("unknown.example", "10.0.0.2:1"),
        ] {
            let make = || {
                let mut req = Request::builder().header("host", host).body(()).unwrap();
                req.extensions_mut().insert(ConnInfo::new(peer.parse().unwrap(), None));
                req.into_parts().0
            };
            let (mut a, mut b) = (make(), make());
            let (ra, rb) = (rules.check(&mut a), stepwise(&mut b));
            assert_eq!(
                ra.as_ref().err().map(Denial::code),
                rb.as_ref().err().map(Denial::code),
                "{host} {peer}"
            );
            let (da, db) = (Decisions::get(&a.extensions), Decisions::get(&b.extensions));
            assert_eq!(format!("{da:?}"), format!("{db:?}"), "{host} {peer}");
        }
        assert!(rules.check_step(super::STEPS.len(), &mut Request::new(()).into_parts().0).is_none());
    }
}
