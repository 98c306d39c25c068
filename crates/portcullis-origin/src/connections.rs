//! Private endpoint connections: the registry of private links allowed to reach the service.
//!
//! A private endpoint connection joins a consumer's private endpoint to this service. Behind a private
//! link the only evidence of which connection a request came over is the link id the cloud load balancer
//! writes into its PROXY protocol v2 header ([`LinkId`]: Azure's LinkID, AWS's VPC endpoint id, GCP's PSC
//! connection id), which portcullis' PROXY reader puts into
//! [`ConnInfo::proxy`](portcullis_core::ConnInfo). The registry maps that id to a [`Connection`]:
//!
//! - its [`ConnectionState`]: only `Approved` connections are served, `Pending` (waiting for the resource
//!   owner, the state a new connection starts in) and `Rejected` ones are refused with a 403 naming the
//!   connection and its state;
//! - its [`Targets`]: which endpoints it may reach. As in Azure, a private endpoint reaches only the gateway
//!   endpoint unless told otherwise;
//! - its group id (the target sub-resource, `Gateway` by default), shown to handlers.
//!
//! At most [`DEFAULT_MAX_CONNECTIONS`] (100, Azure's limit per instance) are accepted unless configured;
//! a duplicate name or link id is a build error. Lookups borrow the request's link id and allocate nothing.
//!
//! ```
//! use portcullis_core::LinkId;
//! use portcullis_origin::{Connection, ConnectionState, Connections, Targets};
//!
//! let connections = Connections::builder()
//!     .connection(Connection::approved("pe-contoso", LinkId::Azure(0x2200_0011)))
//!     .connection(Connection::pending("pe-fabrikam", LinkId::Aws("vpce-0123456789abcdef0".into())))
//!     .connection(Connection::approved("psc-ops", LinkId::Gcp(42)).with_targets(Targets::endpoints(["gateway", "management"])))
//!     .build()?;
//! let pe = connections.get(&LinkId::Azure(0x2200_0011)).unwrap();
//! assert_eq!((pe.name(), pe.state()), ("pe-contoso", ConnectionState::Approved));
//! assert!(pe.targets().allows("gateway") && !pe.targets().allows("management"));
//!
//! // The same link id twice is a configuration error.
//! let err = Connections::builder()
//!     .connection(Connection::approved("a", LinkId::Gcp(1)))
//!     .connection(Connection::approved("b", LinkId::Gcp(1)))
//!     .build()
//!     .unwrap_err();
//! assert!(err.to_string().contains("same link id gcp:1"));
//! # Ok::<(), portcullis_origin::ConfigError>(())
//! ```

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::Arc;

use http::HeaderValue;
use portcullis_core::{LinkId, Origin, PrivateEndpoint, PrivateVia};

use crate::error::{ConfigError, check_name};

/// The most private endpoint connections a registry accepts unless configured otherwise (Azure's limit per
/// API Management instance).
pub const DEFAULT_MAX_CONNECTIONS: usize = 100;

/// The group id (target sub-resource) of a connection unless set: `Gateway`, as in Azure API Management.
pub const DEFAULT_GROUP_ID: &str = "Gateway";

/// The endpoint a connection reaches unless set: `gateway`.
pub const DEFAULT_TARGET: &str = "gateway";

/// The approval state of a private endpoint connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Waiting for the resource owner's approval: refused.
    Pending,
    /// Approved: requests over it are private.
    Approved,
    /// Rejected by the resource owner: refused.
    Rejected,
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectionState::Pending => "Pending",
            ConnectionState::Approved => "Approved",
            ConnectionState::Rejected => "Rejected",
        })
    }
}

/// Which endpoints (as named by the host router, [`MatchedHost::endpoint`](portcullis_core::MatchedHost))
/// a private endpoint connection may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Only these endpoints (names compared exactly).
    Endpoints(Arc<[Arc<str>]>),
    /// Every endpoint. Use it for a service without host routing, or deliberately.
    Any,
}

impl Targets {
    /// Only the gateway endpoint ([`DEFAULT_TARGET`]): the default, as in Azure.
    pub fn gateway() -> Self {
        Targets::Endpoints(Arc::from([Arc::from(DEFAULT_TARGET)]))
    }

