//! The portcullis demo: an axum app behind the client-address layer on 127.0.0.1.
//!
//! ```text
//! cargo run -p portcullis-examples --bin portcullis-demo            # serve until Ctrl-C
//! cargo run -p portcullis-examples --bin portcullis-demo -- --check # run the printed requests itself, then exit
//! ```
//!
//! The embedded configuration trusts 127.0.0.1 as a reverse proxy that sets `X-Forwarded-For`; any other
//! peer (try 127.0.0.2) is a direct client whose forwarded headers are ignored.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use axum::{Json, Router, routing::get};
use portcullis_core::{ClientAddr, ClientAddrConfig, ClientAddrLayer, ConnInfo, ForwardedSource};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

async fn whoami(client: ClientAddr, conn: ConnInfo) -> Json<Value> {
    Json(json!({
        "client": client.ip.to_string(),
        "learnt_via": client.learnt_via.to_string(),
        "peer": conn.peer.to_string(),
    }))
}

fn app() -> Router {
    let config = ClientAddrConfig::new()
        .trusted_proxies(["127.0.0.1".parse().expect("a valid address")])
        .expect("a valid trusted-proxy set")
        .source(ForwardedSource::XForwardedFor);
    Router::new().route("/", get(whoami)).layer(ClientAddrLayer::new(config))
}

fn tries(addr: SocketAddr) -> Vec<(&'static str, Option<&'static str>, &'static str, String)> {
    let url = format!("http://{addr}/");
    vec![
        ("the trusted proxy itself (127.0.0.1) calling directly", None, "", format!("curl -s {url}")),
        (
            "through the trusted proxy: the client is the rightmost untrusted entry",
            None,
            "203.0.113.9, 127.0.0.1",
            format!("curl -s -H 'X-Forwarded-For: 203.0.113.9, 127.0.0.1' {url}"),
        ),
        (
            "a direct client (127.0.0.2) spoofing X-Forwarded-For: ignored",
            Some("127.0.0.2"),
            "10.0.0.1",
            format!("curl -s --interface 127.0.0.2 -H 'X-Forwarded-For: 10.0.0.1' {url}"),
        ),
        (
            "an obfuscated entry in the walk: 400, never a guess",
            None,
            "203.0.113.9, _hidden",
            format!("curl -s -H 'X-Forwarded-For: 203.0.113.9, _hidden' {url}"),
        ),
    ]
}

/// Sends one request the way the printed curl command would, from `source` if given.
async fn send(addr: SocketAddr, source: Option<&str>, xff: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = match source {
        Some(src) => {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(src.parse().expect("a loopback address"), 0))?;
            socket.connect(addr).await?
        }
        None => TcpStream::connect(addr).await?,
    };
    let xff_line = if xff.is_empty() { String::new() } else { format!("X-Forwarded-For: {xff}\r\n") };
    let req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n{xff_line}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await?;
    let status = out.lines().next().unwrap_or_default().to_owned();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Ok(format!("{status}\n      {body}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "portcullis=info,warn".into()),
        )
        .init();
    let check = std::env::args().any(|a| a == "--check");
    let listen = std::env::args()
        .skip_while(|a| a != "--listen")
        .nth(1)
        .unwrap_or_else(|| if check { "127.0.0.1:0".into() } else { "127.0.0.1:8080".into() });
    let listener = TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        axum::serve(listener, app().into_make_service_with_connect_info::<ConnInfo>())
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    });
    println!("portcullis demo listening on http://{addr}/ (127.0.0.1 is the trusted proxy)\n");
    for (what, source, xff, curl) in tries(addr) {
        println!("# {what}\n{curl}");
        if check {
            println!("  -> {}", send(addr, source, xff).await?);
        }
        println!();
    }
    if check {
        server.abort();
        return Ok(());
    }
    println!("Ctrl-C stops the demo.");
    server.await??;
    Ok(())
}
