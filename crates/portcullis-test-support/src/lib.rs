//! Helpers shared by portcullis' test suites (integration tests only: a crate's own unit tests link a
//! second copy of the crate).
//!
//! - [`pki`]: certificates made with the `openssl` CLI (it signs with SHA-1 and makes RSA-1024 keys as
//!   asked, which the weak-chain tests need), in a scratch directory removed on drop.
//! - [`loopback`]: axum servers on 127.0.0.1 port 0 with [`ConnInfo`](portcullis_core::ConnInfo) wired, and
//!   TCP connections from a chosen loopback source address (127.0.0.2 plays the public internet).
//! - [`client`]: real clients: hyper HTTP/1.1 and HTTP/2, a rustls client, raw sockets, and `curl`.
//!
//! Every wait is bounded by [`SAFETY_NET`]: a test that would hang fails instead.
#![forbid(unsafe_code)]

use std::time::Duration;

pub mod client;
pub mod logs;
pub mod loopback;
pub mod pki;

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
