//! The TLS ↔ Host binding by the virtual hosts' own names: [`VirtualHosts`] as the host rule's
//! [`SniCheck`].

use portcullis_host::{RequestHost, Route, SniCheck, SniContext, SniMismatch, VhostBinding};

use crate::verifier::ClientAuth;
use crate::vhost::VirtualHosts;

/// Binds each request's host to its connection's virtual host, by the virtual hosts' own name table (exact,
/// wildcard, default), on top of the routes' tags ([`VhostBinding`]):
///
/// - over TLS, the host must select the same virtual host as the connection did (its SNI, or the default
///   virtual host without SNI): otherwise a client could complete the handshake with a host that asks for
///   no client certificate and then name a host that requires one;
/// - over plain HTTP, a host whose virtual host requires client certificates (or whose route is tagged
///   with a virtual host) is refused: none of its certificate, client authentication or chain policy would
///   apply.
///
/// Install it with `HostFilterLayer::sni_check(virtual_hosts.clone())`; the gateway does so when it is
/// given virtual hosts. Both refusals are the host rule's 421.
impl SniCheck for VirtualHosts {
    fn check(&self, ctx: &SniContext<'_>) -> Result<(), SniMismatch> {
        VhostBinding.check(ctx)?;
        let host = ctx.host().to_string();
        let selected = self.select(Some(&host)).map(|(name, _)| name);
        match selected.as_deref() == ctx.tls().vhost.as_deref() {
            true => Ok(()),
            false => Err(ctx.mismatch()),
        }
    }

    fn tls_only(&self, host: &RequestHost, route: Route<'_>) -> Option<String> {
        if let Some(tag) = route.vhost() {
            return Some(tag.to_owned());
        }
        match self.select_named(&host.to_string()) {
            Some((vhost, ClientAuth::Required)) => Some(vhost.to_string()),
            _ => None,
        }
    }
}
