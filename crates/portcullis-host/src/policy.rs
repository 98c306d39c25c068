//! The decision shared by [`HostFilter`](crate::HostFilter) and [`HostRouter`](crate::HostRouter), and the
//! typed reasons of its refusals.

use std::sync::Arc;

use http::{Request, StatusCode, header};
use portcullis_core::{ConnInfo, Decisions, Denial, MatchedHost, Responder};

use crate::authority::{AuthorityError, RequestHost, host_indexed, host_into};
use crate::hosts::{Hosts, Route};
use crate::sni::{SniCheck, SniContext, SniMismatch, VhostBinding};

/// The name of this layer in denials.
pub const LAYER: &str = "host";

/// Why the host layer refused a request: the typed reason attached to its [`Denial`]
/// (`denial.reason::<HostRefusal>()`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostRefusal {
    /// The request's authority is missing, repeated, contradictory or malformed (400; 421 for
    /// [`AuthorityError::NoHost`]).
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    /// A well-formed host name that no pattern serves (421).
    #[error("no endpoint is configured for the host {host}")]
    Unknown {
        /// The normalised host.
        host: String,
    },
    /// An IP literal that no route serves (421): endpoints answer on their host names only.
    #[error("requests for the address {host} are not served, only configured host names are")]
    IpLiteral {
        /// The address as written in the request (`10.0.0.1`, `[::1]`).
        host: String,
    },
    /// The host belongs to another TLS virtual host than the connection's (421).
    #[error(transparent)]
    Sni(#[from] SniMismatch),
    /// The host's route is bound to a TLS virtual host, and the request came over plain HTTP (421).
    #[error("the host {host} is served only over TLS, by the virtual host {vhost}")]
    NotTls {
        /// The normalised host.
        host: String,
        /// The virtual host the route is bound to.
        vhost: String,
    },
}

impl HostRefusal {
    /// The status a refusal answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            HostRefusal::Authority(AuthorityError::NoHost) => StatusCode::MISDIRECTED_REQUEST,
            HostRefusal::Authority(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::MISDIRECTED_REQUEST,
        }
    }

    /// The stable denial code (`host.unknown`, `host.ip-literal`, `host.sni-mismatch`, `host.malformed`,
    /// `host.missing`, `host.multiple`, `host.mismatch`, `host.none`).
    pub fn code(&self) -> &'static str {
        match self {
            HostRefusal::Authority(e) => e.code(),
            HostRefusal::Unknown { .. } => "host.unknown",
            HostRefusal::IpLiteral { .. } => "host.ip-literal",
            HostRefusal::Sni(_) => "host.sni-mismatch",
            HostRefusal::NotTls { .. } => "host.not-tls",
        }
    }

    /// The [`Denial`] for this refusal, with this refusal as its typed reason.
    pub fn into_denial(self) -> Denial {
        let rule = match &self {
            HostRefusal::Authority(_) => "the request must name one well-formed host (RFC 9110 §7.2)",
            HostRefusal::Unknown { .. } => "only configured host names are served",
            HostRefusal::IpLiteral { .. } => "IP literals are served only where a route names the address",
            HostRefusal::Sni(_) => "the host must belong to the TLS connection's virtual host",
            HostRefusal::NotTls { .. } => {
                "a route bound to a TLS virtual host is served only on its connections"
            }
        };
        let refused = match &self {
            HostRefusal::Unknown { host }
            | HostRefusal::IpLiteral { host }
            | HostRefusal::NotTls { host, .. } => Some(host.clone()),
            HostRefusal::Sni(m) => Some(m.host.clone()),
            HostRefusal::Authority(AuthorityError::Mismatch { target, .. }) => Some(target.clone()),
            HostRefusal::Authority(_) => None,
        };
        let mut denial = Denial::new(LAYER, self.code(), self.status(), self.to_string()).with_rule(rule);
        if let Some(refused) = refused {
            denial = denial.with_refused(refused);
        }
        denial.with_reason(self)
    }
}

/// Configuration shared by the filter and the router.
#[derive(Clone)]
pub(crate) struct Policy {
    pub(crate) hosts: Hosts,
    pub(crate) shadow: bool,
    pub(crate) responder: Responder,
    pub(crate) sni: Arc<dyn SniCheck>,
}

