//! The client-address layer: who is calling, resolved so that it cannot be spoofed.
//!
//! Rules, in order:
//! 1. The starting point is the direct peer of the connection, or the source of a PROXY protocol header
//!    (portcullis' PROXY listener only accepts those from trusted load balancers). No connection info at
//!    all fails closed with a 500 that says how to wire it.
//! 2. Forwarded information is read only when that peer is a trusted proxy, and only from the one header
//!    the deployment configured ([`ForwardedSource`]): `X-Forwarded-For`, RFC 7239 `Forwarded`, or none.
//! 3. The header (all its lines, joined in order) is walked right to left. With [`TrustedHops::SkipTrusted`]
//!    trusted addresses are skipped and the first untrusted one is the client; when every hop is trusted,
//!    the leftmost is. With [`TrustedHops::Fixed`] the n-th entry from the right is the client.
//! 4. An entry that is not an address (garbage, `unknown`, `_obfuscated`, a zone id) or a walk longer than
//!    the configured cap ends the walk with a 400 naming the reason: a request is never attributed to a
//!    proxy or to an arbitrary entry.
//! 5. IPv4-mapped IPv6 addresses are folded to IPv4 everywhere.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use portcullis_core::{ClientAddrConfig, ResolveClientAddrLayer, ConnInfo, Decisions, ForwardedSource};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClientAddrConfig::new()
//!     .trusted_proxies(["10.0.0.0/8".parse()?])?
//!     .source(ForwardedSource::XForwardedFor);
//! let svc = ServiceBuilder::new().layer(ResolveClientAddrLayer::new(config)).service(service_fn(
//!     |req: Request<()>| async move {
//!         let client = Decisions::client_of(req.extensions()).unwrap();
//!         Ok::<_, Infallible>(Response::new(client.ip.to_string()))
//!     },
//! ));
//!
//! // From a trusted proxy: the rightmost untrusted entry is the client.
//! let mut req = Request::builder().header("x-forwarded-for", "198.51.100.7, 10.1.1.1").body(())?;
//! req.extensions_mut().insert(ConnInfo::new("10.0.0.2:4000".parse()?, None));
//! let res = svc.clone().oneshot(req).await?;
//! assert_eq!(res.status(), StatusCode::OK);
//!
//! // Garbage in the walk: refused with a 400, never attributed to anyone.
//! let mut req = Request::builder().header("x-forwarded-for", "1.2.3.4, nonsense").body(())?;
//! req.extensions_mut().insert(ConnInfo::new("10.0.0.2:4000".parse()?, None));
//! assert_eq!(svc.clone().oneshot(req).await?.status(), StatusCode::BAD_REQUEST);
//!
//! // No connection info wired: 500, never allowed.
//! let req = Request::builder().body(())?;
//! assert_eq!(svc.oneshot(req).await?.status(), StatusCode::INTERNAL_SERVER_ERROR);
//! # Ok(()) }
//! ```

use std::net::IpAddr;
use std::sync::Arc;

use http::{Extensions, HeaderMap, HeaderValue, StatusCode, header::HeaderName};
use tower_layer::Layer;

use crate::client::addr::{ClientAddr, ForwardedHeader, LearntVia, fold_ip};
use crate::client::forwarded::{EntryError, SyntaxError, parse_node, parse_xff_bytes, scan_forwarded};
use crate::conn::ConnInfo;
use crate::denial::{Denial, Responder};
use crate::iptable::{IpRange, IpTable, IpTableError};
use crate::rule::{Gate, GateLayer};

/// `X-Forwarded-For`, built at compile time (`HeaderName::from_static` at run time validates every byte).
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The largest walk the layer accepts ([`ClientAddrConfig::max_entries`] is clamped to it).
pub const MAX_ENTRIES_LIMIT: usize = 64;
const DEFAULT_MAX_ENTRIES: usize = 20;

/// Which forwarded header the deployment's trusted proxies set. One per deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedSource {
    /// No forwarded header is read: the client is the peer (or the PROXY source).
    #[default]
    None,
    /// `X-Forwarded-For`.
    XForwardedFor,
    /// RFC 7239 `Forwarded`, its `for=` parameters.
    Forwarded,
}

/// How the walk over the forwarded header picks the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrustedHops {
    /// Skip entries that are trusted proxies; the first untrusted entry from the right is the client.
    #[default]
    SkipTrusted,
    /// The n-th entry from the right is the client (Envoy's `xff_num_trusted_hops`; n ≥ 1). Still read only
    /// when the peer is a trusted proxy.
    Fixed(u16),
}

