//! Serving: the whole accept path for HTTP and HTTPS listeners at once.
//!
//! Per connection, in order (each step can close the connection before the next one runs, and every step
//! has a deadline: [`ConnectionTimeouts`]):
//!
//! 1. **Connection filter** on the socket peer, when the listener has one and no PROXY protocol: a refused
//!    peer is dropped before a byte is read.
//! 2. **Connection limits** ([`ConnectionLimits`]): a total per listener (taken before accepting, so at the
//!    cap new connections wait in the kernel's queue), and a cap per client address (IPv6: prefix) or, for
//!    a trusted PROXY load balancer, per load balancer address; past a cap the connection is closed unread.
//!    On a PROXY listener, peers that are not trusted load balancers also hold a share of the
//!    untrusted budget ([`ListenerSpec::untrusted`]) until their first bytes are judged.
//! 3. **First byte** within [`ConnectionTimeouts::first_byte`] of accept.
//! 4. **PROXY protocol**, when configured: the header is read only from trusted load balancers, within the
//!    deadline and the size cap; the client is then the header's source: it is counted against the
//!    per-client cap and the connection filter decides on it.
//! 5. **TLS** with the virtual hosts, when the listener is HTTPS, holding one of the client's share of the
//!    handshake permits ([`ListenerSpec::handshakes`]): SNI picks the virtual host, the client chain passes
//!    rustls-webpki and the chain policy.
//! 6. **HTTP/1.1 or HTTP/2** (hyper-util), after the start of HTTP was read within its deadline (the
//!    HTTP/2 preface and the client's SETTINGS): hyper's header-read timer, an idle deadline, an optional
//!    maximum age, header size limits answered `431` in problem+json ([`HeaderLimits`]), and the
//!    connection's [`ConnInfo`] put into every request, in front of the application wrapped by the caller
//!    (typically [`Gateway::layer`]).
//!
//! A connection that switched protocols (a WebSocket tunnel) keeps its places in the connection limits
//! until the task that took it over drops its [`ConnectionHold`], and is closed as any connection is
//! (shutdown, maximum age, TLS virtual hosts changed), after the drain time; the task is told the idle
//! time, after which a quiet tunnel should end.
//!
//! HTTP/1 pipelining and half-close: every request a client sent before closing its side (`FIN`) is
//! answered (hyper's `half_close` is on); a test sends 300 pipelined requests, then shuts its side down,
//! and reads 300 answers.
//!
//! Ctrl-C or SIGTERM stops accepting and lets open connections finish (for up to the grace period).
//!
//! [`Gateway::layer`]: crate::Gateway::layer

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use portcullis_core::{ConnInfo, ConnInfoLayer, ConnectionFacts, Responder, telemetry};
use portcullis_ip::{ConnectionFilter, ConnectionLimiter, ConnectionLimits, PeerBudget, Reservation};
use portcullis_mtls::MtlsAcceptor;
use portcullis_proxy_protocol::{ProxiedStream, ProxyProtocolConfig, SourcePolicy};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tower::{Layer, Service};

pub use crate::limits::{BodyTimeout, ConnectionTimeouts, HeaderLimits, TimedBody};

/// The request body the serve helper hands to the application: hyper's, with the body-read deadline
/// ([`ConnectionTimeouts::body_read`]).
pub type RequestBody = TimedBody<Incoming>;

/// In every request that can switch protocols (an HTTP/1 `Upgrade` header or an HTTP/2 extended CONNECT),
/// the serve helper passes this on: a task that takes the connection over after it switched
/// protocols (a WebSocket tunnel, as the `portcullis serve` proxy joins to its upstream) keeps it for as
/// long as it runs and stops at [`ConnectionHold::closed`]. Until every copy is dropped the connection
/// keeps its places in the connection limits, and it is closed as any connection is (shutdown, maximum
/// age, a change of the TLS virtual hosts it no longer passes).
#[derive(Clone, Debug)]
pub struct ConnectionHold {
    _held: mpsc::Sender<Infallible>,
    close: watch::Receiver<bool>,
    idle: Duration,
}

impl ConnectionHold {
    /// The listener's idle time ([`ConnectionTimeouts::idle`]): a tunnel with no byte either way for that
    /// long should end, as an HTTP connection with no request does.
    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }

    /// Resolves once the serve helper closes the connection: the task holding it must stop then.
    pub async fn closed(&mut self) {
        let _ = self.close.wait_for(|closed| *closed).await;
    }
}
use crate::limits::{Protocol, read_http_start};
pub use crate::ops::MetricsRender;
use crate::reload::Slot;
pub use crate::reload::{DEFAULT_WATCH_INTERVAL, ServeHandle};

