//! [`IpFilterLayer`]: refuse requests by source address, after the client address is resolved.
//!
//! The filter decides on one address per request:
//! - by default the resolved client, [`ClientAddr`](portcullis_core::ClientAddr) in the request's
//!   [`Decisions`](portcullis_core::Decisions), which [`ClientAddrLayer`](portcullis_core::ClientAddrLayer) puts there (the socket peer,
//!   the PROXY protocol source, or a forwarded header read only from trusted proxies). Install that layer
//!   **outside** (before) this one; without it every request is refused with a 500 that says so.
//! - with [`IpFilterLayer::direct_peer`], the socket peer itself ([`ConnInfo::peer`](portcullis_core::ConnInfo::peer), Envoy's
//!   `direct_remote_ip`): for rules about who may connect to this server at all, such as "only the load
//!   balancer's subnet". No connection info wired means a 500 as well.
//!
//! The current [`IpRules`] snapshot is loaded once per request; the most specific rule
//! decides. A refusal is a `403 application/problem+json` naming the refused address and the rule (or
//! `no rule matched`), built by a replaceable [`Responder`] from a [`Denial`] whose typed reason is an
//! [`IpRefusal`]. In [shadow mode](IpFilterLayer::shadow) the would-be refusal is logged and recorded in
//! [`Decisions::shadow`](portcullis_core::Decisions::shadow), and the request goes on. Wiring errors (no client address, no connection info)
//! are refused in shadow mode too: a dry run that cannot see the address proves nothing.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use portcullis_core::{ClientAddrConfig, ClientAddrLayer, ConnInfo, Denial};
//! use portcullis_ip::{Action, IpFilterLayer, IpRefusal, IpRules};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rules = IpRules::builder(Action::Deny) // addresses no rule covers are refused
//!     .allow("10.0.0.0/8")
//!     .deny("10.0.66.0/24")
//!     .allow("10.0.66.5")
//!     .build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(ClientAddrLayer::new(ClientAddrConfig::new())) // who is calling: here, the peer
//!     .layer(IpFilterLayer::new(rules))
//!     .service(service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new("hello")) }));
//!
//! let from = |peer: &str| {
//!     let mut req = Request::new(());
//!     req.extensions_mut().insert(ConnInfo::new(peer.parse().unwrap(), None));
//!     req
//! };
//! // Allowed: 10.1.2.3 is inside `allow 10.0.0.0/8`, and 10.0.66.5 has its own allow rule.
//! assert_eq!(svc.clone().oneshot(from("10.1.2.3:5000")).await?.status(), StatusCode::OK);
//! assert_eq!(svc.clone().oneshot(from("10.0.66.5:5000")).await?.status(), StatusCode::OK);
//!
//! // Refused: the more specific `deny 10.0.66.0/24` wins over `allow 10.0.0.0/8`.
//! let res = svc.clone().oneshot(from("10.0.66.4:5000")).await?;
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! let denial = res.extensions().get::<Denial>().unwrap();
//! assert_eq!(denial.rule(), Some("deny 10.0.66.0/24"));
//! assert_eq!(denial.refused(), Some("10.0.66.4"));
//! assert!(matches!(denial.reason::<IpRefusal>(), Some(IpRefusal::Denied { .. })));
//!
//! // Refused by the default: no rule covers 192.0.2.1.
//! let res = svc.oneshot(from("192.0.2.1:5000")).await?;
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! assert_eq!(res.extensions().get::<Denial>().unwrap().rule(), Some("no rule matched"));
//! # Ok(()) }
//! ```

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::request::Parts;
use http::{Request, Response, StatusCode};
use portcullis_core::{ConnInfo, Decisions, Denial, Gate, GateContext, Responder, ResponseFuture, fold_ip};
use tower_layer::Layer;
use tower_service::Service;

use crate::handle::IpRulesHandle;
use crate::rules::{Action, IpRules, Verdict};

