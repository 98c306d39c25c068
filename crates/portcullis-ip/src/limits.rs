//! Fair connection limits: no single address can exhaust a budget that all callers share.
//!
//! - [`PeerBudget`]: a budget of slots (connections, TLS handshakes in flight, connections waiting for their
//!   first bytes, ...) with a total and a **share per peer**. Peers are counted by address, IPv6 peers by
//!   their prefix (`/64` unless set: one host usually holds a whole /64), IPv4-mapped IPv6 folded to IPv4.
//!   A slot is a [`PeerSlot`] value, given back when it is dropped.
//! - [`ConnectionLimits`] → [`ConnectionLimiter`]: the connection limits of one listener: a total cap, a
//!   cap per client address, and a larger cap per load balancer address (behind a trusted PROXY protocol
//!   load balancer every caller arrives from a few addresses: the client is counted by the PROXY header's
//!   source, the load balancer's own address by its own cap).
//! - [`LimitedListener`] (feature `axum`): the limits around any `axum::serve` listener, such as a
//!   `tokio::net::TcpListener`, or a PROXY protocol listener (then clients are counted by PROXY source).
//!
//! ```
//! use portcullis_ip::{ConnectionLimits, LimitRefusal};
//!
//! let limits = ConnectionLimits { max_connections: 100, max_per_peer: 2, ..ConnectionLimits::default() };
//! let limiter = limits.limiter();
//! let a = limiter.admit_client("203.0.113.9".parse()?)?;
//! let b = limiter.admit_client("203.0.113.9".parse()?)?;
//! // The third connection from one address is refused; another address is not affected.
//! assert!(matches!(limiter.admit_client("203.0.113.9".parse()?), Err(LimitRefusal::PerPeer { .. })));
//! let other = limiter.admit_client("198.51.100.7".parse()?)?;
//! // IPv6 peers are counted by their /64.
//! let v6 = limiter.admit_client("2001:db8::1".parse()?)?;
//! let v6b = limiter.admit_client("2001:db8::2".parse()?)?;
//! assert!(limiter.admit_client("2001:db8::ffff".parse()?).is_err());
//! // A slot is given back when it is dropped.
//! drop(a);
//! assert!(limiter.admit_client("203.0.113.9".parse()?).is_ok());
//! # drop((b, other, v6, v6b));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use portcullis_core::fold_ip;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The default total of connections served at once by one listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The default number of connections one client address (or IPv6 prefix) may hold on one listener.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 256;

/// The default number of connections one trusted load balancer address may hold on one listener.
pub const DEFAULT_MAX_CONNECTIONS_PER_LOAD_BALANCER: usize = 4_096;

