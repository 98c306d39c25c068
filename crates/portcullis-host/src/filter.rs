//! Filter mode: one service, served only on the configured host names.

use std::sync::Arc;

use portcullis_core::{Gate, GateLayer, Responder};
use tower_layer::Layer;

use crate::hosts::Hosts;
use crate::policy::HostRule;
use crate::sni::SniCheck;

/// A layer that serves its inner service only for requests whose host matches the table ([`HostRule`]).
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use portcullis_host::{Endpoint, HostFilterLayer, Hosts};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let hosts = Hosts::builder().endpoint(Endpoint::new("gateway").host("api.contoso.example")).build()?;
/// let svc = ServiceBuilder::new()
///     .layer(HostFilterLayer::new(hosts))
///     .service(service_fn(|_req: Request<String>| async { Ok::<_, Infallible>(Response::new(String::new())) }));
/// let req = |host: &str| Request::builder().header("host", host).body(String::new()).unwrap();
/// assert_eq!(svc.clone().oneshot(req("API.contoso.example.")).await?.status(), StatusCode::OK);
/// assert_eq!(svc.clone().oneshot(req("10.0.0.1")).await?.status(), StatusCode::MISDIRECTED_REQUEST);
/// assert_eq!(svc.oneshot(req("evil.example")).await?.status(), StatusCode::MISDIRECTED_REQUEST);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct HostFilterLayer(GateLayer<HostRule>);

impl HostFilterLayer {
    /// Serves only the hosts of `hosts`; refusals use the default [`Responder`] and the SNI binding is
    /// [`VhostBinding`](crate::VhostBinding).
    pub fn new(hosts: Hosts) -> Self {
        HostFilterLayer(GateLayer::new(HostRule::new(hosts)))
    }

    /// Shadow mode: refusals are recorded in [`Decisions::shadow`](portcullis_core::Decisions::shadow) and
    /// logged, and the request is served.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.0.rule_mut().shadow = shadow;
        self
    }

    /// Replaces the responder that builds refusals.
    pub fn responder(self, responder: Responder) -> Self {
        HostFilterLayer(self.0.responder(responder))
    }

    /// Replaces the SNI binding check (default [`VhostBinding`](crate::VhostBinding)).
    pub fn sni_check(mut self, check: impl SniCheck) -> Self {
        self.0.rule_mut().sni = Arc::new(check);
        self
    }

    /// The host table.
    pub fn hosts(&self) -> &Hosts {
        &self.0.rule().hosts
    }

    /// The rule this layer enforces.
    pub fn rule(&self) -> &Arc<HostRule> {
        self.0.rule()
    }
}

impl<S> Layer<S> for HostFilterLayer {
    type Service = HostFilter<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.0.layer(inner)
    }
}

/// The service of [`HostFilterLayer`].
pub type HostFilter<S> = Gate<S, HostRule>;
