//! A tonic gRPC service behind the gateway: the standard gRPC health service (`grpc.health.v1.Health`,
//! from tonic-health, so no protoc is needed), served by tonic's own server with [`Gateway::layer`] as a
//! server layer.
//!
//! The gates read tonic's connection facts (`TcpConnectInfo`, feature `tonic` of `portcullis-core`). The
//! gateway serves the host `grpc.contoso.test` (the `:authority` of the call) only to the allowed
//! addresses.
//!
//! Refusals are answered the gRPC way by the default responder ([`GrpcStatus`](portcullis::GrpcStatus),
//! chosen for every request whose content type is `application/grpc*`): a trailers-only response whose
//! `grpc-status` is the refusal's code (403 → `PERMISSION_DENIED`, 421 → `FAILED_PRECONDITION`, 400 →
//! `INVALID_ARGUMENT`), with the HTTP status, the denial code and its detail in `grpc-message`, and the
//! denial code alone in the `portcullis-denial` metadata.
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

use hyper_util::rt::TokioIo;
use portcullis::host::{Endpoint, HostFilterLayer, Hosts};
use portcullis::ip::{Action, IpFilterLayer, IpRules};
use portcullis::{Gateway, IpRange};
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
    Ok(Gateway::builder().hosts(HostFilterLayer::new(hosts)).ip(IpFilterLayer::new(rules.build()?)).build())
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