/// What the verbatim lookup ([`Policy::verbatim`]) found.
pub(crate) enum Verbatim<'a> {
    /// Serve with this exact route (of this name) and record its match: a plain connection, and a route
    /// bound to no virtual host.
    Serve(Route<'a>, &'a Arc<str>),
    /// The route of a configured name and port, whose TLS or virtual-host binding is still to be checked.
    Bound {
        /// The name, as sent.
        name: &'a [u8],
        /// The port the authority named.
        named: Option<u16>,
        /// The port routes are chosen by.
        port: Option<u16>,
        /// The route.
        route: Route<'a>,
    },
    /// Not a configured name as sent: the parser decides.
    Miss,
}

/// What the policy decided for one request.
pub(crate) enum Outcome {
    /// Serve with the endpoint at this index.
    Serve(usize),
    /// Refuse; `endpoint` is the endpoint the host matched, if it matched (an SNI mismatch).
    Refuse { endpoint: Option<usize>, denial: Denial },
}

impl Policy {
    pub(crate) fn new(hosts: Hosts) -> Self {
        Policy { hosts, shadow: false, responder: Responder::default(), sni: Arc::new(VhostBinding) }
    }

    /// Reads, normalises and matches the request's host, checks the SNI binding and records the match in
    /// [`Decisions::host`] (also when the SNI binding fails in shadow mode).
    pub(crate) fn decide<B>(&self, req: &mut Request<B>) -> Outcome {
        let conn = ConnInfo::from_extensions(req.extensions());
        let (outcome, matched) =
            self.decide_head(req.uri(), req.version(), req.headers(), None, conn.as_ref());
        if let Some(matched) = matched {
            Decisions::get_mut(req.extensions_mut()).host = Some(matched);
        }
        outcome
    }

    /// [`decide`](Self::decide) on the parts of a request head, with its connection facts looked up (and
    /// its `Host` lines, when a [`HeaderIndex`](portcullis_core::HeaderIndex) found them): the outcome, and
    /// the match to record in [`Decisions::host`] (if any).
    #[inline]
    pub(crate) fn decide_head(
        &self,
        uri: &http::Uri,
        version: http::Version,
        headers: &http::HeaderMap,
        host_lines: Option<portcullis_core::Lines<&http::HeaderValue>>,
        conn: Option<&ConnInfo>,
    ) -> (Outcome, Option<MatchedHost>) {
        let verbatim = self.verbatim(uri, version, headers, host_lines, conn);
        self.decide_other(verbatim, uri, version, headers, host_lines, conn)
    }

