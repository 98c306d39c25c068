//! Binding the `Host` of a request to the TLS connection it arrived on.
//!
//! A client that opened a TLS connection for `portal.contoso.com` (SNI) and then sends
//! `Host: management.contoso.com` on it reaches an endpoint through a virtual host (certificate, client
//! authentication, chain policy) chosen for another one. When the connection carries TLS facts
//! ([`ConnInfo::tls`](portcullis_core::ConnInfo)), the router and filter ask an [`SniCheck`] whether the
//! request's route belongs to the connection, and answer 421 Misdirected Request (RFC 9110 §15.5.20)
//! when it does not.
//!
//! The default, [`VhostBinding`]:
//! 1. when the connection's virtual host is known ([`TlsInfo::vhost`]) and the matched route is tagged with
//!    one ([`Endpoint::host_in_vhost`](crate::Endpoint::host_in_vhost), [`Endpoint::vhost`](crate::Endpoint::vhost)),
//!    they must be equal;
//! 2. otherwise, when the client sent SNI, the SNI is looked up in the same host table and must resolve to
//!    a route with the same [identity](crate::Route::identity) (virtual-host tag, else pattern) as the
//!    request's host: a wildcard route serves every name it covers on one connection, two exact names need
//!    a common virtual-host tag to share one;
//! 3. a connection without SNI and without a known virtual host (a client that dialled an address) binds
//!    nothing: the host table alone decides.
//!
//! Replace it with [`NoSniCheck`] or with a closure `Fn(&SniContext<'_>) -> Result<(), SniMismatch>`.

use portcullis_core::TlsInfo;

use crate::authority::RequestHost;
use crate::hosts::{Hosts, Route};

/// The request's host and port do not belong to the TLS connection they arrived on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the host {host} does not belong to the TLS connection (SNI {sni:?}, virtual host {vhost:?})")]
pub struct SniMismatch {
    /// The request's normalised host.
    pub host: String,
    /// The connection's SNI, if any.
    pub sni: Option<String>,
    /// The connection's virtual host, if known.
    pub vhost: Option<String>,
}

/// What an [`SniCheck`] is given: the connection's TLS facts, the request's host and its route.
#[derive(Debug, Clone, Copy)]
pub struct SniContext<'a> {
    pub(crate) tls: &'a TlsInfo,
    pub(crate) host: &'a RequestHost,
    pub(crate) port: Option<u16>,
    pub(crate) route: Route<'a>,
    pub(crate) hosts: &'a Hosts,
}

impl<'a> SniContext<'a> {
    /// The connection's TLS facts.
    pub fn tls(&self) -> &'a TlsInfo {
        self.tls
    }

    /// The request's host.
    pub fn host(&self) -> &'a RequestHost {
        self.host
    }

    /// The route the request's host matched.
    pub fn route(&self) -> Route<'a> {
        self.route
    }

    /// The host table.
    pub fn hosts(&self) -> &'a Hosts {
        self.hosts
    }

    /// The route the connection's SNI resolves to in the same table (at the request's port), if any.
    /// `None` without SNI, or when the SNI names no configured host.
    pub fn sni_route(&self) -> Option<Route<'a>> {
        let sni = self.tls.sni.as_deref()?;
        let parsed = RequestHost::parse(sni.as_bytes()).ok()?;
        if parsed.port().is_some() || parsed.ip().is_some() {
            return None;
        }
        self.hosts.lookup(&parsed, self.port)
    }

    /// The mismatch to report for this request.
    pub fn mismatch(&self) -> SniMismatch {
        SniMismatch {
            host: self.host.to_string(),
            sni: self.tls.sni.as_deref().map(str::to_owned),
            vhost: self.tls.vhost.as_deref().map(str::to_owned),
        }
    }
}

/// The TLS ↔ Host binding: whether a request's route belongs to the TLS connection it arrived on, and
/// which routes are served over TLS only. The host rule calls it for every request whose host matched a
/// route; it is the one place where hosts are bound to TLS virtual hosts. [`VhostBinding`] (the default)
/// binds by the routes' virtual-host tags and the SNI's route; portcullis-mtls' `VirtualHosts` binds by the
/// virtual hosts' own names as well.
pub trait SniCheck: Send + Sync + 'static {
    /// On a connection with TLS facts: `Ok(())` to serve, `Err` to answer 421.
    ///
    /// # Errors
    /// An [`SniMismatch`] (usually [`SniContext::mismatch`]) when the route is not the connection's.
    fn check(&self, ctx: &SniContext<'_>) -> Result<(), SniMismatch>;

    /// On a connection without TLS: the virtual host that serves `host` over TLS only, if any (the request
    /// is then answered 421). The default: the route's virtual-host tag, since none of a virtual host's
    /// certificate, client authentication or chain policy applies over plain HTTP.
    fn tls_only(&self, host: &RequestHost, route: Route<'_>) -> Option<String> {
        let _ = host;
        route.vhost().map(str::to_owned)
    }
}

