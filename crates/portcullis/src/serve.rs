//! Serving: the whole accept path for HTTP and HTTPS listeners at once.
//!
//! Per connection, in order (each step can close the connection before the next one runs):
//!
//! 1. **Connection filter** on the socket peer, when the listener has one and no PROXY protocol: a refused
//!    peer is dropped before a byte is read.
//! 2. **PROXY protocol**, when configured: the header is read only from trusted load balancers, within the
//!    deadline and the size cap; with a connection filter, the PROXY source is then filtered.
//! 3. **TLS** with the virtual hosts, when the listener is HTTPS: SNI picks the virtual host, the client
//!    chain passes rustls-webpki and the chain policy.
//! 4. **HTTP/1.1 or HTTP/2** (hyper-util's auto builder), with the connection's [`ConnInfo`] put into every
//!    request, in front of the application wrapped by the caller (typically [`Gateway::layer`]).
//!
//! Ctrl-C or SIGTERM stops accepting and lets open connections finish (for up to the grace period).
//!
//! [`Gateway::layer`]: crate::Gateway::layer

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use portcullis_core::{ConnInfo, ConnInfoLayer, ConnectionFacts};
use portcullis_ip::ConnectionFilter;
use portcullis_mtls::MtlsAcceptor;
use portcullis_proxy_protocol::ProxyProtocolConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, Service};

/// How long open connections may take to finish after a shutdown signal.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// How long an HTTP/1.1 client has to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP/2 keep-alive pings, so dead peers are noticed.
pub const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The most connections served at once per process; further ones wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 10_000;

/// One listening socket and what its accept path does.
#[derive(Clone)]
pub struct ListenerSpec {
    /// A name for logs.
    pub name: String,
    /// TLS with these virtual hosts (HTTPS), or plain HTTP.
    pub tls: Option<MtlsAcceptor>,
    /// The PROXY protocol policy, if load balancers send headers.
    pub proxy: Option<Arc<ProxyProtocolConfig>>,
    /// The connection filter, if refused peers are dropped at accept.
    pub filter: Option<ConnectionFilter>,
    /// With PROXY protocol: how many connections from peers that are not trusted load balancers may wait for
    /// their first bytes at once ([`MAX_PENDING_UNTRUSTED`] by default); past that they are closed at once.
    pub untrusted: Arc<tokio::sync::Semaphore>,
}

/// The default budget of [`ListenerSpec::untrusted`].
pub const MAX_PENDING_UNTRUSTED: usize = 1024;

impl ListenerSpec {
    /// A plain-HTTP listener spec named `name` (set the public fields for TLS, PROXY and filtering).
    pub fn new(name: impl Into<String>) -> Self {
        ListenerSpec {
            name: name.into(),
            tls: None,
            proxy: None,
            filter: None,
            untrusted: Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_UNTRUSTED)),
        }
    }
}

impl std::fmt::Debug for ListenerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerSpec")
            .field("name", &self.name)
            .field("tls", &self.tls.is_some())
            .field("proxy", &self.proxy.is_some())
            .field("filter", &self.filter.is_some())
            .finish()
    }
}

/// Serves `app` on every listener until `shutdown` resolves, then waits up to `grace` for open
/// connections.
///
/// `app` is cloned per connection; wrap it in the gateway first (`gateway.layer().layer(app)`).
///
/// # Errors
/// Never after start: accept errors are logged and retried. The `io::Result` is for symmetry with
/// binding, which the caller does.
pub async fn serve_listeners<S, B>(
    listeners: Vec<(TcpListener, ListenerSpec)>,
    app: S,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = Arc::new(GracefulShutdown::new());
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut loops = Vec::new();
    for (listener, spec) in listeners {
        let app = app.clone();
        let graceful = graceful.clone();
        let permits = permits.clone();
        let mut stop = stop_rx.clone();
        loops.push(tokio::spawn(async move {
            let spec = Arc::new(spec);
            loop {
                // Take a connection slot before accepting, so that at the cap new connections wait in the
                // kernel's queue instead of holding memory here.
                let permit = tokio::select! {
                    _ = stop.changed() => break,
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                tokio::select! {
                    _ = stop.changed() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, peer)) => {
                            let spec = spec.clone();
                            let app = app.clone();
                            let watcher = graceful.watcher();
                            tokio::spawn(async move {
                                connection(stream, peer, spec, app, watcher).await;
                                drop(permit);
                            });
                        }
                        Err(e) => {
                            tracing::warn!(listener = %spec.name, "accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                }
            }
        }));
    }
    shutdown.await;
    tracing::info!("portcullis: shutting down, letting open connections finish");
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    // The accept loops have ended, so this is the last handle.
    if let Ok(graceful) = Arc::try_unwrap(graceful)
        && tokio::time::timeout(grace, graceful.shutdown()).await.is_err()
    {
        tracing::warn!("portcullis: connections still open after the grace period; closing them");
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

async fn connection<S, B>(
    stream: TcpStream,
    peer: SocketAddr,
    spec: Arc<ListenerSpec>,
    app: S,
    watcher: Watcher,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match &spec.proxy {
        None => {
            if let Some(filter) = &spec.filter
                && !filter.admit(peer.ip())
            {
                return; // dropped: nothing was read
            }
            let info = stream.conn_info(peer);
            tls_then_http(stream, info, &spec, app, watcher).await;
        }
        Some(proxy) => {
            // Peers that are not trusted load balancers wait for their first bytes on a budget of their own,
            // so silent connections from anywhere cannot hold the slots the load balancers need.
            let _untrusted_slot = if proxy.policy_for(peer.ip())
                == portcullis_proxy_protocol::SourcePolicy::Refused
            {
                match spec.untrusted.clone().try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        tracing::debug!(listener = %spec.name, %peer, "too many pending untrusted connections; closed");
                        return;
                    }
                }
            } else {
                None
            };
            let stream = match proxy.accept(stream, peer).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(listener = %spec.name, %peer, "PROXY protocol: connection closed: {e}");
                    return;
                }
            };
            let info = stream.conn_info(peer);
            if let Some(filter) = &spec.filter {
                let source = info.proxy.as_ref().and_then(|p| p.source).map_or(peer.ip(), |s| s.ip());
                if !filter.admit(source) {
                    return;
                }
            }
            tls_then_http(stream, info, &spec, app, watcher).await;
        }
    }
}

