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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::request::Parts;
    use http::{Request, StatusCode};
    use portcullis_core::{Denial, Rule, Rules, rule_fn};

    use crate::{Endpoint, HostFilterLayer, Hosts};

    /// A rule of the application's, before the host rule, that copies `X-Forwarded-Host` into `Host`
    /// (what a careless proxy setup does): the host rule decides on the header as it is when it runs,
    /// never on a copy taken before, so the rewritten (unknown) host is refused.
    #[test]
    fn a_host_rewritten_by_an_earlier_rule_is_the_one_decided_on() {
        let copies = rule_fn(|head: &mut Parts| -> Result<(), Denial> {
            if let Some(v) = head.headers.get("x-forwarded-host").cloned() {
                head.headers.insert(http::header::HOST, v);
            }
            Ok(())
        });
        let hosts =
            Hosts::builder().endpoint(Endpoint::new("public").host("public.example")).build().unwrap();
        let rules =
            Rules::new([Arc::new(copies) as Arc<dyn Rule>, HostFilterLayer::new(hosts).rule().clone()]);
        let req = Request::builder()
            .header("host", "public.example")
            .header("x-forwarded-host", "internal.example")
            .body(())
            .unwrap();
        let (mut head, ()) = req.into_parts();
        let denial = rules.check(&mut head).expect_err("the rewritten host is not configured");
        assert_eq!((denial.status(), denial.code()), (StatusCode::MISDIRECTED_REQUEST, "host.unknown"));
        // Without the rewrite, the same request is served.
        let mut head = Request::builder().header("host", "Public.Example.").body(()).unwrap().into_parts().0;
        rules.check(&mut head).expect("the configured host, any case, trailing dot");
    }
}
