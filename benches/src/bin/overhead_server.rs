//! `portcullis-overhead-server --bare|--stack|--layers`: the `overhead` group's application served over
//! loopback for `scripts/wrk-compare.sh`.
//!
//! Binds `127.0.0.1:0`, prints one line `port=<port> host=<host> x-forwarded-for=<client>` (what a request
//! must carry to be served by every variant), then serves through `portcullis::serve::serve_listeners` (the
//! serve helper's accept path: `ConnInfo` per request, hyper-util's auto builder) on a current-thread
//! runtime until SIGTERM or Ctrl-C.
//!
//! - `--bare`: the bare axum router;
//! - `--stack`: the router behind `Gateway::layer()` with every layer on (100k IP rules, 1k hosts);
//! - `--layers`: the five layers added one by one with `Router::layer`.
#![forbid(unsafe_code)]

#[path = "../overhead_stack.rs"]
mod overhead_stack;

use std::io::Write;
use std::time::Duration;

use portcullis::serve::{ListenerSpec, serve_listeners, shutdown_signal};
use tower_layer::Layer;

use overhead_stack::{CLIENT, HOST, Layers, app};

fn main() {
    let variant = std::env::args().nth(1).unwrap_or_default();
    if !matches!(variant.as_str(), "--bare" | "--stack" | "--layers") {
        eprintln!("usage: portcullis-overhead-server --bare|--stack|--layers");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        let spec = ListenerSpec::new("bench");
        let listeners = vec![(listener, spec)];
        let layers = Layers::new();
        println!("port={port} host={HOST} x-forwarded-for={CLIENT}");
        std::io::stdout().flush().expect("stdout");
        let grace = Duration::from_secs(1);
        let served = match variant.as_str() {
            "--bare" => serve_listeners(listeners, app(), shutdown_signal(), grace).await,
            "--stack" => {
                let app = layers.gateway().layer().layer(app());
                serve_listeners(listeners, app, shutdown_signal(), grace).await
            }
            _ => serve_listeners(listeners, layers.router_layers(app()), shutdown_signal(), grace).await,
        };
        served.expect("serve");
    });
}
