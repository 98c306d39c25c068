//! # portcullis-origin
//!
//! Private or public: which path a request came over, and refusing the public one when public network
//! access is disabled, the way a managed API gateway with private endpoints does.
//!
//! - [`Connections`]: the private endpoint connections ([`Connection`]: name, [`LinkId`], [`ConnectionState`],
//!   [`Targets`], group id), at most 100 by default.
//! - [`PrivateNetworks`]: named address spaces whose clients are private, with opt-in [`Preset`]s and no
//!   implicit default ([why](crate::networks#no-default)).
//! - [`OriginLayer`]: records [`Origin::Private`] (via a network or an approved connection) or
//!   [`Origin::Public`] in [`Decisions::origin`](portcullis_core::Decisions), refuses requests over pending,
//!   rejected, unknown or not-targeted connections, and strips client-sent copies of [`ORIGIN_HEADER`].
//! - [`PublicAccessLayer`]: with [`PublicNetworkAccess::Disabled`], a request of public origin gets
//!   Azure's 403, word for word.
//! - `PrivateEndpointConnection` (feature `axum`): the extractor mirroring Azure's
//!   `context.Request.PrivateEndpointConnection`.
//!
//! ## Evidence
//! - **Private endpoint connection**: the link id in [`ConnInfo::proxy`](portcullis_core::ConnInfo), which
//!   only portcullis' PROXY protocol reader sets, and only for headers from trusted load balancers. A link
//!   id decides alone: the source address of a private link is the consumer's, in an address space that may
//!   overlap yours, so private networks are not consulted for it.
//! - **Private network**: the client address resolved by
//!   [`ResolveClientAddrLayer`](portcullis_core::ResolveClientAddrLayer) (the socket peer, the PROXY source, or a
//!   forwarded header read from trusted proxies only).
//!
//! Nothing a client sends in an HTTP header is evidence. Missing wiring (no connection info, no client
//! address, no origin decision) answers a 500 naming the missing piece; it is never read as "public", nor
//! as "private".
//!
//! ## Refusals
//! Through the shared [`Denial`](portcullis_core::Denial) and [`Responder`](portcullis_core::Responder)
//! (problem+json by default, replaceable), with typed reasons [`OriginRefusal`] and [`PublicAccessRefusal`]:
//!
//! | request | status | code |
//! |---|---|---|
//! | over a `Pending` / `Rejected` connection | 403 | `origin.connection-pending` / `origin.connection-rejected` |
//! | over an unregistered link id ([`UnknownLink::Refuse`], the default) | 403 | `origin.unknown-link` |
//! | over an approved connection, for an endpoint it does not target | 403 | `origin.endpoint-not-targeted` |
//! | public, with public network access disabled | 403 | `public-access.disabled` |
//! | no connection info / no client address / no origin | 500 | `origin.no-connection-info`, `*.no-client-addr`, `public-access.no-origin` |
//!
//! In shadow mode a 403 is recorded in [`Decisions::shadow`](portcullis_core::Decisions) and the request is
//! served (the origin layer then tags it public); 500s for missing wiring are never let through.
//!
//! ## Order
//! `ResolveClientAddrLayer` → host router (needed for connections limited to some endpoints by [`Targets`]: without a
//! host decision such a connection is refused, 500 `origin.no-endpoint`) → [`OriginLayer`] →
//! [`PublicAccessLayer`] → the application.
//!
//! ## Example
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use portcullis_core::{ClientAddrConfig, ResolveClientAddrLayer, ConnInfo, Decisions, LinkId, ProxyInfo, ProxyVersion};
//! use portcullis_origin::{
//!     Connection, Connections, OriginLayer, OriginPolicy, PrivateNetworks, PublicAccessLayer, Targets,
//! };
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let policy = OriginPolicy::new(
//!     PrivateNetworks::builder().network("corp-vnet", ["10.1.0.0/16".parse()?]).build()?,
//!     Connections::builder()
//!         // No host routing in this service, so the connection may reach all of it. (With a host router in
//!         // front, leave the default: the gateway endpoint only, as in Azure.)
//!         .connection(Connection::approved("pe-contoso", LinkId::Azure(0x2200_0011)).with_targets(Targets::Any))
//!         .connection(Connection::pending("pe-fabrikam", LinkId::Azure(7)))
//!         .build()?,
//! );
//! let resource = "Microsoft.ApiManagement/service/my-apim-service";
//! let svc = ServiceBuilder::new()
//!     .layer(ResolveClientAddrLayer::new(ClientAddrConfig::new()))
//!     .layer(OriginLayer::new(policy.clone()))
//!     .layer(PublicAccessLayer::disabled(resource, &policy)?)
//!     .service(service_fn(|req: Request<()>| async move {
//!         let origin = Decisions::get(req.extensions()).and_then(|d| d.origin.clone());
//!         Ok::<_, Infallible>(Response::new(format!("{origin:?}")))
//!     }));
//! let request = |conn: ConnInfo| {
//!     let mut req = Request::new(());
//!     req.extensions_mut().insert(conn);
//!     req
//! };
//! let lb = "10.0.0.4:50000".parse()?; // the private link service's NAT address
//! let over_link = |link| {
//!     let mut proxy = ProxyInfo::new(ProxyVersion::V2, Some("192.0.2.50:40000".parse().unwrap()), None);
//!     proxy.link_id = Some(link);
//!     ConnInfo::new(lb, None).with_proxy(proxy)
//! };
//!
//! // From the virtual network: private, served.
//! let res = svc.clone().oneshot(request(ConnInfo::new("10.1.2.3:50000".parse()?, None))).await?;
//! assert_eq!(res.status(), StatusCode::OK);
//! // Over the approved private endpoint: served.
//! let res = svc.clone().oneshot(request(over_link(LinkId::Azure(0x2200_0011)))).await?;
//! assert_eq!(res.status(), StatusCode::OK);
//! // Over a pending one: 403 naming it.
//! let res = svc.clone().oneshot(request(over_link(LinkId::Azure(7)))).await?;
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! // From the internet: Azure's 403.
//! let res = svc.clone().oneshot(request(ConnInfo::new("192.0.2.12:50000".parse()?, None))).await?;
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
// Large error values only arise while building configuration, never per request.
#![allow(clippy::result_large_err)]

pub mod connections;
mod error;
#[cfg(feature = "axum")]
mod extract;
mod layer;
pub mod networks;
mod policy;
mod public_access;

pub use connections::{
    Connection, ConnectionState, Connections, ConnectionsBuilder, DEFAULT_GROUP_ID, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TARGET, Targets,
};
pub use error::ConfigError;
#[cfg(feature = "axum")]
pub use extract::{PrivateEndpointConnection, PrivateEndpointRejection};
pub use layer::{ORIGIN_HEADER, OriginLayer, OriginRule, TagOrigin};
pub use networks::{Preset, PrivateNetworks, PrivateNetworksBuilder};
pub use policy::{ORIGIN_LAYER, OriginPolicy, OriginRefusal, UnknownLink};
pub use portcullis_core::{LinkId, Origin, PrivateEndpoint, PrivateVia};
pub use public_access::{
    PUBLIC_ACCESS_LAYER, PublicAccess, PublicAccessLayer, PublicAccessRefusal, PublicAccessRule,
    PublicNetworkAccess,
};

#[cfg(test)]
mod tests;
