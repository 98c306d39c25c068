//! A tonic gRPC service behind the gateway: the standard gRPC health service (`grpc.health.v1.Health`,
//! from tonic-health, so no protoc is needed), served by tonic's own server with [`Gateway::layer`] as a
//! server layer.
//!
//! The gates read tonic's connection facts (`TcpConnectInfo`, feature `tonic` of `portcullis-core`). The
//! gateway serves the host `grpc.contoso.test` (the `:authority` of the call) only to the allowed
//! addresses.
//!
//! Refusals are answered the gRPC way ([`grpc_responder`]): a trailers-only response whose `grpc-status`
//! is the code gRPC maps the refusal's HTTP status to (403 → `PERMISSION_DENIED`, 421 → `UNKNOWN`, as in
//! gRPC's HTTP-to-gRPC status mapping), with the HTTP status, the denial code and its detail in
//! `grpc-message`, and the denial code alone in the `portcullis-denial` metadata. With the default
//! problem+json responder a gRPC client would try to read the JSON as a gRPC message and report `INTERNAL`.
//!
//! [`check`] is a client: tonic's `HealthClient`, naming a given `:authority`, optionally from a given
//! local address.
//!
//! ```text
//! cargo run -p portcullis-examples --example tonic_health
//! cargo run -p portcullis-examples --example tonic_health -- --check 127.0.0.1:50051 grpc.contoso.test
//! ```

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use portcullis::host::{Endpoint, HostFilterLayer, Hosts};
use portcullis::ip::{Action, IpFilterLayer, IpRules};
use portcullis::{Denial, Gateway, IpRange, Responder};
use tokio::net::{TcpListener, TcpSocket};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint as ChannelEndpoint, Server, Uri};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as Reported;
use tonic_health::pb::health_client::HealthClient;

use crate::BoxError;

/// The host name (`:authority`) served.
pub const HOST: &str = "grpc.contoso.test";

/// The name under which the example reports a service as serving, besides the server as a whole (`""`).
pub const SERVICE_NAME: &str = "contoso.orders.v1.Orders";

/// The gateway: the host name, and the addresses allowed (everything else is refused).
///
/// # Errors
/// A host table or rule set the layers refuse.
pub fn gateway(allowed: &[IpRange]) -> Result<Gateway, BoxError> {
    let hosts = Hosts::builder().endpoint(Endpoint::new("grpc").host(HOST)).build()?;
    let mut rules = IpRules::builder(Action::Deny);
    rules.name("grpc-clients");
    for r in allowed {
        rules.allow(*r);
    }
    Ok(Gateway::builder()
        .hosts(HostFilterLayer::new(hosts))
        .ip(IpFilterLayer::new(rules.build()?))
        .responder(grpc_responder())
        .build())
}

/// The gRPC status code for a refusal's HTTP status, as gRPC's HTTP-to-gRPC mapping gives it (the code a
/// client infers from the bare HTTP status too).
pub fn grpc_code(status: StatusCode) -> tonic::Code {
    match status.as_u16() {
        400 => tonic::Code::Internal,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::Unimplemented,
        429 | 502 | 503 | 504 => tonic::Code::Unavailable,
        _ => tonic::Code::Unknown,
    }
}

/// Answers refusals as gRPC trailers-only responses (see the [module docs](self)).
pub fn grpc_responder() -> Responder {
    Responder::new(|d: &Denial| {
        let message = format!("{} ({}): {}", d.status(), d.code(), d.detail());
        let mut res = Response::new(Full::new(Bytes::new()));
        // A gRPC response is HTTP 200; the outcome is in grpc-status.
        *res.status_mut() = StatusCode::OK;
        let h = res.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from(grpc_code(d.status()) as i32));
        if let Ok(v) = HeaderValue::from_str(&percent_encode(&message)) {
            h.insert("grpc-message", v);
        }
        if let Ok(v) = HeaderValue::from_str(d.code()) {
            h.insert("portcullis-denial", v);
        }
        res
    })
}

/// grpc-message encoding: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Serves the health service behind the gateway on `listener` until `shutdown` resolves.
///
/// # Errors
/// A refused configuration, or a transport error from serving.
pub async fn run(
    listener: TcpListener,
    allowed: &[IpRange],
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BoxError> {
    let gateway = gateway(allowed)?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::Serving).await;
    reporter.set_service_status(SERVICE_NAME, ServingStatus::Serving).await;
    Server::builder()
        .layer(gateway.layer())
        .add_service(health)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await?;
    Ok(())
}

/// Calls `grpc.health.v1.Health/Check` for `service` on the server at `addr`, naming `authority` (a host,
/// without port) as the call's `:authority`, over a connection made from the local address `from` (any
/// when `None`).
///
/// # Errors
/// The call's gRPC status: a refusal by the gateway arrives as a status derived from the HTTP status
/// (403 → `PermissionDenied`, 421 → `Unknown`); a connection failure as `Unavailable`.
pub async fn check(
    addr: SocketAddr,
    authority: &str,
    from: Option<IpAddr>,
    service: &str,
) -> Result<Reported, tonic::Status> {
    let uri = format!("http://{authority}:{}", addr.port());
    let endpoint =
        ChannelEndpoint::from_shared(uri).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
    // Connect to `addr` whatever the authority says (no name resolution), from `from` when given.
    let connector = tower::service_fn(move |_: Uri| async move {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(ip) = from {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        Ok::<_, io::Error>(TokioIo::new(socket.connect(addr).await?))
    });
    let channel = endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("cannot connect to {addr}: {e}")))?;
    let response =
        HealthClient::new(channel).check(HealthCheckRequest { service: service.to_owned() }).await?;
    Ok(response.into_inner().status())
}
