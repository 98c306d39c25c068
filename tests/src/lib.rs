//! Shared helpers for the whole-stack tests of portcullis (the tests are in `tests/*.rs`).
//!
//! - [`pki`]: certificates made with the `openssl` CLI (it signs with SHA-1 and makes RSA-1024 keys as asked,
//!   which the weak-chain tests need).
//! - [`server`]: a gateway built from a TOML text (`GatewayConfig::parse`, `build`, `Bound::bind`, `serve`) on
//!   127.0.0.1 port 0, in front of an echo application that returns what the stack decided as JSON.
//! - [`client`]: real clients: hyper HTTP/1.1 and HTTP/2 over TCP sockets bound to a chosen loopback address,
//!   a rustls client, raw sockets, and `curl`.
//! - [`proxy`]: handcrafted PROXY protocol v1 and v2 headers with Azure, AWS and GCP link-id TLVs.
//!
//! Every wait is bounded by [`SAFETY_NET`]: a test that would hang fails instead. Nothing sleeps to
//! synchronise.
#![forbid(unsafe_code)]

use std::time::Duration;

pub mod client;
pub mod configs;
pub mod pki;
pub mod proxy;
pub mod server;

pub use client::curl;

/// The longest any single step of a test may take before the test fails (a safety net, never a timed
/// assertion).
pub const SAFETY_NET: Duration = Duration::from_secs(30);

/// Awaits `fut`, failing the test with `what` if it takes longer than [`SAFETY_NET`].
pub async fn bounded<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(SAFETY_NET, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: no answer within the {SAFETY_NET:?} safety net"),
    }
}

/// Whether a command-line tool runs (`openssl version`, `curl --version`).
pub fn tool_available(tool: &str) -> bool {
    let arg = if tool == "openssl" { "version" } else { "--version" };
    std::process::Command::new(tool).arg(arg).output().is_ok_and(|o| o.status.success())
}

/// Returns `true` (and prints a clear SKIPPED line) when `tool` is missing, so the caller can return early.
pub fn skip_without(tool: &str, test: &str) -> bool {
    if tool_available(tool) {
        false
    } else {
        eprintln!("SKIPPED {test}: the `{tool}` command is not installed (Debian package `{tool}`)");
        true
    }
}