/// Which address of a request the filter decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AddressSource {
    /// The resolved client address ([`Decisions::client`](portcullis_core::Decisions::client)), set by
    /// [`ClientAddrLayer`](portcullis_core::ClientAddrLayer). The default.
    #[default]
    Client,
    /// The direct peer of the socket ([`ConnInfo::peer`](portcullis_core::ConnInfo::peer)), whatever forwarded headers or PROXY protocol
    /// header say (Envoy's `direct_remote_ip`).
    DirectPeer,
}

impl fmt::Display for AddressSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressSource::Client => "client address",
            AddressSource::DirectPeer => "direct peer",
        })
    }
}

/// Whether a filter refuses, or only records what it would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Refuse.
    #[default]
    Enforce,
    /// Log and record the would-be refusal, and let the request (or connection) through.
    Shadow,
}

/// Why the IP filter refused: the typed reason attached to its [`Denial`]s
/// (`denial.reason::<IpRefusal>()`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpRefusal {
    /// A deny rule is the most specific rule covering the address.
    #[error("{checked} {ip} is refused by rule `{rule}`{}", of_rules(.rules_name))]
    Denied {
        /// The refused address.
        ip: IpAddr,
        /// Which address of the request it is.
        checked: AddressSource,
        /// The rule, as written (with the set member for set rules).
        rule: String,
        /// The rule set's name, if it has one.
        rules_name: Option<String>,
    },
    /// No rule covers the address, and the default action is deny.
    #[error("{checked} {ip} matches no rule and the default action is deny{}", of_rules(.rules_name))]
    NoRuleMatched {
        /// The refused address.
        ip: IpAddr,
        /// Which address of the request it is.
        checked: AddressSource,
        /// The rule set's name, if it has one.
        rules_name: Option<String>,
    },
    /// The filter decides on the client address, and the client-address layer did not run.
    #[error(
        "no resolved client address in the request: install `portcullis_core::ClientAddrLayer` outside \
         (before) `IpFilterLayer`, or filter on the socket peer with `IpFilterLayer::direct_peer()`"
    )]
    NoClientAddr,
    /// The filter decides on the direct peer, and the server does not provide connection info.
    #[error(
        "no connection info in the request extensions: serve axum with \
         `into_make_service_with_connect_info::<portcullis_core::ConnInfo>()`, or wrap hyper services with \
         `portcullis_core::ConnInfoLayer`"
    )]
    NoConnInfo,
}

fn of_rules(name: &Option<String>) -> String {
    name.as_ref().map(|n| format!(" (rules {n:?})")).unwrap_or_default()
}

impl IpRefusal {
    /// The refusal for `ip`, denied by `verdict` of `rules`.
    pub fn from_verdict(rules: &IpRules, ip: IpAddr, checked: AddressSource, verdict: &Verdict) -> Self {
        let rules_name = rules.name().map(str::to_owned);
        match verdict.matched {
            Some(_) => IpRefusal::Denied { ip, checked, rule: rules.describe(verdict), rules_name },
            None => IpRefusal::NoRuleMatched { ip, checked, rules_name },
        }
    }

    /// The denial for this refusal: 403 for an address refused by the rules, 500 for missing wiring.
    pub fn to_denial(&self) -> Denial {
        let denial = match self {
            IpRefusal::Denied { ip, rule, .. } => {
                Denial::new("ip", "ip.denied", StatusCode::FORBIDDEN, self.to_string())
                    .with_rule(rule.clone())
                    .with_refused(ip.to_string())
            }
            IpRefusal::NoRuleMatched { ip, .. } => {
                Denial::new("ip", "ip.no-rule-matched", StatusCode::FORBIDDEN, self.to_string())
                    .with_rule("no rule matched")
                    .with_refused(ip.to_string())
            }
            IpRefusal::NoClientAddr => {
                Denial::new("ip", "ip.no-client-address", StatusCode::INTERNAL_SERVER_ERROR, self.to_string())
            }
            IpRefusal::NoConnInfo => Denial::new(
                "ip",
                "ip.no-connection-info",
                StatusCode::INTERNAL_SERVER_ERROR,
                self.to_string(),
            ),
        };
        denial.with_reason(self.clone())
    }
}

