//! A tonic gRPC service (the standard health service) behind the gateway.
//!
//! ```text
//! cargo run -p portcullis-examples --example tonic_health [-- --listen 127.0.0.1:50051]
//! cargo run -p portcullis-examples --example tonic_health -- --check ADDR AUTHORITY [--from IP]
//! ```
//!
//! 127.0.0.1 is the allowed client; 127.0.0.2 stands in for anyone else. `--check` calls the server with
//! tonic's `HealthClient`. The code is in `examples/src/tonic_health.rs`.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};

use portcullis::serve::shutdown_signal;
use portcullis_examples::tonic_health::{self, HOST};
use portcullis_examples::{BoxError, init_tracing, listen_addr};
use tokio::net::TcpListener;

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    init_tracing();
    if let Some(addr) = arg("--check") {
        let addr: SocketAddr = addr.parse()?;
        let authority = std::env::args().skip_while(|a| a != "--check").nth(2).unwrap_or_else(|| HOST.into());
        let from: Option<IpAddr> = arg("--from").map(|ip| ip.parse()).transpose()?;
        match tonic_health::check(addr, &authority, from, "").await {
            Ok(status) => println!("served: {status:?}"),
            Err(status) => println!("refused: {:?}: {}", status.code(), status.message()),
        }
        return Ok(());
    }

    let listener = TcpListener::bind(listen_addr("127.0.0.1:50051")).await?;
    let addr = listener.local_addr()?;
    let me = "cargo run -q -p portcullis-examples --example tonic_health --";
    println!("gRPC health service behind the gateway, listening on {addr}\n");
    println!("# the allowed client, naming the configured host: served (Serving)");
    println!("{me} --check {addr} {HOST}\n");
    println!("# the bare IP as :authority: refused with 421 (gRPC status Unknown)");
    println!("{me} --check {addr} {}\n", addr.ip());
    println!("# another client address: refused with 403 (gRPC status PermissionDenied)");
    println!("{me} --check {addr} {HOST} --from 127.0.0.2\n");
    println!("Ctrl-C stops the server.");
    tonic_health::run(listener, &["127.0.0.1".parse()?], shutdown_signal()).await
}