/// Why a client address could not be resolved: the typed reason of the layer's denials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No connection info in the request: the server was not wired to provide it.
    #[error(
        "no connection info in the request extensions: serve axum with \
         `into_make_service_with_connect_info::<portcullis_core::ConnInfo>()` (or `::<SocketAddr>()`), \
         wrap hyper services with `portcullis_core::ConnInfoLayer`, or use tonic's transport server"
    )]
    NoConnInfo,
    /// An entry of the walk is not an address.
    #[error("{header} entry {position} from the right is not usable: {error}")]
    BadEntry {
        /// The header.
        header: &'static str,
        /// 1 for the rightmost entry.
        position: usize,
        /// Why.
        error: EntryError,
    },
    /// A `Forwarded` header line breaks RFC 7239's grammar.
    #[error("malformed forwarded header: {0}")]
    Syntax(SyntaxError),
    /// A header line holds bytes that are not visible ASCII.
    #[error("{0} holds non-ASCII bytes")]
    NotAscii(&'static str),
    /// A `Forwarded` element names `for=` twice (RFC 7239 §4 forbids repeated parameters).
    #[error("a Forwarded element names for= more than once")]
    DuplicateFor,
    /// The walk went past the configured cap.
    #[error("{header} walk is longer than the limit of {cap} entries")]
    TooManyEntries {
        /// The header.
        header: &'static str,
        /// The configured cap.
        cap: usize,
    },
    /// Fixed-hop mode, and the header has fewer entries than the trusted hops.
    #[error("{header} has {found} entries, fewer than the {expected} trusted hops configured")]
    NotEnoughHops {
        /// The header.
        header: &'static str,
        /// Configured hops.
        expected: u16,
        /// Entries found.
        found: usize,
    },
}

impl ResolveError {
    /// The denial for this error: 500 for missing wiring, 400 otherwise.
    pub fn to_denial(&self) -> Denial {
        let (status, code) = match self {
            ResolveError::NoConnInfo => (StatusCode::INTERNAL_SERVER_ERROR, "client-addr.no-connection-info"),
            ResolveError::BadEntry { error: EntryError::Unknown | EntryError::Obfuscated, .. } => {
                (StatusCode::BAD_REQUEST, "client-addr.obfuscated-entry")
            }
            ResolveError::BadEntry { .. } => (StatusCode::BAD_REQUEST, "client-addr.bad-entry"),
            ResolveError::Syntax(_) | ResolveError::NotAscii(_) | ResolveError::DuplicateFor => {
                (StatusCode::BAD_REQUEST, "client-addr.malformed-header")
            }
            ResolveError::TooManyEntries { .. } => (StatusCode::BAD_REQUEST, "client-addr.too-many-entries"),
            ResolveError::NotEnoughHops { .. } => (StatusCode::BAD_REQUEST, "client-addr.not-enough-hops"),
        };
        Denial::new("client-addr", code, status, self.to_string()).with_reason(self.clone())
    }
}

// === impl ClientAddrConfig ===

/// How to resolve the client address: trusted proxies, the forwarded header, the walk.
#[derive(Debug, Clone)]
pub struct ClientAddrConfig {
    trusted: Arc<IpTable<()>>,
    source: ForwardedSource,
    hops: TrustedHops,
    max_entries: usize,
}

impl Default for ClientAddrConfig {
    fn default() -> Self {
        ClientAddrConfig::new()
    }
}

impl ClientAddrConfig {
    /// No trusted proxies and no forwarded header: the client is the peer (or the PROXY source).
    pub fn new() -> Self {
        ClientAddrConfig {
            trusted: Arc::new(IpTable::default()),
            source: ForwardedSource::None,
            hops: TrustedHops::SkipTrusted,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }

    /// The trusted proxies (CIDRs, addresses, ranges). Only their forwarded headers are read.
    ///
    /// # Errors
    /// Never for sets of ranges in practice (all map to the same value); kept for the table's contract.
    pub fn trusted_proxies(
        mut self,
        ranges: impl IntoIterator<Item = IpRange>,
    ) -> Result<Self, IpTableError> {
        self.trusted = Arc::new(IpTable::from_rules(ranges.into_iter().map(|r| (r, ())))?);
        Ok(self)
    }

    /// The forwarded header to read from trusted proxies.
    pub fn source(mut self, source: ForwardedSource) -> Self {
        self.source = source;
        self
    }

    /// Fixed-hop mode: the n-th entry from the right is the client. `0` reads no header at all.
    pub fn fixed_hops(mut self, n: u16) -> Self {
        if n == 0 {
            self.source = ForwardedSource::None;
        }
        self.hops = TrustedHops::Fixed(n);
        self
    }

    /// The longest walk accepted (default 20, at most [`MAX_ENTRIES_LIMIT`]); longer walks get a 400.
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n.clamp(1, MAX_ENTRIES_LIMIT);
        self
    }

    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.contains(ip)
    }

    /// The configured source.
    #[inline]
    pub fn forwarded_source(&self) -> ForwardedSource {
        self.source
    }

    /// Resolves the client address of a request from its extensions (connection info) and headers.
    ///
    /// # Errors
    /// [`ResolveError`] when the connection info is missing or the forwarded header cannot be walked.
    pub fn resolve(&self, ext: &Extensions, headers: &HeaderMap) -> Result<ClientAddr, ResolveError> {
        self.resolve_conn(ConnInfo::lookup(ext).as_deref(), headers)
    }

    /// [`resolve`](Self::resolve) with the request's connection facts already looked up (`None` when the
    /// request has none, which is refused).
    ///
    /// # Errors
    /// As [`resolve`](Self::resolve).
    pub fn resolve_conn(
        &self,
        conn: Option<&ConnInfo>,
        headers: &HeaderMap,
    ) -> Result<ClientAddr, ResolveError> {
        let (peer, via, private_link) = conn.map(peer_of).ok_or(ResolveError::NoConnInfo)?;
        // A private-link consumer's address lies in its own address space, which may overlap ours (and
        // our trusted-proxy ranges): its forwarded headers are never read.
        if self.source == ForwardedSource::None || private_link || !self.trusted.contains(peer) {
            return Ok(ClientAddr { ip: peer, learnt_via: via });
        }
        let mut walk =
            Walk { cfg: self, header: ForwardedHeader::XForwardedFor, seen: 0, hops: 1, last: None };
        let found = match self.source {
            ForwardedSource::None => None,
            ForwardedSource::XForwardedFor => walk.xff(headers)?,
            ForwardedSource::Forwarded => {
                walk.header = ForwardedHeader::Forwarded;
                walk.forwarded(headers)?
            }
        };
        match found {
            Some(addr) => Ok(addr),
            None => walk.finish(peer, via),
        }
    }
}