/// How long open connections may take to finish after a shutdown signal (the default of
/// [`ConnectionTimeouts::shutdown_grace`]).
pub const DEFAULT_GRACE: Duration = crate::limits::DEFAULT_SHUTDOWN_GRACE;

/// HTTP/2 keep-alive pings, so dead peers are noticed.
pub const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The default total of [`ListenerSpec::untrusted`].
pub const MAX_PENDING_UNTRUSTED: usize = 1024;

/// The default share of one address in [`ListenerSpec::untrusted`].
pub const MAX_PENDING_UNTRUSTED_PER_PEER: usize = 64;

/// The default total of [`ListenerSpec::handshakes`].
pub const MAX_TLS_HANDSHAKES: usize = 1024;

/// The default share of one address in [`ListenerSpec::handshakes`].
pub const MAX_TLS_HANDSHAKES_PER_PEER: usize = 32;

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
    /// The connection limits: a total, per client address, per load balancer address.
    pub limits: ConnectionLimiter,
    /// With PROXY protocol: the connections from peers that are not trusted load balancers waiting for
    /// their first bytes to be judged, at most [`MAX_PENDING_UNTRUSTED`] at once and
    /// [`MAX_PENDING_UNTRUSTED_PER_PEER`] per address by default; past that they are closed at once. A slot
    /// is given back as soon as the first bytes are judged.
    pub untrusted: PeerBudget,
    /// With TLS: the handshakes in flight, at most [`MAX_TLS_HANDSHAKES`] at once and
    /// [`MAX_TLS_HANDSHAKES_PER_PEER`] per client address by default; past that a new connection is closed.
    pub handshakes: PeerBudget,
    /// The deadlines of every step.
    pub timeouts: ConnectionTimeouts,
    /// Request head size limits.
    pub headers: HeaderLimits,
    /// Answers the connection-level refusals made at HTTP (`431`); problem+json by default.
    pub responder: Responder,
}

impl ListenerSpec {
    /// A plain-HTTP listener spec named `name` with the default limits and deadlines (set the public fields
    /// for TLS, PROXY, filtering and other limits).
    pub fn new(name: impl Into<String>) -> Self {
        ListenerSpec {
            name: name.into(),
            tls: None,
            proxy: None,
            filter: None,
            limits: ConnectionLimits::default().limiter(),
            untrusted: PeerBudget::new(MAX_PENDING_UNTRUSTED, MAX_PENDING_UNTRUSTED_PER_PEER),
            handshakes: PeerBudget::new(MAX_TLS_HANDSHAKES, MAX_TLS_HANDSHAKES_PER_PEER),
            timeouts: ConnectionTimeouts::default(),
            headers: HeaderLimits::default(),
            responder: Responder::default(),
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
            .field("limits", self.limits.limits())
            .field("untrusted", &(self.untrusted.total(), self.untrusted.per_peer()))
            .field("handshakes", &(self.handshakes.total(), self.handshakes.per_peer()))
            .field("timeouts", &self.timeouts)
            .field("headers", &self.headers)
            .finish()
    }
}

/// What every connection task shares: the stop signal and the count of open connections (a sender each).
#[derive(Clone)]
struct Shutdown {
    stop: watch::Receiver<bool>,
    _open: mpsc::Sender<()>,
    /// The listener's spec in force, for the deadlines a reload may have changed since the accept.
    cell: SpecCell,
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
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listeners =
        listeners.into_iter().map(|(l, spec)| (l, Arc::new(ArcSwap::from_pointee(spec)))).collect();
    serve_live(listeners, app, shutdown, Some(grace), &AtomicBool::new(true)).await
}

/// What one listener's accept loop reads at each accept: the spec in force, replaced whole by a reload.
pub(crate) type SpecCell = Arc<ArcSwap<ListenerSpec>>;

/// [`serve_listeners`] over specs that a reload may replace; `ready` is cleared when the shutdown starts.
/// Without `grace`, the wait for open connections is the longest `shutdown_grace` of the listeners' specs
/// in force when the shutdown starts (each connection is closed at its own listener's).
pub(crate) async fn serve_live<S, B>(
    listeners: Vec<(TcpListener, SpecCell)>,
    app: S,
    shutdown: impl Future<Output = ()> + Send,
    grace: Option<Duration>,
    ready: &AtomicBool,
) -> io::Result<()>
where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    let cells: Vec<SpecCell> = listeners.iter().map(|(_, cell)| cell.clone()).collect();
    let mut loops = Vec::new();
    for (listener, cell) in listeners {
        let app = app.clone();
        let shared = Shutdown { stop: stop_rx.clone(), _open: open_tx.clone(), cell: cell.clone() };
        loops.push(tokio::spawn(async move {
            let mut stop = shared.stop.clone();
            loop {
                // The spec in force now: a reload replaces it for the connections accepted after it.
                let spec = cell.load_full();
                // Take a connection slot before accepting, so that at the cap new connections wait in the
                // kernel's queue instead of holding memory here.
                let reservation = tokio::select! {
                    _ = stop.changed() => break,
                    r = spec.limits.reserve() => r,
                };
                tokio::select! {
                    _ = stop.changed() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, peer)) => {
                            metrics::counter!(telemetry::CONNECTIONS_ACCEPTED, "listener" => spec.name.clone())
                                .increment(1);
                            let (app, shared) = (app.clone(), shared.clone());
                            tokio::spawn(connection(stream, peer, spec, app, shared, reservation));
                        }
                        Err(e) => {
                            if portcullis_core::ratelimit::CONNECTIONS.admit() {
                                tracing::warn!(listener = %spec.name, "accept failed: {e}");
                            } else {
                                tracing::debug!(listener = %spec.name, "accept failed: {e}");
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                }
            }
        }));
    }
    drop(open_tx);
    shutdown.await;
    ready.store(false, Ordering::Release);
    tracing::info!("portcullis: shutting down, letting open connections finish");
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    // Every connection task holds a sender: the channel ends when the last one does. Each connection
    // closes itself at its listener's grace; the margin lets the last of them finish closing.
    let grace = grace.unwrap_or_else(|| {
        let longest = cells.iter().map(|c| c.load().timeouts.shutdown_grace).max();
        longest.unwrap_or(DEFAULT_GRACE) + Duration::from_millis(500)
    });
    if tokio::time::timeout(grace, open_rx.recv()).await.is_err() {
        tracing::warn!("portcullis: connections still open after the grace period; closing them");
    }
    Ok(())
}

