//! Filter mode: one service, served only on the configured host names.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use portcullis_core::{Responder, ResponseFuture};
use tower_layer::Layer;
use tower_service::Service;

use crate::hosts::Hosts;
use crate::policy::{Outcome, Policy, Verbatim};
use crate::sni::SniCheck;

/// A layer that serves its inner service only for requests whose host matches the table; see [`HostFilter`].
#[derive(Clone)]
pub struct HostFilterLayer {
    policy: Arc<Policy>,
}

impl HostFilterLayer {
    /// Serves only the hosts of `hosts`; refusals use the default problem+json [`Responder`] and the SNI
    /// binding is [`VhostBinding`](crate::VhostBinding).
    pub fn new(hosts: Hosts) -> Self {
        HostFilterLayer { policy: Arc::new(Policy::new(hosts)) }
    }

    /// Shadow mode: refusals are recorded in [`Decisions::shadow`](portcullis_core::Decisions::shadow) and logged, and the request is served.
    pub fn shadow(mut self, shadow: bool) -> Self {
        Arc::make_mut(&mut self.policy).shadow = shadow;
        self
    }

    /// Replaces the responder that builds refusals.
    pub fn responder(mut self, responder: Responder) -> Self {
        Arc::make_mut(&mut self.policy).responder = responder;
        self
    }

    /// Replaces the SNI binding check (default [`VhostBinding`](crate::VhostBinding)).
    pub fn sni_check(mut self, check: impl SniCheck) -> Self {
        Arc::make_mut(&mut self.policy).sni = Arc::new(check);
        self
    }

    /// The host table.
    pub fn hosts(&self) -> &Hosts {
        &self.policy.hosts
    }
}

impl std::fmt::Debug for HostFilterLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostFilterLayer")
            .field("hosts", &self.policy.hosts)
            .field("shadow", &self.policy.shadow)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for HostFilterLayer {
    type Service = HostFilter<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HostFilter { inner, policy: self.policy.clone() }
    }
}

/// Filter mode of host routing: the inner service answers only requests whose host matches a configured
/// pattern; everything else gets the refusal of the [module](crate) documentation (421 for unknown
/// names and IP literals, 400 for malformed authorities). The match is recorded in
/// [`Decisions::host`](portcullis_core::Decisions).
///
/// In shadow mode, refusals are recorded in [`Decisions::shadow`](portcullis_core::Decisions::shadow) and the inner service is called.
#[derive(Clone)]
pub struct HostFilter<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S> HostFilter<S> {
    /// Wraps `inner` with the defaults of [`HostFilterLayer::new`].
    pub fn new(inner: S, hosts: Hosts) -> Self {
        HostFilterLayer::new(hosts).layer(inner)
    }

    /// A [`HostFilterLayer`] serving the hosts of `hosts`.
    pub fn layer(hosts: Hosts) -> HostFilterLayer {
        HostFilterLayer::new(hosts)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for HostFilter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostFilter")
            .field("inner", &self.inner)
            .field("hosts", &self.policy.hosts)
            .field("shadow", &self.policy.shadow)
            .finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Service<Request<B>> for HostFilter<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: portcullis_core::GateResponseBody,
{
    type Response = Response<<ResBody as portcullis_core::GateResponseBody>::Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        portcullis_core::call_gate(&*self.policy, &self.policy.responder, &mut self.inner, req)
    }
}

impl HostFilterLayer {
    /// The gate's decision on a request's parts: the match is recorded in `decisions.host`; a refusal is
    /// returned (or, in shadow mode, recorded). The `Host` lines are read from the headers' index when they
    /// were [`Scanned::indexed`](portcullis_core::Scanned::indexed) (made from the same map), else looked up.
    ///
    /// # Errors
    /// The refusal (421 for an unknown host or a bare IP, 400 for a malformed authority, …).
    #[inline]
    pub fn decide(
        &self,
        uri: &http::Uri,
        version: http::Version,
        headers: &portcullis_core::Scanned<'_>,
        conn: Option<&portcullis_core::ConnInfo>,
        decisions: &mut portcullis_core::Decisions,
    ) -> Result<(), portcullis_core::Denial> {
        self.policy.decide_scanned(uri, version, headers, conn, decisions)
    }
}

impl portcullis_core::Gate for HostFilterLayer {
    /// The host decision as a [`Gate`](portcullis_core::Gate): the match is recorded in
    /// [`Decisions::host`](portcullis_core::Decisions); refusals (or, in shadow mode, records) as in
    /// [`HostFilter`], which runs this same decision.
    fn check(&self, head: &mut http::request::Parts) -> Result<(), portcullis_core::Denial> {
        self.policy.check(head)
    }

    fn check_in(
        &self,
        head: &mut http::request::Parts,
        cx: &mut portcullis_core::GateContext,
    ) -> Result<(), portcullis_core::Denial> {
        self.policy.check_in(head, cx)
    }

