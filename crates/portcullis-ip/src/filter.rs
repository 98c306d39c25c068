//! [`IpFilterLayer`]: refuse requests by source address, after the client address is resolved.
//!
//! The filter decides on one address per request:
//! - by default the resolved client, [`ClientAddr`](portcullis_core::ClientAddr) in the request's
//!   [`Decisions`], which [`ResolveClientAddrLayer`](portcullis_core::ResolveClientAddrLayer) puts there (the socket peer,
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
//! use portcullis_core::{ClientAddrConfig, ResolveClientAddrLayer, ConnInfo, Denial};
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
//!     .layer(ResolveClientAddrLayer::new(ClientAddrConfig::new())) // who is calling: here, the peer
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

use http::StatusCode;
use http::request::Parts;
use portcullis_core::{ConnInfo, Decisions, Denial, Gate, GateLayer, IpAllowed, Responder, Rule, fold_ip};
use tower_layer::Layer;

use crate::handle::IpRulesHandle;
use crate::rules::{Action, IpRules, Verdict};

/// Which address of a request the filter decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AddressSource {
    /// The resolved client address ([`Decisions::client`](portcullis_core::Decisions::client)), set by
    /// [`ResolveClientAddrLayer`](portcullis_core::ResolveClientAddrLayer). The default.
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
        "no resolved client address in the request: install `portcullis_core::ResolveClientAddrLayer` outside \
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

/// The rule of [`IpFilterLayer`]: the address it checks, the rule set, and whether it refuses or only
/// records ([`Mode`]).
#[derive(Debug, Clone)]
pub struct IpRule {
    rules: IpRulesHandle,
    source: AddressSource,
    mode: Mode,
}

impl IpRule {
    /// A rule refusing what `rules` deny, checking the resolved client address.
    pub fn new(rules: impl Into<IpRulesHandle>) -> Self {
        IpRule { rules: rules.into(), source: AddressSource::Client, mode: Mode::Enforce }
    }

    /// Which address the rule checks.
    pub fn source(mut self, source: AddressSource) -> Self {
        self.source = source;
        self
    }

    /// Whether the rule refuses or only records.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The rule set.
    pub fn rules(&self) -> &IpRulesHandle {
        &self.rules
    }

    /// The address to check: the resolved client, or the direct peer.
    fn address(&self, head: &Parts) -> Result<IpAddr, IpRefusal> {
        match self.source {
            AddressSource::Client => {
                Decisions::client_of(&head.extensions).map(|c| fold_ip(c.ip)).ok_or(IpRefusal::NoClientAddr)
            }
            AddressSource::DirectPeer => ConnInfo::lookup(&head.extensions)
                .map(|conn| fold_ip(conn.peer.ip()))
                .ok_or(IpRefusal::NoConnInfo),
        }
    }
}

impl Rule for IpRule {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        let ip = match self.address(head) {
            Ok(ip) => ip,
            Err(refusal) => return Err(wiring(refusal)),
        };
        let rules = self.rules.load();
        let verdict = rules.check(ip);
        if verdict.action == Action::Allow {
            let allowed = IpAllowed { ip, rules: rules.name_arc(), rule: rules.label(&verdict) };
            Decisions::get_mut(&mut head.extensions).ip.push(allowed);
            return Ok(());
        }
        let refusal = IpRefusal::from_verdict(&rules, ip, self.source, &verdict);
        match self.mode {
            Mode::Enforce => Err(refusal.to_denial()),
            Mode::Shadow => {
                Decisions::record_shadow(&mut head.extensions, refusal.to_denial());
                Ok(())
            }
        }
    }
}

/// A wiring error (no client address, no connection facts): refused in shadow mode too, since a dry run
/// that cannot see the address proves nothing.
#[cold]
fn wiring(refusal: IpRefusal) -> Denial {
    tracing::error!("{refusal}");
    refusal.to_denial()
}

// === impl IpFilterLayer ===

/// Refuses requests whose address the rules deny. See the [module docs](self).
///
/// Clones share the rules (an [`IpRulesHandle`]): storing a new set through
/// [`rules`](IpFilterLayer::rules) changes every service built from this layer.
#[derive(Debug, Clone)]
pub struct IpFilterLayer(GateLayer<IpRule>);

impl IpFilterLayer {
    /// A filter on the resolved client address, enforcing `rules` (an [`IpRules`] or a shared
    /// [`IpRulesHandle`]).
    pub fn new(rules: impl Into<IpRulesHandle>) -> Self {
        IpFilterLayer(GateLayer::new(IpRule::new(rules)))
    }

    /// Checks the socket peer instead of the resolved client address.
    pub fn direct_peer(self) -> Self {
        self.source(AddressSource::DirectPeer)
    }

    /// Which address the filter checks.
    pub fn source(mut self, source: AddressSource) -> Self {
        self.0.rule_mut().source = source;
        self
    }

    /// Shadow mode: record and log would-be refusals, let the requests through.
    pub fn shadow(self) -> Self {
        self.mode(Mode::Shadow)
    }

    /// Enforce or shadow.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.0.rule_mut().mode = mode;
        self
    }

    /// Replaces the refusal response (default: problem+json, gRPC status for gRPC calls).
    pub fn responder(self, responder: Responder) -> Self {
        IpFilterLayer(self.0.responder(responder))
    }

    /// The live rules (store a new set to change every service built from this layer).
    pub fn rules(&self) -> &IpRulesHandle {
        &self.0.rule().rules
    }

    /// The rule this layer enforces.
    pub fn rule(&self) -> &Arc<IpRule> {
        self.0.rule()
    }
}

impl<S> Layer<S> for IpFilterLayer {
    type Service = IpFilter<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.0.layer(inner)
    }
}

/// The service of [`IpFilterLayer`].
pub type IpFilter<S> = Gate<S, IpRule>;

#[cfg(test)]
mod tests;
