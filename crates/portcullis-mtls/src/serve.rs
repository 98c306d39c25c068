//! Serving: [`MtlsListener`] (TLS handshakes in spawned tasks, an axum `Listener` with feature `axum`) and
//! [`serve_connection`] for hyper-util servers.

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use portcullis_core::ratelimit::{CONNECTIONS, TLS_HANDSHAKES};
use portcullis_core::{AddConnInfo, ConnectionFacts};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tower_service::Service;

use crate::acceptor::{MtlsAcceptor, MtlsStream};

/// A TCP listener whose accepted connections come out TLS-established. Each handshake runs in its own task
/// (a slow client never holds up the others), at most `max_handshakes` at once; failed handshakes are
/// logged and dropped. Dropping the listener stops accepting.
///
/// With feature `axum` it is an `axum::serve::Listener`, and
/// `axum::serve(listener, router.into_make_service_with_connect_info::<ConnInfo>())` gives every request its
/// [`ConnInfo`](portcullis_core::ConnInfo) with the TLS facts.
#[derive(Debug)]
pub struct MtlsListener {
    rx: mpsc::Receiver<(MtlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for MtlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MtlsListener {
    /// Starts accepting on `tcp` (inside a tokio runtime), at most 256 concurrent handshakes.
    ///
    /// # Errors
    /// When the listener's local address cannot be read.
    pub fn new(tcp: TcpListener, acceptor: MtlsAcceptor) -> io::Result<Self> {
        MtlsListener::with_max_handshakes(tcp, acceptor, 256)
    }

    /// Starts accepting on `tcp`, at most `max_handshakes` handshakes in flight.
    ///
    /// # Errors
    /// When the listener's local address cannot be read.
    pub fn with_max_handshakes(
        tcp: TcpListener,
        acceptor: MtlsAcceptor,
        max_handshakes: usize,
    ) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(max_handshakes.max(1));
        let limit = Arc::new(Semaphore::new(max_handshakes.max(1)));
        let task = tokio::spawn(async move {
            loop {
                let Ok(permit) = limit.clone().acquire_owned().await else { return };
                let accepted = tokio::select! {
                    r = tcp.accept() => r,
                    () = tx.closed() => return,
                };
                let (tcp_stream, remote) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        if CONNECTIONS.admit() {
                            tracing::warn!(error = %e, "portcullis mtls: accept failed");
                        } else {
                            tracing::debug!(error = %e, "portcullis mtls: accept failed");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match acceptor.accept(tcp_stream).await {
                        Ok(stream) => {
                            let _ = tx.send((stream, remote)).await;
                        }
                        Err(e) if TLS_HANDSHAKES.admit() => {
                            tracing::info!(peer = %remote, error = %e, "portcullis mtls: handshake refused")
                        }
                        Err(e) => {
                            tracing::debug!(peer = %remote, error = %e, "portcullis mtls: handshake refused")
                        }
                    }
                });
            }
        });
        Ok(MtlsListener { rx, local, task })
    }

    /// The next established connection and its peer address. `None` once the listener stopped.
    pub async fn next(&mut self) -> Option<(MtlsStream<TcpStream>, SocketAddr)> {
        self.rx.recv().await
    }

    /// The local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

#[cfg(feature = "axum")]
impl axum::serve::Listener for MtlsListener {
    type Io = MtlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept task only ends when the listener is dropped or the runtime shuts down.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(feature = "axum")]
impl portcullis_core::FactsListener for MtlsListener {}

/// Serves HTTP/1.1 and HTTP/2 on an established connection with hyper-util, putting the connection's
/// [`ConnInfo`](portcullis_core::ConnInfo) (TLS facts included) into every request's extensions.
///
/// # Errors
/// The connection's error.
pub async fn serve_connection<S, B>(
    stream: MtlsStream<TcpStream>,
    remote: SocketAddr,
    service: S,
) -> Result<(), Box<dyn StdError + Send + Sync>>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let info = stream.conn_info(remote);
    let svc = TowerToHyperService::new(AddConnInfo::new(service, info));
    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), svc)
        .await
}