/// Counts a connection closed before HTTP, by listener and reason.
fn refused(listener: &str, reason: &'static str) {
    metrics::counter!(telemetry::CONNECTIONS_REFUSED, "listener" => listener.to_owned(), "reason" => reason)
        .increment(1);
}

/// One open connection in the `portcullis_connections_open` gauge, until dropped.
struct Open(String);

impl Open {
    fn new(listener: &str) -> Self {
        metrics::gauge!(telemetry::CONNECTIONS_OPEN, "listener" => listener.to_owned()).increment(1.0);
        Open(listener.to_owned())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics::gauge!(telemetry::CONNECTIONS_OPEN, "listener" => std::mem::take(&mut self.0))
            .decrement(1.0);
    }
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
    shared: Shutdown,
    reservation: Reservation,
) where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _reservation = reservation;
    let _open = Open::new(&spec.name);
    let name = &spec.name;
    let load_balancer =
        spec.proxy.as_ref().is_some_and(|proxy| proxy.policy_for(peer.ip()) != SourcePolicy::Refused);
    if spec.proxy.is_none()
        && let Some(filter) = &spec.filter
        && !filter.admit(peer.ip())
    {
        refused(name, "connection-filter");
        return; // dropped: nothing was read
    }
    // The socket peer's slot: a load balancer's own cap, or the client's.
    let peer_slot = if load_balancer {
        spec.limits.admit_load_balancer(peer.ip())
    } else {
        spec.limits.admit_client(peer.ip())
    };
    let _peer_slot = match peer_slot {
        Ok(slot) => slot,
        Err(refusal) => {
            tracing::debug!(listener = %name, %peer, %refusal, "connection limit: closed unread");
            refused(name, "connection-limit");
            return;
        }
    };
    // Peers that are not trusted load balancers wait for their first bytes to be judged on a budget of
    // their own, so silent connections from anywhere cannot hold the slots the load balancers need.
    let untrusted = if spec.proxy.is_some() && !load_balancer {
        match spec.untrusted.try_acquire(peer.ip()) {
            Ok(slot) => Some(slot),
            Err(refusal) => {
                tracing::debug!(listener = %name, %peer, %refusal, "pending untrusted connections: closed");
                refused(name, "untrusted-budget");
                return;
            }
        }
    } else {
        None
    };
    match tokio::time::timeout(spec.timeouts.first_byte, stream.peek(&mut [0u8; 1])).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(_) => return, // closed or failed before a byte
        Err(_) => {
            tracing::debug!(listener = %name, %peer, "no first byte within {:?}; closed", spec.timeouts.first_byte);
            refused(name, "first-byte-timeout");
            return;
        }
    }
    let Some(proxy) = &spec.proxy else {
        let info = stream.conn_info(peer);
        return tls_then_http(stream, info, peer.ip(), &spec, app, shared).await;
    };
    let stream = match proxy.accept(stream, peer).await {
        Ok(s) => s,
        Err(e) => {
            if portcullis_core::ratelimit::PROXY_HEADERS.admit() {
                tracing::warn!(listener = %name, %peer, "PROXY protocol: connection closed: {e}");
            } else {
                tracing::debug!(listener = %name, %peer, "PROXY protocol: connection closed: {e}");
            }
            refused(name, "proxy-protocol");
            return;
        }
    };
    // The first bytes are judged: the untrusted peer's slot goes back now, not at the end of the connection.
    drop(untrusted);
    let info = stream.conn_info(peer);
    let source = info.proxy.as_ref().and_then(|p| p.source).map(|s| s.ip());
    // Behind a trusted load balancer the client is the header's source, counted by its own cap.
    let _client_slot = match source {
        Some(client) if load_balancer => match spec.limits.admit_client(client) {
            Ok(slot) => Some(slot),
            Err(refusal) => {
                tracing::debug!(listener = %name, %peer, %refusal, "connection limit: closed");
                refused(name, "connection-limit");
                return;
            }
        },
        _ => None,
    };
    let client = source.unwrap_or(peer.ip());
    if let Some(filter) = &spec.filter
        && !filter.admit(client)
    {
        refused(name, "connection-filter");
        return;
    }
    tls_then_http(stream, info, client, &spec, app, shared).await;
}

