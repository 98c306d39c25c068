//! A private-endpoint deployment with public network access disabled, behind a load balancer that sends
//! PROXY protocol v2 headers, built from a configuration file ([`CONFIG`], `examples/private_endpoint.toml`).
//!
//! - The listener reads a PROXY header from the trusted load balancer only (loopback here), within a
//!   deadline; the header's source address is the client, its Azure Private Link TLV the LinkID.
//! - An approved connection's requests are served, and the handler sees the connection
//!   ([`PrivateEndpointConnection`], Azure's `context.Request.PrivateEndpointConnection`).
//! - A pending connection is refused with 403, naming it; any other caller is public and gets Azure's 403
//!   text, since public network access is disabled.
//!
//! Served through the facade's accept path ([`serve_listeners`] with the listener's [`ListenerSpec`] from
//! the configuration).
//!
//! ```text
//! cargo run -p portcullis-examples --example private_endpoint
//! cargo run -p portcullis-examples --example private_endpoint -- --send 127.0.0.1:8081 570425483
//! ```

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};

use axum::routing::get;
use axum::{Json, Router};
use portcullis::Decisions;
use portcullis::build::Built;
use portcullis::config::{GatewayConfig, Source};
use portcullis::origin::PrivateEndpointConnection;
use portcullis::serve::{DEFAULT_GRACE, ListenerSpec, serve_listeners};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::Layer;

use crate::BoxError;

/// The configuration, commented (`examples/private_endpoint.toml`).
pub const CONFIG: &str = include_str!("../private_endpoint.toml");

/// The LinkID of the approved connection `pe-contoso-westeurope` in [`CONFIG`].
pub const APPROVED_LINK_ID: u32 = 570_425_483;
/// The LinkID of the pending connection `pe-fabrikam-pending` in [`CONFIG`].
pub const PENDING_LINK_ID: u32 = 570_425_999;
/// The gateway's host name over private link.
pub const HOST: &str = "contoso.privatelink.azure-api.net";

/// Parses and builds [`CONFIG`]: the gateway stack and the listener's accept path (PROXY protocol).
///
/// # Errors
/// The configuration error, with its line and key.
pub fn build() -> Result<Built, BoxError> {
    let source = Source::new("examples/private_endpoint.toml", CONFIG);
    let config = GatewayConfig::parse(&source)?;
    Ok(config.build(&source)?)
}

/// What the handler knows about the caller.
async fn whoami(pe: Option<PrivateEndpointConnection>, decisions: Decisions) -> Json<Value> {
    Json(json!({
        "origin": decisions.origin.as_ref().map(|o| o.to_string()),
        "client": decisions.client.map(|c| c.ip.to_string()),
        // Azure's context.Request.PrivateEndpointConnection: null unless over a private endpoint.
        "private_endpoint_connection": pe.map(|pe| json!({
            "name": &*pe.name,
            "group_id": &*pe.group_id,
            "link_id": pe.link_id.to_string(),
        })),
    }))
}

/// The application behind the gateway.
pub fn app() -> Router {
    Router::new().route("/", get(whoami)).route("/whoami", get(whoami))
}

/// Serves the example on `listener` (the configuration's address is for the binary) until `shutdown`.
///
/// # Errors
/// A refused configuration, or an I/O error from serving.
pub async fn run(listener: TcpListener, shutdown: impl Future<Output = ()> + Send) -> Result<(), BoxError> {
    let built = build()?;
    let spec: ListenerSpec = built.listeners.first().map(|(_, s)| s.clone()).ok_or("no listener")?;
    let app = built.gateway.layer().layer(app().into_service());
    serve_listeners(vec![(listener, spec)], app, shutdown, DEFAULT_GRACE).await?;
    Ok(())
}

/// A PROXY protocol v2 header (command PROXY, TCP over IPv4) as a load balancer sends it, with Azure's
/// Private Link TLV (type `0xEE`, subtype `0x01`, the LinkID as a little-endian `u32`) when `azure_link_id`
/// is given.
pub fn proxy_v2_header(source: SocketAddr, destination: SocketAddr, azure_link_id: Option<u32>) -> Vec<u8> {
    let ip4 = |a: SocketAddr| match a.ip() {
        std::net::IpAddr::V4(v4) => v4,
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    };
    let mut tlvs = Vec::new();
    if let Some(id) = azure_link_id {
        tlvs.extend_from_slice(&[0xEE, 0x00, 0x05, 0x01]);
        tlvs.extend_from_slice(&id.to_le_bytes());
    }
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11]); // version 2, PROXY; AF_INET, STREAM
    let len = u16::try_from(12 + tlvs.len()).unwrap_or(u16::MAX);
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&ip4(source).octets());
    h.extend_from_slice(&ip4(destination).octets());
    h.extend_from_slice(&source.port().to_be_bytes());
    h.extend_from_slice(&destination.port().to_be_bytes());
    h.extend_from_slice(&tlvs);
    h
}
