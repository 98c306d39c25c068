//! The compiled host table: endpoints, their patterns, and the allocation-free lookup.

// hashbrown's map with its default hasher (foldhash): the keys are configuration, never request data, so
// no request can lengthen a probe, and foldhash costs a fraction of std's SipHash on short names.
use hashbrown::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use portcullis_core::MatchedHost;

use crate::authority::{AuthorityError, RequestHost};
use crate::pattern::{HostPattern, PatternError, PatternKind};

/// Why a host table (or a router or filter built on one) could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostConfigError {
    /// A pattern could not be parsed.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// The same pattern (after normalisation, port included) is configured twice.
    #[error("host pattern {pattern} is configured twice (endpoints {first} and {second})")]
    Duplicate {
        /// The normalised pattern.
        pattern: String,
        /// The endpoint that configured it first.
        first: String,
        /// The endpoint that configured it again.
        second: String,
    },
    /// An endpoint with an empty name.
    #[error("an endpoint has an empty name")]
    EmptyEndpointName,
    /// Two endpoints with the same name.
    #[error("endpoint {0} is configured twice")]
    DuplicateEndpoint(String),
    /// An endpoint without any host pattern: it could never be reached.
    #[error("endpoint {0} has no host pattern")]
    NoHosts(String),
    /// More names than the table addresses (over 16 MiB of names, or over 4 billion patterns).
    #[error("too many host patterns")]
    TooLarge,
}

// === impl Endpoint ===

/// One endpoint (gateway, portal, management, scm, or a name of yours) and the host patterns it answers on.
///
/// Patterns are checked when the table is built ([`HostsBuilder::build`], `HostRouter` and `HostFilter`
/// builders), so that the builder reads as plain configuration.
///
/// A pattern may be tagged with the name of the TLS virtual host that serves it (see
/// [`SniCheck`](crate::SniCheck)); [`Endpoint::vhost`] tags every pattern of the endpoint that has no tag of
/// its own.
#[derive(Debug, Clone)]
pub struct Endpoint {
    name: String,
    hosts: Vec<(String, Option<String>)>,
    vhost: Option<String>,
}

impl Endpoint {
    /// An endpoint called `name` (the name recorded in [`MatchedHost::endpoint`]).
    pub fn new(name: impl Into<String>) -> Self {
        Endpoint { name: name.into(), hosts: Vec::new(), vhost: None }
    }

    /// Adds a host pattern: `api.contoso.com`, `*.contoso.com`, `bücher.example`, `api.contoso.com:8443`,
    /// `10.0.0.1` (to serve requests for that bare address).
    pub fn host(mut self, pattern: impl Into<String>) -> Self {
        self.hosts.push((pattern.into(), None));
        self
    }

    /// Adds several host patterns.
    pub fn hosts<I>(mut self, patterns: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.hosts.extend(patterns.into_iter().map(|p| (p.into(), None)));
        self
    }

    /// Adds a host pattern served by the TLS virtual host `vhost` (for example a custom domain with its own
    /// certificate).
    pub fn host_in_vhost(mut self, pattern: impl Into<String>, vhost: impl Into<String>) -> Self {
        self.hosts.push((pattern.into(), Some(vhost.into())));
        self
    }

    /// Tags every pattern of this endpoint that has no virtual host of its own with `vhost`.
    pub fn vhost(mut self, vhost: impl Into<String>) -> Self {
        self.vhost = Some(vhost.into());
        self
    }

    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The patterns as configured, with their virtual-host tag.
    pub fn patterns(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.hosts.iter().map(|(p, v)| (p.as_str(), v.as_deref().or(self.vhost.as_deref())))
    }
}

// === impl Hosts ===