/// The default IPv6 prefix length peers are counted by.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// The address a peer is counted under: IPv4 (IPv4-mapped IPv6 folded) as it is, IPv6 masked to
/// `v6_prefix` bits (at most 128).
pub fn peer_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match fold_ip(ip) {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u32::from(v6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// Why a slot was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitRefusal {
    /// Every slot of the budget is taken.
    #[error("all {limit} slots of the budget are taken")]
    Total {
        /// The budget's total.
        limit: usize,
    },
    /// This peer holds its whole share.
    #[error("peer {key} holds its {limit} slots")]
    PerPeer {
        /// The address (or IPv6 prefix) the peer is counted under.
        key: IpAddr,
        /// The share of one peer.
        limit: usize,
    },
}

#[derive(Debug)]
struct Budget {
    total: usize,
    per_peer: usize,
    v6_prefix: u8,
    state: Mutex<BudgetState>,
}

#[derive(Debug, Default)]
struct BudgetState {
    used: usize,
    peers: HashMap<IpAddr, usize>,
}

impl Budget {
    fn lock(&self) -> MutexGuard<'_, BudgetState> {
        // The counts are updated in one step under the lock, so they stay consistent after a panic elsewhere.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A budget of slots with a total and a share per peer (see the [module docs](self)). Clones share the
/// budget.
#[derive(Debug, Clone)]
pub struct PeerBudget(Arc<Budget>);

impl PeerBudget {
    /// `total` slots, at most `per_peer` of them (at most `total`) for one peer, IPv6 peers counted by their
    /// `/64`.
    ///
    /// # Panics
    /// When `total` or `per_peer` is 0 (a budget that refuses everyone is a configuration error).
    pub fn new(total: usize, per_peer: usize) -> Self {
        PeerBudget::with_ipv6_prefix(total, per_peer, DEFAULT_IPV6_PREFIX)
    }

    /// As [`new`](PeerBudget::new), IPv6 peers counted by their `/v6_prefix` (at most 128).
    ///
    /// # Panics
    /// When `total` or `per_peer` is 0.
    pub fn with_ipv6_prefix(total: usize, per_peer: usize, v6_prefix: u8) -> Self {
        assert!(total > 0 && per_peer > 0, "PeerBudget: total and per_peer must be at least 1");
        PeerBudget(Arc::new(Budget {
            total,
            per_peer: per_peer.min(total),
            v6_prefix: v6_prefix.min(128),
            state: Mutex::new(BudgetState::default()),
        }))
    }

    /// Takes a slot for `ip`, or says why not. The slot is given back when the [`PeerSlot`] is dropped.
    ///
    /// # Errors
    /// [`LimitRefusal::PerPeer`] when the peer holds its share, [`LimitRefusal::Total`] when the budget is
    /// spent.
    pub fn try_acquire(&self, ip: IpAddr) -> Result<PeerSlot, LimitRefusal> {
        let key = peer_key(ip, self.0.v6_prefix);
        let mut state = self.0.lock();
        let held = state.peers.get(&key).copied().unwrap_or(0);
        if held >= self.0.per_peer {
            return Err(LimitRefusal::PerPeer { key, limit: self.0.per_peer });
        }
        if state.used >= self.0.total {
            return Err(LimitRefusal::Total { limit: self.0.total });
        }
        state.used += 1;
        state.peers.insert(key, held + 1);
        Ok(PeerSlot { budget: Arc::clone(&self.0), key })
    }

    /// The slots taken.
    pub fn in_use(&self) -> usize {
        self.0.lock().used
    }

    /// The slots the peer `ip` (its key) holds.
    pub fn in_use_by(&self, ip: IpAddr) -> usize {
        let key = peer_key(ip, self.0.v6_prefix);
        self.0.lock().peers.get(&key).copied().unwrap_or(0)
    }

    /// The total.
    pub fn total(&self) -> usize {
        self.0.total
    }

    /// The share of one peer.
    pub fn per_peer(&self) -> usize {
        self.0.per_peer
    }
}

/// A slot of a [`PeerBudget`], given back on drop.
#[derive(Debug)]
pub struct PeerSlot {
    budget: Arc<Budget>,
    key: IpAddr,
}

impl PeerSlot {
    /// The address (or IPv6 prefix) the slot is counted under.
    pub fn key(&self) -> IpAddr {
        self.key
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut state = self.budget.lock();
        state.used = state.used.saturating_sub(1);
        if let Some(held) = state.peers.get_mut(&self.key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                state.peers.remove(&self.key);
            }
        }
    }
}

// === ConnectionLimits ===

/// The connection limits of one listener. Every field has a documented default
/// ([`ConnectionLimits::default`]); none is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once by the listener ([`DEFAULT_MAX_CONNECTIONS`]). At the cap, new
    /// connections wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Connections one client address (IPv6: prefix) may hold ([`DEFAULT_MAX_CONNECTIONS_PER_PEER`]).
    /// Behind a trusted PROXY protocol load balancer the client is the header's source address. Past the
    /// cap, new connections from that client are closed at once.
    pub max_per_peer: usize,
    /// Connections one trusted load balancer address may hold
    /// ([`DEFAULT_MAX_CONNECTIONS_PER_LOAD_BALANCER`]).
    pub max_per_load_balancer: usize,
    /// The IPv6 prefix length clients are counted by ([`DEFAULT_IPV6_PREFIX`]).
    pub ipv6_prefix: u8,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            max_per_load_balancer: DEFAULT_MAX_CONNECTIONS_PER_LOAD_BALANCER,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }
}