impl crate::rule::Rule for ClientAddrConfig {
    /// Resolves the client address into the request's [`Decisions`](crate::Decisions); refuses when it
    /// cannot.
    fn check(&self, head: &mut http::request::Parts) -> Result<(), Denial> {
        let conn = ConnInfo::lookup(&head.extensions);
        let resolved = self.resolve_conn(conn.as_deref(), &head.headers);
        drop(conn);
        match resolved {
            Ok(addr) => {
                crate::Decisions::get_mut(&mut head.extensions).client = Some(addr);
                Ok(())
            }
            Err(e) => {
                if matches!(e, ResolveError::NoConnInfo) {
                    tracing::error!("{e}");
                }
                Err(e.to_denial())
            }
        }
    }
}

/// The effective peer: the PROXY source when a trusted load balancer sent one, else the socket peer; and
/// whether the connection came over a private link (a link id in the PROXY header).
fn peer_of(c: &ConnInfo) -> (IpAddr, LearntVia, bool) {
    let private_link = c.proxy.as_ref().is_some_and(|p| p.link_id.is_some());
    match c.proxy.as_ref().and_then(|p| p.source) {
        Some(src) => (fold_ip(src.ip()), LearntVia::ProxyProtocol, private_link),
        None => (fold_ip(c.peer.ip()), LearntVia::Peer, private_link),
    }
}

struct Walk<'a> {
    cfg: &'a ClientAddrConfig,
    header: ForwardedHeader,
    seen: usize,
    hops: u16,
    last: Option<IpAddr>,
}