/// The compiled, immutable host table shared (one `Arc`) by every clone of a router or filter.
///
/// Lookup precedence: an exact name, then the wildcard covering it (a wildcard covers exactly one label, so
/// at most one wildcard can match a name and it is also the longest one), then nothing. Within a name,
/// a pattern naming the request's port wins over a pattern without port. IP literals only match IP
/// patterns. Lookups allocate nothing.
///
/// ```
/// use portcullis_host::{Endpoint, Hosts};
///
/// let hosts = Hosts::builder()
///     .endpoint(Endpoint::new("gateway").hosts(["contoso.azure-api.net", "*.api.contoso.com"]))
///     .endpoint(Endpoint::new("portal").host("bücher.example"))
///     .build()?;
/// assert_eq!(hosts.resolve(b"Contoso.Azure-Api.NET.")?.map(|r| r.endpoint()), Some("gateway"));
/// assert_eq!(hosts.resolve(b"eu.api.contoso.com:443")?.map(|r| r.pattern()), Some("*.api.contoso.com"));
/// assert_eq!(hosts.resolve(b"xn--bcher-kva.example")?.map(|r| r.endpoint()), Some("portal"));
/// assert!(hosts.resolve(b"api.contoso.com")?.is_none()); // the apex is not covered by the wildcard
/// assert!(hosts.resolve(b"a.b.api.contoso.com")?.is_none()); // nor are two labels
/// assert!(hosts.resolve(b"10.0.0.1")?.is_none()); // IP literals never match names
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Hosts {
    inner: Arc<HostsInner>,
}

struct HostsInner {
    /// Exact names (normalised) and their routes.
    exact: HashMap<Box<[u8]>, Slot>,
    /// Wildcard suffixes (`*.contoso.com` is `contoso.com`) and their routes.
    wildcard: HashMap<Box<[u8]>, Slot>,
    ips: Vec<(IpAddr, Slot)>,
    routes: Vec<RouteInfo>,
    endpoints: Vec<Arc<str>>,
    has_ports: bool,
}

/// What is known about one configured pattern.
#[derive(Debug)]
pub(crate) struct RouteInfo {
    pattern: Arc<str>,
    identity: Box<str>,
    endpoint: Arc<str>,
    endpoint_index: usize,
    vhost: Option<Arc<str>>,
    /// For exact name patterns, the name itself: the matched host of a request equals it.
    exact_name: Option<Arc<str>>,
}

/// The routes of one name (or address): one pattern without port and any number with a port.
#[derive(Debug, Default)]
struct Slot {
    any: Option<usize>,
    ports: Vec<(u16, usize)>,
}

impl Slot {
    /// The route of the pattern naming `port`, if any.
    #[inline]
    fn port(&self, port: u16) -> Option<usize> {
        self.ports.iter().find(|(p, _)| *p == port).map(|&(_, route)| route)
    }

    /// The route for `port`: the pattern naming it, else the pattern without port.
    #[inline]
    fn get(&self, port: Option<u16>) -> Option<usize> {
        port.and_then(|p| self.port(p)).or(self.any)
    }

    /// Inserts a route; on a duplicate returns the route already there.
    fn insert(&mut self, port: Option<u16>, route: usize) -> Result<(), usize> {
        match port {
            None => match self.any {
                Some(existing) => Err(existing),
                None => {
                    self.any = Some(route);
                    Ok(())
                }
            },
            Some(port) => match self.ports.iter().find(|(p, _)| *p == port) {
                Some(&(_, existing)) => Err(existing),
                None => {
                    self.ports.push((port, route));
                    Ok(())
                }
            },
        }
    }
}

/// A matched route: the pattern, its endpoint and its virtual-host tag. Borrowed from [`Hosts`].
#[derive(Clone, Copy)]
pub struct Route<'a> {
    info: &'a RouteInfo,
}

impl<'a> Route<'a> {
    /// The canonical pattern that matched (`api.contoso.com`, `*.contoso.com:8443`, `[::1]`).
    pub fn pattern(&self) -> &'a str {
        &self.info.pattern
    }

    /// The endpoint the pattern belongs to.
    pub fn endpoint(&self) -> &'a str {
        &self.info.endpoint
    }

    /// The position of the endpoint in configuration order.
    pub fn endpoint_index(&self) -> usize {
        self.info.endpoint_index
    }

    /// The TLS virtual host the pattern is tagged with, if any.
    pub fn vhost(&self) -> Option<&'a str> {
        self.info.vhost.as_deref()
    }

    /// What the SNI binding compares: the virtual-host tag when set, else the pattern without its port.
    /// Two routes with the same identity may share a TLS connection.
    pub fn identity(&self) -> &'a str {
        self.info.vhost.as_deref().unwrap_or(&self.info.identity)
    }
}

impl fmt::Debug for Route<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("pattern", &self.pattern())
            .field("endpoint", &self.endpoint())
            .field("vhost", &self.vhost())
            .finish()
    }
}

impl Hosts {
    /// A builder; add endpoints, then [`build`](HostsBuilder::build).
    pub fn builder() -> HostsBuilder {
        HostsBuilder::default()
    }

