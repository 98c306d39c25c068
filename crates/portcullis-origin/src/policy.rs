//! [`OriginPolicy`]: how a request's origin is decided, and [`OriginRefusal`], why it may be refused.

use std::net::IpAddr;
use std::sync::Arc;

use http::{Extensions, HeaderValue, StatusCode};
use portcullis_core::{ConnInfo, Decisions, Denial, LinkId, MatchedHost, Origin, PrivateVia};

use crate::connections::{ConnectionState, Connections, Registered, Targets};
use crate::networks::PrivateNetworks;

/// The denial layer name of the origin layer.
pub const ORIGIN_LAYER: &str = "origin";

/// What to do with a request whose PROXY header carries a link id no registered connection has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownLink {
    /// Refuse it with a 403 (`origin.unknown-link`). The default: fail closed.
    #[default]
    Refuse,
    /// Treat it as public: [`Origin::Public`], subject to the public-access layer.
    Public,
}

/// Why the origin layer refused a request: the typed reason attached to its [`Denial`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginRefusal {
    /// No connection info in the request: the server was not wired to provide it (500).
    #[error(
        "no connection info in the request extensions, so the private endpoint evidence cannot be read: serve \
         axum with `into_make_service_with_connect_info::<portcullis_core::ConnInfo>()` behind portcullis' \
         PROXY protocol listener, or wrap hyper services with `portcullis_core::ConnInfoLayer`"
    )]
    NoConnInfo,
    /// No resolved client address: the client-address layer is not in front of the origin layer (500).
    #[error(
        "no resolved client address in the request: add `portcullis_core::ResolveClientAddrLayer` in front of \
         `OriginLayer`"
    )]
    NoClientAddr,
    /// The link id is not a registered private endpoint connection (403, with [`UnknownLink::Refuse`]).
    #[error("the private link connection {0} is not a registered private endpoint connection")]
    UnknownLink(LinkId),
    /// The connection is registered but not approved (403).
    #[error("private endpoint connection '{name}' is {state}: only Approved connections are served")]
    NotApproved {
        /// The connection's name.
        name: Arc<str>,
        /// Its state (`Pending` or `Rejected`).
        state: ConnectionState,
    },
    /// The connection may reach only some endpoints, and no host decision says which endpoint the request is
    /// for (500: put the host layer in front of the origin layer, or give the connection `Targets::Any`).
    #[error(
        "private endpoint connection '{name}' may reach only {targets}, and no host router recorded the \
         request's endpoint: put the host layer in front of the origin layer, or target every endpoint"
    )]
    NoEndpoint {
        /// The connection's name.
        name: Arc<str>,
        /// The endpoints the connection targets.
        targets: String,
    },
    /// The connection is approved, but not for the endpoint the request is for (403).
    #[error(
        "private endpoint connection '{name}' may not reach endpoint '{endpoint}' (it targets {targets})"
    )]
    EndpointNotTargeted {
        /// The connection's name.
        name: Arc<str>,
        /// The endpoint the host router matched.
        endpoint: Arc<str>,
        /// The endpoints the connection targets.
        targets: String,
    },
}

impl OriginRefusal {
    /// Whether the refusal is a missing wiring (500) rather than a policy decision (403). Wiring refusals
    /// are never let through, not even in shadow mode.
    pub fn is_wiring(&self) -> bool {
        matches!(
            self,
            OriginRefusal::NoConnInfo | OriginRefusal::NoClientAddr | OriginRefusal::NoEndpoint { .. }
        )
    }

    /// The denial for this refusal.
    pub fn to_denial(&self) -> Denial {
        let (status, code) = match self {
            OriginRefusal::NoConnInfo => (StatusCode::INTERNAL_SERVER_ERROR, "origin.no-connection-info"),
            OriginRefusal::NoClientAddr => (StatusCode::INTERNAL_SERVER_ERROR, "origin.no-client-addr"),
            OriginRefusal::NoEndpoint { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "origin.no-endpoint"),
            OriginRefusal::UnknownLink(_) => (StatusCode::FORBIDDEN, "origin.unknown-link"),
            OriginRefusal::NotApproved { state: ConnectionState::Rejected, .. } => {
                (StatusCode::FORBIDDEN, "origin.connection-rejected")
            }
            OriginRefusal::NotApproved { .. } => (StatusCode::FORBIDDEN, "origin.connection-pending"),
            OriginRefusal::EndpointNotTargeted { .. } => {
                (StatusCode::FORBIDDEN, "origin.endpoint-not-targeted")
            }
        };
        let mut denial = Denial::new(ORIGIN_LAYER, code, status, self.to_string());
        denial = match self {
            OriginRefusal::UnknownLink(link) => {
                denial.with_rule("unknown link ids are refused").with_refused(link.to_string())
            }
            OriginRefusal::NotApproved { name, state } => {
                denial.with_rule(format!("connection '{name}' is {state}")).with_refused(name.to_string())
            }
            OriginRefusal::EndpointNotTargeted { name, targets, endpoint } => denial
                .with_rule(format!("connection '{name}' targets {targets}"))
                .with_refused(endpoint.to_string()),
            OriginRefusal::NoEndpoint { name, targets } => denial
                .with_rule(format!("connection '{name}' targets {targets}"))
                .with_refused(name.to_string()),
            OriginRefusal::NoConnInfo | OriginRefusal::NoClientAddr => denial,
        };
        denial.with_reason(self.clone())
    }
}

