//! [`Rule`]: one request-level decision, and [`GateLayer`]: the tower layer that enforces one.
//!
//! Every refusing layer of portcullis is a rule: a synchronous decision on a request's head that either
//! lets it through (recording what it learnt in the request's [`Decisions`](crate::Decisions)) or refuses
//! it with a [`Denial`]. A rule has one method and one decision path: the same rule object runs alone
//! ([`GateLayer`]), in a list of rules ([`Rules`]), and inside the `portcullis::Gateway`.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode, request::Parts};
//! use portcullis_core::{Denial, GateLayer, Rule};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! /// Refuses requests without a `x-api-version` header.
//! struct NeedsVersion;
//! impl Rule for NeedsVersion {
//!     fn check(&self, head: &mut Parts) -> Result<(), Denial> {
//!         match head.headers.contains_key("x-api-version") {
//!             true => Ok(()),
//!             false => Err(Denial::new("example", "example.no-version", StatusCode::BAD_REQUEST, "say which version")),
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let svc = ServiceBuilder::new()
//!     .layer(GateLayer::new(NeedsVersion))
//!     .service(service_fn(|_req: Request<String>| async { Ok::<_, Infallible>(Response::new(String::from("hi"))) }));
//! let ok = Request::builder().header("x-api-version", "2").body(String::new())?;
//! assert_eq!(svc.clone().oneshot(ok).await?.status(), StatusCode::OK);
//! let refused = Request::builder().body(String::new())?;
//! assert_eq!(svc.oneshot(refused).await?.status(), StatusCode::BAD_REQUEST);
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::request::Parts;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::{GateBody, ResponseFuture};
use crate::denial::{Denial, Responder};

/// One request-level decision. See the [module docs](self).
///
/// `check` reads the request's head (method, target, version, headers, and extensions: the connection's
/// [`ConnInfo`](crate::ConnInfo) and the [`Decisions`](crate::Decisions) of the rules before it), may
/// change it (a rule that strips a header), records what it learnt in the decisions, and answers `Ok` to let
/// the request through or the [`Denial`] to refuse it with.
pub trait Rule: Send + Sync + 'static {
    /// Decides on a request's head.
    ///
    /// # Errors
    /// The [`Denial`] to answer with.
    fn check(&self, head: &mut Parts) -> Result<(), Denial>;
}

impl<R: Rule + ?Sized> Rule for Arc<R> {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        (**self).check(head)
    }
}

impl<R: Rule + ?Sized> Rule for Box<R> {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        (**self).check(head)
    }
}

impl<R: Rule> Rule for Option<R> {
    /// No rule configured lets every request through.
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        match self {
            Some(rule) => rule.check(head),
            None => Ok(()),
        }
    }
}

/// A rule written as a closure: `rule_fn(|head| ...)`.
///
/// ```
/// use http::{StatusCode, request::Parts};
/// use portcullis_core::{Denial, GateLayer, rule_fn};
///
/// let layer = GateLayer::new(rule_fn(|head: &mut Parts| match head.method == http::Method::GET {
///     true => Ok(()),
///     false => Err(Denial::new("read-only", "read-only.method", StatusCode::METHOD_NOT_ALLOWED, "only GET")),
/// }));
/// # let _ = layer;
/// ```
pub fn rule_fn<F>(f: F) -> RuleFn<F>
where
    F: Fn(&mut Parts) -> Result<(), Denial> + Send + Sync + 'static,
{
    RuleFn(f)
}

/// The rule of [`rule_fn`].
#[derive(Clone, Copy)]
pub struct RuleFn<F>(F);

impl<F> fmt::Debug for RuleFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RuleFn(..)")
    }
}

impl<F> Rule for RuleFn<F>
where
    F: Fn(&mut Parts) -> Result<(), Denial> + Send + Sync + 'static,
{
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        (self.0)(head)
    }
}

/// Several rules run in order; the first refusal wins.
#[derive(Clone, Default)]
pub struct Rules(Arc<[Arc<dyn Rule>]>);

impl Rules {
    /// The rules, in the order they run.
    pub fn new(rules: impl IntoIterator<Item = Arc<dyn Rule>>) -> Self {
        Rules(rules.into_iter().collect())
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rules({})", self.0.len())
    }
}

impl Rule for Rules {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        self.0.iter().try_for_each(|rule| rule.check(head))
    }
}

// === impl GateLayer ===

/// A tower layer enforcing one [`Rule`] in front of a service ([`Gate`]).
///
/// The portcullis layers (`HostFilterLayer`, `IpFilterLayer`, ...) are this layer over their rule.
pub struct GateLayer<R> {
    rule: Arc<R>,
    responder: Responder,
}

// Not derived: the rule is shared, so the layer is `Clone` whatever `R` is.
impl<R> Clone for GateLayer<R> {
    fn clone(&self) -> Self {
        GateLayer { rule: self.rule.clone(), responder: self.responder.clone() }
    }
}