async fn tls_then_http<IO, S, B>(
    io: IO,
    info: ConnInfo,
    client: IpAddr,
    spec: &ListenerSpec,
    app: S,
    shared: Shutdown,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(acceptor) = &spec.tls else {
        return http(io, info, spec, app, shared).await;
    };
    let permit = match spec.handshakes.try_acquire(client) {
        Ok(permit) => permit,
        Err(refusal) => {
            tracing::debug!(listener = %spec.name, peer = %info.peer, %refusal, "TLS handshake permits: closed");
            refused(&spec.name, "tls-handshake-permits");
            return;
        }
    };
    let handshake = tokio::time::timeout(spec.timeouts.tls_handshake, acceptor.accept(io)).await;
    drop(permit);
    match handshake {
        Ok(Ok(tls)) => {
            let mut info = info;
            info.tls = Some(tls.tls_info().clone());
            http(tls, info, spec, app, shared).await
        }
        Ok(Err(e)) => {
            if portcullis_core::ratelimit::TLS_HANDSHAKES.admit() {
                tracing::warn!(listener = %spec.name, peer = %info.peer, "TLS handshake refused: {e}");
            } else {
                tracing::debug!(listener = %spec.name, peer = %info.peer, "TLS handshake refused: {e}");
            }
            refused(&spec.name, "tls-handshake");
        }
        Err(_) => {
            tracing::debug!(listener = %spec.name, peer = %info.peer, "TLS handshake not done within {:?}; closed",
                spec.timeouts.tls_handshake);
            refused(&spec.name, "tls-handshake-timeout");
        }
    }
}