async fn tls_then_http<IO, S, B>(io: IO, info: ConnInfo, spec: &ListenerSpec, app: S, watcher: Watcher)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match &spec.tls {
        None => http(io, info, app, watcher).await,
        Some(acceptor) => match acceptor.accept(io).await {
            Ok(tls) => {
                let mut info = info;
                info.tls = Some(tls.tls_info().clone());
                http(tls, info, app, watcher).await
            }
            Err(e) => {
                tracing::warn!(listener = %spec.name, peer = %info.peer, "TLS handshake refused: {e}");
            }
        },
    }
}

async fn http<IO, S, B>(io: IO, info: ConnInfo, app: S, watcher: Watcher)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let peer = info.peer;
    let svc = TowerToHyperService::new(ConnInfoLayer::new(info).layer(app));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper's header-read timeout is off and a silent client holds its connection forever.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(HTTP2_KEEP_ALIVE);
    let conn = builder.serve_connection(TokioIo::new(io), svc).into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

// === the serve helper ===

/// Why [`serve`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration was refused (file, line, key).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A listener could not be bound.
    #[error("cannot bind listener `{name}` on {addr}: {error}")]
    Bind {
        /// The listener's name.
        name: String,
        /// Its address.
        addr: SocketAddr,
        /// The error.
        error: io::Error,
    },
    /// Serving failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Listeners bound and ready to serve, with the gateway stack built from the same configuration.
pub struct Bound {
    listeners: Vec<(TcpListener, ListenerSpec)>,
    built: crate::build::Built,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound").field("listeners", &self.local_addrs()).finish()
    }
}

impl Bound {
    /// Binds every listener of `built`.
    ///
    /// # Errors
    /// [`ServeError::Bind`] naming the listener.
    pub async fn bind(built: crate::build::Built) -> Result<Bound, ServeError> {
        let mut listeners = Vec::new();
        for (addr, spec) in &built.listeners {
            let l = TcpListener::bind(addr).await.map_err(|error| ServeError::Bind {
                name: spec.name.clone(),
                addr: *addr,
                error,
            })?;
            listeners.push((l, spec.clone()));
        }
        Ok(Bound { listeners, built })
    }

    /// The bound addresses, by listener name (port 0 in the configuration is resolved here).
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners.iter().filter_map(|(l, s)| l.local_addr().ok().map(|a| (s.name.clone(), a))).collect()
    }

    /// What the configuration built: the gateway, live IP rules, virtual hosts.
    pub fn built(&self) -> &crate::build::Built {
        &self.built
    }

    /// Serves `app` behind the gateway stack until `shutdown` resolves.
    ///
    /// # Errors
    /// As [`serve_listeners`].
    pub async fn serve<S, B>(self, app: S, shutdown: impl Future<Output = ()> + Send) -> io::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let app = self.built.gateway.layer().layer(app);
        serve_listeners(self.listeners, app, shutdown, DEFAULT_GRACE).await
    }
}

/// Builds the gateway from `config`, binds its listeners and serves `app` behind it until Ctrl-C or
/// SIGTERM: `main` stays ten lines.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{Router, routing::get};
/// use portcullis::config::GatewayConfig;
///
/// let (config, source) = GatewayConfig::load("gateway.toml")?;
/// let app = Router::new().route("/", get(|| async { "hello from the private side" }));
/// portcullis::serve::serve(&config, &source, app).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`ServeError`]: the configuration was refused, a listener could not be bound, or serving failed.
pub async fn serve<S, B>(
    config: &crate::config::GatewayConfig,
    source: &crate::config::Source,
    app: S,
) -> Result<(), ServeError>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let built = config.build(source)?;
    let bound = Bound::bind(built).await?;
    for (name, addr) in bound.local_addrs() {
        tracing::info!(listener = %name, %addr, "portcullis: listening");
    }
    bound.serve(app, shutdown_signal()).await?;
    Ok(())
}