    /// The fast path of [`decide_head`](Self::decide_head): the usual request names one authority (one
    /// `Host` line, or the target's authority) spelled exactly as a configured name, lower case, without
    /// trailing dot, perhaps with a port; the name is looked up as it is, without parsing, which gives the
    /// same route as parsing it would (see `Hosts::lookup_verbatim`). Every other request, and every
    /// refusal, goes through the parser ([`decide_other`](Self::decide_other)).
    #[inline(always)]
    pub(crate) fn verbatim<'a>(
        &'a self,
        uri: &'a http::Uri,
        version: http::Version,
        headers: &'a http::HeaderMap,
        host_lines: Option<portcullis_core::Lines<&'a http::HeaderValue>>,
        conn: Option<&ConnInfo>,
    ) -> Verbatim<'a> {
        // A configured name is at most 253 bytes, its port a colon and five digits: anything longer is no
        // configured spelling, and is not hashed (the parser bounds its own work).
        let Some(authority) = sole_authority(uri, version, headers, host_lines)
            .filter(|a| a.len() <= crate::authority::MAX_NAME_LEN + 6)
        else {
            return Verbatim::Miss;
        };
        let Some((name, named)) = split_port(authority) else {
            return Verbatim::Miss;
        };
        let port = self.route_port(named, uri, conn);
        let Some((route, exact)) = self.hosts.lookup_verbatim(name, port) else {
            return Verbatim::Miss;
        };
        if route.vhost().is_none() && conn.is_none_or(|c| c.tls.is_none()) {
            return Verbatim::Serve(route, exact);
        }
        Verbatim::Bound { name, named, port, route }
    }

    /// [`decide_head`](Self::decide_head) for what [`verbatim`](Self::verbatim) did not serve.
    #[inline(never)]
    pub(crate) fn decide_other(
        &self,
        verbatim: Verbatim<'_>,
        uri: &http::Uri,
        version: http::Version,
        headers: &http::HeaderMap,
        host_lines: Option<portcullis_core::Lines<&http::HeaderValue>>,
        conn: Option<&ConnInfo>,
    ) -> (Outcome, Option<MatchedHost>) {
        match verbatim {
            Verbatim::Serve(route, name) => {
                (Outcome::Serve(route.endpoint_index()), Some(self.hosts.matched_exact(route, name)))
            }
            Verbatim::Bound { name, named, port, route } => match RequestHost::verbatim(name, named) {
                Some(host) => self.finish(&host, port, route, conn),
                None => self.decide_parsed(uri, version, headers, host_lines, conn),
            },
            Verbatim::Miss => self.decide_parsed(uri, version, headers, host_lines, conn),
        }
    }

    /// [`decide_head`](Self::decide_head) by parsing the request's authority: the outcome, and the match to
    /// record (if any).
    fn decide_parsed(
        &self,
        uri: &http::Uri,
        version: http::Version,
        headers: &http::HeaderMap,
        host_lines: Option<portcullis_core::Lines<&http::HeaderValue>>,
        conn: Option<&ConnInfo>,
    ) -> (Outcome, Option<MatchedHost>) {
        let mut host = RequestHost::empty();
        let found = match host_lines {
            Some(lines) => host_indexed(uri, version, headers, lines, &mut host),
            None => host_into(uri, version, headers, &mut host),
        };
        if let Err(e) = found {
            return (refuse(HostRefusal::Authority(e)), None);
        }
        let port = self.route_port(host.port(), uri, conn);
        let Some(route) = self.hosts.lookup(&host, port) else {
            let refusal = match host.ip() {
                Some(_) => HostRefusal::IpLiteral { host: host.to_string() },
                None => HostRefusal::Unknown { host: host.to_string() },
            };
            return (refuse(refusal), None);
        };
        self.finish(&host, port, route, conn)
    }

    /// The port routes are chosen by, for a request whose authority names `named` (if any).
    ///
    /// Port-bound routes are chosen by the port the connection really arrived on (the local port, or the
    /// PROXY header's destination port), never by the port a client writes in Host: otherwise
    /// `Host: name:3443` sent to port 443 would reach the route meant for port 3443 only.
    #[inline]
    fn route_port(&self, named: Option<u16>, uri: &http::Uri, conn: Option<&ConnInfo>) -> Option<u16> {
        if !self.hosts.has_port_rules() {
            return named;
        }
        let arrived = conn.and_then(|c| {
            c.proxy.as_ref().and_then(|p| p.destination).map(|d| d.port()).or(c.local.map(|l| l.port()))
        });
        match (arrived, named) {
            (Some(local), _) => Some(local),
            (None, Some(p)) => Some(p),
            (None, None) => default_port(uri, conn),
        }
    }

    /// The decision for a request whose host matched `route`: the SNI binding on TLS connections, the
    /// virtual-host binding on plain ones.
    fn finish(
        &self,
        host: &RequestHost,
        port: Option<u16>,
        route: Route<'_>,
        conn: Option<&ConnInfo>,
    ) -> (Outcome, Option<MatchedHost>) {
        let mut denial = None;
        match conn.and_then(|c| c.tls.as_deref()) {
            Some(tls) => {
                let ctx = SniContext { tls, host, port, route, hosts: &self.hosts };
                if let Err(mismatch) = self.sni.check(&ctx) {
                    denial = Some(HostRefusal::Sni(mismatch).into_denial());
                }
            }
            // A route bound to a virtual host (its certificate, client authentication, chain policy) is never
            // served over plain HTTP, where none of those apply.
            None => {
                if let Some(vhost) = route.vhost() {
                    denial = Some(
                        HostRefusal::NotTls { host: host.to_string(), vhost: vhost.to_owned() }.into_denial(),
                    );
                }
            }
        }
        let matched = (denial.is_none() || self.shadow).then(|| self.hosts.matched_host(route, host));
        let outcome = match denial {
            None => Outcome::Serve(route.endpoint_index()),
            Some(denial) => Outcome::Refuse { endpoint: Some(route.endpoint_index()), denial },
        };
        (outcome, matched)
    }
}

