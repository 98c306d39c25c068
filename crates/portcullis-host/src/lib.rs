//! # portcullis-host
//!
//! Answer only on the host names configured for each endpoint, the way a managed API gateway in an
//! internal network does: one port, several endpoints (gateway, developer portal, management, scm, custom
//! domains) told apart by host name, nothing served to scanners that dial the bare IP address, nothing
//! served for a name that was never configured (DNS rebinding).
//!
//! - [`HostRouter`]: one inner service per endpoint (typically one `axum::Router` each), chosen by host.
//! - [`HostFilter`] / [`HostFilterLayer`]: filter mode in front of a single service.
//! - [`Hosts`]: the compiled pattern table (exact names, `*.` wildcards of exactly one label, IP literals,
//!   optional ports), shared by both; [`ServiceNames`] builds a managed gateway's default names.
//!
//! ## Which host a request names
//! The authority of the request target (absolute-form `GET http://host/ HTTP/1.1`, or HTTP/2 `:authority`)
//! when present, else the `Host` header ([`request_host`]). Both present and different, several `Host`
//! headers, no `Host` on HTTP/1.1, or an authority outside the host grammar answer **400**. Forwarded
//! headers (`X-Forwarded-Host`, `Forwarded: host=`) are never read: a client can write them.
//!
//! Names are normalised before matching ([`RequestHost`]): ASCII lower-case, one trailing dot removed, port
//! split off. Requests must use A-labels (`xn--…`); configured Unicode names are stored as A-labels, so
//! `bücher.example` serves `xn--bcher-kva.example`.
//!
//! ## Refusals
//! Through the shared [`Denial`](portcullis_core::Denial) and [`Responder`](portcullis_core::Responder)
//! (problem+json by default, replaceable), with a typed [`HostRefusal`] reason:
//!
//! | request | status | code |
//! |---|---|---|
//! | a name no pattern serves | 421 | `host.unknown` |
//! | an IP literal no route names | 421 | `host.ip-literal` |
//! | a host of another TLS virtual host than the connection's ([`SniCheck`]) | 421 | `host.sni-mismatch` |
//! | malformed authority | 400 | `host.malformed` |
//! | no / several `Host` headers, target ≠ `Host` | 400 | `host.missing`, `host.multiple`, `host.mismatch` |
//! | HTTP/1.0 naming no host | 421 | `host.none` |
//!
//! In shadow mode the refusal is recorded in [`Decisions::shadow`](portcullis_core::Decisions) and the
//! request goes through (see [`HostRouter`] for requests that match no endpoint).
//!
//! The match is recorded as a [`MatchedHost`](portcullis_core::MatchedHost) in
//! [`Decisions::host`](portcullis_core::Decisions) for later layers and handlers.
//!
//! ## Cost
//! Parsing and matching allocate nothing: the host is normalised into a stack buffer, eight bytes at a
//! time, and its borrowed bytes are looked up in an immutable open-addressing table of the configured names
//! (one bucket and the name's bytes are touched per lookup). With 10 000 exact names and 1 000 wildcards
//! loaded, a lookup costs about 50 ns, about 1.6 times a `std` `HashMap` lookup of an already-normalised
//! name (`cargo run --release -p portcullis-benches -- host`). A request whose authority is spelled exactly
//! as a configured name (lower case, no trailing dot, optionally `:port`) skips the normalisation: its bytes
//! are looked up as they are, which gives the same route because every configured name reads back as
//! itself; any other spelling misses and is parsed. Recording the match allocates the host text only for
//! wildcard and address matches (exact matches share the pattern's allocation).
//!
//! ## Example
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use portcullis_host::{Endpoint, HostFilterLayer, Hosts};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hosts = Hosts::builder()
//!     .endpoint(Endpoint::new("gateway").hosts(["contoso.azure-api.net", "*.api.contoso.com"]))
//!     .build()?;
//! let app = ServiceBuilder::new().layer(HostFilterLayer::new(hosts)).service_fn(|_req: Request<()>| async {
//!     Ok::<_, Infallible>(Response::new(String::from("hello")))
//! });
//!
//! // A configured name, in any case, with a trailing dot: served.
//! let req = Request::builder().uri("/").header("host", "Contoso.Azure-API.net.").body(())?;
//! assert_eq!(app.clone().oneshot(req).await?.status(), StatusCode::OK);
//!
//! // The bare address and an unknown name: 421 Misdirected Request.
//! let req = Request::builder().uri("/").header("host", "10.0.0.4").body(())?;
//! assert_eq!(app.clone().oneshot(req).await?.status(), StatusCode::MISDIRECTED_REQUEST);
//! let req = Request::builder().uri("/").header("host", "rebind.attacker.example").body(())?;
//! let res = app.clone().oneshot(req).await?;
//! assert_eq!(res.status(), StatusCode::MISDIRECTED_REQUEST);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//!
//! // A wildcard covers exactly one label.
//! let req = Request::builder().uri("/").header("host", "a.b.api.contoso.com").body(())?;
//! assert_eq!(app.oneshot(req).await?.status(), StatusCode::MISDIRECTED_REQUEST);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod authority;
mod filter;
mod hosts;
mod names;
mod pattern;
mod policy;
mod router;
pub mod sni;

pub use authority::{AuthorityError, RequestHost, request_host};
pub use filter::{HostFilter, HostFilterLayer};
pub use hosts::{Endpoint, HostConfigError, Hosts, HostsBuilder, Route};
pub use names::{EndpointKind, ServiceNames};
pub use pattern::{HostPattern, PatternError, PatternKind, normalize_name};
pub use policy::{HostRefusal, HostRule, LAYER};
pub use router::{EndpointService, HostRouter, HostRouterBuilder};
pub use sni::{NoSniCheck, SniCheck, SniContext, SniMismatch, VhostBinding};
