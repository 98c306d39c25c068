//! Private-vs-public origin of a request.

use std::sync::Arc;

use crate::proxy::LinkId;

/// Whether a request came through a private path or from the public internet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The request came through a private path.
    Private(PrivateVia),
    /// The request came from the public internet.
    Public,
}

/// The private path a request came through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrivateVia {
    /// A configured private network (virtual network, peered network, on-premises range), by name.
    Network(Arc<str>),
    /// An approved private endpoint connection.
    Connection(Arc<PrivateEndpoint>),
}

/// An approved private endpoint connection, as handlers see it (Azure's `PrivateEndpointConnection`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateEndpoint {
    /// The connection's name.
    pub name: Arc<str>,
    /// The group id (target sub-resource), `Gateway` by default as in Azure.
    pub group_id: Arc<str>,
    /// The link id the load balancer sent.
    pub link_id: LinkId,
}

impl Origin {
    /// True for [`Origin::Private`].
    pub fn is_private(&self) -> bool {
        matches!(self, Origin::Private(_))
    }

    /// The private endpoint connection, when the request came through one (None otherwise, as in Azure).
    pub fn private_endpoint(&self) -> Option<&Arc<PrivateEndpoint>> {
        match self {
            Origin::Private(PrivateVia::Connection(c)) => Some(c),
            _ => None,
        }
    }

    /// The private network's name, when the request came from one.
    pub fn network(&self) -> Option<&str> {
        match self {
            Origin::Private(PrivateVia::Network(n)) => Some(n),
            _ => None,
        }
    }
}

/// `public`, `private network <name>` or `private endpoint connection <name> (<group id>)`.
///
/// ```
/// use portcullis_core::{Origin, PrivateVia};
/// let origin = Origin::Private(PrivateVia::Network("corp-vnet".into()));
/// assert_eq!(origin.to_string(), "private network corp-vnet");
/// assert_eq!(origin.network(), Some("corp-vnet"));
/// assert_eq!(Origin::Public.to_string(), "public");
/// ```
impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Public => f.write_str("public"),
            Origin::Private(PrivateVia::Network(n)) => write!(f, "private network {n}"),
            Origin::Private(PrivateVia::Connection(c)) => {
                write!(f, "private endpoint connection {} ({})", c.name, c.group_id)
            }
        }
    }
}