    /// The route for a parsed request host, `port` being the request's port (explicit, or the scheme's
    /// default). Allocates nothing.
    #[inline]
    pub fn lookup(&self, host: &RequestHost, port: Option<u16>) -> Option<Route<'_>> {
        let inner = &*self.inner;
        let index = match host.ip() {
            Some(ip) => inner.ips.iter().find(|(a, _)| *a == ip).and_then(|(_, slot)| slot.get(port)),
            None => Self::lookup_name(inner, host.name_bytes(), port),
        }?;
        Some(Route { info: &inner.routes[index] })
    }

    fn lookup_name(inner: &HostsInner, name: &[u8], port: Option<u16>) -> Option<usize> {
        if let Some(route) = inner.exact.get(name).and_then(|slot| slot.get(port)) {
            return Some(route);
        }
        let dot = name.iter().position(|&b| b == b'.')?;
        inner.wildcard.get(name.get(dot + 1..)?).and_then(|slot| slot.get(port))
    }

    /// Parses `authority` (`host[:port]`) and looks it up, with the port it names (if any). Allocates
    /// nothing. `Ok(None)`: a well-formed authority that no pattern serves.
    ///
    /// # Errors
    /// The [`AuthorityError`] of a malformed authority.
    #[inline]
    pub fn resolve(&self, authority: &[u8]) -> Result<Option<Route<'_>>, AuthorityError> {
        let mut host = RequestHost::empty();
        RequestHost::parse_into(authority, &mut host)?;
        Ok(self.lookup(&host, host.port()))
    }

    /// The endpoint names, in configuration order.
    pub fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.inner.endpoints.iter().map(|e| &**e)
    }

    /// The name of `endpoint` as the shared string every [`MatchedHost::endpoint`] of that endpoint holds.
    /// `None` for a name that is not an endpoint here.
    ///
    /// ```
    /// use portcullis_host::{Endpoint, Hosts};
    /// let hosts = Hosts::builder().endpoint(Endpoint::new("gateway").host("api.example")).build().unwrap();
    /// assert_eq!(hosts.endpoint_name("gateway").as_deref(), Some("gateway"));
    /// assert!(hosts.endpoint_name("portal").is_none());
    /// ```
    pub fn endpoint_name(&self, endpoint: &str) -> Option<Arc<str>> {
        self.inner.endpoints.iter().find(|e| ***e == *endpoint).cloned()
    }

    /// The id of `endpoint` in this table (its position in configuration order, what
    /// [`MatchedHost::endpoint_id`] holds). `None` for a name that is not an endpoint here.
    pub fn endpoint_id(&self, endpoint: &str) -> Option<usize> {
        self.inner.endpoints.iter().position(|e| **e == *endpoint)
    }

    /// The number of configured patterns.
    pub fn len(&self) -> usize {
        self.inner.routes.len()
    }

    /// Whether no pattern is configured (every request is refused).
    pub fn is_empty(&self) -> bool {
        self.inner.routes.is_empty()
    }

    /// Whether some pattern names a port: only then does the router work out a request's default port.
    pub fn has_port_rules(&self) -> bool {
        self.inner.has_ports
    }

    /// The [`MatchedHost`] record of a match. Exact matches share the pattern's allocation; wildcard and
    /// address matches allocate the host text once.
    #[inline]
    pub fn matched_host(&self, route: Route<'_>, host: &RequestHost) -> MatchedHost {
        let host = match &route.info.exact_name {
            Some(name) => name.clone(),
            None => Arc::from(host.to_string()),
        };
        MatchedHost {
            host,
            pattern: route.info.pattern.clone(),
            endpoint: route.info.endpoint.clone(),
            endpoint_id: route.info.endpoint_index,
        }
    }
}

impl fmt::Debug for Hosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.inner.routes.iter().map(|r| (&r.pattern, &r.endpoint))).finish()
    }
}

// === impl HostsBuilder ===

/// Builds a [`Hosts`] table.
#[derive(Debug, Clone, Default)]
pub struct HostsBuilder {
    endpoints: Vec<Endpoint>,
}

