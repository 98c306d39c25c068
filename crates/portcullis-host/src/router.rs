//! Router mode: one inner service per endpoint, chosen by host name.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use portcullis_core::{Decisions, GateBody, Responder, ResponseFuture, Rule};
use tower::util::BoxCloneSyncService;
use tower_service::Service;

use crate::hosts::{Endpoint, HostConfigError, Hosts, HostsBuilder};
use crate::policy::HostRule;
use crate::sni::SniCheck;

/// The boxed, cloneable service of one endpoint (typically an `axum::Router`).
pub type EndpointService<B, ResBody, E> = BoxCloneSyncService<Request<B>, Response<ResBody>, E>;

/// Routes each request to the service of the endpoint its host matches, and refuses the rest (421 for
/// unknown names and IP literals, 400 for malformed authorities, 421 for a host of another TLS virtual
/// host). The match is recorded in [`Decisions::host`](portcullis_core::Decisions).
///
/// Built with [`HostRouter::builder`]. Cloning is cheap (the table is shared); every clone holds its own
/// clone of each endpoint service. Like `tower::steer::Steer`, `poll_ready` waits until every endpoint
/// service is ready, which costs nothing for services that are always ready (axum routers).
///
/// # Shadow mode
/// Refusals are recorded in [`Decisions::shadow`] and logged. A request whose host matched but whose SNI
/// binding failed is served by its endpoint. A request whose host matched nothing has no endpoint: it is
/// served by the [shadow fallback](HostRouterBuilder::shadow_fallback) when one is configured, and
/// otherwise still refused — shadow mode never invents a route, and the fallback is never used outside
/// shadow mode.
pub struct HostRouter<B, ResBody, E> {
    policy: Arc<HostRule>,
    responder: Responder,
    services: Vec<EndpointService<B, ResBody, E>>,
    fallback: Option<EndpointService<B, ResBody, E>>,
}

impl<B, ResBody, E> Clone for HostRouter<B, ResBody, E> {
    fn clone(&self) -> Self {
        HostRouter {
            policy: self.policy.clone(),
            responder: self.responder.clone(),
            services: self.services.clone(),
            fallback: self.fallback.clone(),
        }
    }
}

impl<B, ResBody, E> fmt::Debug for HostRouter<B, ResBody, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostRouter")
            .field("hosts", &self.policy.hosts)
            .field("shadow", &self.policy.shadow)
            .field("fallback", &self.fallback.is_some())
            .finish_non_exhaustive()
    }
}

impl<B, ResBody, E> HostRouter<B, ResBody, E> {
    /// A builder: add one [`route`](HostRouterBuilder::route) per endpoint.
    pub fn builder() -> HostRouterBuilder<B, ResBody, E> {
        HostRouterBuilder {
            hosts: Hosts::builder(),
            services: Vec::new(),
            fallback: None,
            shadow: false,
            responder: None,
            sni: None,
        }
    }

    /// The host table.
    pub fn hosts(&self) -> &Hosts {
        &self.policy.hosts
    }
}

impl<B, ResBody, E> Service<Request<B>> for HostRouter<B, ResBody, E> {
    type Response = Response<GateBody<ResBody>>;
    type Error = E;
    type Future = ResponseFuture<<EndpointService<B, ResBody, E> as Service<Request<B>>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        for service in self.services.iter_mut().chain(self.fallback.as_mut()) {
            match service.poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut head, body) = req.into_parts();
        if let Err(denial) = self.policy.check(&mut head) {
            return ResponseFuture::refused(self.responder.respond(denial, &head));
        }
        // The rule recorded the endpoint (in shadow mode too, when the host matched one); otherwise shadow
        // mode let an unmatched request through: the fallback serves it, or nothing does.
        let endpoint = Decisions::get(&head.extensions).and_then(|d| d.host.as_ref()).map(|h| h.endpoint_id);
        let service = match endpoint.and_then(|e| self.services.get_mut(e)) {
            Some(service) => service,
            None => match self.fallback.as_mut() {
                Some(fallback) => fallback,
                None => {
                    let denial = Decisions::get(&head.extensions)
                        .and_then(|d| d.shadow.last().cloned())
                        .unwrap_or_else(|| {
                            portcullis_core::Denial::new(
                                crate::policy::LAYER,
                                "host.unrouted",
                                http::StatusCode::MISDIRECTED_REQUEST,
                                "no endpoint was matched for this request's host",
                            )
                        });
                    return ResponseFuture::refused(self.responder.respond(denial, &head));
                }
            },
        };
        ResponseFuture::future(service.call(Request::from_parts(head, body)))
    }
}

/// Builds a [`HostRouter`].
pub struct HostRouterBuilder<B, ResBody, E> {
    hosts: HostsBuilder,
    services: Vec<EndpointService<B, ResBody, E>>,
    fallback: Option<EndpointService<B, ResBody, E>>,
    shadow: bool,
    responder: Option<Responder>,
    sni: Option<Arc<dyn SniCheck>>,
}

impl<B, ResBody, E> fmt::Debug for HostRouterBuilder<B, ResBody, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostRouterBuilder").field("hosts", &self.hosts).finish_non_exhaustive()
    }
}

impl<B, ResBody, E> HostRouterBuilder<B, ResBody, E> {
    /// Serves `endpoint`'s host patterns with `service`.
    pub fn route<S>(mut self, endpoint: Endpoint, service: S) -> Self
    where
        S: Service<Request<B>, Response = Response<ResBody>, Error = E> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        self.hosts = self.hosts.endpoint(endpoint);
        self.services.push(BoxCloneSyncService::new(service));
        self
    }

    /// Shadow mode: see [`HostRouter`].
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// The service for requests that match no endpoint, used only in shadow mode (see [`HostRouter`]).
    pub fn shadow_fallback<S>(mut self, service: S) -> Self
    where
        S: Service<Request<B>, Response = Response<ResBody>, Error = E> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        self.fallback = Some(BoxCloneSyncService::new(service));
        self
    }

    /// Replaces the responder that builds refusals (default: problem+json).
    pub fn responder(mut self, responder: Responder) -> Self {
        self.responder = Some(responder);
        self
    }

    /// Replaces the SNI binding check (default [`VhostBinding`](crate::VhostBinding)).
    pub fn sni_check(mut self, check: impl SniCheck) -> Self {
        self.sni = Some(Arc::new(check));
        self
    }

    /// Checks the host patterns and builds the router.
    ///
    /// # Errors
    /// A [`HostConfigError`] (see [`HostsBuilder::build`]).
    pub fn build(self) -> Result<HostRouter<B, ResBody, E>, HostConfigError> {
        let mut policy = HostRule::new(self.hosts.build()?).shadow(self.shadow);
        if let Some(sni) = self.sni {
            policy.sni = sni;
        }
        Ok(HostRouter {
            policy: Arc::new(policy),
            responder: self.responder.unwrap_or_default(),
            services: self.services,
            fallback: self.fallback,
        })
    }
}

#[cfg(feature = "axum")]
impl HostRouter<axum::body::Body, axum::body::Body, std::convert::Infallible> {
    /// An `axum::Router` that hands every request to this host router, for `axum::serve` (use
    /// `into_make_service_with_connect_info::<ConnInfo>()` so that the SNI binding sees TLS facts).
    pub fn into_axum_router(self) -> axum::Router {
        axum::Router::new().fallback_service(self)
    }
}