static PUBLIC_HEADER: HeaderValue = HeaderValue::from_static("public");

/// How a request's origin is decided: the private networks, the private endpoint connections, and what to
/// do with unknown link ids. Cheap to clone (shared).
///
/// The decision, in order:
/// 1. The connection info must be present ([`OriginRefusal::NoConnInfo`] otherwise) and the client address
///    resolved ([`OriginRefusal::NoClientAddr`]): a missing layer is never read as "public".
/// 2. A link id in the PROXY header (set only by portcullis' trusted PROXY reader) decides alone: an
///    approved connection targeting the request's endpoint is
///    [`PrivateVia::Connection`](portcullis_core::PrivateVia::Connection); pending, rejected,
///    not-targeted and (by default) unknown ones are refused.
/// 3. Otherwise the client address is looked up in the private networks:
///    [`PrivateVia::Network`](portcullis_core::PrivateVia::Network) or [`Origin::Public`].
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    networks: PrivateNetworks,
    connections: Connections,
    unknown_link: UnknownLink,
}

/// An origin and the header value that announces it.
pub(crate) struct Tag<'a> {
    pub(crate) origin: Origin,
    pub(crate) header: &'a HeaderValue,
}

impl OriginPolicy {
    /// A policy over `networks` and `connections`, refusing unknown link ids.
    pub fn new(networks: PrivateNetworks, connections: Connections) -> Self {
        OriginPolicy { networks, connections, unknown_link: UnknownLink::Refuse }
    }

    /// What to do with link ids no connection has (default [`UnknownLink::Refuse`]).
    pub fn unknown_link(mut self, unknown: UnknownLink) -> Self {
        self.unknown_link = unknown;
        self
    }

    /// The private networks.
    pub fn networks(&self) -> &PrivateNetworks {
        &self.networks
    }

    /// The private endpoint connections.
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Whether some private path exists: a private network, or an approved connection.
    pub fn has_private_path(&self) -> bool {
        !self.networks.is_empty() || self.connections.any_approved()
    }

    /// Decides the origin of a request from its extensions (connection info, and the
    /// [`Decisions`] of the client-address rule and, when it ran, the host rule).
    ///
    /// # Errors
    /// An [`OriginRefusal`] when the request must be refused.
    pub fn decide(&self, ext: &Extensions) -> Result<Origin, OriginRefusal> {
        self.tag(ext).map(|tag| tag.origin)
    }

    /// The origin of a request and the header value announcing it.
    pub(crate) fn tag(&self, ext: &Extensions) -> Result<Tag<'_>, OriginRefusal> {
        let conn = ConnInfo::lookup(ext).ok_or(OriginRefusal::NoConnInfo)?;
        let decisions = Decisions::get(ext);
        let client = decisions.and_then(|d| d.client.as_ref()).ok_or(OriginRefusal::NoClientAddr)?;
        match conn.proxy.as_ref().and_then(|p| p.link_id.as_ref()) {
            None => Ok(self.by_address(client.ip)),
            Some(link) => match self.connections.lookup(link) {
                Some(reg) => self.registered(reg, decisions.and_then(|d| d.host.as_ref())),
                None => self.unknown(link.clone()),
            },
        }
    }

    /// No link id: the client address decides, private via the most specific network or public.
    #[inline]
    fn by_address(&self, client: IpAddr) -> Tag<'_> {
        match self.networks.lookup(client) {
            // The network's origin, built here rather than cloned (the same value: one reference count).
            Some(net) => {
                Tag { origin: Origin::Private(PrivateVia::Network(net.name.clone())), header: &net.header }
            }
            None => Tag { origin: Origin::Public, header: &PUBLIC_HEADER },
        }
    }

    /// A registered connection: approved and targeting the request's endpoint, or refused.
    fn registered<'a>(
        &'a self,
        reg: &'a Registered,
        host: Option<&MatchedHost>,
    ) -> Result<Tag<'a>, OriginRefusal> {
        let c = &reg.connection;
        if c.state() != ConnectionState::Approved {
            return Err(OriginRefusal::NotApproved { name: c.name_arc().clone(), state: c.state() });
        }
        match (host, c.targets()) {
            (_, Targets::Any) => {}
            (Some(host), targets) if targets.allows(&host.endpoint) => {}
            (Some(host), targets) => {
                return Err(OriginRefusal::EndpointNotTargeted {
                    name: c.name_arc().clone(),
                    endpoint: host.endpoint.clone(),
                    targets: targets.to_string(),
                });
            }
            // Limited to some endpoints, and nothing said which endpoint this is: fail closed.
            (None, targets) => {
                return Err(OriginRefusal::NoEndpoint {
                    name: c.name_arc().clone(),
                    targets: targets.to_string(),
                });
            }
        }
        Ok(Tag { origin: reg.origin.clone(), header: &reg.header })
    }

    /// A link id no connection has.
    fn unknown(&self, link: LinkId) -> Result<Tag<'_>, OriginRefusal> {
        match self.unknown_link {
            UnknownLink::Refuse => Err(OriginRefusal::UnknownLink(link)),
            UnknownLink::Public => Ok(Tag { origin: Origin::Public, header: &PUBLIC_HEADER }),
        }
    }
}