impl ConnectionLimits {
    /// What is wrong with these limits, if anything: a zero cap, or a prefix longer than 128 bits.
    ///
    /// # Errors
    /// A message naming the field.
    pub fn check(&self) -> Result<(), String> {
        for (name, value) in [
            ("max_connections", self.max_connections),
            ("max_connections_per_peer", self.max_per_peer),
            ("max_connections_per_load_balancer", self.max_per_load_balancer),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.ipv6_prefix > 128 {
            return Err(format!("ipv6_prefix {} is longer than 128 bits", self.ipv6_prefix));
        }
        Ok(())
    }

    /// The shared state that enforces these limits on one listener.
    ///
    /// # Panics
    /// When [`check`](ConnectionLimits::check) fails.
    pub fn limiter(&self) -> ConnectionLimiter {
        if let Err(e) = self.check() {
            panic!("ConnectionLimits: {e}");
        }
        ConnectionLimiter {
            limits: *self,
            total: Arc::new(Semaphore::new(self.max_connections)),
            clients: PeerBudget::with_ipv6_prefix(self.max_connections, self.max_per_peer, self.ipv6_prefix),
            load_balancers: PeerBudget::with_ipv6_prefix(
                self.max_connections,
                self.max_per_load_balancer,
                // Load balancers are counted by their own address.
                128,
            ),
        }
    }
}

/// Enforces [`ConnectionLimits`] on one listener: take a [`reserve`](ConnectionLimiter::reserve) slot
/// before accepting, then [`admit_client`](ConnectionLimiter::admit_client) (and, for a load balancer's
/// connection, [`admit_load_balancer`](ConnectionLimiter::admit_load_balancer)) once the peer is known.
/// Clones share the counts.
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    limits: ConnectionLimits,
    total: Arc<Semaphore>,
    clients: PeerBudget,
    load_balancers: PeerBudget,
}

/// One of the listener's [`max_connections`](ConnectionLimits::max_connections) slots, given back on drop.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
}

impl ConnectionLimiter {
    /// The limits.
    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// Waits for one of the listener's connection slots. Cancel-safe.
    pub async fn reserve(&self) -> Reservation {
        // The semaphore is never closed, so acquiring only ends with a permit.
        match Arc::clone(&self.total).acquire_owned().await {
            Ok(permit) => Reservation { _permit: permit },
            Err(_) => unreachable!("the connection semaphore is never closed"),
        }
    }

    /// A connection slot if one is free now.
    pub fn try_reserve(&self) -> Option<Reservation> {
        Arc::clone(&self.total).try_acquire_owned().ok().map(|permit| Reservation { _permit: permit })
    }

    /// Connection slots free now.
    pub fn available(&self) -> usize {
        self.total.available_permits()
    }

    /// Counts a connection for the client `ip` (the socket peer, or the PROXY source behind a trusted load
    /// balancer).
    ///
    /// # Errors
    /// [`LimitRefusal::PerPeer`] when the client holds [`max_per_peer`](ConnectionLimits::max_per_peer)
    /// connections.
    pub fn admit_client(&self, ip: IpAddr) -> Result<PeerSlot, LimitRefusal> {
        self.clients.try_acquire(ip)
    }

    /// Counts a connection for the trusted load balancer `ip`.
    ///
    /// # Errors
    /// [`LimitRefusal::PerPeer`] when the load balancer holds
    /// [`max_per_load_balancer`](ConnectionLimits::max_per_load_balancer) connections.
    pub fn admit_load_balancer(&self, ip: IpAddr) -> Result<PeerSlot, LimitRefusal> {
        self.load_balancers.try_acquire(ip)
    }

    /// The clients' budget (for its counts).
    pub fn clients(&self) -> &PeerBudget {
        &self.clients
    }

    /// The load balancers' budget (for its counts).
    pub fn load_balancers(&self) -> &PeerBudget {
        &self.load_balancers
    }
}

#[cfg(feature = "axum")]
pub use self::axum_listener::{Limited, LimitedListener};

#[cfg(feature = "axum")]
mod axum_listener {
    use std::io;
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use axum::serve::Listener;
    use portcullis_core::{ConnInfo, ConnectionFacts};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::{ConnectionLimiter, ConnectionLimits, PeerSlot, Reservation};

