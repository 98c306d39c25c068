//! Who is calling: the client address every layer decides on, resolved so that it cannot be spoofed.
//!
//! - [`addr`]: [`ClientAddr`](addr::ClientAddr) and how it was learnt, and the IPv4-mapped folding every
//!   address goes through.
//! - [`resolve`]: the rule ([`ClientAddrConfig`](resolve::ClientAddrConfig)) and its layer
//!   ([`ResolveClientAddrLayer`](resolve::ResolveClientAddrLayer)): the peer or PROXY source, and forwarded
//!   headers only from trusted proxies, walked right to left.
//! - [`forwarded`]: the `X-Forwarded-For` and RFC 7239 `Forwarded` parsers.

pub mod addr;
pub mod forwarded;
pub mod resolve;