impl<R> fmt::Debug for GateLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateLayer").field("rule", &std::any::type_name::<R>()).finish_non_exhaustive()
    }
}

impl<R: Rule> GateLayer<R> {
    /// A layer enforcing `rule`, refusing with the default responder.
    pub fn new(rule: R) -> Self {
        GateLayer::shared(Arc::new(rule))
    }

    /// A layer enforcing a rule shared with others (no second `Arc`).
    pub fn shared(rule: Arc<R>) -> Self {
        GateLayer { rule, responder: Responder::default() }
    }
}

impl<R> GateLayer<R> {
    /// Replaces the refusal response.
    pub fn responder(mut self, responder: Responder) -> Self {
        self.responder = responder;
        self
    }

    /// The rule.
    pub fn rule(&self) -> &Arc<R> {
        &self.rule
    }

    /// The rule, to change (copied first when it is shared with another layer).
    pub fn rule_mut(&mut self) -> &mut R
    where
        R: Clone,
    {
        Arc::make_mut(&mut self.rule)
    }

    /// The responder.
    pub fn get_responder(&self) -> &Responder {
        &self.responder
    }
}

impl<R, S> Layer<S> for GateLayer<R> {
    type Service = Gate<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Gate {
            inner,
            rule: self.rule.clone(),
            responder: self.responder.clone(),
            allowed: crate::telemetry::allowed_counter(),
        }
    }
}

/// The service of [`GateLayer`]: runs the rule on each request's head, then calls the inner service or
/// answers the refusal.
///
/// Answers in [`GateBody<B>`] for the inner service's body `B`, whatever it is, and keeps the inner
/// service's error type: a refusal is a response, not an error.
pub struct Gate<S, R> {
    inner: S,
    rule: Arc<R>,
    responder: Responder,
    /// `portcullis_requests_allowed_total`, registered with the metrics recorder when the service is built.
    allowed: metrics::Counter,
}

impl<S: Clone, R> Clone for Gate<S, R> {
    fn clone(&self) -> Self {
        Gate {
            inner: self.inner.clone(),
            rule: self.rule.clone(),
            responder: self.responder.clone(),
            allowed: self.allowed.clone(),
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for Gate<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("inner", &self.inner)
            .field("rule", &std::any::type_name::<R>())
            .finish_non_exhaustive()
    }
}

impl<S, R: Rule> Gate<S, R> {
    /// Wraps `inner`, enforcing `rule` with the default responder.
    pub fn new(inner: S, rule: R) -> Self {
        GateLayer::new(rule).layer(inner)
    }
}

impl<S, R> Gate<S, R> {
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

    /// The rule.
    pub fn rule(&self) -> &Arc<R> {
        &self.rule
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for Gate<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: Rule,
{
    type Response = Response<GateBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (mut head, body) = req.into_parts();
        match self.rule.check(&mut head) {
            Ok(()) => {
                self.allowed.increment(1);
                ResponseFuture::future(self.inner.call(Request::from_parts(head, body)))
            }
            Err(denial) => {
                crate::telemetry::refused(&denial);
                ResponseFuture::refused(self.responder.respond(denial, &head))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use http::StatusCode;

    use super::*;
    use crate::{ClientAddr, Decisions, LearntVia};

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

    struct Records;
    impl Rule for Records {
        fn check(&self, head: &mut Parts) -> Result<(), Denial> {
            Decisions::get_mut(&mut head.extensions).client =
                Some(ClientAddr { ip: IP, learnt_via: LearntVia::Peer });
            Ok(())
        }
    }

    struct NeedsClient;
    impl Rule for NeedsClient {
        fn check(&self, head: &mut Parts) -> Result<(), Denial> {
            match Decisions::client_of(&head.extensions) {
                Some(c) if c.ip == IP => Ok(()),
                _ => Err(Denial::new("test", "test.no-client", StatusCode::FORBIDDEN, "no client")),
            }
        }
    }

    fn head() -> Parts {
        Request::new(()).into_parts().0
    }

    #[test]
    fn rules_see_each_others_decisions_and_the_first_refusal_wins() {
        let rules = Rules::new([Arc::new(Records) as Arc<dyn Rule>, Arc::new(NeedsClient)]);
        rules.check(&mut head()).expect("the second rule sees the first one's client");
        let rules = Rules::new([Arc::new(NeedsClient) as Arc<dyn Rule>, Arc::new(Records)]);
        let mut h = head();
        assert_eq!(rules.check(&mut h).expect_err("refused").code(), "test.no-client");
        assert!(Decisions::get(&h.extensions).is_none(), "the rule after the refusal did not run");
    }

    #[test]
    fn option_and_closures_are_rules() {
        let none: Option<NeedsClient> = None;
        none.check(&mut head()).expect("no rule configured");
        assert!(Some(NeedsClient).check(&mut head()).is_err());
        let refuse_all = rule_fn(|_: &mut Parts| Err(Denial::new("t", "t.all", StatusCode::FORBIDDEN, "no")));
        assert!(refuse_all.check(&mut head()).is_err());
    }
}
