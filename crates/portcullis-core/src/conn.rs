//! Connection facts ([`ConnInfo`]): who is on the other end of the socket, learnt once per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Extensions, Request};
use tower_layer::Layer;
use tower_service::Service;

use crate::addr::fold_socket_addr;
use crate::decisions::Record;
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
/// The copy of `ConnInfo` in a request's extensions also holds that request's [`Decisions`]: the gates
/// record there instead of adding an extension of their own (which would cost an allocation per request).
/// Read decisions with [`Decisions::get`] or the extractors, never with `extensions().get::<Decisions>()`.
/// To change a request's facts, change its copy in place (`extensions_mut().get_mut::<ConnInfo>()`):
/// inserting another copy replaces the decisions with the new copy's ([`AddConnInfo`] carries them over).
/// Cloning a `ConnInfo` copies the facts only, so cloned extensions (`extensions().clone()`) hold no
/// decisions: take what a handler needs from [`Decisions::get`] before cloning.
pub struct ConnInfo {
    /// The direct peer of the socket (IPv4-mapped IPv6 folded to IPv4).
    pub peer: SocketAddr,
    /// The local address the connection was accepted on, when known.
    pub local: Option<SocketAddr>,
    /// The PROXY protocol header a trusted load balancer sent, if any.
    pub proxy: Option<Arc<ProxyInfo>>,
    /// The TLS handshake's facts, if the connection is TLS.
    pub tls: Option<Arc<TlsInfo>>,
    /// The decisions of the request whose extensions hold this copy (none anywhere else). Boxed: a
    /// pointer's width in every copy; the box of a finished request is reused by the next one on the same
    /// thread (see `Record`), so recording costs no allocation in a steady stream of requests.
    pub(crate) decisions: Record,
}

impl Clone for ConnInfo {
    /// A copy of the connection facts only: the clone's decisions are empty (see the type's docs). That is
    /// what every caller wants: the per-connection original is cloned into each request, and
    /// [`from_extensions`](ConnInfo::from_extensions) hands out the facts of a request's copy.
    #[inline]
    fn clone(&self) -> Self {
        ConnInfo {
            peer: self.peer,
            local: self.local,
            proxy: self.proxy.clone(),
            tls: self.tls.clone(),
            decisions: Record(None),
        }
    }
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnInfo")
            .field("peer", &self.peer)
            .field("local", &self.local)
            .field("proxy", &self.proxy)
            .field("tls", &self.tls)
            .finish()
    }
}

impl ConnInfo {
    /// Facts for a plain TCP connection. Both addresses are folded (`::ffff:a.b.c.d` → `a.b.c.d`).
    pub fn new(peer: SocketAddr, local: Option<SocketAddr>) -> Self {
        ConnInfo {
            peer: fold_socket_addr(peer),
            local: local.map(fold_socket_addr),
            proxy: None,
            tls: None,
            decisions: Record(None),
        }
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
    /// The request's `ConnInfo` copy (direct, or axum's `ConnectInfo<ConnInfo>`), whose decision slot the
    /// gates use.
    pub(crate) fn in_request(ext: &Extensions) -> Option<&ConnInfo> {
        if let Some(info) = ext.get::<ConnInfo>() {
            return Some(info);
        }
        #[cfg(feature = "axum")]
        if let Some(axum::extract::ConnectInfo(info)) = ext.get::<axum::extract::ConnectInfo<ConnInfo>>() {
            return Some(info);
        }
        None
    }

    /// [`in_request`](Self::in_request), mutably.
    pub(crate) fn in_request_mut(ext: &mut Extensions) -> Option<&mut ConnInfo> {
        // Two lookups rather than one borrow held across both (which the borrow checker refuses).
        if ext.get::<ConnInfo>().is_some() {
            return ext.get_mut::<ConnInfo>();
        }
        #[cfg(feature = "axum")]
        if let Some(axum::extract::ConnectInfo(info)) = ext.get_mut::<axum::extract::ConnectInfo<ConnInfo>>()
        {
            return Some(info);
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
        let ext = req.extensions_mut();
        let replaced = ext.insert(self.info.clone());
        if replaced.is_some() || ext.len() > 1 {
            keep_decisions(ext, replaced);
        }
        self.inner.call(req)
    }
}

/// After [`AddConnInfo`] put a request's `ConnInfo` copy into extensions that already held one (a second
/// layer: `replaced`) or axum's `ConnectInfo<ConnInfo>`: the decisions recorded there move to the new copy,
/// which `Decisions::get` reads first.
#[cold]
fn keep_decisions(ext: &mut Extensions, replaced: Option<ConnInfo>) {
    let earlier = match replaced {
        Some(mut old) => old.decisions.0.take(),
        None => {
            #[cfg(feature = "axum")]
            let earlier = ext
                .get_mut::<axum::extract::ConnectInfo<ConnInfo>>()
                .and_then(|axum::extract::ConnectInfo(c)| c.decisions.0.take());
            #[cfg(not(feature = "axum"))]
            let earlier = None;
            earlier
        }
    };
    if earlier.is_some()
        && let Some(copy) = ext.get_mut::<ConnInfo>()
    {
        copy.decisions.0 = earlier;
    }
}
