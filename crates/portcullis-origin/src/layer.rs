//! The origin layer: tags each request [`Origin::Private`] or [`Origin::Public`].

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::HeaderName;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response};
use portcullis_core::{Denial, Gate, GateContext, Origin, Responder, ResponseFuture};
use tower_layer::Layer;
use tower_service::Service;

use crate::policy::{OriginPolicy, OriginRefusal};

/// The header that announces a request's origin to an upstream: `public`, `private; network=<name>` or
/// `private; connection=<name>; group-id=<group>`.
///
/// Clients can send it too: the origin layer removes every copy (and its underscore spelling
/// `x_portcullis_origin`, which some servers treat as the same header) before anything reads it, and sets
/// it from its own decision only when [`OriginLayer::forward_header`] is on: strip first, then set.
pub const ORIGIN_HEADER: HeaderName = HeaderName::from_static("x-portcullis-origin");

const ORIGIN_HEADER_UNDERSCORE: HeaderName = HeaderName::from_static("x_portcullis_origin");

#[derive(Debug, Clone)]
struct Settings {
    policy: OriginPolicy,
    shadow: bool,
    forward: bool,
    strip: Vec<HeaderName>,
    /// [`HeaderIndex::length_mask`](portcullis_core::HeaderIndex::length_mask) of `strip`.
    strip_mask: u64,
    responder: Responder,
}

/// A layer that decides whether each request came through a private path, records the
/// [`Origin`] in [`Decisions::origin`](portcullis_core::Decisions::origin), and refuses requests over private endpoint connections that are not
/// approved for the request (see [`OriginPolicy`] for the order of the decision and
/// [`OriginRefusal`](crate::OriginRefusal) for the refusals).
///
/// Put it after [`ClientAddrLayer`](portcullis_core::ClientAddrLayer) (and after the host router, so that a
/// connection's [`Targets`](crate::Targets) are checked against the request's endpoint).
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use portcullis_core::{ClientAddrConfig, ClientAddrLayer, ConnInfo, LinkId, ProxyInfo, ProxyVersion};
/// use portcullis_origin::{Connection, Connections, ORIGIN_HEADER, OriginLayer, OriginPolicy, Preset, PrivateNetworks};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let policy = OriginPolicy::new(
///     PrivateNetworks::builder().preset(Preset::Rfc1918).build()?,
///     Connections::builder().connection(Connection::rejected("pe-old", LinkId::Gcp(9))).build()?,
/// );
/// let svc = ServiceBuilder::new()
///     .layer(ClientAddrLayer::new(ClientAddrConfig::new()))
///     .layer(OriginLayer::new(policy).forward_header(true))
///     .service(service_fn(|req: Request<()>| async move {
///         // The application sees our tag only, never the client's.
///         Ok::<_, Infallible>(Response::new(format!("{:?}", req.headers().get_all(ORIGIN_HEADER).iter().collect::<Vec<_>>())))
///     }));
///
/// // A public client claiming to be private: the claim is removed, the request tagged public.
/// let mut req = Request::builder().header("x-portcullis-origin", "private; network=rfc1918").body(())?;
/// req.extensions_mut().insert(ConnInfo::new("203.0.113.9:4000".parse()?, None));
/// let res = svc.clone().oneshot(req).await?;
/// assert_eq!(res.status(), StatusCode::OK);
/// # use http_body_util::BodyExt;
/// # assert_eq!(res.into_body().collect().await?.to_bytes(), "[\"public\"]");
///
/// // Over a rejected private endpoint connection: refused.
/// let mut proxy = ProxyInfo::new(ProxyVersion::V2, Some("10.9.0.1:4000".parse()?), None);
/// proxy.link_id = Some(LinkId::Gcp(9));
/// let mut req = Request::new(());
/// req.extensions_mut().insert(ConnInfo::new("10.0.0.4:5000".parse()?, None).with_proxy(proxy));
/// assert_eq!(svc.oneshot(req).await?.status(), StatusCode::FORBIDDEN);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct OriginLayer {
    settings: Arc<Settings>,
}

