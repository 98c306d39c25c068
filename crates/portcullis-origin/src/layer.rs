//! The origin layer: tags each request [`Origin::Private`] or [`Origin::Public`].

use std::sync::Arc;

use http::HeaderValue;
use http::header::HeaderName;
use http::request::Parts;
use portcullis_core::{Decisions, Denial, Gate, GateLayer, Origin, Responder, Rule};
use tower_layer::Layer;

use crate::policy::{OriginPolicy, OriginRefusal};

/// The header that announces a request's origin to an upstream: `public`, `private; network=<name>` or
/// `private; connection=<name>; group-id=<group>`.
///
/// Clients can send it too: the origin layer removes every copy (and its underscore spelling
/// `x_portcullis_origin`, which some servers treat as the same header) before anything reads it, and sets
/// it from its own decision only when [`OriginLayer::forward_header`] is on: strip first, then set.
pub const ORIGIN_HEADER: HeaderName = HeaderName::from_static("x-portcullis-origin");

const ORIGIN_HEADER_UNDERSCORE: HeaderName = HeaderName::from_static("x_portcullis_origin");

/// The rule of [`OriginLayer`]: tags each request's [`Origin`] and refuses pending, rejected, unknown or
/// off-target private endpoint connections.
#[derive(Debug, Clone)]
pub struct OriginRule {
    policy: OriginPolicy,
    shadow: bool,
    forward: bool,
    strip: Vec<HeaderName>,
}

impl OriginRule {
    /// A rule deciding with `policy`, stripping clients' copies of [`ORIGIN_HEADER`].
    pub fn new(policy: OriginPolicy) -> Self {
        OriginRule {
            policy,
            shadow: false,
            forward: false,
            strip: vec![ORIGIN_HEADER, ORIGIN_HEADER_UNDERSCORE],
        }
    }

    /// The policy.
    pub fn policy(&self) -> &OriginPolicy {
        &self.policy
    }

    /// Records a refusal in shadow mode (tagging the request public), or refuses.
    #[cold]
    fn refused(&self, head: &mut Parts, refusal: OriginRefusal) -> Result<(), Denial> {
        if self.shadow && !refusal.is_wiring() {
            let decisions = Decisions::get_mut(&mut head.extensions);
            decisions.push_shadow(refusal.to_denial());
            decisions.origin = Some(Origin::Public);
            if self.forward {
                head.headers.insert(ORIGIN_HEADER, HeaderValue::from_static("public"));
            }
            return Ok(());
        }
        if refusal.is_wiring() {
            tracing::error!("{refusal}");
        }
        Err(refusal.to_denial())
    }
}

impl Rule for OriginRule {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        // Whatever a client sent under the origin header's names is never passed on.
        for name in &self.strip {
            head.headers.remove(name);
        }
        let (origin, header) = match self.policy.tag(&head.extensions) {
            Ok(tag) => (tag.origin, tag.header.clone()),
            Err(refusal) => return self.refused(head, refusal),
        };
        Decisions::get_mut(&mut head.extensions).origin = Some(origin);
        if self.forward {
            head.headers.insert(ORIGIN_HEADER, header);
        }
        Ok(())
    }
}

// === impl OriginLayer ===

/// Tags every request with its [`Origin`] (see [`OriginRule`]).
#[derive(Debug, Clone)]
pub struct OriginLayer(GateLayer<OriginRule>);

impl OriginLayer {
    /// A layer deciding with `policy`.
    pub fn new(policy: OriginPolicy) -> Self {
        OriginLayer(GateLayer::new(OriginRule::new(policy)))
    }

    /// Shadow mode: refusals are recorded (and the request tagged public), not enforced. Wiring errors are
    /// refused anyway.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.0.rule_mut().shadow = shadow;
        self
    }

    /// Also tells the application the origin in [`ORIGIN_HEADER`] (`private; network="corp"`,
    /// `private; connection="pe1"`, `public`).
    pub fn forward_header(mut self, forward: bool) -> Self {
        self.0.rule_mut().forward = forward;
        self
    }

    /// Strips another header name that clients must not be able to set (with its underscore spelling,
    /// which some servers fold into the same name).
    pub fn strip_header(mut self, name: HeaderName) -> Self {
        let rule = self.0.rule_mut();
        if name.as_str().contains('-')
            && let Ok(underscore) = HeaderName::try_from(name.as_str().replace('-', "_"))
        {
            rule.strip.push(underscore);
        }
        rule.strip.push(name);
        self
    }

    /// Replaces the refusal response (default: problem+json, gRPC status for gRPC calls).
    pub fn responder(self, responder: Responder) -> Self {
        OriginLayer(self.0.responder(responder))
    }

    /// The policy.
    pub fn policy(&self) -> &OriginPolicy {
        &self.0.rule().policy
    }

    /// The rule this layer enforces.
    pub fn rule(&self) -> &Arc<OriginRule> {
        self.0.rule()
    }
}

impl<S> Layer<S> for OriginLayer {
    type Service = TagOrigin<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.0.layer(inner)
    }
}

/// The service of [`OriginLayer`].
pub type TagOrigin<S> = Gate<S, OriginRule>;