async fn http<IO, S, B>(mut io: IO, info: ConnInfo, spec: &ListenerSpec, app: S, shared: Shutdown)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let peer = info.peer;
    let tls = info.tls.clone();
    let timeouts = spec.timeouts;
    // hyper-util's auto builder runs no timer while it reads the first bytes to choose a protocol: read
    // them here, within a deadline, and replay them.
    let (protocol, start) = match read_http_start(&mut io, timeouts.http_preface).await {
        Ok(read) => read,
        Err(e) => {
            tracing::debug!(listener = %spec.name, %peer, "connection closed: {e}");
            refused(&spec.name, "http-start");
            return;
        }
    };
    let io = ProxiedStream::new(io, None, start, 0);
    let activity = Arc::new(Activity::new());
    let (held, mut released) = mpsc::channel::<Infallible>(1);
    let (close_tx, close) = watch::channel(false);
    let svc = ConnService {
        hold: ConnectionHold { _held: held, close, idle: timeouts.idle },
        inner: ConnInfoLayer::new(info).layer(app),
        headers: spec.headers,
        body_read: timeouts.body_read,
        responder: spec.responder.clone(),
        activity: activity.clone(),
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper's header-read timeout is off and a silent client holds its connection forever.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .max_buf_size(spec.headers.hyper_h1_max_buf())
        // Requests sent before the client's FIN are answered.
        .half_close(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEP_ALIVE)
        .max_header_list_size(spec.headers.hyper_h2_max_header_list());
    let builder = match protocol {
        Protocol::Http1 => builder.http1_only(),
        Protocol::Http2 => builder.http2_only(),
    };
    // With upgrades: an application (or the `portcullis serve` reverse proxy) may switch protocols (WebSocket).
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(svc));
    // Boxed, so that it can be dropped (with the service's hold) when it ends but an upgrade goes on.
    let mut conn = Box::pin(conn);
    let Shutdown { mut stop, cell, .. } = shared;
    let age = timeouts.max_age.map(|age| Instant::now() + age);
    // With TLS virtual hosts: every change of the running set re-checks this connection's handshake.
    let mut changes = match (&spec.tls, &tls) {
        (Some(acceptor), Some(_)) => Some(acceptor.hosts().changes()),
        _ => None,
    };
    // Once closing: requests in flight finish until this deadline, then the connection is dropped.
    let mut deadline: Option<Instant> = None;
    loop {
        let closing = deadline.is_some();
        let idle_check = activity.next_check(timeouts.idle);
        let why = tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                break;
            }
            _ = stop.changed(), if !closing => Close::Shutdown,
            () = tokio::time::sleep_until(idle_check), if !closing => {
                if !activity.idle_for(timeouts.idle) {
                    continue;
                }
                tracing::debug!(%peer, "idle for {:?}; closing", timeouts.idle);
                Close::Idle
            }
            () = sleep_until_some(age), if !closing => {
                tracing::debug!(%peer, "maximum connection age reached; closing");
                Close::MaxAge
            }
            changed = changed(&mut changes), if !closing => {
                let (true, Some(acceptor), Some(tls)) = (changed, &spec.tls, &tls) else {
                    continue;
                };
                let Err(why) = acceptor.hosts().recheck(tls, portcullis_mtls::UnixTime::now()) else {
                    continue;
                };
                tracing::debug!(listener = %spec.name, %peer, "virtual hosts changed: {why}; closing");
                Close::Invalidated
            }
            () = sleep_until_some(deadline), if closing => {
                tracing::debug!(%peer, "requests still in flight at the end of the drain time; closed");
                closed(&spec.name, Close::DrainTimeout);
                return;
            }
        };
        // Requests in flight finish within the listener's current drain time (or shutdown grace).
        conn.as_mut().graceful_shutdown();
        let now = cell.load().timeouts;
        let within = if why == Close::Shutdown { now.shutdown_grace } else { now.drain };
        deadline = Some(Instant::now() + within);
        closed(&spec.name, why);
    }
    // HTTP is over; a task may still hold the connection it switched to (a tunnel): it keeps the
    // connection's places until it ends, and is told to stop when the connection is closed.
    drop(conn);
    loop {
        let closing = deadline.is_some();
        tokio::select! {
            None = released.recv() => return,
            _ = stop.changed(), if !closing => {
                deadline = Some(Instant::now() + cell.load().timeouts.shutdown_grace);
                closed(&spec.name, Close::Shutdown);
            }
            () = sleep_until_some(age), if !closing => {
                deadline = Some(Instant::now() + cell.load().timeouts.drain);
                closed(&spec.name, Close::MaxAge);
            }
            changed = changed(&mut changes), if !closing => {
                let (true, Some(acceptor), Some(tls)) = (changed, &spec.tls, &tls) else {
                    continue;
                };
                if acceptor.hosts().recheck(tls, portcullis_mtls::UnixTime::now()).is_ok() {
                    continue;
                }
                deadline = Some(Instant::now() + cell.load().timeouts.drain);
                closed(&spec.name, Close::Invalidated);
            }
            () = sleep_until_some(deadline), if closing => {
                let _ = close_tx.send(true);
                return;
            }
        }
    }
}

