//! A private-endpoint deployment with public network access disabled, behind a PROXY-protocol load
//! balancer, from the configuration file `examples/private_endpoint.toml`.
//!
//! ```text
//! cargo run -p portcullis-examples --example private_endpoint [-- --listen 127.0.0.1:8081]
//! cargo run -p portcullis-examples --example private_endpoint -- --send 127.0.0.1:8081 570425483
//! ```
//!
//! `--send ADDR LINKID|public` plays the load balancer: it sends a PROXY v2 header (with Azure's Private
//! Link TLV for a LINKID; from the public address 203.0.113.7 for `public`), then an HTTP request, and
//! prints the answer. The code is in `examples/src/private_endpoint.rs`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use portcullis::serve::shutdown_signal;
use portcullis_examples::private_endpoint::{self, APPROVED_LINK_ID, HOST, PENDING_LINK_ID};
use portcullis_examples::{BoxError, init_tracing, listen_addr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Plays the load balancer: a PROXY v2 header, then one HTTP/1.1 request; returns the raw answer.
async fn send(addr: SocketAddr, link: Option<u32>) -> Result<String, BoxError> {
    // Over a private link the source is the consumer's address in its own network; without one, a public
    // client's.
    let source: SocketAddr = if link.is_some() { "10.20.0.5:50123" } else { "203.0.113.7:50123" }.parse()?;
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(&private_endpoint::proxy_v2_header(source, addr, link)).await?;
    let request = format!("GET /whoami HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read_to_string(&mut answer)).await??;
    Ok(answer)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    init_tracing();
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--send") {
        let addr: SocketAddr = args.get(i + 1).ok_or("--send ADDR LINKID|public")?.parse()?;
        let link = match args.get(i + 2).map(String::as_str) {
            None | Some("public") => None,
            Some(id) => Some(id.parse::<u32>()?),
        };
        println!("{}", send(addr, link).await?);
        return Ok(());
    }

    let configured = private_endpoint::build()?.listeners.first().map(|(a, _)| a.to_string());
    let listener = TcpListener::bind(listen_addr(configured.as_deref().unwrap_or("127.0.0.1:8081"))).await?;
    let addr = listener.local_addr()?;
    let me = "cargo run -q -p portcullis-examples --example private_endpoint --";
    println!("private-endpoint gateway behind a PROXY-protocol load balancer, listening on {addr}\n");
    println!("# over the approved private endpoint connection: 200, the handler sees pe-contoso-westeurope");
    println!("{me} --send {addr} {APPROVED_LINK_ID}\n");
    println!("# over the pending connection: 403 naming pe-fabrikam-pending");
    println!("{me} --send {addr} {PENDING_LINK_ID}\n");
    println!("# a public caller (no LinkID, source 203.0.113.7): Azure's 403");
    println!("{me} --send {addr} public\n");
    println!("# curl's PROXY v1 header (source 127.0.0.1, no LinkID): public, Azure's 403");
    let resolve = format!("--resolve {HOST}:{}:{}", addr.port(), addr.ip());
    println!("curl -s --haproxy-protocol {resolve} http://{HOST}:{}/whoami\n", addr.port());
    println!("# no PROXY header from the load balancer: the connection is closed unanswered");
    println!("curl -s {resolve} http://{HOST}:{}/whoami\n", addr.port());
    println!("Ctrl-C stops the gateway.");
    private_endpoint::run(listener, shutdown_signal()).await
}