// === impl IpFilterLayer ===

#[derive(Debug, Clone)]
struct Config {
    rules: IpRulesHandle,
    source: AddressSource,
    mode: Mode,
    responder: Responder,
}

impl Config {
    /// The address to decide on, from a request's decisions and connection facts.
    fn address_in(&self, conn: Option<&ConnInfo>, decisions: &Decisions) -> Result<IpAddr, IpRefusal> {
        match self.source {
            AddressSource::Client => {
                decisions.client.as_ref().map(|c| fold_ip(c.ip)).ok_or(IpRefusal::NoClientAddr)
            }
            AddressSource::DirectPeer => {
                conn.map(|conn| fold_ip(conn.peer.ip())).ok_or(IpRefusal::NoConnInfo)
            }
        }
    }

    /// The one decision path of the filter: allowed, refused, or (shadow mode) refused and recorded.
    #[inline]
    fn decide(&self, conn: Option<&ConnInfo>, decisions: &mut Decisions) -> Result<(), Denial> {
        // The allow path: one snapshot, one table lookup, nothing built or copied. No folding here: the
        // table folds IPv4-mapped addresses itself. (The address choice repeats `address_in`'s on purpose:
        // sharing it through an `Option<IpAddr>` measured ~10 instructions more per gate.)
        let allowed = match self.source {
            AddressSource::Client => match &decisions.client {
                Some(c) => self.rules.with_current(|rules| rules.allows(c.ip)),
                None => false,
            },
            AddressSource::DirectPeer => match conn {
                Some(conn) => self.rules.with_current(|rules| rules.allows(conn.peer.ip())),
                None => false,
            },
        };
        if allowed {
            return Ok(());
        }
        self.refuse_in(conn, decisions)
    }

    /// The refusal for `ip`, if the current rules refuse it.
    #[inline]
    fn decide_ip(&self, ip: IpAddr) -> Result<(), IpRefusal> {
        self.rules.with_current(|rules| {
            // The allow path reads only the lookup table; the refusal names the rule, from the same snapshot.
            if rules.action(ip) == Action::Allow {
                return Ok(());
            }
            Err(IpRefusal::from_verdict(rules, ip, self.source, &rules.check(ip)))
        })
    }
}

/// Refuses requests whose address the [`IpRules`] refuse (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct IpFilterLayer {
    config: Arc<Config>,
}

impl IpFilterLayer {
    /// A filter enforcing `rules` (an [`IpRules`], or an [`IpRulesHandle`] to swap them while serving) on
    /// the resolved client address.
    pub fn new(rules: impl Into<IpRulesHandle>) -> Self {
        IpFilterLayer {
            config: Arc::new(Config {
                rules: rules.into(),
                source: AddressSource::Client,
                mode: Mode::Enforce,
                responder: Responder::default(),
            }),
        }
    }

    /// Decides on the direct peer of the socket rather than the resolved client.
    pub fn direct_peer(self) -> Self {
        self.source(AddressSource::DirectPeer)
    }

    /// Decides on `source`.
    pub fn source(mut self, source: AddressSource) -> Self {
        Arc::make_mut(&mut self.config).source = source;
        self
    }

    /// Shadow mode: would-be refusals are logged and recorded in [`Decisions::shadow`](portcullis_core::Decisions::shadow), requests go on.
    pub fn shadow(self) -> Self {
        self.mode(Mode::Shadow)
    }

    /// Enforce or shadow.
    pub fn mode(mut self, mode: Mode) -> Self {
        Arc::make_mut(&mut self.config).mode = mode;
        self
    }

    /// Replaces the refusal response (default: problem+json).
    pub fn responder(mut self, responder: Responder) -> Self {
        Arc::make_mut(&mut self.config).responder = responder;
        self
    }

