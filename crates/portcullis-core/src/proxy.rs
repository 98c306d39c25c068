//! Facts learnt from a PROXY protocol header (v1 or v2) sent by a trusted load balancer.
//!
//! The types live here, in the core crate, so that every layer can read them without depending on the
//! reader in `portcullis-proxy-protocol`.

use std::net::SocketAddr;
use std::sync::Arc;

/// Which version of the PROXY protocol carried the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyVersion {
    /// The human-readable v1 line (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary v2 header.
    V2,
}

/// The identifier of a private endpoint (private link) connection, as the cloud load balancer sends it in a
/// PROXY protocol v2 TLV.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LinkId {
    /// Azure Private Link: TLV 0xEE, subtype 0x01, the LinkID as a little-endian `u32`.
    Azure(u32),
    /// AWS PrivateLink: TLV 0xEA, subtype 0x01, the VPC endpoint id in ASCII (`vpce-...`).
    Aws(Arc<str>),
    /// Google Private Service Connect: TLV 0xE0, the PSC connection id as a big-endian `u64`.
    Gcp(u64),
}

impl std::fmt::Display for LinkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkId::Azure(id) => write!(f, "azure:{id}"),
            LinkId::Aws(id) => write!(f, "aws:{id}"),
            LinkId::Gcp(id) => write!(f, "gcp:{id}"),
        }
    }
}

/// What a trusted load balancer told us about a connection in its PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyInfo {
    /// The protocol version of the header.
    pub version: ProxyVersion,
    /// The original client (source) address; `None` for `LOCAL` / `UNKNOWN` headers (health checks).
    /// IPv4-mapped IPv6 addresses are already folded to IPv4.
    pub source: Option<SocketAddr>,
    /// The original destination address; `None` for `LOCAL` / `UNKNOWN` headers.
    pub destination: Option<SocketAddr>,
    /// The private link connection id, when a vendor TLV carried one.
    pub link_id: Option<LinkId>,
    /// The PP2_TYPE_UNIQUE_ID TLV (0x05), when present.
    pub unique_id: Option<Arc<[u8]>>,
    /// Whether the PP2_TYPE_SSL TLV (0x20) said the client connected over TLS to the load balancer.
    pub ssl: Option<ProxySsl>,
}

/// The PP2_TYPE_SSL TLV: what the load balancer saw of the client's TLS.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxySsl {
    /// The client connected over SSL/TLS (PP2_CLIENT_SSL).
    pub client_ssl: bool,
    /// The client presented a certificate over this connection (PP2_CLIENT_CERT_CONN).
    pub client_cert_conn: bool,
    /// The client presented a certificate at least once over this session (PP2_CLIENT_CERT_SESS).
    pub client_cert_sess: bool,
    /// The `verify` field: 0 when the client certificate was verified.
    pub verify: u32,
    /// The TLS version (PP2_SUBTYPE_SSL_VERSION), when sent.
    pub version: Option<Arc<str>>,
    /// The client certificate's common name (PP2_SUBTYPE_SSL_CN), when sent.
    pub common_name: Option<Arc<str>>,
    /// The cipher (PP2_SUBTYPE_SSL_CIPHER), when sent.
    pub cipher: Option<Arc<str>>,
}

impl ProxyInfo {
    /// A header with only a source and destination (no TLVs).
    pub fn new(version: ProxyVersion, source: Option<SocketAddr>, destination: Option<SocketAddr>) -> Self {
        ProxyInfo { version, source, destination, link_id: None, unique_id: None, ssl: None }
    }
}