fn refuse(refusal: HostRefusal) -> Outcome {
    Outcome::Refuse { endpoint: None, denial: refusal.into_denial() }
}

/// The port of a request that named none: the target's scheme default, else 443 on TLS connections and 80
/// on plain ones; `None` when neither the scheme nor the connection is known.
fn default_port(uri: &http::Uri, conn: Option<&ConnInfo>) -> Option<u16> {
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => return Some(443),
        Some(s) if s.eq_ignore_ascii_case("http") => return Some(80),
        _ => {}
    }
    conn.map(|c| if c.tls.is_some() { 443 } else { 80 })
}

/// The one authority a request names, as sent, when the parser would read just that one: its one `Host`
/// line (origin-form target), its target's authority when it has no `Host` line (absolute-form other
/// than on HTTP/1.1, HTTP/2 `:authority`), or both when they are the same bytes. `None` otherwise (no
/// authority, several `Host` lines, two different spellings, HTTP/1.1 without `Host`): the parser's path
/// decides those.
#[inline(always)]
fn sole_authority<'a>(
    uri: &'a http::Uri,
    version: http::Version,
    headers: &'a http::HeaderMap,
    host_lines: Option<portcullis_core::Lines<&'a http::HeaderValue>>,
) -> Option<&'a [u8]> {
    let line = match host_lines {
        Some(portcullis_core::Lines::One(value)) => Some(value),
        Some(portcullis_core::Lines::None) => None,
        Some(portcullis_core::Lines::Many(_)) => return None,
        None => {
            let mut lines = headers.get_all(header::HOST).iter();
            match lines.next() {
                Some(first) if lines.next().is_none() => Some(first),
                Some(_) => return None,
                None => None,
            }
        }
    };
    match (uri.authority(), line) {
        (None, Some(line)) => Some(line.as_bytes()),
        (Some(target), Some(line)) => {
            (target.as_str().as_bytes() == line.as_bytes()).then(|| line.as_bytes())
        }
        (Some(target), None) if version != http::Version::HTTP_11 => Some(target.as_str().as_bytes()),
        _ => None,
    }
}

/// Splits an authority into a name and its port for the verbatim lookup: `name`, `name:port` (at most
/// five digits, at most 65535; `name:` has no port, as for the parser). `None` for a port the parser
/// refuses. The name part holds a colon when the authority has several (or a bracketed address): it is
/// then no configured name, and the lookup misses.
#[inline(always)]
fn split_port(authority: &[u8]) -> Option<(&[u8], Option<u16>)> {
    match port_colon(authority) {
        None => Some((authority, None)),
        Some(at) => {
            let port = crate::authority::parse_port(authority.get(at + 1..)?).ok()?;
            Some((authority.get(..at)?, port))
        }
    }
}

