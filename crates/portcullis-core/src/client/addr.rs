//! Client addresses: [`ClientAddr`], how it was learnt, and IPv4-mapped folding.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Folds an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) to IPv4; other addresses are returned unchanged.
///
/// Every address portcullis reads (socket peers, PROXY headers, forwarded headers, rules) goes through this,
/// so `::ffff:10.0.0.1` can never slip past a rule written for `10.0.0.1`.
///
/// ```
/// use portcullis_core::fold_ip;
/// assert_eq!(fold_ip("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<std::net::IpAddr>().unwrap());
/// assert_eq!(fold_ip("::1".parse().unwrap()), "::1".parse::<std::net::IpAddr>().unwrap());
/// ```
#[inline]
pub fn fold_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// [`fold_ip`] for a socket address (the port is kept).
#[inline]
pub fn fold_socket_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(fold_ip(addr.ip()), addr.port())
}

/// Which forwarded header a client address was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For`.
    XForwardedFor,
    /// RFC 7239 `Forwarded` (its `for=` parameters).
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name.
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }
}

/// How a [`ClientAddr`] was learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LearntVia {
    /// The direct peer of the socket.
    Peer,
    /// The source address of a PROXY protocol header from a trusted load balancer.
    ProxyProtocol,
    /// A forwarded header, read because the peer is a trusted proxy.
    Forwarded {
        /// The header it was read from.
        header: ForwardedHeader,
        /// How many trusted proxies stood between the client and us, the direct peer included.
        trusted_hops: u16,
    },
}

/// Who is calling: the client address every portcullis layer decides on, and how it was learnt.
///
/// Resolved once per request by the client-address layer ([`ResolveClientAddrLayer`](crate::ResolveClientAddrLayer)) and
/// kept in the request's [`Decisions`](crate::Decisions). The address is always folded ([`fold_ip`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr {
    /// The client's address.
    pub ip: IpAddr,
    /// How it was learnt.
    pub learnt_via: LearntVia,
}

impl ClientAddr {
    /// A client address (folded).
    pub fn new(ip: IpAddr, learnt_via: LearntVia) -> Self {
        ClientAddr { ip: fold_ip(ip), learnt_via }
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.ip, f)
    }
}

impl fmt::Display for LearntVia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LearntVia::Peer => f.write_str("peer"),
            LearntVia::ProxyProtocol => f.write_str("proxy-protocol"),
            LearntVia::Forwarded { header, trusted_hops } => {
                write!(f, "{} ({} trusted hops)", header.name(), trusted_hops)
            }
        }
    }
}