    // Reads headers, never changes them.
    fn preserves_headers(&self) -> bool {
        true
    }
}

impl Policy {
    /// The gate's decision on a request's parts, recorded in `decisions` (see [`HostFilterLayer::decide`]).
    #[inline]
    pub(crate) fn decide_scanned(
        &self,
        uri: &http::Uri,
        version: http::Version,
        scanned: &portcullis_core::Scanned<'_>,
        conn: Option<&portcullis_core::ConnInfo>,
        decisions: &mut portcullis_core::Decisions,
    ) -> Result<(), portcullis_core::Denial> {
        let headers = scanned.map();
        let host_lines = scanned.index().map(|ix| *ix.host());
        // `decide_head`, with the usual request's match written in place.
        let verbatim = self.verbatim(uri, version, headers, host_lines, conn);
        if let Verbatim::Serve(route, name) = verbatim {
            decisions.host = Some(self.hosts.matched_exact(route, name));
            return Ok(());
        }
        let (outcome, matched) = self.decide_other(verbatim, uri, version, headers, host_lines, conn);
        if let Some(matched) = matched {
            decisions.host = Some(matched);
        }
        match outcome {
            Outcome::Serve(_) => Ok(()),
            Outcome::Refuse { denial, .. } if self.shadow => {
                decisions.push_shadow(denial);
                Ok(())
            }
            Outcome::Refuse { denial, .. } => Err(denial),
        }
    }
}

impl portcullis_core::Gate for Policy {
    fn check(&self, head: &mut http::request::Parts) -> Result<(), portcullis_core::Denial> {
        portcullis_core::GateContext::run(self, head)
    }

    fn check_in(
        &self,
        head: &mut http::request::Parts,
        cx: &mut portcullis_core::GateContext,
    ) -> Result<(), portcullis_core::Denial> {
        // The index an earlier gate built (the client-address gate does), else one lookup: for this header
        // alone, walking every name costs more than hashing one standard name.
        let (conn, headers, decisions) = cx.scanned(&head.headers);
        self.decide_scanned(&head.uri, head.version, &headers, conn, decisions)
    }

    // Reads headers, never changes them.
    fn preserves_headers(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::request::Parts;
    use http::{Request, StatusCode};
    use portcullis_core::{
        ClientAddrConfig, ConnInfo, Denial, ForwardedSource, Gate, GateContext, Gates, HeaderIndex,
    };

    use crate::{Endpoint, HostFilterLayer, Hosts};

    /// A gate of an application's own, run inside the same gate run: copies `X-Forwarded-Host` into `Host`
    /// (as apps behind a proxy sometimes do), without saying anything about the header index.
    struct CopiesForwardedHost;
    impl Gate for CopiesForwardedHost {
        fn check(&self, head: &mut Parts) -> Result<(), Denial> {
            GateContext::run(self, head)
        }
        fn check_in(&self, head: &mut Parts, _cx: &mut GateContext) -> Result<(), Denial> {
            if let Some(v) = head.headers.get("x-forwarded-host").cloned() {
                head.headers.insert(http::header::HOST, v);
            }
            Ok(())
        }
    }

    fn head() -> Parts {
        let mut req = Request::builder()
            .header("host", "public.example")
            .header("x-forwarded-host", "internal.example")
            .header("x-forwarded-for", "198.51.100.7")
            .body(())
            .unwrap();
        req.extensions_mut().insert(ConnInfo::new("10.1.1.1:4000".parse().unwrap(), None));
        req.into_parts().0
    }

    /// The client-address gate builds the header index; a gate of the application's then rewrites `Host`.
    /// The host filter must decide on the rewritten header (unknown here: 421), never on the index's stale
    /// copy of the original one.
    #[test]
    fn a_host_rewritten_by_another_gate_is_not_read_from_a_stale_index() {
        let client = ClientAddrConfig::new()
            .trusted_proxies(["10.0.0.0/8".parse().unwrap()])
            .unwrap()
            .source(ForwardedSource::XForwardedFor);
        let hosts =
            Hosts::builder().endpoint(Endpoint::new("public").host("public.example")).build().unwrap();
        let gates = Gates::new([
            Arc::new(client) as Arc<dyn Gate>,
            Arc::new(CopiesForwardedHost),
            Arc::new(HostFilterLayer::new(hosts)),
        ]);
        let mut h = head();
        let denial = gates.check(&mut h).expect_err("the rewritten host is not configured");
        assert_eq!((denial.status(), denial.code()), (StatusCode::MISDIRECTED_REQUEST, "host.unknown"));
        assert_eq!(h.headers["host"], "internal.example");
    }

    /// Portcullis' own gates say they preserve headers (so the index is shared between them); a gate that
    /// does not say so drops it.
    #[test]
    fn only_gates_that_preserve_headers_keep_the_index() {
        let client = ClientAddrConfig::new().source(ForwardedSource::XForwardedFor);
        let hosts = Hosts::builder().endpoint(Endpoint::new("e").host("public.example")).build().unwrap();
        assert!(client.preserves_headers());
        assert!(HostFilterLayer::new(hosts).preserves_headers());
        assert!(!CopiesForwardedHost.preserves_headers());
        let mut cx = GateContext::default();
        cx.index_headers(&head().headers);
        assert!(cx.header_index().map(HeaderIndex::host).is_some());
    }
}