impl HostsBuilder {
    /// Adds an endpoint and its patterns.
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Checks every pattern and builds the table.
    ///
    /// # Errors
    /// A [`HostConfigError`]: an invalid pattern, a pattern configured twice (after normalisation:
    /// `bücher.example` and `XN--BCHER-KVA.example.` are the same pattern), an empty or repeated endpoint
    /// name, or an endpoint without patterns.
    pub fn build(self) -> Result<Hosts, HostConfigError> {
        let mut inner = HostsInner {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            ips: Vec::new(),
            routes: Vec::new(),
            endpoints: Vec::new(),
            has_ports: false,
        };
        for (endpoint_index, endpoint) in self.endpoints.iter().enumerate() {
            if endpoint.name.is_empty() {
                return Err(HostConfigError::EmptyEndpointName);
            }
            if inner.endpoints.iter().any(|e| **e == *endpoint.name) {
                return Err(HostConfigError::DuplicateEndpoint(endpoint.name.clone()));
            }
            if endpoint.hosts.is_empty() {
                return Err(HostConfigError::NoHosts(endpoint.name.clone()));
            }
            let endpoint_name: Arc<str> = Arc::from(endpoint.name.as_str());
            inner.endpoints.push(endpoint_name.clone());
            for (text, vhost) in endpoint.patterns() {
                let pattern = HostPattern::parse(text)?;
                let index = inner.routes.len();
                let slot = match pattern.kind() {
                    PatternKind::Exact(name) => inner.exact.entry(name.as_bytes().into()).or_default(),
                    PatternKind::Wildcard(suffix) => {
                        inner.wildcard.entry(suffix.as_bytes().into()).or_default()
                    }
                    PatternKind::Ip(ip) => match inner.ips.iter().position(|(a, _)| a == ip) {
                        Some(at) => &mut inner.ips[at].1,
                        None => {
                            inner.ips.push((*ip, Slot::default()));
                            &mut inner.ips.last_mut().expect("just pushed").1
                        }
                    },
                };
                if let Err(existing) = slot.insert(pattern.port(), index) {
                    return Err(HostConfigError::Duplicate {
                        pattern: pattern.to_string(),
                        first: inner.routes[existing].endpoint.to_string(),
                        second: endpoint.name.clone(),
                    });
                }
                inner.has_ports |= pattern.port().is_some();
                let exact_name = match pattern.kind() {
                    PatternKind::Exact(name) => Some(Arc::from(&**name)),
                    _ => None,
                };
                inner.routes.push(RouteInfo {
                    pattern: pattern.canonical(),
                    identity: pattern.host_text().into_boxed_str(),
                    endpoint: endpoint_name.clone(),
                    endpoint_index,
                    vhost: vhost.map(Arc::from),
                    exact_name,
                });
            }
        }
        Ok(Hosts { inner: Arc::new(inner) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Hosts {
        Hosts::builder()
            .endpoint(Endpoint::new("gateway").hosts(["api.contoso.com", "*.contoso.com", "bücher.example"]))
            .endpoint(Endpoint::new("portal").hosts([
                "portal.contoso.com",
                "*.portal.contoso.com",
                "portal.contoso.com:8443",
            ]))
            .endpoint(Endpoint::new("ip").hosts(["10.0.0.1", "[::1]:8443"]))
            .endpoint(Endpoint::new("com").host("*.com"))
            .build()
            .unwrap()
    }

    fn find(hosts: &Hosts, authority: &str) -> Option<String> {
        hosts.resolve(authority.as_bytes()).unwrap().map(|r| format!("{}={}", r.endpoint(), r.pattern()))
    }

    #[test]
    fn precedence_and_wildcards() {
        let h = table();
        let cases: &[(&str, Option<&str>)] = &[
            ("api.contoso.com", Some("gateway=api.contoso.com")),
            ("API.CONTOSO.COM.", Some("gateway=api.contoso.com")),
            ("x.contoso.com", Some("gateway=*.contoso.com")),
            ("portal.contoso.com", Some("portal=portal.contoso.com")),
            ("portal.contoso.com:8443", Some("portal=portal.contoso.com:8443")),
            ("portal.contoso.com:443", Some("portal=portal.contoso.com")),
            ("a.portal.contoso.com", Some("portal=*.portal.contoso.com")),
            // Two labels under *.contoso.com: not covered by it, and not by *.com either.
            ("a.b.contoso.com", None),
            // The apex of *.contoso.com is covered by *.com (one label under com).
            ("contoso.com", Some("com=*.com")),
            ("com", None),
            ("xn--bcher-kva.example", Some("gateway=xn--bcher-kva.example")),
            ("10.0.0.1", Some("ip=10.0.0.1")),
            ("10.0.0.1:80", Some("ip=10.0.0.1")),
            ("10.0.0.2", None),
            ("[::1]", None),
            ("[::1]:8443", Some("ip=[::1]:8443")),
            ("[::2]:8443", None),
            ("example.org", None),
        ];
        for (authority, want) in cases {
            assert_eq!(find(&h, authority).as_deref(), *want, "{authority}");
        }
        // An IP literal never matches a name pattern, even one that spells the same text.
        let h = Hosts::builder().endpoint(Endpoint::new("a").host("*.0.0.1")).build();
        assert!(matches!(h, Err(HostConfigError::Pattern(PatternError::Grammar { .. }))), "{h:?}");
    }

    #[test]
    fn build_errors() {
        let dup = Hosts::builder()
            .endpoint(Endpoint::new("a").host("bücher.example"))
            .endpoint(Endpoint::new("b").host("XN--BCHER-KVA.example."))
            .build();
        assert_eq!(
            dup.unwrap_err(),
            HostConfigError::Duplicate {
                pattern: "xn--bcher-kva.example".into(),
                first: "a".into(),
                second: "b".into()
            }
        );
        let dup = Hosts::builder().endpoint(Endpoint::new("a").hosts(["*.x.com", "*.X.com."])).build();
        assert!(matches!(dup, Err(HostConfigError::Duplicate { .. })));
        let dup = Hosts::builder().endpoint(Endpoint::new("a").hosts(["x.com:80", "x.com:80"])).build();
        assert!(matches!(dup, Err(HostConfigError::Duplicate { .. })));
        let dup = Hosts::builder().endpoint(Endpoint::new("a").hosts(["[::1]", "[0::1]"])).build();
        assert!(matches!(dup, Err(HostConfigError::Duplicate { .. })));
        // Same name on different ports, and a name next to its wildcard, are not duplicates.
        assert!(
            Hosts::builder()
                .endpoint(Endpoint::new("a").hosts(["x.com", "x.com:80", "*.x.com"]))
                .build()
                .is_ok()
        );
        assert_eq!(
            Hosts::builder().endpoint(Endpoint::new("")).build().unwrap_err(),
            HostConfigError::EmptyEndpointName
        );
        assert_eq!(
            Hosts::builder().endpoint(Endpoint::new("a")).build().unwrap_err(),
            HostConfigError::NoHosts("a".into())
        );
        assert_eq!(
            Hosts::builder()
                .endpoint(Endpoint::new("a").host("a.com"))
                .endpoint(Endpoint::new("a").host("b.com"))
                .build()
                .unwrap_err(),
            HostConfigError::DuplicateEndpoint("a".into())
        );
        assert!(matches!(
            Hosts::builder().endpoint(Endpoint::new("a").host("a..com")).build(),
            Err(HostConfigError::Pattern(_))
        ));
    }

    #[test]
    fn matched_host_record() {
        let h = table();
        let host = RequestHost::parse(b"API.contoso.com").unwrap();
        let route = h.lookup(&host, None).unwrap();
        let m = h.matched_host(route, &host);
        assert_eq!((&*m.host, &*m.pattern, &*m.endpoint), ("api.contoso.com", "api.contoso.com", "gateway"));
        let host = RequestHost::parse(b"Eu.contoso.com").unwrap();
        let m = h.matched_host(h.lookup(&host, None).unwrap(), &host);
        assert_eq!((&*m.host, &*m.pattern), ("eu.contoso.com", "*.contoso.com"));
    }

    #[test]
    fn vhost_tags_and_identity() {
        let h = Hosts::builder()
            .endpoint(
                Endpoint::new("gw").host("a.example").host_in_vhost("b.example", "custom").vhost("default"),
            )
            .endpoint(Endpoint::new("portal").host("*.p.example:8443"))
            .build()
            .unwrap();
        let r = |s: &str| h.resolve(s.as_bytes()).unwrap().unwrap();
        assert_eq!(r("a.example").vhost(), Some("default"));
        assert_eq!(r("b.example").vhost(), Some("custom"));
        assert_eq!(r("x.p.example:8443").identity(), "*.p.example");
        assert!(h.has_port_rules());
        assert_eq!(h.endpoints().collect::<Vec<_>>(), ["gw", "portal"]);
        assert_eq!(h.len(), 3);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn label() -> impl Strategy<Value = String> {
            // Not an A-label prefix (`xn--`): those must be valid punycode, which random text is not.
            "[a-z0-9]([a-z0-9_-]{0,10}[a-z0-9])?".prop_filter("no xn-- prefix", |l| !l.starts_with("xn--"))
        }

        /// Names of 2 to 5 labels whose last label starts with a letter (at most 6 characters, so never
        /// `invalid`), as a configured name must.
        fn name() -> impl Strategy<Value = String> {
            (proptest::collection::vec(label(), 1..5), "[a-z][a-z0-9]{1,5}")
                .prop_map(|(labels, tld)| format!("{}.{tld}", labels.join(".")))
        }

        /// Flips the case of the letters chosen by `mask`.
        fn respell(name: &str, mask: u64) -> String {
            name.chars()
                .enumerate()
                .map(|(i, c)| if mask >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c })
                .collect()
        }

        fn spelled(name: &str, mask: u64, dot: bool, port: Option<u16>) -> String {
            let mut s = respell(name, mask);
            if dot {
                s.push('.');
            }
            if let Some(port) = port {
                s.push_str(&format!(":{port}"));
            }
            s
        }

        fn resolve(h: &Hosts, s: &str) -> Option<String> {
            h.resolve(s.as_bytes()).unwrap().map(|r| r.pattern().to_owned())
        }

        proptest! {
            /// Any spelling of a configured name (case, one trailing dot, a port) resolves to the same
            /// pattern as the name itself; spellings of names covered by a wildcard resolve to the wildcard.
            #[test]
            fn matching_ignores_case_trailing_dot_and_port(
                names in proptest::collection::hash_set(name(), 1..20),
                first in label(),
                mask in any::<u64>(),
                dot in any::<bool>(),
                port in proptest::option::of(any::<u16>()),
            ) {
                let names: Vec<String> = names.into_iter().collect();
                let wildcard = format!("*.{}", names[0]);
                let configured: Vec<String> = names.iter().skip(1).cloned().collect();
                let hosts = Hosts::builder()
                    .endpoint(Endpoint::new("w").host(respell(&wildcard, mask.rotate_left(7))))
                    .endpoint(Endpoint::new("e").hosts(configured.iter().map(|n| respell(n, !mask))).host("unused.invalid"))
                    .build();
                // A configured exact name may collide with nothing but itself: names are distinct.
                let hosts = hosts.unwrap();
                for n in &configured {
                    prop_assert_eq!(resolve(&hosts, &spelled(n, mask, dot, port)), Some(n.clone()));
                }
                let covered = format!("{first}.{}", names[0]);
                let want = if configured.contains(&covered) { covered.clone() } else { wildcard.clone() };
                prop_assert_eq!(resolve(&hosts, &spelled(&covered, mask, dot, port)), Some(want));
                // Neither the wildcard's apex nor two labels under it, however spelled.
                let apex = names[0].clone();
                if !configured.contains(&apex) {
                    prop_assert_eq!(resolve(&hosts, &spelled(&apex, mask, dot, port)), None);
                }
                let deep = format!("{first}.{first}.{}", names[0]);
                if !configured.contains(&deep) {
                    let got = resolve(&hosts, &spelled(&deep, mask, dot, port));
                    // Only another configured name could cover it; the wildcard never does.
                    prop_assert_ne!(got, Some(wildcard.clone()));
                }
            }

            /// Normalisation is idempotent and yields the lower-case name without its trailing dot.
            #[test]
            fn normalisation_is_canonical(n in name(), mask in any::<u64>(), dot in any::<bool>()) {
                let once = RequestHost::parse(spelled(&n, mask, dot, None).as_bytes()).unwrap();
                prop_assert_eq!(once.name(), Some(n.as_str()));
                let twice = RequestHost::parse(once.to_string().as_bytes()).unwrap();
                prop_assert_eq!(once, twice);
            }

            /// Arbitrary bytes never panic the parser, and whatever it accepts is lower-case ASCII.
            #[test]
            fn parser_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
                if let Ok(h) = RequestHost::parse(&bytes)
                    && let Some(name) = h.name()
                {
                    prop_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)));
                    prop_assert!(!name.is_empty() && name.len() <= 253 && !name.ends_with('.'));
                }
            }
        }
    }
}