impl<F> SniCheck for F
where
    F: Fn(&SniContext<'_>) -> Result<(), SniMismatch> + Send + Sync + 'static,
{
    fn check(&self, ctx: &SniContext<'_>) -> Result<(), SniMismatch> {
        self(ctx)
    }
}

/// The default [`SniCheck`]: see the [module documentation](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct VhostBinding;

impl SniCheck for VhostBinding {
    fn check(&self, ctx: &SniContext<'_>) -> Result<(), SniMismatch> {
        if let (Some(conn), Some(route)) = (ctx.tls.vhost.as_deref(), ctx.route.vhost()) {
            return if conn == route { Ok(()) } else { Err(ctx.mismatch()) };
        }
        if ctx.tls.sni.is_none() {
            return Ok(());
        }
        match ctx.sni_route() {
            Some(sni_route) if sni_route.identity() == ctx.route.identity() => Ok(()),
            _ => Err(ctx.mismatch()),
        }
    }
}

/// An [`SniCheck`] that binds nothing: every route is served on every connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSniCheck;

impl SniCheck for NoSniCheck {
    fn check(&self, _ctx: &SniContext<'_>) -> Result<(), SniMismatch> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::Endpoint;

    fn hosts() -> Hosts {
        Hosts::builder()
            .endpoint(Endpoint::new("gateway").host("gw.example").host_in_vhost("api.contoso.com", "custom"))
            .endpoint(Endpoint::new("portal").host("portal.example"))
            .endpoint(Endpoint::new("tenants").host("*.tenants.example"))
            .endpoint(Endpoint::new("shared").hosts(["a.shared.example", "b.shared.example"]).vhost("shared"))
            .build()
            .unwrap()
    }

    fn check(sni: Option<&str>, vhost: Option<&str>, host: &str) -> Result<(), SniMismatch> {
        let hosts = hosts();
        let tls = TlsInfo { sni: sni.map(Arc::from), vhost: vhost.map(Arc::from), ..TlsInfo::default() };
        let host = RequestHost::parse(host.as_bytes()).unwrap();
        let route = hosts.lookup(&host, None).unwrap();
        VhostBinding.check(&SniContext { tls: &tls, host: &host, port: None, route, hosts: &hosts })
    }

    #[test]
    fn default_binding() {
        // Same name, different case and trailing dot: same pattern.
        assert!(check(Some("gw.example"), None, "GW.example.").is_ok());
        // SNI for one endpoint, Host for another: refused.
        let err = check(Some("portal.example"), None, "gw.example").unwrap_err();
        assert_eq!(err.host, "gw.example");
        assert_eq!(err.sni.as_deref(), Some("portal.example"));
        // SNI naming nothing configured: refused.
        assert!(check(Some("other.example"), None, "gw.example").is_err());
        // A wildcard covers every tenant on one connection (a wildcard certificate would too).
        assert!(check(Some("t1.tenants.example"), None, "t2.tenants.example").is_ok());
        // Two exact names sharing a virtual-host tag may share a connection...
        assert!(check(Some("a.shared.example"), None, "b.shared.example").is_ok());
        // ...two exact names without a common tag may not, even on the same endpoint.
        assert!(check(Some("gw.example"), None, "api.contoso.com").is_err());
        // The connection's virtual host, when known, is compared with the route's tag.
        assert!(check(Some("whatever"), Some("custom"), "api.contoso.com").is_ok());
        assert!(check(Some("api.contoso.com"), Some("default"), "api.contoso.com").is_err());
        // No SNI and no virtual host: nothing to bind.
        assert!(check(None, None, "gw.example").is_ok());
        // Untagged route with a known connection vhost falls back to comparing the SNI.
        assert!(check(Some("portal.example"), Some("default"), "gw.example").is_err());
        assert!(
            NoSniCheck
                .check(&SniContext {
                    tls: &TlsInfo { sni: Some("portal.example".into()), ..TlsInfo::default() },
                    host: &RequestHost::parse(b"gw.example").unwrap(),
                    port: None,
                    route: hosts().resolve(b"gw.example").unwrap().unwrap(),
                    hosts: &hosts(),
                })
                .is_ok()
        );
    }
}
