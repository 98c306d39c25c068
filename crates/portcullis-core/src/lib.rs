//! # portcullis-core
//!
//! The facts every portcullis layer decides on, and the shared machinery of refusing:
//!
//! - [`ConnInfo`]: the connection's peer and local address, PROXY protocol and TLS facts, learnt once per
//!   connection and put into request extensions ([`ConnInfoLayer`], axum's `ConnectInfo`, tonic).
//! - [`ClientAddr`] and [`ResolveClientAddrLayer`]: who is calling, resolved without trusting anything a client can
//!   forge: forwarded headers are read only from trusted proxies, right to left.
//! - [`IpTable`]: the prefix table behind every CIDR and range rule (longest match, no allocation).
//! - [`Rule`], [`GateLayer`] and [`Gate`]: one request-level decision and the tower layer enforcing it.
//! - [`Denial`], [`Responder`], [`ProblemJson`], [`GrpcStatus`]: typed refusals and their responses
//!   (RFC 9457 problem+json, or gRPC status for gRPC calls).
//! - [`Decisions`]: the one request extension where rules record what they decided.
//! - [`LogLimit`]: per-kind rate limits for the log lines a client can cause.
//!
//! Features: `axum` (extractors, `Connected` impl), `tonic` (reads tonic's connect info).
#![forbid(unsafe_code)]

pub mod body;
pub mod client;
pub mod conn;
pub mod decisions;
pub mod denial;
#[cfg(feature = "axum")]
pub mod extract;
pub mod host;
pub mod iptable;
pub mod origin;
pub mod proxy;
pub mod ratelimit;
pub mod rule;
pub mod telemetry;
pub mod tls;

pub use body::{GateBody, ResponseFuture};
pub use client::addr::{ClientAddr, ForwardedHeader, LearntVia, fold_ip, fold_socket_addr};
pub use client::resolve::{
    ClientAddrConfig, ForwardedSource, ResolveClientAddr, ResolveClientAddrLayer, ResolveError, TrustedHops,
};
#[cfg(feature = "axum")]
pub use conn::FactsListener;
pub use conn::{AddConnInfo, ConnInfo, ConnInfoLayer, ConnectionFacts};
pub use decisions::{Decisions, IpAllowed};
pub use denial::{Denial, GrpcStatus, ProblemJson, RespondDenial, Responder};
pub use host::MatchedHost;
pub use iptable::{IpRange, IpTable, IpTableBuilder, IpTableError};
pub use origin::{Origin, PrivateEndpoint, PrivateVia};
pub use proxy::{LinkId, ProxyInfo, ProxySsl, ProxyVersion};
pub use ratelimit::LogLimit;
pub use rule::{Gate, GateLayer, Rule, RuleFn, Rules, rule_fn};
pub use tls::{ClientCert, TlsInfo};
