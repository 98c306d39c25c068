//! The public-access layer: with public network access disabled, requests of public origin get a 403.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::request::Parts;
use http::{Request, Response, StatusCode};
use portcullis_core::{Decisions, Denial, Gate, GateContext, Origin, Responder, ResponseFuture};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::ConfigError;
use crate::policy::OriginPolicy;

/// The denial layer name of the public-access layer.
pub const PUBLIC_ACCESS_LAYER: &str = "public-access";

/// Whether public network access is enabled, as the resource setting of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PublicNetworkAccess {
    /// Requests of public origin are served.
    #[default]
    Enabled,
    /// Requests of public origin are refused with a 403.
    Disabled,
}

/// Why the public-access layer refused a request: the typed reason attached to its [`Denial`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublicAccessRefusal {
    /// Public network access is disabled and the request is of public origin (403). Its message is the
    /// problem's `detail`, word for word Azure's.
    #[error(
        "Request originated from client public IP address {ip}, public network access on this '{resource}' is \
         disabled. To connect to '{resource}', please use the Private Endpoint from inside your virtual network."
    )]
    Disabled {
        /// The client's address.
        ip: IpAddr,
        /// The configured resource name.
        resource: Arc<str>,
    },
    /// The origin layer did not run before this one (500).
    #[error(
        "no origin decision in the request: add portcullis_origin::OriginLayer in front of PublicAccessLayer"
    )]
    NoOrigin,
    /// The client-address layer did not run before this one (500).
    #[error(
        "no resolved client address in the request: add portcullis_core::ClientAddrLayer in front of \
         PublicAccessLayer"
    )]
    NoClientAddr,
}

impl PublicAccessRefusal {
    /// Whether the refusal is a missing wiring (500) rather than a policy decision (403). Wiring refusals
    /// are never let through, not even in shadow mode.
    pub fn is_wiring(&self) -> bool {
        !matches!(self, PublicAccessRefusal::Disabled { .. })
    }

    /// The denial for this refusal.
    pub fn to_denial(&self) -> Denial {
        match self {
            PublicAccessRefusal::Disabled { ip, .. } => Denial::new(
                PUBLIC_ACCESS_LAYER,
                "public-access.disabled",
                StatusCode::FORBIDDEN,
                self.to_string(),
            )
            .with_rule("public network access disabled")
            .with_refused(ip.to_string()),
            PublicAccessRefusal::NoOrigin => Denial::new(
                PUBLIC_ACCESS_LAYER,
                "public-access.no-origin",
                StatusCode::INTERNAL_SERVER_ERROR,
                self.to_string(),
            ),
            PublicAccessRefusal::NoClientAddr => Denial::new(
                PUBLIC_ACCESS_LAYER,
                "public-access.no-client-addr",
                StatusCode::INTERNAL_SERVER_ERROR,
                self.to_string(),
            ),
        }
        .with_reason(self.clone())
    }
}

#[derive(Debug, Clone)]
struct Settings {
    access: PublicNetworkAccess,
    resource: Arc<str>,
    shadow: bool,
    responder: Responder,
}

