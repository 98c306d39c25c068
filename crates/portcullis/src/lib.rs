//! # portcullis
//!
//! The network isolation of a managed API gateway for axum, hyper and tonic servers, as tower layers:
//!
//! | feature | crate | what |
//! |---|---|---|
//! | (always) | [`core`] | connection facts, the unspoofable client address, the prefix table, typed denials |
//! | `host` | [`host`] | answer only on configured host names, per endpoint |
//! | `ip` | [`ip`] | source-IP and subnet allow-listing, per request and at accept |
//! | `proxy-protocol` | [`proxy_protocol`] | PROXY v1/v2 from trusted load balancers, private-link ids |
//! | `origin` | [`origin`] | private vs public origin, Azure's public-access 403 |
//! | `mtls` | [`mtls`] | mTLS virtual hosts with a weak-chain policy |
//! | `gateway` | [`config`] | the whole stack from one reviewed config file |
//! | `axum` | | extractors, `ConnInfo` as axum connect info, axum listeners |
//! | `tonic` | | reads tonic's connect info |
//!
//! `full` (the default) enables everything but `tonic`.
#![forbid(unsafe_code)]

/// The README's code blocks, compiled as doctests.
#[cfg(all(doctest, feature = "full"))]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// ARCHITECTURE.md's worked example ("Adding a rule"), compiled and run as a doctest.
#[cfg(all(doctest, feature = "full"))]
#[doc = include_str!("../../../ARCHITECTURE.md")]
pub struct ArchitectureDoctests;

pub use portcullis_core as core;
#[cfg(feature = "host")]
pub use portcullis_host as host;
#[cfg(feature = "ip")]
pub use portcullis_ip as ip;
#[cfg(feature = "mtls")]
pub use portcullis_mtls as mtls;
#[cfg(feature = "origin")]
pub use portcullis_origin as origin;
#[cfg(feature = "proxy-protocol")]
pub use portcullis_proxy_protocol as proxy_protocol;

pub use portcullis_core::{
    ClientAddr, ClientAddrConfig, ConnInfo, Decisions, Denial, Gate, GateBody, GateLayer, GrpcStatus,
    IpRange, IpTable, MatchedHost, Origin, ProblemJson, ResolveClientAddrLayer, Responder, Rule, Rules,
    rule_fn,
};

#[cfg(feature = "gateway")]
pub mod config;
#[cfg(feature = "gateway")]
pub mod gateway;
#[cfg(feature = "gateway")]
pub use gateway::{Endpoints, Gateway, GatewayBuilder, GatewayRules};
#[cfg(feature = "gateway")]
pub mod build;

#[cfg(feature = "gateway")]
pub mod access_log;
#[cfg(feature = "gateway")]
pub mod limits;
#[cfg(feature = "management")]
pub mod management;
#[cfg(feature = "gateway")]
pub mod ops;
#[cfg(feature = "gateway")]
pub mod reload;
#[cfg(feature = "gateway")]
pub mod serve;