/// Where the last colon among the last six bytes of `authority` is (a port's colon is there): for eight
/// bytes or more, one word tested at once.
#[inline(always)]
fn port_colon(authority: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let n = authority.len();
    match authority.last_chunk::<8>() {
        Some(last) => {
            let w = u64::from_le_bytes(*last) ^ (ONES * u64::from(b':'));
            // 0x80 in each byte of `w` that is zero (a colon), exactly (no carries between bytes); only the
            // last six bytes.
            let zero = !(((w & LOW7) + LOW7) | w | LOW7) & !0xffff;
            match zero {
                0 => None,
                _ => Some(n - 8 + (63 - zero.leading_zeros() as usize) / 8),
            }
        }
        None => {
            let tail = n.saturating_sub(6);
            authority[tail..].iter().rposition(|&b| b == b':').map(|at| tail + at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Endpoint;
    use http::Version;
    use http::header::HOST;
    use portcullis_core::TlsInfo;

    fn policy() -> Policy {
        Policy::new(
            Hosts::builder()
                .endpoint(Endpoint::new("gw").hosts(["gw.example", "*.t.example"]))
                .endpoint(Endpoint::new("mgmt").hosts(["gw.example:3443", "mgmt.example"]))
                .build()
                .unwrap(),
        )
    }

    fn run(
        p: &Policy,
        uri: &str,
        host: Option<&str>,
        conn: Option<ConnInfo>,
    ) -> (Option<usize>, Option<Denial>, Request<()>) {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        let mut req = b.body(()).unwrap();
        if let Some(c) = conn {
            req.extensions_mut().insert(c);
        }
        match p.decide(&mut req) {
            Outcome::Serve(endpoint) => (Some(endpoint), None, req),
            Outcome::Refuse { endpoint, denial } => (endpoint, Some(denial), req),
        }
    }

    #[test]
    fn outcomes_and_codes() {
        let p = policy();
        let (ep, d, req) = run(&p, "/", Some("GW.example."), None);
        assert_eq!((ep, d.is_none()), (Some(0), true));
        let m = Decisions::get(req.extensions()).unwrap().host.clone().unwrap();
        assert_eq!((&*m.host, &*m.pattern, &*m.endpoint), ("gw.example", "gw.example", "gw"));

        let code = |uri, host| {
            let d = run(&p, uri, host, None).1.unwrap();
            (d.code(), d.status().as_u16(), d.refused().map(str::to_owned))
        };
        assert_eq!(code("/", Some("evil.example")), ("host.unknown", 421, Some("evil.example".into())));
        assert_eq!(code("/", Some("10.0.0.1:80")), ("host.ip-literal", 421, Some("10.0.0.1".into())));
        assert_eq!(code("/", Some("[::1]")), ("host.ip-literal", 421, Some("[::1]".into())));
        assert_eq!(code("/", Some("gw..example")), ("host.malformed", 400, None));
        assert_eq!(code("/", None), ("host.missing", 400, None));
        assert_eq!(code("http://evil.example/", Some("gw.example")).0, "host.mismatch");
        let d = run(&p, "/", Some("a.b.t.example"), None).1.unwrap();
        assert_eq!(d.reason::<HostRefusal>(), Some(&HostRefusal::Unknown { host: "a.b.t.example".into() }));
    }

    #[test]
    fn ports_and_default_ports() {
        let p = policy();
        let peer = "127.0.0.1:1".parse().unwrap();
        let plain = ConnInfo::new(peer, None);
        let tls = ConnInfo::new(peer, None).with_tls(TlsInfo::default());
        assert_eq!(run(&p, "/", Some("gw.example:3443"), None).0, Some(1));
        assert_eq!(run(&p, "/", Some("gw.example:443"), None).0, Some(0));
        assert_eq!(run(&p, "/", Some("gw.example"), Some(plain)).0, Some(0));
        assert_eq!(run(&p, "/", Some("gw.example"), Some(tls)).0, Some(0));
        let p = Policy::new(
            Hosts::builder().endpoint(Endpoint::new("only443").host("s.example:443")).build().unwrap(),
        );
        let tls = ConnInfo::new(peer, None).with_tls(TlsInfo::default());
        let plain = ConnInfo::new(peer, None);
        assert_eq!(run(&p, "/", Some("s.example"), Some(tls)).0, Some(0));
        assert_eq!(run(&p, "/", Some("s.example"), Some(plain)).0, None);
        assert_eq!(run(&p, "https://s.example/", Some("s.example"), None).0, Some(0));
        // Without a scheme or connection facts, the port is unknown: the port-bound route is not served.
        assert_eq!(run(&p, "/", Some("s.example"), None).0, None);
    }

    #[test]
    fn sni_mismatch_records_only_in_shadow() {
        let mut p = policy();
        let peer = "127.0.0.1:1".parse().unwrap();
        let conn = || {
            ConnInfo::new(peer, None)
                .with_tls(TlsInfo { sni: Some("mgmt.example".into()), ..TlsInfo::default() })
        };
        let (ep, d, req) = run(&p, "/", Some("gw.example"), Some(conn()));
        assert_eq!(ep, Some(0));
        assert_eq!(d.unwrap().code(), "host.sni-mismatch");
        assert!(Decisions::get(req.extensions()).is_none());
        p.shadow = true;
        let (_, d, req) = run(&p, "/", Some("gw.example"), Some(conn()));
        assert!(d.is_some());
        assert!(Decisions::get(req.extensions()).unwrap().host.is_some());
    }

    /// The verbatim fast path of `decide_head` against the parser's path (`decide_parsed`), which it must
    /// agree with on every request: outcome, endpoint, denial (code, status, refused text, detail) and the
    /// recorded match.
    mod fast_path {
        use super::*;
        use portcullis_core::GateContext;
        use proptest::prelude::*;

        /// Configured names: the fast path's candidates. Some share a suffix with the wildcard.
        const NAMES: &[&str] = &[
            "api-0042.contoso.com",
            "a.b",
            "x",
            "portal.contoso.com",
            "mgmt.contoso.com",
            "xn--bcher-kva.example",
            "_acme-challenge.contoso.com",
            "very-long-label-very-long-label-very-long-label-very-long-label.contoso.com",
            "123.example",
            "ab.cdefgh",
            "0123456789abcdef",
            "0123456789abcdef0",
            "a-1.b_2.c3.d4.e5.f6.g7.h8.i9.j10.k11.l12.m13.n14.o15.p16.q17.r18.s19.t20.u21.v22.w23",
        ];

        /// A table over `NAMES` (subset by `mask`), in one of several shapes: with or without wildcards,
        /// port-bound routes, virtual-host tags and address routes.
        fn policy(mask: u16, shape: u8, shadow: bool) -> Policy {
            let mut names: Vec<&str> =
                NAMES.iter().enumerate().filter(|(i, _)| mask >> i & 1 == 1).map(|(_, n)| *n).collect();
            if names.is_empty() {
                names.push(NAMES[0]);
            }
            let mut a = Endpoint::new("a");
            let mut b = Endpoint::new("b").host("10.0.0.1").host("[::1]:8443");
            for (i, n) in names.iter().enumerate() {
                let ported = shape & 1 == 1 && i % 3 == 1;
                let pattern = if ported { format!("{n}:8443") } else { (*n).to_owned() };
                if shape & 2 == 2 && i % 4 == 2 {
                    b = b.host_in_vhost(pattern, "custom");
                } else if i % 2 == 0 {
                    a = a.host(pattern);
                } else {
                    b = b.host(pattern);
                }
                if shape & 1 == 1 && i % 5 == 0 && !ported {
                    // The same name on the port connections arrive on, for another endpoint; and on another
                    // port.
                    b = b.host(format!("{n}:8443")).host(format!("{n}:3443"));
                }
            }
            if shape & 4 == 4 {
                a = a.host("*.contoso.com").host("*.a.b");
            }
            let mut p = Policy::new(Hosts::builder().endpoint(a).endpoint(b).build().unwrap());
            p.shadow = shadow;
            p
        }

        /// Spellings of a configured name, and adversarial authorities around it.
        fn authority() -> impl Strategy<Value = Vec<u8>> {
            let name = proptest::sample::select(NAMES).prop_map(|n| n.as_bytes().to_vec());
            let respelled = (
                proptest::sample::select(NAMES),
                any::<u64>(),
                any::<bool>(),
                proptest::option::of(any::<u16>()),
            )
                .prop_map(|(n, mask, dot, port)| {
                    let mut s: Vec<u8> = n
                        .bytes()
                        .enumerate()
                        .map(|(i, c)| if mask >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c })
                        .collect();
                    if dot {
                        s.push(b'.');
                    }
                    if let Some(port) = port {
                        s.extend_from_slice(format!(":{port}").as_bytes());
                    }
                    s
                });
            let decorated = (
                proptest::sample::select(NAMES),
                proptest::sample::select(
                    &[
                        "", ".", "..", ":", ":80", ":8443", ":3443", ":99999", ":0x50", "@", "%2e", "/", "?",
                        "#", " ", "\t", "\u{e9}", "\u{0}", ":80:80", "]", "*", "x", "-", "_", ".1", ".0x1",
                        ":0080", ":008443", ":65535", ":65536", ":-1", ": 80", ":8443 ", "::8443", ":1:8443",
                        ":123456", ":0", ":00000", ".:8443", "X:8443", ":+80", ":8\u{e9}",
                    ][..],
                ),
                proptest::sample::select(
                    &[
                        "",
                        "u@",
                        "user:pw@",
                        ".",
                        "*.",
                        "a.",
                        "xn--",
                        "[",
                        "%41",
                        "\u{e9}",
                        " ",
                        "-",
                        "X",
                        "http://",
                        "api-0042.",
                    ][..],
                ),
            )
                .prop_map(|(n, suffix, prefix)| format!("{prefix}{n}{suffix}").into_bytes());
            let literal = proptest::sample::select(
                &[
                    "10.0.0.1",
                    "10.0.0.1:80",
                    "10.0.0.1.",
                    "[::1]",
                    "[::1]:8443",
                    "[::1]:443",
                    "[fe80::1%25eth0]",
                    "[v1.x]",
                    "127.1",
                    "0x7f.0.0.1",
                    "2130706433",
                    "a.contoso.com",
                    "a.b.contoso.com",
                    "contoso.com",
                    "q.a.b",
                    "A.B",
                    "xn--bcher-kva.EXAMPLE",
                    "b\u{fc}cher.example",
                    "",
                ][..],
            )
            .prop_map(|s| s.as_bytes().to_vec());
            let long = (1usize..300, proptest::sample::select(&[b'a', b'.', b'-'][..])).prop_map(|(n, c)| {
                let mut s = b"api-0042.contoso.com".to_vec();
                s.splice(0..0, std::iter::repeat_n(c, n));
                s
            });
            let random = proptest::collection::vec(
                proptest::sample::select(b"aZz09-_.:.:@/[]`{~%*\x80\xff A".to_vec()),
                0..40,
            );
            prop_oneof![
                3 => name,
                3 => respelled,
                3 => decorated,
                2 => literal,
                1 => long,
                2 => random,
            ]
        }

        /// `decide_head`, with what it records.
        fn fast(
            p: &Policy,
            uri: &http::Uri,
            version: Version,
            headers: &http::HeaderMap,
            lines: Option<portcullis_core::Lines<&http::HeaderValue>>,
            conn: Option<&ConnInfo>,
        ) -> (Outcome, Option<MatchedHost>) {
            p.decide_head(uri, version, headers, lines, conn)
        }

        /// What the gate should answer and record for a decision: the refusal (or, in shadow mode, its
        /// record) and the match.
        #[allow(clippy::type_complexity)]
        fn gated(
            p: &Policy,
            outcome: Outcome,
            matched: Option<MatchedHost>,
        ) -> (Result<(), (&'static str, String)>, Vec<&'static str>, Option<MatchedHost>) {
            match outcome {
                Outcome::Serve(_) => (Ok(()), Vec::new(), matched),
                Outcome::Refuse { denial, .. } if p.shadow => (Ok(()), vec![denial.code()], matched),
                Outcome::Refuse { denial, .. } => {
                    (Err((denial.code(), denial.detail().to_owned())), Vec::new(), matched)
                }
            }
        }

        /// Everything `decide_head` tells its callers, in comparable form.
        fn seen(result: (Outcome, Option<MatchedHost>)) -> impl PartialEq + std::fmt::Debug {
            let (outcome, matched) = result;
            let outcome = match outcome {
                Outcome::Serve(endpoint) => (Some(endpoint), None),
                Outcome::Refuse { endpoint, denial } => (
                    endpoint,
                    Some((
                        denial.code(),
                        denial.status(),
                        denial.refused().map(str::to_owned),
                        denial.detail().to_owned(),
                        denial.reason::<HostRefusal>().cloned(),
                    )),
                ),
            };
            (outcome, matched)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            #[test]
            fn fast_path_agrees_with_the_parser(
                mask in any::<u16>(),
                shape in 0u8..8,
                shadow in any::<bool>(),
                host in authority(),
                second in proptest::option::of(authority()),
                target in 0u8..4,
                lines in 0u8..4,
                version in proptest::sample::select(&[Version::HTTP_10, Version::HTTP_11, Version::HTTP_2][..]),
                conn in 0u8..5,
                indexed in any::<bool>(),
            ) {
                let p = policy(mask, shape, shadow);
                let text = String::from_utf8_lossy(&host).into_owned();
                let other = second.as_deref().unwrap_or(b"api-0042.contoso.com");
                let other_text = String::from_utf8_lossy(other).into_owned();
                // The request target: origin-form, or an absolute-form / `:authority` naming a host (this
                // one, or another).
                let uri: http::Uri = match target {
                    0 => "/".parse().unwrap(),
                    1 | 2 => format!("http://{text}/").parse().unwrap_or_else(|_| "/".parse().unwrap()),
                    _ => format!("https://{other_text}/").parse().unwrap_or_else(|_| "/".parse().unwrap()),
                };
                // The Host lines: none, this one, the other one, or both.
                let mut headers = http::HeaderMap::new();
                let sent: Vec<&[u8]> = match lines {
                    0 => vec![],
                    1 => vec![&host],
                    2 => vec![other],
                    _ => vec![&host, other],
                };
                for h in sent {
                    if let Ok(v) = http::HeaderValue::from_bytes(h) {
                        headers.append(HOST, v);
                    }
                }
                let peer = "127.0.0.1:1".parse().unwrap();
                let local = Some("127.0.0.1:8443".parse().unwrap());
                let conn = match conn {
                    0 => None,
                    1 => Some(ConnInfo::new(peer, None)),
                    2 => Some(ConnInfo::new(peer, local)),
                    3 => Some(ConnInfo::new(peer, local).with_tls(TlsInfo {
                        sni: Some(NAMES[0].into()),
                        ..TlsInfo::default()
                    })),
                    _ => Some(ConnInfo::new(peer, None).with_tls(TlsInfo::default())),
                };
                let mut cx = GateContext::default();
                cx.index_headers(&headers);
                let lines = if indexed { cx.header_index().map(|ix| ix.host().as_ref()) } else { None };
                let fast = fast(&p, &uri, version, &headers, lines, conn.as_ref());
                let parsed = p.decide_parsed(&uri, version, &headers, lines, conn.as_ref());
                let (outcome, matched) = p.decide_parsed(&uri, version, &headers, lines, conn.as_ref());
                let expected = gated(&p, outcome, matched);
                prop_assert_eq!(seen(fast), seen(parsed), "{:?} {:?}", text, uri);

                // The gate (which writes the usual match in place) tells the same.
                let mut head = http::Request::new(()).into_parts().0;
                (head.uri, head.version, head.headers) = (uri.clone(), version, headers.clone());
                let mut cx = GateContext::default();
                cx.conn = conn.clone();
                if indexed {
                    cx.index_headers(&head.headers);
                }
                let result = portcullis_core::Gate::check_in(&p, &mut head, &mut cx);
                let shadow: Vec<_> = cx.decisions().shadow.iter().map(Denial::code).collect();
                let got = (result.map_err(|d| (d.code(), d.detail().to_owned())), shadow, cx.decisions().host.clone());
                prop_assert_eq!(got, expected, "{:?} {:?}", text, uri);
            }
        }

        proptest! {
            /// The word-at-a-time colon search agrees with a byte-by-byte one.
            #[test]
            fn port_colon_agrees(
                authority in proptest::collection::vec(proptest::sample::select(b"a:9.\xba\x3a\xff\x00;".to_vec()), 0..20),
            ) {
                let tail = authority.len().saturating_sub(6);
                let want = authority[tail..].iter().rposition(|&b| b == b':').map(|at| tail + at);
                prop_assert_eq!(port_colon(&authority), want);
            }
        }

        /// Every configured name, as sent, takes the fast path's answer and that answer is the parser's.
        #[test]
        fn configured_names_agree() {
            for shape in 0..8 {
                let p = policy(u16::MAX, shape, false);
                for n in NAMES {
                    let mut headers = http::HeaderMap::new();
                    headers.insert(HOST, http::HeaderValue::from_static(n));
                    let uri: http::Uri = "/".parse().unwrap();
                    let fast = fast(&p, &uri, Version::HTTP_11, &headers, None, None);
                    let parsed = p.decide_parsed(&uri, Version::HTTP_11, &headers, None, None);
                    assert_eq!(seen(fast), seen(parsed), "{n} shape {shape}");
                }
            }
        }
    }
}