/// A layer that refuses requests of public origin when public network access is disabled.
///
/// It reads the [`Origin`] the [`OriginLayer`](crate::OriginLayer) recorded and, for the message, the
/// client address of [`ClientAddrLayer`](portcullis_core::ClientAddrLayer); both must run first (a 500
/// naming the missing layer otherwise: a request is never served on a guess).
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use portcullis_core::{ClientAddrConfig, ClientAddrLayer, ConnInfo, Decisions, Denial};
/// use portcullis_origin::{Connections, OriginLayer, OriginPolicy, PrivateNetworks, PublicAccessLayer};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let policy = OriginPolicy::new(
///     PrivateNetworks::builder().network("vnet", ["10.1.0.0/16".parse()?]).build()?,
///     Connections::none(),
/// );
/// let resource = "Microsoft.ApiManagement/service/my-apim-service";
/// let stack = |access: PublicAccessLayer| {
///     ServiceBuilder::new()
///         .layer(ClientAddrLayer::new(ClientAddrConfig::new()))
///         .layer(OriginLayer::new(policy.clone()))
///         .layer(access)
///         .service(service_fn(|req: Request<()>| async move {
///             let shadowed = Decisions::get(req.extensions()).map_or(0, |d| d.shadow.len());
///             Ok::<_, Infallible>(Response::builder().header("x-shadowed", shadowed).body(()).unwrap())
///         }))
/// };
/// let from = |peer: &str| {
///     let mut req = Request::new(());
///     req.extensions_mut().insert(ConnInfo::new(peer.parse().unwrap(), None));
///     req
/// };
/// let svc = stack(PublicAccessLayer::disabled(resource, &policy)?);
///
/// // From the virtual network: served.
/// assert_eq!(svc.clone().oneshot(from("10.1.0.7:5000")).await?.status(), StatusCode::OK);
///
/// // From the internet: 403, with Azure's message.
/// let res = svc.oneshot(from("192.0.2.12:5000")).await?;
/// assert_eq!(res.status(), StatusCode::FORBIDDEN);
/// assert_eq!(
///     res.extensions().get::<Denial>().unwrap().detail(),
///     "Request originated from client public IP address 192.0.2.12, public network access on this \
///      'Microsoft.ApiManagement/service/my-apim-service' is disabled. To connect to \
///      'Microsoft.ApiManagement/service/my-apim-service', please use the Private Endpoint from inside \
///      your virtual network."
/// );
///
/// // Shadow mode: recorded, served.
/// let svc = stack(PublicAccessLayer::disabled(resource, &policy)?.shadow(true));
/// let res = svc.oneshot(from("192.0.2.12:5000")).await?;
/// assert_eq!(res.status(), StatusCode::OK);
/// assert_eq!(res.headers()["x-shadowed"], "1");
///
/// // Disabling public access with no private path at all is refused at build time.
/// assert!(PublicAccessLayer::disabled(resource, &OriginPolicy::default()).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PublicAccessLayer {
    settings: Arc<Settings>,
}

impl PublicAccessLayer {
    /// Public network access enabled: every origin is served (the layer only checks its wiring).
    pub fn enabled() -> Self {
        PublicAccessLayer {
            settings: Arc::new(Settings {
                access: PublicNetworkAccess::Enabled,
                resource: Arc::from(""),
                shadow: false,
                responder: Responder::default(),
            }),
        }
    }

    /// Public network access disabled on `resource` (the name shown in the refusal, for example
    /// `Microsoft.ApiManagement/service/my-apim-service`).
    ///
    /// # Errors
    /// [`ConfigError::NoPrivatePath`] when `origin` has neither a private network nor an approved private
    /// endpoint connection (everyone would be refused), [`ConfigError::InvalidResource`] for an empty
    /// resource name or one with control characters.
    pub fn disabled(resource: impl Into<Arc<str>>, origin: &OriginPolicy) -> Result<Self, ConfigError> {
        PublicAccessLayer::new(PublicNetworkAccess::Disabled, resource, origin)
    }

    /// Public network access set to `access` on `resource`.
    ///
    /// # Errors
    /// As [`PublicAccessLayer::disabled`] (only checked when `access` is `Disabled`, except the resource
    /// name, which is always checked).
    pub fn new(
        access: PublicNetworkAccess,
        resource: impl Into<Arc<str>>,
        origin: &OriginPolicy,
    ) -> Result<Self, ConfigError> {
        let resource = resource.into();
        if resource.trim().is_empty() || resource.chars().any(char::is_control) {
            return Err(ConfigError::InvalidResource(resource.to_string()));
        }
        if access == PublicNetworkAccess::Disabled && !origin.has_private_path() {
            return Err(ConfigError::NoPrivatePath { resource: resource.to_string() });
        }
        Ok(PublicAccessLayer {
            settings: Arc::new(Settings { access, resource, shadow: false, responder: Responder::default() }),
        })
    }

    /// Shadow mode: refusals of public requests are recorded in [`Decisions::shadow`](portcullis_core::Decisions::shadow) and the request is
    /// served. Missing wiring is still refused with a 500.
    pub fn shadow(mut self, shadow: bool) -> Self {
        Arc::make_mut(&mut self.settings).shadow = shadow;
        self
    }

