//! The public-access layer: with public network access disabled, requests of public origin get a 403.

use std::net::IpAddr;
use std::sync::Arc;

use http::StatusCode;
use http::request::Parts;
use portcullis_core::{Decisions, Denial, Gate, GateLayer, Origin, Responder, Rule};
use tower_layer::Layer;

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
        "no resolved client address in the request: add portcullis_core::ResolveClientAddrLayer in front of \
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

/// The rule of [`PublicAccessLayer`]: with public network access disabled, a request of public origin is
/// refused with Azure's 403.
#[derive(Debug, Clone)]
pub struct PublicAccessRule {
    access: PublicNetworkAccess,
    resource: Arc<str>,
    shadow: bool,
}

/// A layer that refuses requests of public origin when public network access is disabled.
///
/// It reads the [`Origin`] the [`OriginLayer`](crate::OriginLayer) recorded and, for the message, the
/// client address of [`ResolveClientAddrLayer`](portcullis_core::ResolveClientAddrLayer); both must run first (a 500
/// naming the missing layer otherwise: a request is never served on a guess).
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use portcullis_core::{ClientAddrConfig, ResolveClientAddrLayer, ConnInfo, Decisions, Denial};
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
///         .layer(ResolveClientAddrLayer::new(ClientAddrConfig::new()))
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
pub struct PublicAccessLayer(GateLayer<PublicAccessRule>);

impl PublicAccessLayer {
    /// Public network access enabled: every origin is served (the layer only checks its wiring).
    pub fn enabled() -> Self {
        PublicAccessLayer(GateLayer::new(PublicAccessRule {
            access: PublicNetworkAccess::Enabled,
            resource: Arc::from(""),
            shadow: false,
        }))
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
        Ok(PublicAccessLayer(GateLayer::new(PublicAccessRule { access, resource, shadow: false })))
    }

    /// Shadow mode: refusals of public requests are recorded in [`Decisions::shadow`](portcullis_core::Decisions::shadow) and the request is
    /// served. Missing wiring is still refused with a 500.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.0.rule_mut().shadow = shadow;
        self
    }

    /// Replaces the responder that builds refusals.
    pub fn responder(self, responder: Responder) -> Self {
        PublicAccessLayer(self.0.responder(responder))
    }

    /// The configured access.
    pub fn access(&self) -> PublicNetworkAccess {
        self.0.rule().access
    }

    /// The rule this layer enforces.
    pub fn rule(&self) -> &Arc<PublicAccessRule> {
        self.0.rule()
    }
}

impl<S> Layer<S> for PublicAccessLayer {
    type Service = PublicAccess<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.0.layer(inner)
    }
}

/// The service of [`PublicAccessLayer`].
pub type PublicAccess<S> = Gate<S, PublicAccessRule>;

impl Rule for PublicAccessRule {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        let refusal = {
            let decisions = Decisions::get(&head.extensions);
            let origin = decisions.and_then(|d| d.origin.as_ref());
            let client = decisions.and_then(|d| d.client.as_ref());
            match (origin, client) {
                (None, _) => PublicAccessRefusal::NoOrigin,
                (_, None) => PublicAccessRefusal::NoClientAddr,
                (Some(Origin::Public), Some(client)) if self.access == PublicNetworkAccess::Disabled => {
                    PublicAccessRefusal::Disabled { ip: client.ip, resource: self.resource.clone() }
                }
                _ => return Ok(()),
            }
        };
        self.refused(head, refusal)
    }
}

impl PublicAccessRule {
    /// The configured access.
    pub fn access(&self) -> PublicNetworkAccess {
        self.access
    }

    /// A refusal: the shadow record, or the typed denial. Wiring errors are refused in shadow mode too.
    #[cold]
    fn refused(&self, head: &mut Parts, refusal: PublicAccessRefusal) -> Result<(), Denial> {
        if self.shadow && !refusal.is_wiring() {
            Decisions::record_shadow(&mut head.extensions, refusal.to_denial());
            return Ok(());
        }
        if refusal.is_wiring() {
            tracing::error!("{refusal}");
        }
        Err(refusal.to_denial())
    }
}