    /// An [`axum::serve::Listener`] that enforces [`ConnectionLimits`] (feature `axum`): at most
    /// `max_connections` connections at once (then accepting pauses), at most `max_per_peer` per client
    /// address (more are closed as soon as they are accepted, unread).
    ///
    /// Around a PROXY protocol listener, the client is the header's source and the socket peer (a trusted
    /// load balancer) is counted against `max_per_load_balancer`; around a plain `TcpListener` the client is
    /// the socket peer. `into_make_service_with_connect_info::<ConnInfo>()` works on it whenever it works on
    /// the inner listener.
    ///
    /// ```no_run
    /// use axum::{Router, routing::get};
    /// use portcullis_core::ConnInfo;
    /// use portcullis_ip::{ConnectionLimits, LimitedListener};
    ///
    /// # async fn run() -> std::io::Result<()> {
    /// let tcp = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
    /// let limits = ConnectionLimits { max_per_peer: 64, ..ConnectionLimits::default() };
    /// let app = Router::new().route("/", get(|| async { "hello" }));
    /// axum::serve(LimitedListener::new(tcp, limits), app.into_make_service_with_connect_info::<ConnInfo>())
    ///     .await
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct LimitedListener<L> {
        inner: L,
        limiter: ConnectionLimiter,
    }

    impl<L> LimitedListener<L> {
        /// Wraps `inner` with `limits`.
        ///
        /// # Panics
        /// When the limits do not [`check`](ConnectionLimits::check).
        pub fn new(inner: L, limits: ConnectionLimits) -> Self {
            LimitedListener { inner, limiter: limits.limiter() }
        }

        /// Wraps `inner` with a limiter shared with other listeners or code.
        pub fn with_limiter(inner: L, limiter: ConnectionLimiter) -> Self {
            LimitedListener { inner, limiter }
        }

        /// The limiter (for its counts).
        pub fn limiter(&self) -> &ConnectionLimiter {
            &self.limiter
        }

        /// The inner listener.
        pub fn get_ref(&self) -> &L {
            &self.inner
        }
    }

    /// A connection accepted by a [`LimitedListener`]: the inner stream and the slots it holds until it
    /// is dropped.
    #[derive(Debug)]
    pub struct Limited<IO> {
        io: IO,
        _reservation: Reservation,
        _client: PeerSlot,
        _load_balancer: Option<PeerSlot>,
    }

    impl<IO> Limited<IO> {
        /// The inner stream.
        pub fn get_ref(&self) -> &IO {
            &self.io
        }
    }

