//! # portcullis-proxy-protocol
//!
//! The PROXY protocol (v1 and v2) for servers behind a cloud load balancer or private link service: the only
//! evidence, behind a private endpoint, of who the client is and which private link connection it came over.
//!
//! - [`parse()`]: a synchronous, allocation-light parser of one header from a byte buffer ([`Parsed`],
//!   [`ParseError`]): v1 and v2, CRC32C, the Azure, AWS and GCP private link TLVs
//!   ([`LinkId`](portcullis_core::LinkId)), UNIQUE_ID and SSL.
//! - [`ProxyProtocolConfig::accept`]: reads the header off an accepted stream, per peer [`SourcePolicy`]
//!   (required, optional, refused), within a deadline and a size cap, and returns a [`ProxiedStream`] that
//!   replays the bytes read past the header and implements
//!   [`ConnectionFacts`](portcullis_core::ConnectionFacts) (`ConnInfo::proxy`).
//! - Adapters: [`ProxyProtocolListener`] for `axum::serve` (feature `axum`), [`accept_tokio_io`] for hyper-util
//!   accept loops (feature `hyper-util`).
//!
//! A refused header closes the connection with a `tracing` warning naming the peer: it never reaches HTTP.
//!
//! ```
//! use portcullis_proxy_protocol::{parse, Parsed};
//!
//! let Parsed::Complete { info, consumed } = parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\nGET / ")?
//! else { unreachable!("a whole line") };
//! assert_eq!(info.source, Some("[2001:db8::7]:40000".parse()?));
//! assert_eq!(consumed, 46);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod accept;
#[cfg(feature = "hyper-util")]
mod hyper;
#[cfg(feature = "axum")]
pub mod listener;
pub mod parse;
pub mod stream;

pub use accept::{
    AcceptError, ConfigError, DEFAULT_HEADER_TIMEOUT, ProxyProtocolConfig, ProxyProtocolConfigBuilder,
    SourcePolicy,
};
#[cfg(feature = "hyper-util")]
pub use hyper::accept_tokio_io;
#[cfg(feature = "axum")]
pub use listener::ProxyProtocolListener;
pub use parse::{
    Detected, LinkIdVendors, ParseError, ParseOptions, Parsed, SAMPLE_V2_AZURE, Side, Tlv, Tlvs, detect,
    parse, parse_with, tlv, tlvs,
};
pub use stream::ProxiedStream;
