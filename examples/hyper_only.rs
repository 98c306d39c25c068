//! No axum: a hyper-util accept loop and a `tower::service_fn` behind the gateway.
//!
//! ```text
//! cargo run -p portcullis-examples --example hyper_only [-- --listen 127.0.0.1:8082]
//! ```
//!
//! 127.0.0.1 is the allowed client; 127.0.0.2 stands in for anyone else. The code is in
//! `examples/src/hyper_only.rs`.
#![forbid(unsafe_code)]

use portcullis::serve::shutdown_signal;
use portcullis_examples::hyper_only::{self, HOST};
use portcullis_examples::{BoxError, init_tracing, listen_addr};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    init_tracing();
    let listener = TcpListener::bind(listen_addr("127.0.0.1:8082")).await?;
    let addr = listener.local_addr()?;
    let resolve = format!("--resolve {HOST}:{}:{}", addr.port(), addr.ip());
    println!("hyper-only gateway listening on {addr}\n");
    println!("# the allowed client, by host name (HTTP/1.1, then HTTP/2 with prior knowledge): 200");
    println!("curl -s {resolve} http://{HOST}:{}/hello", addr.port());
    println!("curl -s --http2-prior-knowledge {resolve} http://{HOST}:{}/hello\n", addr.port());
    println!("# another client address: 403");
    println!("curl -s --interface 127.0.0.2 {resolve} http://{HOST}:{}/hello\n", addr.port());
    println!("# the bare IP address: 421");
    println!("curl -s http://{addr}/hello\n");
    println!("Ctrl-C stops the server.");
    hyper_only::run(listener, &["127.0.0.1".parse()?], shutdown_signal()).await
}