    /// Only the named endpoints.
    pub fn endpoints<I, N>(names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<Arc<str>>,
    {
        Targets::Endpoints(names.into_iter().map(Into::into).collect())
    }

    /// Whether a request for `endpoint` may go through.
    pub fn allows(&self, endpoint: &str) -> bool {
        match self {
            Targets::Endpoints(names) => names.iter().any(|n| &**n == endpoint),
            Targets::Any => true,
        }
    }
}

impl Default for Targets {
    fn default() -> Self {
        Targets::gateway()
    }
}

impl fmt::Display for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Targets::Any => f.write_str("any endpoint"),
            Targets::Endpoints(names) => {
                for (i, n) in names.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(n)?;
                }
                Ok(())
            }
        }
    }
}

// === impl Connection ===

/// One private endpoint connection: its name, link id, state, targets and group id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    name: Arc<str>,
    link_id: LinkId,
    state: ConnectionState,
    targets: Targets,
    group_id: Arc<str>,
}

impl Connection {
    /// A connection in `state`, reaching the gateway endpoint, with group id `Gateway`.
    pub fn new(name: impl Into<Arc<str>>, link_id: LinkId, state: ConnectionState) -> Self {
        Connection {
            name: name.into(),
            link_id,
            state,
            targets: Targets::default(),
            group_id: Arc::from(DEFAULT_GROUP_ID),
        }
    }

    /// An approved connection: requests over it are private.
    pub fn approved(name: impl Into<Arc<str>>, link_id: LinkId) -> Self {
        Connection::new(name, link_id, ConnectionState::Approved)
    }

    /// A connection waiting for approval: requests over it are refused.
    pub fn pending(name: impl Into<Arc<str>>, link_id: LinkId) -> Self {
        Connection::new(name, link_id, ConnectionState::Pending)
    }

    /// A rejected connection: requests over it are refused.
    pub fn rejected(name: impl Into<Arc<str>>, link_id: LinkId) -> Self {
        Connection::new(name, link_id, ConnectionState::Rejected)
    }

    /// Sets the state.
    pub fn with_state(mut self, state: ConnectionState) -> Self {
        self.state = state;
        self
    }

    /// Sets which endpoints the connection may reach (default: [`Targets::gateway`]).
    pub fn with_targets(mut self, targets: Targets) -> Self {
        self.targets = targets;
        self
    }

    /// Sets the group id shown to handlers (default [`DEFAULT_GROUP_ID`]).
    pub fn with_group_id(mut self, group_id: impl Into<Arc<str>>) -> Self {
        self.group_id = group_id.into();
        self
    }

    /// The connection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// The link id the load balancer sends for it.
    pub fn link_id(&self) -> &LinkId {
        &self.link_id
    }

    /// Its approval state.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// The endpoints it may reach.
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// Its group id.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    fn check(&self) -> Result<(), ConfigError> {
        check_name("connection name", &self.name)?;
        check_name("group id", &self.group_id)?;
        match &self.targets {
            Targets::Endpoints(names) if names.is_empty() => {
                Err(ConfigError::NoTargets(self.name.to_string()))
            }
            Targets::Endpoints(names) => names.iter().try_for_each(|n| check_name("endpoint name", n)),
            Targets::Any => Ok(()),
        }
    }
}

/// A registered connection, with what the origin layer hands out for it built once.
#[derive(Debug)]
pub(crate) struct Registered {
    pub(crate) connection: Connection,
    /// `Origin::Private(PrivateVia::Connection(..))`, cloned per request (reference counts only).
    pub(crate) origin: Origin,
    /// The value of the origin header for the upstream.
    pub(crate) header: HeaderValue,
}

// === impl Connections ===

/// The hasher of the link-id map: a multiply-rotate hash, several times cheaper than SipHash on a `u32`.
/// The map is built once from configuration and only read afterwards, and its keys come from trusted load
/// balancers, so there is no insertion for a flooding attack to slow down.
#[derive(Debug, Clone, Copy, Default)]
struct BuildLinkHasher;

impl std::hash::BuildHasher for BuildLinkHasher {
    type Hasher = LinkHasher;

    fn build_hasher(&self) -> LinkHasher {
        LinkHasher(0)
    }
}

