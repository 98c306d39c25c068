//! Connection facts ([`ConnInfo`]): who is on the other end of the socket, learnt once per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Extensions, Request};
use tower_layer::Layer;
use tower_service::Service;

use crate::client::addr::fold_socket_addr;
use crate::proxy::ProxyInfo;
use crate::tls::TlsInfo;

/// What is known about a connection, learnt once when it is accepted and shared by every request on it.
///
/// Cheap to clone (two socket addresses and two `Arc`s). Put into request extensions by:
/// - axum: `router.into_make_service_with_connect_info::<ConnInfo>()` (enable the `axum` feature);
///   a plain `into_make_service_with_connect_info::<SocketAddr>()` is understood too;
/// - hyper / hyper-util: wrap the per-connection service with [`AddConnInfo`] (see [`ConnInfoLayer`]);
/// - tonic: nothing to do, tonic's `TcpConnectInfo` / `TlsConnectInfo` are read (enable the `tonic` feature);
/// - portcullis listeners (PROXY protocol, TLS virtual hosts), which fill in [`proxy`](ConnInfo::proxy) and
///   [`tls`](ConnInfo::tls).
///
/// Read it back from a request with [`ConnInfo::from_extensions`].
///
/// `ConnInfo` holds connection facts only; what the layers decide about a request lives in the request's
/// [`Decisions`](crate::Decisions) extension.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The direct peer of the socket (IPv4-mapped IPv6 folded to IPv4).
    pub peer: SocketAddr,
    /// The local address the connection was accepted on, when known.
    pub local: Option<SocketAddr>,
    /// The PROXY protocol header a trusted load balancer sent, if any.
    pub proxy: Option<Arc<ProxyInfo>>,
    /// The TLS handshake's facts, if the connection is TLS.
    pub tls: Option<Arc<TlsInfo>>,
}

impl ConnInfo {
    /// Facts for a plain TCP connection. Both addresses are folded (`::ffff:a.b.c.d` → `a.b.c.d`).
    pub fn new(peer: SocketAddr, local: Option<SocketAddr>) -> Self {
        ConnInfo { peer: fold_socket_addr(peer), local: local.map(fold_socket_addr), proxy: None, tls: None }
    }

    /// Adds the facts of a PROXY protocol header.
    pub fn with_proxy(mut self, proxy: ProxyInfo) -> Self {
        self.proxy = Some(Arc::new(proxy));
        self
    }

    /// Adds the facts of a TLS handshake.
    pub fn with_tls(mut self, tls: TlsInfo) -> Self {
        self.tls = Some(Arc::new(tls));
        self
    }

    /// The connection facts of a request, borrowed when the request holds a [`ConnInfo`] (directly or as
    /// axum's `ConnectInfo<ConnInfo>`), else built from the other integrations' facts as
    /// [`from_extensions`](Self::from_extensions) does. `None` when the application did not wire connection
    /// info: callers must fail closed.
    pub fn lookup(ext: &Extensions) -> Option<std::borrow::Cow<'_, ConnInfo>> {
        if let Some(info) = ext.get::<ConnInfo>() {
            return Some(std::borrow::Cow::Borrowed(info));
        }
        #[cfg(feature = "axum")]
        if let Some(axum::extract::ConnectInfo(info)) = ext.get::<axum::extract::ConnectInfo<ConnInfo>>() {
            return Some(std::borrow::Cow::Borrowed(info));
        }
        ConnInfo::from_extensions(ext).map(std::borrow::Cow::Owned)
    }

    /// The connection facts of a request, from whichever integration put them there: [`ConnInfo`] itself,
    /// axum's `ConnectInfo<ConnInfo>` or `ConnectInfo<SocketAddr>` (feature `axum`), tonic's
    /// `TcpConnectInfo` or `TlsConnectInfo<TcpConnectInfo>` (feature `tonic`).
    ///
    /// `None` when the application did not wire connection info: callers must fail closed.
    pub fn from_extensions(ext: &Extensions) -> Option<ConnInfo> {
        if let Some(info) = ext.get::<ConnInfo>() {
            return Some(info.clone());
        }
        #[cfg(feature = "axum")]
        {
            use axum::extract::ConnectInfo;
            if let Some(ConnectInfo(info)) = ext.get::<ConnectInfo<ConnInfo>>() {
                return Some(info.clone());
            }
            if let Some(ConnectInfo(peer)) = ext.get::<ConnectInfo<SocketAddr>>() {
                return Some(ConnInfo::new(*peer, None));
            }
        }
        #[cfg(feature = "tonic")]
        {
            use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
            if let Some(tcp) = ext.get::<TcpConnectInfo>() {
                return tcp.remote_addr.map(|peer| ConnInfo::new(peer, tcp.local_addr));
            }
            if let Some(tls) = ext.get::<TlsConnectInfo<TcpConnectInfo>>() {
                let tcp = tls.get_ref();
                return tcp.remote_addr.map(|peer| ConnInfo::new(peer, tcp.local_addr));
            }
        }
        None
    }
}