    /// Replaces the responder that builds refusals.
    pub fn responder(mut self, responder: Responder) -> Self {
        Arc::make_mut(&mut self.settings).responder = responder;
        self
    }

    /// The configured access.
    pub fn access(&self) -> PublicNetworkAccess {
        self.settings.access
    }
}

impl<S> Layer<S> for PublicAccessLayer {
    type Service = PublicAccess<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PublicAccess { inner, settings: self.settings.clone() }
    }
}

/// The service of [`PublicAccessLayer`].
#[derive(Clone)]
pub struct PublicAccess<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> PublicAccess<S> {
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

impl<S: fmt::Debug> fmt::Debug for PublicAccess<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicAccess")
            .field("inner", &self.inner)
            .field("access", &self.settings.access)
            .field("resource", &self.settings.resource)
            .field("shadow", &self.settings.shadow)
            .finish_non_exhaustive()
    }
}

#[inline]
fn check(settings: &Settings, decisions: Option<&Decisions>) -> Result<(), PublicAccessRefusal> {
    let origin = decisions.and_then(|d| d.origin.as_ref()).ok_or(PublicAccessRefusal::NoOrigin)?;
    let client = decisions.and_then(|d| d.client.as_ref()).ok_or(PublicAccessRefusal::NoClientAddr)?;
    match (settings.access, origin) {
        (PublicNetworkAccess::Disabled, Origin::Public) => {
            Err(PublicAccessRefusal::Disabled { ip: client.ip, resource: settings.resource.clone() })
        }
        _ => Ok(()),
    }
}

impl<S, B, ResBody> Service<Request<B>> for PublicAccess<S>
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

/// The public-access decision as a [`Gate`], for stacks that run several gates in one service
/// ([`Gates`](portcullis_core::Gates)). The gate stack's responder builds the refusals (this layer's
/// [`responder`](PublicAccessLayer::responder) is not used there); shadow mode is the same.
impl PublicAccessLayer {
    /// The gate's decision on a request's decisions (its `origin` and `client`, recorded by the origin and
    /// client-address layers): a public caller is refused when public network access is disabled (or, in
    /// shadow mode, the refusal is recorded in `decisions`).
    ///
    /// # Errors
    /// The refusal: Azure's 403 naming the refused address, or missing wiring.
    #[inline]
    pub fn decide(&self, decisions: &mut Decisions) -> Result<(), Denial> {
        self.settings.decide(decisions)
    }
}

impl Gate for PublicAccessLayer {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        self.settings.check(head)
    }

    fn check_in(&self, head: &mut Parts, cx: &mut GateContext) -> Result<(), Denial> {
        self.settings.check_in(head, cx)
    }

    // Never touches headers.
    fn preserves_headers(&self) -> bool {
        true
    }
}

/// The one decision path of the layer, alone ([`PublicAccess`]) and in a gate run.
impl Gate for Settings {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        GateContext::run(self, head)
    }

    fn check_in(&self, _head: &mut Parts, cx: &mut GateContext) -> Result<(), Denial> {
        self.decide(cx.decisions_mut())
    }

    // Never touches headers.
    fn preserves_headers(&self) -> bool {
        true
    }
}

impl Settings {
    /// The one decision path of the layer on a request's decisions (see [`PublicAccessLayer::decide`]).
    #[inline]
    fn decide(&self, decisions: &mut Decisions) -> Result<(), Denial> {
        match check(self, Some(decisions)) {
            Ok(()) => Ok(()),
            Err(refusal) => self.refused_in(decisions, refusal),
        }
    }

    /// What [`decide`](Self::decide) does with a refusal: the shadow record, or the typed denial.
    #[cold]
    fn refused_in(&self, decisions: &mut Decisions, refusal: PublicAccessRefusal) -> Result<(), Denial> {
        if self.shadow && !refusal.is_wiring() {
            decisions.push_shadow(refusal.to_denial());
            return Ok(());
        }
        if refusal.is_wiring() {
            tracing::error!("{refusal}");
        }
        Err(refusal.to_denial())
    }
}