struct LinkHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl LinkHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl std::hash::Hasher for LinkHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(tail));
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_isize(&mut self, i: isize) {
        self.add(i as u64);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The registry of private endpoint connections, keyed by link id. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Connections {
    by_link: Arc<HashMap<LinkId, Arc<Registered>, BuildLinkHasher>>,
    /// Configuration order, for listing.
    order: Arc<[Arc<Registered>]>,
}

impl Connections {
    /// A builder with the default maximum of [`DEFAULT_MAX_CONNECTIONS`].
    pub fn builder() -> ConnectionsBuilder {
        ConnectionsBuilder { max: DEFAULT_MAX_CONNECTIONS, connections: Vec::new() }
    }

    /// No connection at all.
    pub fn none() -> Self {
        Connections::default()
    }

    /// The connection registered for `link_id`, if any.
    #[inline]
    pub fn get(&self, link_id: &LinkId) -> Option<&Connection> {
        self.by_link.get(link_id).map(|r| &r.connection)
    }

    #[inline]
    pub(crate) fn lookup(&self, link_id: &LinkId) -> Option<&Registered> {
        self.by_link.get(link_id).map(|r| &**r)
    }

    /// The connection called `name`, if any.
    pub fn by_name(&self, name: &str) -> Option<&Connection> {
        self.order.iter().map(|r| &r.connection).find(|c| c.name() == name)
    }

    /// The connections, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Connection> {
        self.order.iter().map(|r| &r.connection)
    }

    /// How many connections are registered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Whether at least one connection is approved (a private path exists).
    pub fn any_approved(&self) -> bool {
        self.iter().any(|c| c.state() == ConnectionState::Approved)
    }
}

impl fmt::Debug for Connections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Collects connections for a [`Connections`] registry.
#[derive(Debug, Clone)]
pub struct ConnectionsBuilder {
    max: usize,
    connections: Vec<Connection>,
}

impl ConnectionsBuilder {
    /// The most connections accepted (default [`DEFAULT_MAX_CONNECTIONS`]).
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// Adds a connection.
    pub fn connection(mut self, connection: Connection) -> Self {
        self.connections.push(connection);
        self
    }

    /// Adds connections.
    pub fn extend(mut self, connections: impl IntoIterator<Item = Connection>) -> Self {
        self.connections.extend(connections);
        self
    }