impl Walk<'_> {
    /// Visits the next entry from the right; `Some` when it is the client.
    fn visit(&mut self, entry: Result<IpAddr, EntryError>) -> Result<Option<ClientAddr>, ResolveError> {
        let header = self.header.name();
        self.seen += 1;
        if self.seen > self.cfg.max_entries {
            return Err(ResolveError::TooManyEntries { header, cap: self.cfg.max_entries });
        }
        let ip = entry.map_err(|error| ResolveError::BadEntry { header, position: self.seen, error })?;
        self.last = Some(ip);
        match self.cfg.hops {
            TrustedHops::SkipTrusted => {
                if self.cfg.trusted.contains(ip) {
                    self.hops = self.hops.saturating_add(1);
                    Ok(None)
                } else {
                    Ok(Some(self.found(ip)))
                }
            }
            TrustedHops::Fixed(n) => {
                if self.seen == usize::from(n) {
                    self.hops = n;
                    Ok(Some(self.found(ip)))
                } else {
                    Ok(None)
                }
            }
        }
    }

    fn found(&self, ip: IpAddr) -> ClientAddr {
        ClientAddr { ip, learnt_via: LearntVia::Forwarded { header: self.header, trusted_hops: self.hops } }
    }

    /// The walk ran out of entries.
    fn finish(self, peer: IpAddr, via: LearntVia) -> Result<ClientAddr, ResolveError> {
        if self.seen == 0 {
            return Ok(ClientAddr { ip: peer, learnt_via: via });
        }
        match self.cfg.hops {
            // Every hop was trusted: the leftmost entry is the client.
            TrustedHops::SkipTrusted => {
                let ip = self.last.unwrap_or(peer);
                Ok(ClientAddr {
                    ip,
                    learnt_via: LearntVia::Forwarded {
                        header: self.header,
                        trusted_hops: self.hops.saturating_sub(1),
                    },
                })
            }
            TrustedHops::Fixed(n) => {
                Err(ResolveError::NotEnoughHops { header: self.header.name(), expected: n, found: self.seen })
            }
        }
    }

    fn xff(&mut self, headers: &HeaderMap) -> Result<Option<ClientAddr>, ResolveError> {
        for line in headers.get_all(X_FORWARDED_FOR).iter().rev() {
            if let Some(found) = self.xff_line(line)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Walks one `X-Forwarded-For` line from the right; `Some` when it holds the client.
    fn xff_line(&mut self, value: &HeaderValue) -> Result<Option<ClientAddr>, ResolveError> {
        let line = value.to_str().map_err(|_| ResolveError::NotAscii("x-forwarded-for"))?.as_bytes();
        // Entries from the right, empty ones included (what `rsplit(',')` yields).
        let mut end = line.len();
        loop {
            let comma = line[..end].iter().rposition(|&b| b == b',');
            if let Some(found) = self.visit(parse_xff_bytes(&line[comma.map_or(0, |c| c + 1)..end]))? {
                return Ok(Some(found));
            }
            match comma {
                Some(comma) => end = comma,
                None => return Ok(None),
            }
        }
    }

    fn forwarded(&mut self, headers: &HeaderMap) -> Result<Option<ClientAddr>, ResolveError> {
        for line in headers.get_all(http::header::FORWARDED).iter().rev() {
            if let Some(found) = self.forwarded_line(line)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Validates one `Forwarded` line and walks its elements from the right; `Some` when it holds the client.
    fn forwarded_line(&mut self, line: &HeaderValue) -> Result<Option<ClientAddr>, ResolveError> {
        // Validate the whole line, and note each element's `for=` value (or its absence).
        let mut fors: [Option<&[u8]>; MAX_ENTRIES_LIMIT] = [None; MAX_ENTRIES_LIMIT];
        let mut overflow = false;
        let mut duplicate_for = false;
        let mut quoted_escape = [false; MAX_ENTRIES_LIMIT];
        let count = scan_forwarded(line.as_bytes(), |p| {
            if p.element >= MAX_ENTRIES_LIMIT {
                overflow = true;
            } else if p.name.eq_ignore_ascii_case(b"for") {
                // RFC 7239 §4: a parameter must not occur more than once per element.
                duplicate_for |= fors[p.element].is_some();
                fors[p.element] = Some(p.value);
                quoted_escape[p.element] = p.escaped;
            }
        })
        .map_err(ResolveError::Syntax)?;
        if overflow {
            return Err(ResolveError::TooManyEntries { header: "forwarded", cap: self.cfg.max_entries });
        }
        if duplicate_for {
            return Err(ResolveError::DuplicateFor);
        }
        for i in (0..count).rev() {
            let entry = match fors[i] {
                // An element without `for=` tells nothing about the client.
                None => Err(EntryError::Unknown),
                // Addresses never need quoted-pairs: an escaped value is not an address.
                Some(_) if quoted_escape[i] => Err(EntryError::Garbage),
                Some(v) => std::str::from_utf8(v).map_err(|_| EntryError::Garbage).and_then(parse_node),
            };
            if let Some(found) = self.visit(entry)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

// === impl ResolveClientAddrLayer ===

/// Resolves the [`ClientAddr`] of every request into its [`Decisions`](crate::Decisions); refuses (400, or
/// 500 for missing wiring) when it cannot. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ResolveClientAddrLayer(GateLayer<ClientAddrConfig>);

impl Default for ResolveClientAddrLayer {
    fn default() -> Self {
        ResolveClientAddrLayer::new(ClientAddrConfig::default())
    }
}

impl ResolveClientAddrLayer {
    /// A layer resolving with `config`.
    pub fn new(config: ClientAddrConfig) -> Self {
        ResolveClientAddrLayer(GateLayer::new(config))
    }

    /// Replaces the refusal response (default: problem+json, gRPC status for gRPC calls).
    pub fn responder(self, responder: Responder) -> Self {
        ResolveClientAddrLayer(self.0.responder(responder))
    }

    /// The rule this layer enforces.
    pub fn rule(&self) -> &Arc<ClientAddrConfig> {
        self.0.rule()
    }
}

impl<S> Layer<S> for ResolveClientAddrLayer {
    type Service = ResolveClientAddr<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.0.layer(inner)
    }
}

/// The service of [`ResolveClientAddrLayer`].
pub type ResolveClientAddr<S> = Gate<S, ClientAddrConfig>;

#[cfg(test)]
mod tests;
