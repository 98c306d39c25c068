//! [`ProxyProtocolListener`]: an [`axum::serve::Listener`] that reads PROXY headers off the accept path.
//!
//! Every accepted connection's header is read in its own task, so a slow or silent peer never delays the
//! others. Trusted load balancers and everyone else have separate budgets: at most
//! [`max_pending`](ProxyProtocolListener::max_pending) connections from trusted sources are read at once
//! (further ones wait in the kernel's backlog), and at most
//! [`max_pending_untrusted`](ProxyProtocolListener::max_pending_untrusted) from other peers, of which at most
//! [`max_pending_untrusted_per_peer`](ProxyProtocolListener::max_pending_untrusted_per_peer) from one
//! address, past which new untrusted connections are closed at once; so silent connections from anywhere
//! cannot hold the slots the load balancers need, and one address cannot hold the others'. An untrusted
//! connection leaves the budget as soon as its first bytes are judged. Connections whose header is refused are closed there and never
//! reach axum. With `into_make_service_with_connect_info::<ConnInfo>()`, handlers and layers read the header's
//! facts from [`ConnInfo::proxy`](portcullis_core::ConnInfo::proxy).
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use portcullis_core::{ConnInfo, IpRange};
//! use portcullis_proxy_protocol::{ProxyProtocolConfig, ProxyProtocolListener, SourcePolicy};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ProxyProtocolConfig::builder()
//!     .source("10.1.0.0/16".parse::<IpRange>()?, SourcePolicy::Required)
//!     .build()?;
//! let app = Router::new().route(
//!     "/",
//!     get(|axum::extract::ConnectInfo(conn): axum::extract::ConnectInfo<ConnInfo>| async move {
//!         format!("{:?}", conn.proxy.and_then(|p| p.source))
//!     }),
//! );
//! let tcp = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! let listener = ProxyProtocolListener::new(tcp, config);
//! axum::serve(listener, app.into_make_service_with_connect_info::<ConnInfo>()).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::serve::Listener;
use tokio::task::JoinSet;

use crate::accept::ProxyProtocolConfig;
use crate::stream::ProxiedStream;

/// The default number of headers from trusted sources read at once by a [`ProxyProtocolListener`].
pub const DEFAULT_MAX_PENDING: usize = 1024;

/// The default number of connections from untrusted peers waited on at once by a [`ProxyProtocolListener`].
pub const DEFAULT_MAX_PENDING_UNTRUSTED: usize = 256;

/// The default number of connections one untrusted address may have waited on at once by a
/// [`ProxyProtocolListener`].
pub const DEFAULT_MAX_PENDING_UNTRUSTED_PER_PEER: usize = 16;

type Pending<Io> = JoinSet<Option<(ProxiedStream<Io>, SocketAddr)>>;

/// A listener that yields connections once their PROXY header is read (see the [module docs](self)).
pub struct ProxyProtocolListener<L: Listener> {
    inner: L,
    config: Arc<ProxyProtocolConfig>,
    pending: Pending<L::Io>,
    max_pending: usize,
    untrusted: Pending<L::Io>,
    max_untrusted: usize,
    max_untrusted_per_peer: usize,
    /// Pending untrusted connections per address: incremented at spawn, decremented as soon as the task
    /// has judged the first bytes (inside the task, so no join is needed to give the share back).
    untrusted_peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl<L: Listener> std::fmt::Debug for ProxyProtocolListener<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyProtocolListener")
            .field("config", &self.config)
            .field("pending", &self.pending.len())
            .field("max_pending", &self.max_pending)
            .field("pending_untrusted", &self.untrusted.len())
            .field("max_pending_untrusted", &self.max_untrusted)
            .field("max_pending_untrusted_per_peer", &self.max_untrusted_per_peer)
            .finish_non_exhaustive()
    }
}

