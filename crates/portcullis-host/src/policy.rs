//! The decision shared by [`HostFilter`](crate::HostFilter) and [`HostRouter`](crate::HostRouter), and the
//! typed reasons of its refusals.

use std::sync::Arc;

use http::StatusCode;
use http::request::Parts;
use portcullis_core::{ConnInfo, Decisions, Denial, MatchedHost, Rule};

use crate::authority::{AuthorityError, host_of};
use crate::hosts::Hosts;
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

/// The host rule: which endpoint a request's host names, and the SNI ↔ Host binding. The rule of
/// [`HostFilterLayer`](crate::HostFilterLayer) and [`HostRouter`](crate::HostRouter).
///
/// It records the [`MatchedHost`] in the request's [`Decisions`]; it refuses an unknown host or an IP
/// literal (421), a malformed or missing authority (400), and a host outside the TLS connection's virtual
/// host (421). In shadow mode it records the refusal and lets the request through.
#[derive(Clone)]
pub struct HostRule {
    pub(crate) hosts: Hosts,
    pub(crate) shadow: bool,
    pub(crate) sni: Arc<dyn SniCheck>,
}

impl std::fmt::Debug for HostRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRule")
            .field("hosts", &self.hosts)
            .field("shadow", &self.shadow)
            .finish_non_exhaustive()
    }
}

/// What the host rule decided: serve the endpoint, or refuse (naming the endpoint when the host matched one
/// but the SNI binding refused it).
pub(crate) enum Outcome {
    Serve,
    Refuse(Denial),
}

impl HostRule {
    /// A rule serving the names of `hosts`, binding hosts to their TLS virtual hosts by name
    /// ([`VhostBinding`]).
    pub fn new(hosts: Hosts) -> Self {
        HostRule { hosts, shadow: false, sni: Arc::new(VhostBinding) }
    }

    /// Shadow mode: refusals are recorded, not enforced.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Replaces the SNI ↔ Host check.
    pub fn sni_check(mut self, check: impl SniCheck) -> Self {
        self.sni = Arc::new(check);
        self
    }

    /// The host table.
    pub fn hosts(&self) -> &Hosts {
        &self.hosts
    }

    /// The decision on a request head: the outcome and, when the host matched, its record.
    pub(crate) fn decide(
        &self,
        uri: &http::Uri,
        version: http::Version,
        headers: &http::HeaderMap,
        conn: Option<&ConnInfo>,
    ) -> (Outcome, Option<MatchedHost>) {
        let host = match host_of(uri, version, headers) {
            Ok(host) => host,
            Err(e) => return (refuse(HostRefusal::Authority(e)), None),
        };
        let port = self.route_port(host.port(), uri, conn);
        let Some(route) = self.hosts.lookup(&host, port) else {
            let refusal = match host.ip() {
                Some(_) => HostRefusal::IpLiteral { host: host.to_string() },
                None => HostRefusal::Unknown { host: host.to_string() },
            };
            return (refuse(refusal), None);
        };
        let denial = match conn.and_then(|c| c.tls.as_deref()) {
            Some(tls) => {
                let ctx = SniContext { tls, host: &host, port, route, hosts: &self.hosts };
                self.sni.check(&ctx).err().map(|mismatch| HostRefusal::Sni(mismatch).into_denial())
            }
            // A host served by a virtual host over TLS only (its certificate, client authentication, chain
            // policy) is never served over plain HTTP, where none of those apply.
            None => self
                .sni
                .tls_only(&host, route)
                .map(|vhost| HostRefusal::NotTls { host: host.to_string(), vhost }.into_denial()),
        };
        let matched = (denial.is_none() || self.shadow).then(|| self.hosts.matched_host(route, &host));
        match denial {
            None => (Outcome::Serve, matched),
            Some(denial) => (Outcome::Refuse(denial), matched),
        }
    }

    /// The port routes are chosen by: where the connection arrived (its local port, or the PROXY header's
    /// destination), else the authority's, else the scheme's default.
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
}

impl Rule for HostRule {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        let conn = ConnInfo::lookup(&head.extensions);
        let (outcome, matched) = self.decide(&head.uri, head.version, &head.headers, conn.as_deref());
        drop(conn);
        if let Some(matched) = matched {
            Decisions::get_mut(&mut head.extensions).host = Some(matched);
        }
        match outcome {
            Outcome::Serve => Ok(()),
            Outcome::Refuse(denial) if self.shadow => {
                Decisions::record_shadow(&mut head.extensions, denial);
                Ok(())
            }
            Outcome::Refuse(denial) => Err(denial),
        }
    }
}

fn refuse(refusal: HostRefusal) -> Outcome {
    Outcome::Refuse(refusal.into_denial())
}

fn default_port(uri: &http::Uri, conn: Option<&ConnInfo>) -> Option<u16> {
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => return Some(443),
        Some(s) if s.eq_ignore_ascii_case("http") => return Some(80),
        _ => {}
    }
    conn.map(|c| if c.tls.is_some() { 443 } else { 80 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Endpoint;
    use http::Request;
    use http::header::HOST;
    use portcullis_core::TlsInfo;

    fn policy() -> HostRule {
        HostRule::new(
            Hosts::builder()
                .endpoint(Endpoint::new("gw").hosts(["gw.example", "*.t.example"]))
                .endpoint(Endpoint::new("mgmt").hosts(["gw.example:3443", "mgmt.example"]))
                .build()
                .unwrap(),
        )
    }

    fn run(
        p: &HostRule,
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
        let (mut head, ()) = req.into_parts();
        let result = p.check(&mut head);
        let ep = Decisions::get(&head.extensions).and_then(|d| d.host.as_ref()).map(|h| h.endpoint_id);
        (ep, result.err(), Request::from_parts(head, ()))
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
        let p = HostRule::new(
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
        assert_eq!(ep, None);
        assert_eq!(d.unwrap().code(), "host.sni-mismatch");
        assert!(Decisions::get(req.extensions()).is_none());
        p.shadow = true;
        let (ep, d, req) = run(&p, "/", Some("gw.example"), Some(conn()));
        assert_eq!((ep, d.is_none()), (Some(0), true));
        let recorded = Decisions::get(req.extensions()).unwrap();
        assert_eq!(recorded.shadow.first().map(Denial::code), Some("host.sni-mismatch"));
    }
}