/// Why the serve helper closed a connection it had served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    Shutdown,
    Idle,
    MaxAge,
    Invalidated,
    DrainTimeout,
}

/// Counts a connection the serve helper closed, by listener and reason.
fn closed(listener: &str, why: Close) {
    let reason = match why {
        Close::Shutdown => "shutdown",
        Close::Idle => "idle",
        Close::MaxAge => "max-age",
        Close::Invalidated => "tls-invalidated",
        Close::DrainTimeout => "drain-timeout",
    };
    metrics::counter!(telemetry::CONNECTIONS_CLOSED, "listener" => listener.to_owned(), "reason" => reason)
        .increment(1);
}

/// The next change of the virtual hosts: `true` when there was one, `false` (once) when the set is gone;
/// pending forever without a set to watch.
async fn changed(changes: &mut Option<watch::Receiver<u64>>) -> bool {
    match changes {
        Some(rx) => {
            let changed = rx.changed().await.is_ok();
            if !changed {
                *changes = None;
            }
            changed
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

// === per-connection request tracking ===

/// Requests in flight on one connection and when the last one started or ended, for the idle deadline.
#[derive(Debug)]
struct Activity(Mutex<(usize, Instant)>);

impl Activity {
    fn new() -> Self {
        Activity(Mutex::new((0, Instant::now())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, Instant)> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn start(self: &Arc<Self>) -> Active {
        let mut state = self.lock();
        state.0 += 1;
        state.1 = Instant::now();
        Active(Arc::clone(self))
    }

    /// When to look again: the end of the idle period, or (requests in flight) one period from now.
    fn next_check(&self, idle: Duration) -> Instant {
        let (active, last) = *self.lock();
        if active == 0 { last + idle } else { Instant::now() + idle }
    }

    fn idle_for(&self, idle: Duration) -> bool {
        let (active, last) = *self.lock();
        active == 0 && last.elapsed() >= idle
    }
}

/// One request in flight, until its response body is dropped (sent or abandoned).
#[derive(Debug)]
struct Active(Arc<Activity>);

impl Drop for Active {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.0 = state.0.saturating_sub(1);
        state.1 = Instant::now();
    }
}

/// The per-connection service: counts requests in flight, answers heads over the size limits with `431`.
#[derive(Clone)]
struct ConnService<S> {
    hold: ConnectionHold,
    inner: S,
    headers: HeaderLimits,
    body_read: Duration,
    responder: Responder,
    activity: Arc<Activity>,
}

impl<S, B> Service<Request<Incoming>> for ConnService<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>,
{
    type Response = Response<ConnBody<B>>;
    type Error = Infallible;
    type Future = ConnFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let active = self.activity.start();
        // Only a request that can switch protocols (HTTP/1 `Upgrade`, HTTP/2 extended CONNECT) can hand its
        // connection to a task; the others skip the clone and the extension.
        if req.headers().contains_key(http::header::UPGRADE) || req.method() == http::Method::CONNECT {
            req.extensions_mut().insert(self.hold.clone());
        }
        match self.headers.refuse(req.headers(), &self.responder) {
            Some(refusal) => ConnFuture::Refused { response: Some((refusal, active)) },
            None => {
                let req = req.map(|body| TimedBody::new(body, self.body_read));
                ConnFuture::Inner { future: self.inner.call(req), active: Some(active) }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The per-connection service's future.
    #[project = ConnFutureProj]
    enum ConnFuture<F> {
        Inner { #[pin] future: F, active: Option<Active> },
        Refused { response: Option<(Response<Full<Bytes>>, Active)> },
    }
}

impl<F, B> Future for ConnFuture<F>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<ConnBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ConnFutureProj::Inner { future, active } => {
                let Ok(res) = std::task::ready!(future.poll(cx));
                let active = active.take().unwrap_or_else(|| unreachable!("polled after completion"));
                Poll::Ready(Ok(res.map(|body| ConnBody::Inner { body, _active: active })))
            }
            ConnFutureProj::Refused { response } => {
                let (res, active) =
                    response.take().unwrap_or_else(|| unreachable!("polled after completion"));
                Poll::Ready(Ok(res.map(|body| ConnBody::Refused { body, _active: active })))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its request's place in the connection's activity until it is dropped.
    #[project = ConnBodyProj]
    enum ConnBody<B> {
        Inner { #[pin] body: B, _active: Active },
        Refused { #[pin] body: Full<Bytes>, _active: Active },
    }
}

impl<B> http_body::Body for ConnBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.project() {
            ConnBodyProj::Inner { body, .. } => body.poll_frame(cx).map_err(Into::into),
            ConnBodyProj::Refused { body, .. } => body.poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ConnBody::Inner { body, .. } => body.is_end_stream(),
            ConnBody::Refused { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ConnBody::Inner { body, .. } => body.size_hint(),
            ConnBody::Refused { body, .. } => body.size_hint(),
        }
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
    listeners: Vec<(TcpListener, SpecCell)>,
    ops: Option<TcpListener>,
    built: crate::build::Built,
    handle: ServeHandle,
    config: Option<crate::config::GatewayConfig>,
    watch: Option<Duration>,
    metrics: Option<MetricsRender>,
    #[cfg(feature = "management")]
    management: Option<crate::management::Management>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("listeners", &self.local_addrs())
            .field("ops", &self.ops_addr())
            .finish()
    }
}

impl Bound {
    /// Binds every listener of `built` (and its ops listener, if configured). Reloads then go through
    /// [`ServeHandle::apply`]: there is no file to read again.
    ///
    /// # Errors
    /// [`ServeError::Bind`] naming the listener.
    pub async fn bind(built: crate::build::Built) -> Result<Bound, ServeError> {
        Bound::bind_with(built, None).await
    }

    async fn bind_with(
        built: crate::build::Built,
        path: Option<std::path::PathBuf>,
    ) -> Result<Bound, ServeError> {
        let mut listeners = Vec::new();
        let mut slots = Vec::new();
        for (addr, spec) in &built.listeners {
            let l = TcpListener::bind(addr).await.map_err(|error| ServeError::Bind {
                name: spec.name.clone(),
                addr: *addr,
                error,
            })?;
            let cell: SpecCell = Arc::new(ArcSwap::from_pointee(spec.clone()));
            slots.push(Slot { name: spec.name.clone(), address: *addr, cell: cell.clone() });
            listeners.push((l, cell));
        }
        let ops = match built.ops {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|error| ServeError::Bind {
                name: "ops".into(),
                addr,
                error,
            })?),
            None => None,
        };
        let watch = path.is_some().then_some(DEFAULT_WATCH_INTERVAL);
        let handle = ServeHandle::new(path, &built, slots);
        Ok(Bound {
            listeners,
            ops,
            built,
            handle,
            config: None,
            watch,
            metrics: None,
            #[cfg(feature = "management")]
            management: None,
        })
    }

    /// Builds `config` and binds its listeners. When `source` names a file on disk, serving also reloads
    /// the whole configuration on `SIGHUP` and when that file or a file it references changes (looked at
    /// every [`DEFAULT_WATCH_INTERVAL`]; see [`watch_interval`](Self::watch_interval)).
    ///
    /// # Errors
    /// [`ServeError::Config`] (file, line, key) or [`ServeError::Bind`].
    pub async fn from_config(
        config: &crate::config::GatewayConfig,
        source: &crate::config::Source,
    ) -> Result<Bound, ServeError> {
        // With `[management]`, what runs is the file with the management API's state merged over it.
        #[cfg(feature = "management")]
        let management = crate::management::Prepared::new(config, source)?;
        #[cfg(feature = "management")]
        let (config, effective) = match &management {
            Some(m) => m.effective(),
            None => (config, source),
        };
        #[cfg(not(feature = "management"))]
        let effective = source;
        let built = config.build(effective)?;
        let path = std::path::Path::new(source.file());
        let path = path.is_file().then(|| path.to_path_buf());
        let access_log = config.access_log_rate(effective)?;
        let mut bound = Bound::bind_with(built, path).await?;
        bound.handle.access_log().set(access_log);
        bound.config = Some(config.clone());
        #[cfg(feature = "management")]
        {
            bound.management = management.map(|m| m.start(bound.handle.clone()));
        }
        Ok(bound)
    }

    /// The management API, when the configuration enables it (`[management]`): the serve helper serves
    /// its router on the management endpoint.
    #[cfg(feature = "management")]
    pub fn management(&self) -> Option<crate::management::Management> {
        self.management.clone()
    }

    /// How often the watched files are looked at (`None`: not watched; `SIGHUP` and the handle still
    /// reload). Only for a server started from a file ([`from_config`](Self::from_config)).
    #[must_use]
    pub fn watch_interval(mut self, interval: Option<Duration>) -> Self {
        if self.handle.config_path().is_some() {
            self.watch = interval;
        }
        self
    }

    /// What the ops listener's `/metrics` answers: the text `render` returns (for example
    /// `move || prometheus_handle.render()`). Without it `/metrics` is `404`.
    #[must_use]
    pub fn metrics(mut self, render: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.metrics = Some(Arc::new(render));
        self
    }

    /// The handle on the server: readiness, generation, reload.
    pub fn handle(&self) -> ServeHandle {
        self.handle.clone()
    }

    /// The bound addresses, by listener name (port 0 in the configuration is resolved here).
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(l, s)| l.local_addr().ok().map(|a| (s.load().name.clone(), a)))
            .collect()
    }

    /// The ops listener's bound address, if there is one.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// What the configuration built at start: the gateway, live IP rules, virtual hosts (after a reload,
    /// [`ServeHandle`] has the current ones).
    pub fn built(&self) -> &crate::build::Built {
        &self.built
    }

    /// Serves `app` behind the gateway stack until `shutdown` resolves; the ops listener, `SIGHUP` and file
    /// watching run alongside (as configured), and the server is ready until the shutdown drain starts.
    ///
    /// # Errors
    /// As [`serve_listeners`].
    pub async fn serve<S, B>(self, app: S, shutdown: impl Future<Output = ()> + Send) -> io::Result<()>
    where
        S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let handle = self.handle.clone();
        let generation = handle.generation();
        for (name, addr) in self.local_addrs() {
            let spec = self.listeners.iter().map(|(_, c)| c.load_full()).find(|s| s.name == name);
            let spec = spec.as_deref();
            tracing::info!(
                listener = %name,
                %addr,
                tls = spec.is_some_and(|s| s.tls.is_some()),
                proxy_protocol = spec.is_some_and(|s| s.proxy.is_some()),
                connection_filter = spec.is_some_and(|s| s.filter.is_some()),
                generation,
                "portcullis: listening"
            );
        }
        if let Some(config) = &self.config {
            crate::reload::log_summary(config, generation);
        } else if let Some(v) = &self.built.virtual_hosts {
            tracing::info!(generation, virtual_hosts = ?v.names(), "portcullis: virtual hosts");
        }
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!(telemetry::CONFIG_GENERATION).set(generation as f64);
        let mut tasks = Vec::new();
        if let Some(ops) = self.ops {
            if let Ok(addr) = ops.local_addr() {
                tracing::info!(%addr, "portcullis: ops listener (/healthz, /readyz, /metrics)");
            }
            tasks.push(tokio::spawn(crate::ops::serve_ops(ops, handle.clone(), self.metrics.clone())));
        }
        if let Some(path) = handle.config_path() {
            tracing::info!(file = %path.display(), "portcullis: SIGHUP reloads the configuration");
            tasks.push(tokio::spawn(crate::reload::on_sighup(handle.clone())));
            if let Some(every) = self.watch {
                tracing::info!(files = ?handle.watched_files(), ?every, "portcullis: watching for changes");
                tasks.push(tokio::spawn(crate::reload::watch(handle.clone(), every)));
            }
        }
        // The access log's layers sit around the gateway; they pass requests through while it is off. The
        // management API, when enabled, is mounted inside them, on its endpoint.
        let access = handle.access_log();
        handle.ready_flag().store(true, Ordering::Release);
        #[cfg(feature = "management")]
        let served = match self.management {
            Some(m) => {
                let app = crate::management::mount(&m, app);
                let app = access.outer().layer(self.built.gateway.layer().layer(access.inner().layer(app)));
                serve_live(self.listeners, app, shutdown, None, handle.ready_flag()).await
            }
            None => {
                let app = access.outer().layer(self.built.gateway.layer().layer(access.inner().layer(app)));
                serve_live(self.listeners, app, shutdown, None, handle.ready_flag()).await
            }
        };
        #[cfg(not(feature = "management"))]
        let served = {
            let app = access.outer().layer(self.built.gateway.layer().layer(access.inner().layer(app)));
            serve_live(self.listeners, app, shutdown, None, handle.ready_flag()).await
        };
        for task in tasks {
            task.abort();
        }
        served
    }
}

/// Builds the gateway from `config`, binds its listeners and serves `app` behind it until Ctrl-C or
/// SIGTERM, reloading on `SIGHUP` and file changes when `source` names a file: `main` stays ten lines.
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
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let bound = Bound::from_config(config, source).await?;
    bound.serve(app, shutdown_signal()).await?;
    Ok(())
}