impl<L: Listener<Addr = SocketAddr>> ProxyProtocolListener<L> {
    /// Wraps `inner` (typically a `tokio::net::TcpListener`).
    pub fn new(inner: L, config: impl Into<Arc<ProxyProtocolConfig>>) -> Self {
        ProxyProtocolListener {
            inner,
            config: config.into(),
            pending: JoinSet::new(),
            max_pending: DEFAULT_MAX_PENDING,
            untrusted: JoinSet::new(),
            max_untrusted: DEFAULT_MAX_PENDING_UNTRUSTED,
            max_untrusted_per_peer: DEFAULT_MAX_PENDING_UNTRUSTED_PER_PEER,
            untrusted_peers: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// At most `max` of the pending untrusted connections may come from one address (IPv4-mapped folded,
    /// IPv6 by /64; 16 unless set), so that one address cannot take the whole untrusted budget.
    ///
    /// # Panics
    /// When `max` is 0.
    pub fn max_pending_untrusted_per_peer(mut self, max: usize) -> Self {
        assert!(max > 0, "ProxyProtocolListener::max_pending_untrusted_per_peer must be at least 1");
        self.max_untrusted_per_peer = max;
        self
    }

    /// At most `max` connections from peers that are not trusted load balancers ([`SourcePolicy::Refused`])
    /// are waited on at once (256 unless set); past that, new ones are closed at once.
    ///
    /// # Panics
    /// When `max` is 0.
    ///
    /// [`SourcePolicy::Refused`]: crate::SourcePolicy::Refused
    pub fn max_pending_untrusted(mut self, max: usize) -> Self {
        assert!(max > 0, "ProxyProtocolListener::max_pending_untrusted must be at least 1");
        self.max_untrusted = max;
        self
    }

    /// At most `max` headers from trusted sources are read at once (1024 unless set); past that, accepting
    /// pauses.
    ///
    /// # Panics
    /// When `max` is 0.
    pub fn max_pending(mut self, max: usize) -> Self {
        assert!(max > 0, "ProxyProtocolListener::max_pending must be at least 1");
        self.max_pending = max;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<ProxyProtocolConfig> {
        &self.config
    }

    fn spawn(&mut self, io: L::Io, peer: SocketAddr) {
        let config = Arc::clone(&self.config);
        if self.config.policy_for(peer.ip()) != crate::SourcePolicy::Refused {
            self.pending
                .spawn(async move { config.accept(io, peer).await.ok().map(|stream| (stream, peer)) });
            return;
        }
        let key = untrusted_key(peer.ip());
        let held = {
            let peers = self.untrusted_peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            peers.get(&key).copied().unwrap_or(0)
        };
        if self.untrusted.len() >= self.max_untrusted || held >= self.max_untrusted_per_peer {
            // Dropping the stream closes the connection without a byte read.
            drop(io);
            tracing::debug!(%peer, "PROXY protocol listener: too many pending untrusted connections; closed");
            return;
        }
        let peers = Arc::clone(&self.untrusted_peers);
        let share = UntrustedShare::take(peers, key);
        self.untrusted.spawn(async move {
            let judged = config.accept(io, peer).await;
            // The first bytes are judged: the share goes back now, not when the connection ends.
            drop(share);
            judged.ok().map(|stream| (stream, peer))
        });
    }
}

/// The address an untrusted peer is counted under: IPv4 (mapped folded) as it is, IPv6 by its /64.
fn untrusted_key(ip: IpAddr) -> IpAddr {
    match portcullis_core::fold_ip(ip) {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

/// One pending untrusted connection's place in the per-address count, given back on drop.
struct UntrustedShare {
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    key: IpAddr,
}

impl UntrustedShare {
    fn take(peers: Arc<Mutex<HashMap<IpAddr, usize>>>, key: IpAddr) -> Self {
        *peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(key).or_insert(0) += 1;
        UntrustedShare { peers, key }
    }
}

impl Drop for UntrustedShare {
    fn drop(&mut self) {
        let mut peers = self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(held) = peers.get_mut(&self.key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                peers.remove(&self.key);
            }
        }
    }
}

enum Next<A, C> {
    Accepted(A),
    Ready(Option<Result<Option<C>, tokio::task::JoinError>>),
}

impl<L: Listener<Addr = SocketAddr>> Listener for ProxyProtocolListener<L> {
    type Io = ProxiedStream<L::Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // Both futures are cancel-safe: axum may drop this one (graceful shutdown) at any await.
            let next = if self.pending.len() < self.max_pending {
                tokio::select! {
                    biased;
                    Some(done) = self.pending.join_next() => Next::Ready(Some(done)),
                    Some(done) = self.untrusted.join_next() => Next::Ready(Some(done)),
                    accepted = self.inner.accept() => Next::Accepted(accepted),
                }
            } else {
                tokio::select! {
                    biased;
                    Some(done) = self.pending.join_next() => Next::Ready(Some(done)),
                    Some(done) = self.untrusted.join_next() => Next::Ready(Some(done)),
                }
            };
            match next {
                Next::Accepted((io, peer)) => self.spawn(io, peer),
                Next::Ready(Some(Ok(Some(ready)))) => return ready,
                Next::Ready(Some(Ok(None))) => {} // refused, already logged and closed
                Next::Ready(Some(Err(error))) => {
                    tracing::error!(%error, "PROXY protocol header task failed");
                }
                Next::Ready(None) => {}
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// `into_make_service_with_connect_info::<ConnInfo>()` works on this listener when it works on the inner one.
impl<L> portcullis_core::FactsListener for ProxyProtocolListener<L>
where
    L: Listener<Addr = SocketAddr>,
    L::Io: portcullis_core::ConnectionFacts,
{
}