impl OriginLayer {
    /// A layer deciding with `policy`; refusals use the default problem+json [`Responder`].
    pub fn new(policy: OriginPolicy) -> Self {
        OriginLayer {
            settings: Arc::new(Settings {
                policy,
                shadow: false,
                forward: false,
                strip: vec![ORIGIN_HEADER, ORIGIN_HEADER_UNDERSCORE],
                strip_mask: portcullis_core::HeaderIndex::length_mask(&[
                    ORIGIN_HEADER,
                    ORIGIN_HEADER_UNDERSCORE,
                ]),
                responder: Responder::default(),
            }),
        }
    }

    /// Shadow mode: policy refusals (pending, rejected, unknown or not-targeted connections) are recorded in
    /// [`Decisions::shadow`](portcullis_core::Decisions::shadow), the request is tagged [`Origin::Public`] and served. Missing wiring (no
    /// connection info, no client address) is still refused with a 500.
    pub fn shadow(mut self, shadow: bool) -> Self {
        Arc::make_mut(&mut self.settings).shadow = shadow;
        self
    }

    /// Sets [`ORIGIN_HEADER`] on the request for the upstream from the decision (after removing the
    /// client's copies, which happens in any case). Off by default.
    pub fn forward_header(mut self, forward: bool) -> Self {
        Arc::make_mut(&mut self.settings).forward = forward;
        self
    }

    /// Also removes `name` (and its underscore spelling) from every request: for a header an upstream
    /// already trusts to mean "private".
    pub fn strip_header(mut self, name: HeaderName) -> Self {
        let settings = Arc::make_mut(&mut self.settings);
        if name.as_str().contains('-')
            && let Ok(underscore) = HeaderName::try_from(name.as_str().replace('-', "_"))
        {
            settings.strip.push(underscore);
        }
        settings.strip.push(name);
        settings.strip_mask = portcullis_core::HeaderIndex::length_mask(&settings.strip);
        self
    }

    /// Replaces the responder that builds refusals.
    pub fn responder(mut self, responder: Responder) -> Self {
        Arc::make_mut(&mut self.settings).responder = responder;
        self
    }

    /// The policy.
    pub fn policy(&self) -> &OriginPolicy {
        &self.settings.policy
    }
}

impl<S> Layer<S> for OriginLayer {
    type Service = TagOrigin<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TagOrigin { inner, settings: self.settings.clone() }
    }
}

/// The service of [`OriginLayer`].
#[derive(Debug, Clone)]
pub struct TagOrigin<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> TagOrigin<S> {
    /// Wraps `inner`, deciding with `policy`.
    pub fn new(inner: S, policy: OriginPolicy) -> Self {
        OriginLayer::new(policy).layer(inner)
    }

    /// An [`OriginLayer`] deciding with `policy`.
    pub fn layer(policy: OriginPolicy) -> OriginLayer {
        OriginLayer::new(policy)
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

impl<S, B, ResBody> Service<Request<B>> for TagOrigin<S>
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
        portcullis_core::call_gate(&*self.settings, &self.settings.responder, &mut self.inner, req)
    }
}

impl Settings {
    /// Strips, decides, records (decisions and connection facts in `cx`); the denial when the request must
    /// be refused. What the layer does alone ([`TagOrigin`]) and in a gate run, through [`apply`](Self::apply).
    fn apply_in(&self, headers: &mut HeaderMap, cx: &mut GateContext) -> Result<(), Denial> {
        let lengths = cx.header_index().map(|ix| ix.lengths());
        let (conn, decisions) = cx.conn_and_decisions_mut();
        let changed = self.apply(headers, lengths, conn, decisions)?;
        if changed {
            cx.headers_changed();
        }
        Ok(())
    }

