//! # portcullis examples
//!
//! Five runnable stacks to copy, each a module here with a `run(listener, .., shutdown)` function that both
//! its example binary (`examples/<name>.rs`) and its smoke test (`tests/smoke.rs`) call:
//!
//! | example | what it shows | run |
//! |---|---|---|
//! | [`internal_vnet`] | four endpoints by host name, one axum `Router` each ([`portcullis::Endpoints`]), management only from an admin subnet | `cargo run -p portcullis-examples --example internal_vnet` |
//! | [`private_endpoint`] | public access disabled behind a PROXY-protocol load balancer, from a config file; private endpoint connections by Azure LinkID | `cargo run -p portcullis-examples --example private_endpoint` |
//! | [`mtls_vhosts`] | two TLS virtual hosts by SNI, one requiring client certificates under a strict policy | `cargo run -p portcullis-examples --example mtls_vhosts` |
//! | [`hyper_only`] | no axum: a hyper-util accept loop and a `tower::service_fn` behind the gateway | `cargo run -p portcullis-examples --example hyper_only` |
//! | [`tonic_health`] | a tonic gRPC service (the standard health service) behind the gateway | `cargo run -p portcullis-examples --example tonic_health` |
//!
//! Every example serves on loopback only and prints the requests that show what it does.
#![forbid(unsafe_code)]

pub mod hyper_only;
pub mod internal_vnet;
pub mod mtls_vhosts;
pub mod pki;
pub mod private_endpoint;
pub mod tonic_health;

/// The error type of the examples' setup functions.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sets up `tracing` output on stderr for an example binary (`RUST_LOG` overrides the default filter).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "portcullis=info,warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// The address an example binary listens on: the value of `--listen ADDR`, else `default`.
pub fn listen_addr(default: &str) -> String {
    std::env::args().skip_while(|a| a != "--listen").nth(1).unwrap_or_else(|| default.to_owned())
}