    /// The rules handle: [`store`](IpRulesHandle::store) a new rule set on it to change what every service
    /// of this layer enforces.
    pub fn rules(&self) -> &IpRulesHandle {
        &self.config.rules
    }
}

impl<S> Layer<S> for IpFilterLayer {
    type Service = IpFilter<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IpFilter { inner, config: Arc::clone(&self.config) }
    }
}

/// The filter as a core [`Gate`], to run in one [`Gates`](portcullis_core::Gates) service with other
/// portcullis gates: the same decision, address source and mode; the refusal response is then the one of
/// the service running the gates (this layer's [`responder`](IpFilterLayer::responder) is not used).
impl IpFilterLayer {
    /// The filter's decision on a request's connection facts and decisions (the client address the
    /// client-address layer recorded, or the direct peer): allowed, refused, or in shadow mode refused and
    /// recorded in `decisions`.
    ///
    /// # Errors
    /// The refusal (403 naming the rule), or missing wiring.
    #[inline]
    pub fn decide(&self, conn: Option<&ConnInfo>, decisions: &mut Decisions) -> Result<(), Denial> {
        self.config.decide(conn, decisions)
    }
}

impl Gate for IpFilterLayer {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        self.config.check(head)
    }

    fn check_in(&self, head: &mut Parts, cx: &mut GateContext) -> Result<(), Denial> {
        self.config.check_in(head, cx)
    }

    // Never touches headers.
    fn preserves_headers(&self) -> bool {
        true
    }
}

/// The one decision path of the IP filter, used alone ([`IpFilter`]) and in a gate run.
impl Gate for Config {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        GateContext::run(self, head)
    }

    fn check_in(&self, _head: &mut Parts, cx: &mut GateContext) -> Result<(), Denial> {
        let (conn, decisions) = cx.conn_and_decisions_mut();
        self.decide(conn, decisions)
    }

    // Never touches headers.
    fn preserves_headers(&self) -> bool {
        true
    }
}

impl Config {
    /// Everything but the allow path: the typed refusal (from a fresh snapshot, which names the rule), or
    /// the shadow record.
    #[cold]
    fn refuse_in(&self, conn: Option<&ConnInfo>, decisions: &mut Decisions) -> Result<(), Denial> {
        match self.address_in(conn, decisions).and_then(|ip| self.decide_ip(ip)) {
            Ok(()) => Ok(()),
            Err(refusal @ (IpRefusal::NoClientAddr | IpRefusal::NoConnInfo)) => {
                tracing::error!("{refusal}");
                Err(refusal.to_denial())
            }
            Err(refusal) => match self.mode {
                Mode::Enforce => Err(refusal.to_denial()),
                Mode::Shadow => {
                    decisions.push_shadow(refusal.to_denial());
                    Ok(())
                }
            },
        }
    }
}

// === impl IpFilter ===

/// The service of [`IpFilterLayer`].
#[derive(Debug, Clone)]
pub struct IpFilter<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> IpFilter<S> {
    /// Wraps `inner`, enforcing `rules` on the resolved client address.
    pub fn new(inner: S, rules: impl Into<IpRulesHandle>) -> Self {
        IpFilterLayer::new(rules).layer(inner)
    }

    /// A layer: the same as [`IpFilterLayer::new`].
    pub fn layer(rules: impl Into<IpRulesHandle>) -> IpFilterLayer {
        IpFilterLayer::new(rules)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The rules handle.
    pub fn rules(&self) -> &IpRulesHandle {
        &self.config.rules
    }
}

impl<S, B, ResBody> Service<Request<B>> for IpFilter<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: portcullis_core::GateResponseBody,
{
    type Response = Response<<ResBody as portcullis_core::GateResponseBody>::Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        portcullis_core::call_gate(&*self.config, &self.config.responder, &mut self.inner, req)
    }
}

#[cfg(test)]
mod tests;
