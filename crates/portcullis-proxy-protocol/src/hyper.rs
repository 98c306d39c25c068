//! The hyper-util adapter: [`accept_tokio_io`].

use std::net::SocketAddr;

use hyper_util::rt::TokioIo;
use portcullis_core::{ConnInfo, ConnectionFacts};
use tokio::io::AsyncRead;

use crate::accept::{AcceptError, ProxyProtocolConfig};
use crate::stream::ProxiedStream;

/// Reads the PROXY header of a stream accepted from `peer` ([`ProxyProtocolConfig::accept`]) and returns it
/// ready for hyper (`TokioIo`), with its [`ConnInfo`] for
/// [`ConnInfoLayer`](portcullis_core::ConnInfoLayer) / [`AddConnInfo`](portcullis_core::AddConnInfo).
///
/// Call it inside the connection's spawned task, not in the accept loop, so a slow peer stalls only itself:
///
/// ```no_run
/// use std::sync::Arc;
/// use hyper_util::rt::TokioExecutor;
/// use hyper_util::server::conn::auto;
/// use hyper_util::service::TowerToHyperService;
/// use portcullis_core::AddConnInfo;
/// use portcullis_proxy_protocol::{accept_tokio_io, ProxyProtocolConfig, SourcePolicy};
///
/// # async fn run(app: axum::Router) -> Result<(), Box<dyn std::error::Error>> {
/// let config = Arc::new(
///     ProxyProtocolConfig::builder()
///         .source("10.1.0.0/16".parse::<portcullis_core::IpRange>()?, SourcePolicy::Required)
///         .build()?,
/// );
/// let tcp = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
/// loop {
///     let (stream, peer) = tcp.accept().await?;
///     let (config, app) = (Arc::clone(&config), app.clone());
///     tokio::spawn(async move {
///         // A refused header has been logged; dropping the stream closes the connection.
///         let Ok((io, conn)) = accept_tokio_io(&config, stream, peer).await else { return };
///         let svc = TowerToHyperService::new(AddConnInfo::new(app, conn));
///         let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(io, svc).await;
///     });
/// }
/// # }
/// ```
///
/// # Errors
/// As [`ProxyProtocolConfig::accept`]; drop the stream.
pub async fn accept_tokio_io<IO>(
    config: &ProxyProtocolConfig,
    io: IO,
    peer: SocketAddr,
) -> Result<(TokioIo<ProxiedStream<IO>>, ConnInfo), AcceptError>
where
    IO: AsyncRead + Unpin + ConnectionFacts,
{
    let stream = config.accept(io, peer).await?;
    let conn = stream.conn_info(peer);
    Ok((TokioIo::new(stream), conn))
}