    /// The one decision path of the layer: strips the client's copies of the headers it sets, decides,
    /// records in `decisions`, forwards the origin header if configured. `lengths` (from an index of
    /// `headers`) rules out most requests without looking at their header names again; lengths of another
    /// map, or of this one before its size changed, rule out nothing. `Ok(true)` when it changed the headers.
    #[inline]
    fn apply(
        &self,
        headers: &mut HeaderMap,
        lengths: Option<portcullis_core::HeaderLengths>,
        conn: Option<&portcullis_core::ConnInfo>,
        decisions: &mut portcullis_core::Decisions,
    ) -> Result<bool, Denial> {
        let may_carry = lengths.is_none_or(|l| l.may_contain_any(headers, self.strip_mask));
        let mut changed = may_carry && strip(headers, &self.strip);
        match self.policy.decide_in(conn, decisions) {
            Ok(header) => {
                if self.forward {
                    headers.insert(ORIGIN_HEADER, header.clone());
                    changed = true;
                }
                Ok(changed)
            }
            Err(refusal) => self.refused(headers, decisions, refusal).map(|forwarded| changed || forwarded),
        }
    }

    /// A refusal of the policy: recorded in shadow mode (the request then goes on as public; `Ok(true)`
    /// when the origin header was forwarded), the denial otherwise; wiring refusals are never let through.
    #[cold]
    fn refused(
        &self,
        headers: &mut HeaderMap,
        decisions: &mut portcullis_core::Decisions,
        refusal: OriginRefusal,
    ) -> Result<bool, Denial> {
        if self.shadow && !refusal.is_wiring() {
            decisions.push_shadow(refusal.to_denial());
            decisions.origin = Some(Origin::Public);
            if self.forward {
                headers.insert(ORIGIN_HEADER, HeaderValue::from_static("public"));
                return Ok(true);
            }
            return Ok(false);
        }
        if refusal.is_wiring() {
            tracing::error!("{refusal}");
        }
        Err(refusal.to_denial())
    }
}

impl OriginLayer {
    /// The gate's decision on a request's parts: strips the client's copies of the headers this layer
    /// sets, tags the request's origin in `decisions.origin` (from `conn`'s PROXY facts and
    /// `decisions.client`), forwards the origin header if configured; a refusal is returned (or, in shadow
    /// mode, recorded). `header_lengths` ([`HeaderIndex::lengths`](portcullis_core::HeaderIndex::lengths)
    /// of an index of `headers`) spares most requests a look at their header names; lengths of another map,
    /// or of this one after its size changed, are not trusted. `Ok(true)` when it changed the headers (an
    /// index of them is then stale).
    ///
    /// # Errors
    /// The refusal (a pending or rejected private endpoint connection, one outside its targets, missing
    /// wiring).
    #[inline]
    pub fn decide(
        &self,
        headers: &mut HeaderMap,
        header_lengths: Option<portcullis_core::HeaderLengths>,
        conn: Option<&portcullis_core::ConnInfo>,
        decisions: &mut portcullis_core::Decisions,
    ) -> Result<bool, Denial> {
        self.settings.apply(headers, header_lengths, conn, decisions)
    }
}

/// Removes every header named in `names`. One pass over the names present first: a request rarely carries
/// any of them, and comparing a few names is several times cheaper than a hash lookup per stripped name.
/// Whether anything was removed.
fn strip(headers: &mut HeaderMap, names: &[HeaderName]) -> bool {
    if headers.keys().any(|k| names.contains(k)) {
        for name in names {
            headers.remove(name);
        }
        return true;
    }
    false
}

/// The origin decision as a [`Gate`], for stacks that run several gates in one service
/// ([`Gates`](portcullis_core::Gates)). The gate stack's responder builds the refusals (this layer's
/// [`responder`](OriginLayer::responder) is not used there); stripping, forwarding and shadow mode are the
/// same.
impl Gate for OriginLayer {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        self.settings.check(head)
    }

    fn check_in(&self, head: &mut Parts, cx: &mut GateContext) -> Result<(), Denial> {
        self.settings.check_in(head, cx)
    }

    // Reports its own changes (strip, forwarded header) with `headers_changed`.
    fn preserves_headers(&self) -> bool {
        true
    }
}

impl Gate for Settings {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        GateContext::run(self, head)
    }

    fn check_in(&self, head: &mut Parts, cx: &mut GateContext) -> Result<(), Denial> {
        self.apply_in(&mut head.headers, cx)
    }

    // Reports its own changes (strip, forwarded header) with `headers_changed`.
    fn preserves_headers(&self) -> bool {
        true
    }
}
