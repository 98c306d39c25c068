//! Shared helpers for the whole-stack tests of portcullis (the tests are in `tests/*.rs`).
//!
//! - [`pki`], [`client`], [`bounded`]: from the shared `portcullis-test-support` crate (certificates made with
//!   the `openssl` CLI, real clients, the safety net).
//! - [`server`]: a gateway built from a TOML text (`GatewayConfig::parse`, `build`, `Bound::bind`, `serve`) on
//!   127.0.0.1 port 0, in front of an echo application that returns what the stack decided as JSON.
//! - [`proxy`]: handcrafted PROXY protocol v1 and v2 headers with Azure, AWS and GCP link-id TLVs.
//!
//! Every wait is bounded by [`SAFETY_NET`]: a test that would hang fails instead. Nothing sleeps to
//! synchronise.
#![forbid(unsafe_code)]

pub mod configs;
pub mod proxy;
pub mod server;

pub use client::curl;
pub use portcullis_test_support::{SAFETY_NET, bounded, client, logs, pki, skip_without, tool_available};
