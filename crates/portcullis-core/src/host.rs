//! The host-name routing decision shared with later layers and handlers.

use std::sync::Arc;

/// The host pattern and endpoint a request was routed to by the host router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedHost {
    /// The normalised host name of the request (lower-case, A-labels, no port, no trailing dot).
    pub host: Arc<str>,
    /// The configured pattern that matched (`api.contoso.com`, `*.contoso.com`).
    pub pattern: Arc<str>,
    /// The endpoint the pattern belongs to (`gateway`, `portal`, `management`, `scm`, or a name of yours).
    pub endpoint: Arc<str>,
    /// The endpoint's position in the host table that matched it (its id within that configuration).
    pub endpoint_id: usize,
}