    impl<IO: AsyncRead + Unpin> AsyncRead for Limited<IO> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl<IO: AsyncWrite + Unpin> AsyncWrite for Limited<IO> {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.io).poll_write(cx, buf)
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
        }
        fn is_write_vectored(&self) -> bool {
            self.io.is_write_vectored()
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    impl<IO: ConnectionFacts> ConnectionFacts for Limited<IO> {
        fn conn_info(&self, remote: SocketAddr) -> ConnInfo {
            self.io.conn_info(remote)
        }
    }

    impl<L> Listener for LimitedListener<L>
    where
        L: Listener<Addr = SocketAddr>,
        L::Io: ConnectionFacts + Unpin,
    {
        type Io = Limited<L::Io>;
        type Addr = SocketAddr;

        // Cancel-safe when the inner accept is: a reservation dropped at an await is given back.
        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            loop {
                let reservation = self.limiter.reserve().await;
                let (io, remote) = self.inner.accept().await;
                let source = io.conn_info(remote).proxy.as_ref().and_then(|p| p.source).map(|s| s.ip());
                // A PROXY source is only ever read from a trusted load balancer: the socket peer is one.
                let load_balancer = match source {
                    Some(_) => match self.limiter.admit_load_balancer(remote.ip()) {
                        Ok(slot) => Some(slot),
                        Err(refusal) => {
                            tracing::debug!(peer = %remote, %refusal, "connection limit: closed");
                            continue;
                        }
                    },
                    None => None,
                };
                match self.limiter.admit_client(source.unwrap_or(remote.ip())) {
                    Ok(client) => {
                        let io = Limited {
                            io,
                            _reservation: reservation,
                            _client: client,
                            _load_balancer: load_balancer,
                        };
                        return (io, remote);
                    }
                    Err(refusal) => {
                        tracing::debug!(peer = %remote, %refusal, "connection limit: closed");
                    }
                }
            }
        }

        fn local_addr(&self) -> io::Result<Self::Addr> {
            self.inner.local_addr()
        }
    }

    /// `into_make_service_with_connect_info::<ConnInfo>()` works on this listener when it works on the
    /// inner one.
    impl<L> portcullis_core::FactsListener for LimitedListener<L>
    where
        L: Listener<Addr = SocketAddr>,
        L::Io: ConnectionFacts + Unpin,
    {
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn keys_fold_mapped_and_mask_ipv6() {
        assert_eq!(peer_key(ip("::ffff:192.0.2.1"), 64), ip("192.0.2.1"));
        assert_eq!(peer_key(ip("2001:db8:1:2:3:4:5:6"), 64), ip("2001:db8:1:2::"));
        assert_eq!(peer_key(ip("2001:db8:1:2:3:4:5:6"), 48), ip("2001:db8:1::"));
        assert_eq!(peer_key(ip("2001:db8::6"), 128), ip("2001:db8::6"));
        assert_eq!(peer_key(ip("2001:db8::6"), 0), ip("::"));
        assert_eq!(peer_key(ip("2001:db8::6"), 200), ip("2001:db8::6"));
    }

    #[test]
    fn per_peer_share_then_total_and_release() {
        let budget = PeerBudget::new(5, 2);
        let a1 = budget.try_acquire(ip("192.0.2.1")).unwrap();
        let _a2 = budget.try_acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(
            budget.try_acquire(ip("::ffff:192.0.2.1")).unwrap_err(),
            LimitRefusal::PerPeer { key: ip("192.0.2.1"), limit: 2 }
        );
        let _b1 = budget.try_acquire(ip("192.0.2.2")).unwrap();
        let _b2 = budget.try_acquire(ip("192.0.2.2")).unwrap();
        let _c1 = budget.try_acquire(ip("192.0.2.3")).unwrap();
        assert_eq!(budget.try_acquire(ip("192.0.2.4")).unwrap_err(), LimitRefusal::Total { limit: 5 });
        assert_eq!((budget.in_use(), budget.in_use_by(ip("192.0.2.1"))), (5, 2));
        drop(a1);
        assert_eq!((budget.in_use(), budget.in_use_by(ip("192.0.2.1"))), (4, 1));
        assert!(budget.try_acquire(ip("192.0.2.4")).is_ok());
    }

    #[test]
    fn ipv6_hosts_of_one_prefix_share_a_share() {
        let budget = PeerBudget::with_ipv6_prefix(100, 1, 56);
        let _a = budget.try_acquire(ip("2001:db8:0:1::1")).unwrap();
        assert!(budget.try_acquire(ip("2001:db8:0:ff::9")).is_err(), "same /56");
        assert!(budget.try_acquire(ip("2001:db8:0:100::1")).is_ok(), "another /56");
    }

    #[test]
    fn load_balancers_have_their_own_cap() {
        let limits = ConnectionLimits { max_per_peer: 1, max_per_load_balancer: 3, ..Default::default() };
        assert!(limits.check().is_ok());
        let limiter = limits.limiter();
        let lb = ip("10.0.0.1");
        let slots: Vec<_> = (0..3).map(|_| limiter.admit_load_balancer(lb).unwrap()).collect();
        assert!(limiter.admit_load_balancer(lb).is_err());
        // The load balancer's slots are not its clients': a client at the same address still has its own.
        let _c = limiter.admit_client(lb).unwrap();
        assert!(limiter.admit_client(lb).is_err());
        drop(slots);
    }

    #[test]
    fn zero_caps_and_long_prefixes_are_refused() {
        let zero = ConnectionLimits { max_per_peer: 0, ..Default::default() };
        assert!(zero.check().unwrap_err().contains("max_connections_per_peer"));
        let long = ConnectionLimits { ipv6_prefix: 129, ..Default::default() };
        assert!(long.check().unwrap_err().contains("128"));
    }

    #[tokio::test]
    async fn reservations_wait_for_a_free_slot() {
        let limiter = ConnectionLimits { max_connections: 1, ..Default::default() }.limiter();
        let first = limiter.reserve().await;
        assert!(limiter.try_reserve().is_none());
        drop(first);
        assert!(limiter.try_reserve().is_some());
    }
}