/// Implemented by accepted streams that know their connection facts: `tokio::net::TcpStream`, and the
/// PROXY protocol and TLS streams of portcullis' listeners.
pub trait ConnectionFacts {
    /// The facts of this connection; `remote` is the peer address the listener returned at accept.
    fn conn_info(&self, remote: SocketAddr) -> ConnInfo;
}

impl ConnectionFacts for tokio::net::TcpStream {
    fn conn_info(&self, remote: SocketAddr) -> ConnInfo {
        ConnInfo::new(remote, self.local_addr().ok())
    }
}

/// An axum [`Listener`](axum::serve::Listener) whose accepted streams know their [`ConnectionFacts`], so
/// that `into_make_service_with_connect_info::<ConnInfo>()` works on it. Implemented for
/// `tokio::net::TcpListener` and for portcullis' PROXY protocol and TLS listeners.
#[cfg(feature = "axum")]
pub trait FactsListener: axum::serve::Listener<Addr = SocketAddr>
where
    Self::Io: ConnectionFacts,
{
}

#[cfg(feature = "axum")]
impl FactsListener for tokio::net::TcpListener {}

#[cfg(feature = "axum")]
impl<L> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, L>> for ConnInfo
where
    L: FactsListener,
    L::Io: ConnectionFacts,
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, L>) -> Self {
        stream.io().conn_info(*stream.remote_addr())
    }
}

// === impl AddConnInfo ===

/// A layer that puts a connection's [`ConnInfo`] into the extensions of every request on it, for servers
/// built directly on hyper / hyper-util (one service per connection).
///
/// ```
/// use portcullis_core::{ConnInfo, ConnInfoLayer};
/// use tower_layer::Layer;
/// # let app = tower::service_fn(|_req: http::Request<()>| async { Ok::<_, std::convert::Infallible>(http::Response::new(())) });
/// // In the accept loop, once per connection:
/// let peer = "127.0.0.1:40000".parse().unwrap();
/// let svc = ConnInfoLayer::new(ConnInfo::new(peer, None)).layer(app.clone());
/// ```
#[derive(Debug, Clone)]
pub struct ConnInfoLayer {
    info: ConnInfo,
}

impl ConnInfoLayer {
    /// A layer that adds `info` to every request.
    pub fn new(info: ConnInfo) -> Self {
        ConnInfoLayer { info }
    }
}

impl<S> Layer<S> for ConnInfoLayer {
    type Service = AddConnInfo<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AddConnInfo { inner, info: self.info.clone() }
    }
}

/// The service of [`ConnInfoLayer`].
#[derive(Debug, Clone)]
pub struct AddConnInfo<S> {
    inner: S,
    info: ConnInfo,
}

impl<S> AddConnInfo<S> {
    /// Wraps `inner`, adding `info` to every request.
    pub fn new(inner: S, info: ConnInfo) -> Self {
        AddConnInfo { inner, info }
    }
}

impl<S, B> Service<Request<B>> for AddConnInfo<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.info.clone());
        self.inner.call(req)
    }
}
