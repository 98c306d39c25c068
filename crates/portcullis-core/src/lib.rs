//! # portcullis-core
//!
//! The facts every portcullis layer decides on, and the shared machinery of refusing:
//!
//! - [`ConnInfo`]: the connection's peer and local address, PROXY protocol and TLS facts, learnt once per
//!   connection and put into request extensions ([`ConnInfoLayer`], axum's `ConnectInfo`, tonic).
//! - [`ClientAddr`] and [`ClientAddrLayer`]: who is calling, resolved without trusting anything a client can
//!   forge: forwarded headers are read only from trusted proxies, right to left.
//! - [`IpTable`]: the prefix table behind every CIDR and range rule (longest match, no allocation).
//! - [`Denial`], [`Responder`], [`ProblemJson`]: typed refusals and their RFC 9457 responses.
//! - [`Decisions`]: the one per-request context where layers record what they decided.
//! - [`LogLimit`]: per-kind rate limits for the log lines a client can cause.
//!
//! Features: `axum` (extractors, `Connected` impl), `tonic` (reads tonic's connect info).
#![forbid(unsafe_code)]

pub mod addr;
pub mod body;
pub mod client_addr;
pub mod conn;
pub mod decisions;
pub mod denial;
#[cfg(feature = "axum")]
pub mod extract;
pub mod forwarded;
pub mod gate;
pub mod headers;
pub mod host;
pub mod iptable;
pub mod origin;
pub mod proxy;
pub mod ratelimit;
pub mod tls;

pub use addr::{ClientAddr, ForwardedHeader, LearntVia, fold_ip, fold_socket_addr};
pub use body::{GateBody, GateResponseBody, ResponseFuture};
pub use client_addr::{
    ClientAddrConfig, ClientAddrLayer, ClientAddrService, ForwardedSource, ResolveError, TrustedHops,
};
#[cfg(feature = "axum")]
pub use conn::FactsListener;
pub use conn::{AddConnInfo, ConnInfo, ConnInfoLayer, ConnectionFacts};
pub use decisions::Decisions;
pub use denial::{Denial, ProblemJson, RespondDenial, Responder};
pub use gate::{Gate, GateContext, GateLayer, GateService, Gates, HeadParts, call_gate};
pub use headers::{HeaderIndex, HeaderLengths, HeaderScan, Lines, Scanned};
pub use host::MatchedHost;
pub use iptable::{IpRange, IpTable, IpTableBuilder, IpTableError};
pub use origin::{Origin, PrivateEndpoint, PrivateVia};
pub use proxy::{LinkId, ProxyInfo, ProxySsl, ProxyVersion};
pub use ratelimit::LogLimit;
pub use tls::{ClientCert, TlsInfo};
