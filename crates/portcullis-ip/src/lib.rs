//! # portcullis-ip
//!
//! Source-IP and subnet allow-listing for tower, axum and hyper servers, per request and at accept time.
//!
//! - [`IpRules`]: allow and deny rules over CIDRs, single addresses, `from-to` ranges and named address
//!   sets; **the most specific rule wins**; the default action for uncovered addresses is explicit
//!   ([`IpRules::builder`] takes it). An empty rule set with [`Action::Deny`] refuses everything.
//!   Contradictions (the same range allowed and denied) are build errors naming both rules.
//! - [`IpFilterLayer`] → [`IpFilter`]: refuses requests by the resolved client address (from
//!   [`ResolveClientAddrLayer`](portcullis_core::ResolveClientAddrLayer)) or by the direct peer, with a
//!   `403 application/problem+json` naming the address and the rule; shadow mode records instead.
//! - [`ConnectionFilter`], `FilteredListener` (feature `axum`) and [`accept_filtered`]: drop connections
//!   from refused peers at accept, before TLS or HTTP, counting them.
//! - [`ConnectionLimits`], [`PeerBudget`] and `LimitedListener` (feature `axum`): fair connection limits,
//!   a total per listener and a share per client address (IPv6 by prefix), so one address cannot starve
//!   the others.
//! - [`IpRulesHandle`]: swap a new rule set in while serving; every request decides on one snapshot.
//! - Its rule ([`IpRule`]) runs alone, in a `portcullis_core::Rules` list, or inside the gateway.
//!
//! Features: `axum` (`FilteredListener` and `LimitedListener`, `axum::serve::Listener`s).
//!
//! ## Per route: management only from the admin subnet, the gateway open
//!
//! The filter is an ordinary tower layer, so it applies to whatever it wraps: with axum,
//! [`Router::route_layer`](https://docs.rs/axum/0.8/axum/struct.Router.html#method.route_layer) on a nested
//! router restricts only that router's routes. The client-address layer goes on the whole app.
//!
//! ```
//! use axum::{Router, routing::get};
//! use http::{Request, StatusCode};
//! use portcullis_core::{ClientAddrConfig, ResolveClientAddrLayer, ConnInfo};
//! use portcullis_ip::{Action, IpFilterLayer, IpRules};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let admins = IpRules::builder(Action::Deny).set("admin", ["10.20.0.0/24"]).allow_set("admin").build()?;
//! let management = Router::new()
//!     .route("/keys", get(|| async { "secret keys" }))
//!     .route_layer(IpFilterLayer::new(admins));
//! let app = Router::new()
//!     .route("/api", get(|| async { "gateway" }))
//!     .nest("/management", management)
//!     .layer(ResolveClientAddrLayer::new(ClientAddrConfig::new()));
//!
//! let get = |path: &str, peer: &str| {
//!     let mut req = Request::get(path).body(axum::body::Body::empty()).unwrap();
//!     req.extensions_mut().insert(ConnInfo::new(peer.parse().unwrap(), None));
//!     req
//! };
//! // The gateway answers anyone; management only the admin subnet.
//! assert_eq!(app.clone().oneshot(get("/api", "203.0.113.9:4000")).await?.status(), StatusCode::OK);
//! assert_eq!(app.clone().oneshot(get("/management/keys", "10.20.0.7:4000")).await?.status(), StatusCode::OK);
//! assert_eq!(
//!     app.clone().oneshot(get("/management/keys", "203.0.113.9:4000")).await?.status(),
//!     StatusCode::FORBIDDEN
//! );
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod connection;
pub mod filter;
pub mod handle;
pub mod limits;
pub mod rules;

#[cfg(feature = "axum")]
pub use connection::FilteredListener;
pub use connection::{ConnectionFilter, FilterStats, accept_filtered};
pub use filter::{AddressSource, IpFilter, IpFilterLayer, IpRefusal, IpRule, Mode};
pub use handle::IpRulesHandle;
pub use limits::{
    ConnectionLimiter, ConnectionLimits, LimitRefusal, PeerBudget, PeerSlot, Reservation, peer_key,
};
#[cfg(feature = "axum")]
pub use limits::{Limited, LimitedListener};
pub use rules::{Action, Entry, IpRules, IpRulesBuilder, IpRulesError, Matched, RuleId, RuleInfo, Verdict};