    /// Builds the registry.
    ///
    /// # Errors
    /// [`ConfigError::TooManyConnections`] past the maximum, [`ConfigError::DuplicateConnectionName`] and
    /// [`ConfigError::DuplicateLinkId`] for duplicates, [`ConfigError::InvalidName`] and
    /// [`ConfigError::NoTargets`] for a malformed connection.
    pub fn build(self) -> Result<Connections, ConfigError> {
        if self.connections.len() > self.max {
            return Err(ConfigError::TooManyConnections { count: self.connections.len(), max: self.max });
        }
        let mut by_link: HashMap<LinkId, Arc<Registered>, BuildLinkHasher> =
            HashMap::with_capacity_and_hasher(self.connections.len(), BuildLinkHasher);
        let mut names: HashMap<Arc<str>, ()> = HashMap::with_capacity(self.connections.len());
        let mut order = Vec::with_capacity(self.connections.len());
        for connection in self.connections {
            connection.check()?;
            if names.insert(connection.name.clone(), ()).is_some() {
                return Err(ConfigError::DuplicateConnectionName(connection.name.to_string()));
            }
            let endpoint = Arc::new(PrivateEndpoint {
                name: connection.name.clone(),
                group_id: connection.group_id.clone(),
                link_id: connection.link_id.clone(),
            });
            let header = format!("private; connection={}; group-id={}", connection.name, connection.group_id);
            let registered = Arc::new(Registered {
                origin: Origin::Private(PrivateVia::Connection(endpoint)),
                header: HeaderValue::try_from(header).map_err(|_| ConfigError::InvalidName {
                    what: "connection name",
                    name: connection.name.to_string(),
                })?,
                connection,
            });
            match by_link.entry(registered.connection.link_id.clone()) {
                Entry::Occupied(first) => {
                    return Err(ConfigError::DuplicateLinkId {
                        link_id: registered.connection.link_id.clone(),
                        first: first.get().connection.name.to_string(),
                        second: registered.connection.name.to_string(),
                    });
                }
                Entry::Vacant(slot) => {
                    slot.insert(registered.clone());
                }
            }
            order.push(registered);
        }
        Ok(Connections { by_link: Arc::new(by_link), order: order.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_every_vendor_id() {
        let c = Connections::builder()
            .connection(Connection::approved("az", LinkId::Azure(7)))
            .connection(Connection::rejected("aws", LinkId::Aws("vpce-1".into())))
            .connection(Connection::pending("gcp", LinkId::Gcp(u64::MAX)))
            .build()
            .unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&LinkId::Azure(7)).map(Connection::name), Some("az"));
        assert_eq!(
            c.get(&LinkId::Aws("vpce-1".into())).map(Connection::state),
            Some(ConnectionState::Rejected)
        );
        assert_eq!(c.get(&LinkId::Gcp(u64::MAX)).map(Connection::state), Some(ConnectionState::Pending));
        // Same number, other vendor: not the same link.
        assert!(c.get(&LinkId::Gcp(7)).is_none());
        assert!(c.get(&LinkId::Aws("VPCE-1".into())).is_none());
        assert_eq!(c.by_name("aws").map(|c| c.link_id().clone()), Some(LinkId::Aws("vpce-1".into())));
        assert!(c.any_approved());
        assert_eq!(c.iter().map(Connection::name).collect::<Vec<_>>(), ["az", "aws", "gcp"]);
    }

    #[test]
    fn defaults_as_in_azure() {
        let c = Connection::approved("pe", LinkId::Azure(1));
        assert_eq!(c.group_id(), "Gateway");
        assert_eq!(c.targets(), &Targets::gateway());
        assert!(c.targets().allows("gateway"));
        for other in ["portal", "management", "scm", "Gateway", ""] {
            assert!(!c.targets().allows(other), "{other}");
        }
        assert!(Targets::Any.allows("scm"));
    }

    #[test]
    fn maximum_is_100_by_default_and_configurable() {
        let many = |n: u32| (0..n).map(|i| Connection::approved(format!("pe-{i}"), LinkId::Azure(i)));
        assert_eq!(Connections::builder().extend(many(100)).build().unwrap().len(), 100);
        assert_eq!(
            Connections::builder().extend(many(101)).build().unwrap_err(),
            ConfigError::TooManyConnections { count: 101, max: 100 }
        );
        assert_eq!(Connections::builder().max(200).extend(many(101)).build().unwrap().len(), 101);
        assert!(Connections::builder().max(2).extend(many(3)).build().is_err());
    }

    #[test]
    fn duplicates_and_bad_names_are_errors() {
        let err = Connections::builder()
            .connection(Connection::approved("pe", LinkId::Azure(1)))
            .connection(Connection::rejected("pe", LinkId::Azure(2)))
            .build()
            .unwrap_err();
        assert_eq!(err, ConfigError::DuplicateConnectionName("pe".into()));
        let err = Connections::builder()
            .connection(Connection::approved("a", LinkId::Aws("vpce-x".into())))
            .connection(Connection::pending("b", LinkId::Aws("vpce-x".into())))
            .build()
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::DuplicateLinkId { ref first, ref second, .. } if first == "a" && second == "b")
        );
        for bad in [
            Connection::approved("bad name", LinkId::Azure(1)),
            Connection::approved("pe", LinkId::Azure(1)).with_group_id("a;b"),
            Connection::approved("pe", LinkId::Azure(1)).with_targets(Targets::endpoints(["x y"])),
        ] {
            assert!(matches!(
                Connections::builder().connection(bad).build(),
                Err(ConfigError::InvalidName { .. })
            ));
        }
        let none: [&str; 0] = [];
        let err = Connections::builder()
            .connection(Connection::approved("pe", LinkId::Azure(1)).with_targets(Targets::endpoints(none)))
            .build()
            .unwrap_err();
        assert_eq!(err, ConfigError::NoTargets("pe".into()));
    }

    #[test]
    fn prebuilt_origin_and_header() {
        let c = Connections::builder()
            .connection(Connection::approved("pe-1", LinkId::Azure(9)).with_group_id("gw"))
            .build()
            .unwrap();
        let r = c.lookup(&LinkId::Azure(9)).unwrap();
        let pe = r.origin.private_endpoint().unwrap();
        assert_eq!((&*pe.name, &*pe.group_id, &pe.link_id), ("pe-1", "gw", &LinkId::Azure(9)));
        assert_eq!(r.header, "private; connection=pe-1; group-id=gw");
    }
}
