//! The connection filter: drop connections from refused peers at accept, before any TLS or HTTP work.
//!
//! A [`ConnectionFilter`] holds the rules (an [`IpRulesHandle`], so a stored rule set applies to the next
//! accepted connection) and counts what it drops ([`FilterStats`]). Use it:
//! - with axum: wrap the listener in a `FilteredListener` (feature `axum`);
//! - with a hand-written hyper accept loop: call [`accept_filtered`] instead of `TcpListener::accept`;
//! - anywhere else: [`ConnectionFilter::admit`] / [`ConnectionFilter::admit_conn`] on each accepted peer.
//!
//! A refused connection is dropped as soon as it is accepted: nothing is read from it, no TLS handshake or
//! HTTP parsing happens, and the peer sees the connection closed (or reset, when it had already sent bytes
//! that the server never read).
//!
//! Which address is filtered: the source of the connection's PROXY protocol header when the accepted stream
//! carries one (a portcullis PROXY protocol listener inside the `FilteredListener`: its headers are only
//! read from trusted load balancers), else the socket peer. IPv4-mapped IPv6 peers are folded to IPv4.
//!
//! With hyper and a plain `TcpListener`, allowed and refused callers:
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use hyper_util::{rt::TokioIo, service::TowerToHyperService};
//! use portcullis_ip::{Action, ConnectionFilter, IpRules, accept_filtered};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio::net::{TcpListener, TcpSocket};
//! use tower::{ServiceBuilder, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let filter = ConnectionFilter::new(IpRules::builder(Action::Deny).allow("127.0.0.1").build()?);
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let svc = ServiceBuilder::new().service(service_fn(|_req: Request<hyper::body::Incoming>| async {
//!     Ok::<_, Infallible>(Response::new("hello".to_owned()))
//! }));
//! let server_filter = filter.clone();
//! tokio::spawn(async move {
//!     while let Ok((stream, _peer)) = accept_filtered(&listener, &server_filter).await {
//!         let conn = hyper::server::conn::http1::Builder::new()
//!             .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc.clone()));
//!         tokio::spawn(conn);
//!     }
//! });
//!
//! // One raw HTTP/1.1 request from a given loopback source address; what the server sent back.
//! async fn call_from(source: &str, addr: std::net::SocketAddr) -> std::io::Result<Vec<u8>> {
//!     let socket = TcpSocket::new_v4()?;
//!     socket.bind(format!("{source}:0").parse().unwrap())?;
//!     let mut stream = socket.connect(addr).await?;
//!     stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await?;
//!     let mut answer = Vec::new();
//!     stream.read_to_end(&mut answer).await?;
//!     Ok(answer)
//! }
//!
//! // Allowed: 127.0.0.1 is answered.
//! assert!(call_from("127.0.0.1", addr).await?.starts_with(b"HTTP/1.1 200 OK"));
//! // Refused: 127.0.0.2 is closed at accept, without a byte of answer (EOF, or a reset).
//! assert!(call_from("127.0.0.2", addr).await.map_or(true, |answer| answer.is_empty()));
//! assert_eq!(filter.stats().dropped(), 1);
//! # Ok(()) }
//! ```

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use portcullis_core::{ConnectionFacts, fold_ip};
use tokio::net::{TcpListener, TcpStream};

use crate::filter::Mode;
use crate::handle::IpRulesHandle;
use crate::rules::Action;

#[derive(Debug, Default)]
struct Counters {
    admitted: AtomicU64,
    dropped: AtomicU64,
    would_drop: AtomicU64,
}

/// The counters of a [`ConnectionFilter`] (shared by its clones and listeners). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct FilterStats(Arc<Counters>);

impl FilterStats {
    /// Connections let through (including those shadow mode would have dropped).
    pub fn admitted(&self) -> u64 {
        self.0.admitted.load(Ordering::Relaxed)
    }

    /// Connections dropped at accept.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    /// Connections shadow mode would have dropped (and let through).
    pub fn would_drop(&self) -> u64 {
        self.0.would_drop.load(Ordering::Relaxed)
    }
}

/// Decides, once per accepted connection, whether its peer may talk to the server (see the
/// [module docs](self)).
#[derive(Debug, Clone)]
pub struct ConnectionFilter {
    rules: IpRulesHandle,
    mode: Mode,
    stats: FilterStats,
}

impl ConnectionFilter {
    /// A filter enforcing `rules` (an [`IpRules`](crate::IpRules) or a shared [`IpRulesHandle`]).
    pub fn new(rules: impl Into<IpRulesHandle>) -> Self {
        ConnectionFilter { rules: rules.into(), mode: Mode::Enforce, stats: FilterStats::default() }
    }

    /// Shadow mode: connections the rules refuse are logged and counted
    /// ([`FilterStats::would_drop`]), and let through.
    pub fn shadow(self) -> Self {
        self.mode(Mode::Shadow)
    }

    /// Enforce or shadow.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The counters (shared with every clone of this filter).
    pub fn stats(&self) -> FilterStats {
        self.stats.clone()
    }

    /// The rules handle.
    pub fn rules(&self) -> &IpRulesHandle {
        &self.rules
    }

    /// Wraps an axum listener (feature `axum`).
    #[cfg(feature = "axum")]
    pub fn listener<L>(self, inner: L) -> FilteredListener<L> {
        FilteredListener::new(inner, self)
    }

    /// Whether a connection from `ip` may proceed; counts and logs the refusals. The caller drops the
    /// connection when this is `false`.
    pub fn admit(&self, ip: IpAddr) -> bool {
        let ip = fold_ip(ip);
        let rules = self.rules.current();
        {
            if rules.action(ip) == Action::Allow {
                self.stats.0.admitted.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            let rule = rules.describe(&rules.check(ip));
            match self.mode {
                Mode::Enforce => {
                    self.stats.0.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(layer = "ip", code = "ip.connection-dropped", refused = %ip, rule,
                        "portcullis refused: connection from {ip} dropped at accept");
                    false
                }
                Mode::Shadow => {
                    self.stats.0.would_drop.fetch_add(1, Ordering::Relaxed);
                    self.stats.0.admitted.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(layer = "ip", code = "ip.connection-dropped", refused = %ip, rule,
                        "portcullis shadow mode: would drop the connection from {ip} at accept");
                    true
                }
            }
        }
    }

    /// [`admit`](ConnectionFilter::admit) for an accepted stream: decides on its PROXY protocol source when
    /// it has one, else on `remote`, the peer the listener returned.
    pub fn admit_conn<Io: ConnectionFacts + ?Sized>(&self, io: &Io, remote: SocketAddr) -> bool {
        self.admit(connection_source(io, remote))
    }
}

/// The address the connection filter decides on: the PROXY source if the stream has one, else the peer.
pub fn connection_source<Io: ConnectionFacts + ?Sized>(io: &Io, remote: SocketAddr) -> IpAddr {
    let info = io.conn_info(remote);
    fold_ip(info.proxy.as_ref().and_then(|p| p.source).map_or(remote.ip(), |src| src.ip()))
}

/// Accepts the next connection `filter` admits, dropping refused ones unread: a drop-in for
/// `listener.accept()` in a hyper accept loop.
///
/// # Errors
/// The listener's accept error; refused connections are not errors.
pub async fn accept_filtered(
    listener: &TcpListener,
    filter: &ConnectionFilter,
) -> io::Result<(TcpStream, SocketAddr)> {
    loop {
        let (stream, peer) = listener.accept().await?;
        if filter.admit(peer.ip()) {
            return Ok((stream, peer));
        }
        drop(stream);
    }
}

#[cfg(feature = "axum")]
pub use self::axum_listener::FilteredListener;

#[cfg(feature = "axum")]
mod axum_listener {
    use std::io;
    use std::net::SocketAddr;

    use axum::serve::Listener;
    use portcullis_core::ConnectionFacts;

    use super::{ConnectionFilter, FilterStats};

    /// An [`axum::serve::Listener`] that drops connections from refused peers as they are accepted
    /// (feature `axum`; see the [module docs](super)).
    ///
    /// It filters on the PROXY protocol source when the inner listener's streams carry one, else on the
    /// socket peer. `into_make_service_with_connect_info::<ConnInfo>()` works on it whenever it works on the
    /// inner listener.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use axum::Router;
    /// use http::{Request, Response};
    /// use portcullis_core::ConnInfo;
    /// use portcullis_ip::{Action, ConnectionFilter, FilteredListener, IpRules};
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// use tokio::net::{TcpListener, TcpSocket};
    /// use tower::{ServiceBuilder, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let filter = ConnectionFilter::new(IpRules::builder(Action::Deny).allow("127.0.0.1/32").build()?);
    /// let stats = filter.stats();
    /// let tcp = TcpListener::bind("127.0.0.1:0").await?;
    /// let addr = tcp.local_addr()?;
    /// let app = Router::new().fallback_service(ServiceBuilder::new().service(service_fn(
    ///     |_req: Request<axum::body::Body>| async { Ok::<_, Infallible>(Response::new("hello".to_owned())) },
    /// )));
    /// let listener = FilteredListener::new(tcp, filter);
    /// tokio::spawn(async move {
    ///     axum::serve(listener, app.into_make_service_with_connect_info::<ConnInfo>()).await
    /// });
    ///
    /// async fn call_from(source: &str, addr: std::net::SocketAddr) -> std::io::Result<Vec<u8>> {
    ///     let socket = TcpSocket::new_v4()?;
    ///     socket.bind(format!("{source}:0").parse().unwrap())?;
    ///     let mut stream = socket.connect(addr).await?;
    ///     stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await?;
    ///     let mut answer = Vec::new();
    ///     stream.read_to_end(&mut answer).await?;
    ///     Ok(answer)
    /// }
    /// // Allowed: 127.0.0.1 is answered.
    /// assert!(call_from("127.0.0.1", addr).await?.starts_with(b"HTTP/1.1 200 OK"));
    /// // Refused: 127.0.0.2 is closed at accept without a byte of answer.
    /// assert!(call_from("127.0.0.2", addr).await.map_or(true, |answer| answer.is_empty()));
    /// assert_eq!(stats.dropped(), 1);
    /// # Ok(()) }
    /// ```
    #[derive(Debug)]
    pub struct FilteredListener<L> {
        inner: L,
        filter: ConnectionFilter,
    }

    impl<L> FilteredListener<L> {
        /// Wraps `inner` (a `tokio::net::TcpListener`, a PROXY protocol listener, ...).
        pub fn new(inner: L, filter: ConnectionFilter) -> Self {
            FilteredListener { inner, filter }
        }

        /// The counters of the filter.
        pub fn stats(&self) -> FilterStats {
            self.filter.stats()
        }

        /// The filter.
        pub fn filter(&self) -> &ConnectionFilter {
            &self.filter
        }

        /// The inner listener.
        pub fn get_ref(&self) -> &L {
            &self.inner
        }

        /// The inner listener, unwrapped.
        pub fn into_inner(self) -> L {
            self.inner
        }
    }

    impl<L> Listener for FilteredListener<L>
    where
        L: Listener<Addr = SocketAddr>,
        L::Io: ConnectionFacts,
    {
        type Io = L::Io;
        type Addr = SocketAddr;

        // Cancel-safe when the inner listener's accept is: nothing is held across the await.
        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            loop {
                let (io, remote) = self.inner.accept().await;
                if self.filter.admit_conn(&io, remote) {
                    return (io, remote);
                }
                drop(io);
            }
        }

        fn local_addr(&self) -> io::Result<Self::Addr> {
            self.inner.local_addr()
        }
    }

    /// `into_make_service_with_connect_info::<ConnInfo>()` works on this listener when it works on the
    /// inner one.
    impl<L> portcullis_core::FactsListener for FilteredListener<L>
    where
        L: Listener<Addr = SocketAddr>,
        L::Io: ConnectionFacts,
    {
    }
}

#[cfg(test)]
mod tests;
