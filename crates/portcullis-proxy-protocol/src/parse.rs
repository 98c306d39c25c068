//! The PROXY protocol parser: v1 lines and v2 binary headers, from a byte buffer, without I/O.
//!
//! [`parse`] looks at the start of a buffer and answers one of three things:
//! - [`Parsed::Complete`]: a whole header was read; `consumed` bytes belong to it and everything after them is
//!   the connection's payload (only the first header is ever parsed);
//! - [`Parsed::Incomplete`]: the bytes so far are a valid beginning of a header, read at least `needed` more;
//! - an error ([`ParseError`]): the bytes are not a PROXY header ([`ParseError::NotProxy`]) or a malformed one.
//!
//! ```
//! use portcullis_proxy_protocol::{parse, Parsed};
//! use portcullis_core::LinkId;
//!
//! // v1: a text line.
//! let Parsed::Complete { info, consumed } = parse(b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 443\r\nGET /")?
//! else { panic!("complete") };
//! assert_eq!(info.source, Some("192.0.2.1:51000".parse()?));
//! assert_eq!(consumed, 45); // "GET /" is payload
//!
//! // v2 with an Azure Private Link TLV (0xEE, subtype 0x01, LinkID 0x01020304 little-endian).
//! let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x14".to_vec();
//! header.extend_from_slice(&[10, 0, 0, 7, 10, 0, 0, 1, 0xc3, 0x50, 0x01, 0xbb]);
//! header.extend_from_slice(&[0xee, 0x00, 0x05, 0x01, 0x04, 0x03, 0x02, 0x01]);
//! let Parsed::Complete { info, .. } = parse(&header)? else { panic!("complete") };
//! assert_eq!(info.link_id, Some(LinkId::Azure(0x0102_0304)));
//!
//! // Half a header: read more. Not a header at all: an error the caller can tell apart.
//! assert!(matches!(parse(&header[..20])?, Parsed::Incomplete { needed: 16 }));
//! assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(portcullis_proxy_protocol::ParseError::NotProxy));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Decisions
//! - v1: `TCP4`, `TCP6` and `UNKNOWN` only; the line is at most 107 bytes including CRLF; addresses must match
//!   the protocol (no IPv4 under `TCP6`, no zones, no leading zeros); ports are decimal without sign or
//!   leading zero. `UNKNOWN` ignores the rest of the line, as the specification asks.
//! - v2: the `LOCAL` command (a balancer's own health check) yields no addresses and no link id. The `PROXY`
//!   command needs a stream transport over `INET`, `INET6` or `UNIX` (`UNIX` yields no addresses):
//!   `UNSPEC` and datagram transports are refused, since portcullis serves stream connections.
//!   The length field is capped ([`ParseOptions::max_v2_len`], 4096 by default) and must cover the address
//!   block.
//! - TLVs: every TLV must fit its header ([`ParseError::TlvTruncated`]). CRC32C (0x03) is checked when present,
//!   over the whole header with the checksum zeroed. UNIQUE_ID (0x05) is at most 128 bytes. SSL (0x20) is decoded
//!   with its sub-TLVs. The vendor TLVs (Azure 0xEE/0x01 little-endian `u32`, AWS 0xEA/0x01 ASCII, GCP 0xE0
//!   big-endian `u64`) live in the custom range that any vendor may use, so a value without the expected shape
//!   is ignored rather than guessed at; two link ids in one header are an error. Other TLVs are skipped.
//! - Addresses are folded (`::ffff:a.b.c.d` → `a.b.c.d`) with [`portcullis_core::fold_ip`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use portcullis_core::{LinkId, ProxyInfo, ProxySsl, ProxyVersion, fold_socket_addr};

/// The 12-byte signature that opens every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The 5 bytes that open every v1 line (a space must follow).
pub const V1_SIGNATURE: [u8; 5] = *b"PROXY";

/// The longest v1 line the specification allows, CRLF included.
pub const V1_MAX_LEN: usize = 107;

/// The fixed part of a v2 header: signature, version/command, family/transport, length.
pub const V2_FIXED_LEN: usize = 16;

/// The default cap on the v2 length field (address block plus TLVs).
pub const DEFAULT_MAX_V2_LEN: usize = 4096;

/// The shortest possible v1 line, `PROXY UNKNOWN\r\n`.
const V1_MIN_LEN: usize = 15;

/// TLV types (PP2_TYPE_*).
pub mod tlv {
    /// Application-Layer Protocol Negotiation.
    pub const ALPN: u8 = 0x01;
    /// The authority (host name) the client asked for.
    pub const AUTHORITY: u8 = 0x02;
    /// CRC32C of the whole header.
    pub const CRC32C: u8 = 0x03;
    /// Padding, ignored.
    pub const NOOP: u8 = 0x04;
    /// An opaque connection id, at most 128 bytes.
    pub const UNIQUE_ID: u8 = 0x05;
    /// TLS facts, with sub-TLVs.
    pub const SSL: u8 = 0x20;
    /// SSL sub-TLV: TLS version.
    pub const SUBTYPE_SSL_VERSION: u8 = 0x21;
    /// SSL sub-TLV: client certificate common name.
    pub const SUBTYPE_SSL_CN: u8 = 0x22;
    /// SSL sub-TLV: cipher.
    pub const SUBTYPE_SSL_CIPHER: u8 = 0x23;
    /// Network namespace.
    pub const NETNS: u8 = 0x30;
    /// Google Private Service Connect connection id (8 bytes, big-endian).
    pub const GCP: u8 = 0xE0;
    /// AWS (subtype 0x01: VPC endpoint id).
    pub const AWS: u8 = 0xEA;
    /// Azure (subtype 0x01: Private Link LinkID).
    pub const AZURE: u8 = 0xEE;
    /// The AWS subtype carrying the VPC endpoint id.
    pub const AWS_SUBTYPE_VPCE_ID: u8 = 0x01;
    /// The Azure subtype carrying the Private Link LinkID.
    pub const AZURE_SUBTYPE_LINK_ID: u8 = 0x01;
}

/// A 60-byte v2 header as an Azure Private Link service sends it: `PROXY`, TCP over IPv6
/// (`[2001:db8::1]:50000` → `[2001:db8::2]:443`) and the LinkID TLV (0xEE, subtype 0x01, LinkID 0x2200_0011).
///
/// For benchmarks (`parse(&SAMPLE_V2_AZURE)`) and tests.
///
/// ```
/// use portcullis_proxy_protocol::{parse, Parsed, SAMPLE_V2_AZURE};
/// let Parsed::Complete { info, consumed } = parse(&SAMPLE_V2_AZURE).unwrap() else { panic!() };
/// assert_eq!(consumed, 60);
/// assert_eq!(info.link_id, Some(portcullis_core::LinkId::Azure(0x2200_0011)));
/// ```
pub const SAMPLE_V2_AZURE: [u8; 60] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, // signature
    0x21, 0x21, 0x00, 0x2c, // v2 PROXY, INET6 STREAM, 44 bytes
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // source 2001:db8::1
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // destination 2001:db8::2
    0xc3, 0x50, 0x01, 0xbb, // ports 50000, 443
    0xee, 0x00, 0x05, 0x01, 0x11, 0x00, 0x00, 0x22, // Azure LinkID 0x22000011 (little-endian)
];

/// The outcome of [`parse`] when the bytes are a valid header or the beginning of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header.
    Complete {
        /// What the header said.
        info: ProxyInfo,
        /// How many bytes the header took; the bytes after them are payload.
        consumed: usize,
    },
    /// A valid beginning (or nothing yet): the header cannot be complete before `needed` more bytes (≥ 1).
    Incomplete {
        /// A lower bound on the bytes still missing.
        needed: usize,
    },
}

/// Which side of the connection an address or port belongs to (in [`ParseError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The source (client).
    Source,
    /// The destination.
    Destination,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

/// Why bytes are not an acceptable PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The bytes start with neither the v1 nor the v2 signature.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// No CRLF within the 107 bytes a v1 line may take.
    #[error("PROXY v1 line longer than 107 bytes")]
    V1TooLong,
    /// A v1 line ended with a bare LF or a CR not followed by LF.
    #[error("PROXY v1 line does not end with CRLF")]
    V1NoCrlf,
    /// A v1 line with the wrong shape (spacing, number of fields, non-ASCII).
    #[error("malformed PROXY v1 line: {0}")]
    V1Malformed(&'static str),
    /// A v1 protocol other than `TCP4`, `TCP6` or `UNKNOWN`.
    #[error("unknown PROXY v1 protocol")]
    V1UnknownProtocol,
    /// A v1 address that is not a valid address of the line's protocol.
    #[error("invalid PROXY v1 {0} address")]
    V1Address(Side),
    /// A v1 port that is not a decimal number in 0..=65535 without sign or leading zero.
    #[error("invalid PROXY v1 {0} port")]
    V1Port(Side),
    /// A v2 version other than 2.
    #[error("unsupported PROXY v2 version {0}")]
    V2Version(u8),
    /// A v2 command other than LOCAL (0) or PROXY (1).
    #[error("unknown PROXY v2 command {0:#x}")]
    V2Command(u8),
    /// A family/transport byte with values the specification leaves undefined.
    #[error("invalid PROXY v2 family/transport byte {0:#04x}")]
    V2Family(u8),
    /// A PROXY command over `UNSPEC` or a datagram transport.
    #[error("unsupported PROXY v2 family/transport {0:#04x} for a relayed stream connection")]
    V2Unsupported(u8),
    /// The length field exceeds the configured cap.
    #[error("PROXY v2 header length {len} exceeds the limit of {max} bytes")]
    V2TooLong {
        /// The length field.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The length field is smaller than the family's address block.
    #[error("PROXY v2 header length {len} is shorter than its {block}-byte address block")]
    V2ShortAddress {
        /// The length field.
        len: usize,
        /// The size of the address block.
        block: usize,
    },
    /// A TLV (or SSL sub-TLV) runs past the end of the header.
    #[error("PROXY v2 TLV at offset {offset} runs past the end of the header")]
    TlvTruncated {
        /// Offset of the TLV from the start of the header (or of the SSL value, for sub-TLVs).
        offset: usize,
    },
    /// A TLV whose value has the wrong size or encoding.
    #[error("malformed PROXY v2 TLV {kind:#04x}: {reason}")]
    TlvMalformed {
        /// The TLV (or SSL sub-TLV) type.
        kind: u8,
        /// What is wrong.
        reason: &'static str,
    },
    /// A TLV that may appear once appears again.
    #[error("PROXY v2 TLV {0:#04x} appears more than once")]
    TlvDuplicate(u8),
    /// More than one private link id (vendor TLV) in one header.
    #[error("PROXY v2 header carries more than one private link id")]
    LinkIdConflict,
    /// The CRC32C TLV does not match the header.
    #[error("PROXY v2 CRC32C mismatch: header says {expected:#010x}, computed {computed:#010x}")]
    Crc32c {
        /// The checksum the header carries.
        expected: u32,
        /// The checksum of the header.
        computed: u32,
    },
}

/// Which vendors' private link TLVs are decoded into [`ProxyInfo::link_id`]. All by default; turn off the
/// vendors whose load balancers you do not use, so that another vendor's custom TLV is never read as a link id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkIdVendors {
    /// Azure Private Link (0xEE).
    pub azure: bool,
    /// AWS PrivateLink (0xEA).
    pub aws: bool,
    /// Google Private Service Connect (0xE0).
    pub gcp: bool,
}

impl LinkIdVendors {
    /// All three vendors.
    pub const ALL: LinkIdVendors = LinkIdVendors { azure: true, aws: true, gcp: true };
    /// None: link ids are never decoded.
    pub const NONE: LinkIdVendors = LinkIdVendors { azure: false, aws: false, gcp: false };
}

impl Default for LinkIdVendors {
    fn default() -> Self {
        LinkIdVendors::ALL
    }
}

/// Limits and choices of [`parse_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// The largest v2 length field accepted (address block plus TLVs); the specification allows 65535.
    pub max_v2_len: usize,
    /// Which vendor TLVs are decoded as link ids.
    pub vendors: LinkIdVendors,
}

impl ParseOptions {
    /// 4096 bytes of v2 body, every vendor.
    pub const DEFAULT: ParseOptions =
        ParseOptions { max_v2_len: DEFAULT_MAX_V2_LEN, vendors: LinkIdVendors::ALL };

    /// The largest header these options accept, in bytes (a v2 header at the cap, or a v1 line).
    pub fn max_header_len(&self) -> usize {
        (V2_FIXED_LEN + self.max_v2_len.min(u16::MAX as usize)).max(V1_MAX_LEN)
    }
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions::DEFAULT
    }
}

/// What the first bytes of a connection look like (see [`detect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// Too few bytes to tell (a strict prefix of a signature, or nothing).
    Partial,
    /// Not a PROXY header.
    NotProxy,
    /// The v1 signature (`PROXY`).
    V1,
    /// The v2 signature.
    V2,
}

/// Tells from the first bytes whether a connection starts with a PROXY header, without parsing it.
///
/// ```
/// use portcullis_proxy_protocol::{detect, Detected};
/// assert_eq!(detect(b"PRO"), Detected::Partial);
/// assert_eq!(detect(b"POST /"), Detected::NotProxy);
/// assert_eq!(detect(b"PROXY TCP4"), Detected::V1);
/// ```
pub fn detect(buf: &[u8]) -> Detected {
    let v1 = prefix_state(buf, &V1_SIGNATURE);
    let v2 = prefix_state(buf, &V2_SIGNATURE);
    match (v1, v2) {
        (Prefix::Full, _) => Detected::V1,
        (_, Prefix::Full) => Detected::V2,
        (Prefix::Partial, _) | (_, Prefix::Partial) => Detected::Partial,
        (Prefix::No, Prefix::No) => Detected::NotProxy,
    }
}

enum Prefix {
    No,
    Partial,
    Full,
}

fn prefix_state(buf: &[u8], sig: &[u8]) -> Prefix {
    let n = buf.len().min(sig.len());
    if buf[..n] != sig[..n] {
        Prefix::No
    } else if n == sig.len() {
        Prefix::Full
    } else {
        Prefix::Partial
    }
}

/// Parses the PROXY header at the start of `buf` with the default options ([`ParseOptions::DEFAULT`]).
///
/// # Errors
/// [`ParseError::NotProxy`] when `buf` does not start with a PROXY signature, another [`ParseError`] when the
/// header is malformed. Errors are reported as soon as the bytes seen so far prove them.
#[inline]
pub fn parse(buf: &[u8]) -> Result<Parsed, ParseError> {
    parse_with(buf, &ParseOptions::DEFAULT)
}

/// Parses the PROXY header at the start of `buf`.
///
/// # Errors
/// As [`parse`].
pub fn parse_with(buf: &[u8], opts: &ParseOptions) -> Result<Parsed, ParseError> {
    match detect(buf) {
        Detected::V2 => parse_v2(buf, opts),
        Detected::V1 => parse_v1(buf),
        Detected::NotProxy => Err(ParseError::NotProxy),
        Detected::Partial => {
            // Either header may still come; the shortest v1 line is shorter than any v2 header.
            let shortest = if buf.is_empty() || buf[0] == b'P' { V1_MIN_LEN } else { V2_FIXED_LEN };
            Ok(Parsed::Incomplete { needed: shortest - buf.len() })
        }
    }
}

// === v1 ===

fn parse_v1(buf: &[u8]) -> Result<Parsed, ParseError> {
    if buf.len() > V1_SIGNATURE.len() && buf[V1_SIGNATURE.len()] != b' ' {
        return Err(ParseError::V1Malformed("no space after PROXY"));
    }
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(end) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        if buf.len() >= V1_MAX_LEN {
            return Err(ParseError::V1TooLong);
        }
        return Ok(Parsed::Incomplete { needed: V1_MIN_LEN.saturating_sub(buf.len()).max(1) });
    };
    if window[end] == b'\n' {
        return Err(ParseError::V1NoCrlf);
    }
    // `end` is a CR: the LF must follow, within the 107 bytes.
    if end + 2 > V1_MAX_LEN {
        return Err(ParseError::V1TooLong);
    }
    match buf.get(end + 1) {
        None => return Ok(Parsed::Incomplete { needed: 1 }),
        Some(b'\n') => {}
        Some(_) => return Err(ParseError::V1NoCrlf),
    }
    let consumed = end + 2;
    let line = &buf[V1_SIGNATURE.len() + 1..end];
    if line == b"UNKNOWN" || line.starts_with(b"UNKNOWN ") {
        // The specification: the receiver must ignore anything else on an UNKNOWN line.
        return Ok(Parsed::Complete { info: ProxyInfo::new(ProxyVersion::V1, None, None), consumed });
    }
    let line = std::str::from_utf8(line).map_err(|_| ParseError::V1Malformed("not ASCII"))?;
    let mut fields = line.split(' ');
    let is_v6 = match fields.next() {
        Some("TCP4") => false,
        Some("TCP6") => true,
        Some("") | None => return Err(ParseError::V1Malformed("missing protocol")),
        Some(_) => return Err(ParseError::V1UnknownProtocol),
    };
    let mut next = |what| match fields.next() {
        Some("") | None => Err(ParseError::V1Malformed(what)),
        Some(field) => Ok(field),
    };
    let src_ip = v1_ip(next("missing source address")?, is_v6, Side::Source)?;
    let dst_ip = v1_ip(next("missing destination address")?, is_v6, Side::Destination)?;
    let src_port = v1_port(next("missing source port")?, Side::Source)?;
    let dst_port = v1_port(next("missing destination port")?, Side::Destination)?;
    if fields.next().is_some() {
        return Err(ParseError::V1Malformed("extra field"));
    }
    let source = fold_socket_addr(SocketAddr::new(src_ip, src_port));
    let destination = fold_socket_addr(SocketAddr::new(dst_ip, dst_port));
    Ok(Parsed::Complete { info: ProxyInfo::new(ProxyVersion::V1, Some(source), Some(destination)), consumed })
}

fn v1_ip(field: &str, is_v6: bool, side: Side) -> Result<IpAddr, ParseError> {
    // std's parsers refuse zones, leading zeros in IPv4 octets, and the other family.
    let ip = if is_v6 {
        field.parse::<Ipv6Addr>().map(IpAddr::V6)
    } else {
        field.parse::<Ipv4Addr>().map(IpAddr::V4)
    };
    ip.map_err(|_| ParseError::V1Address(side))
}

fn v1_port(field: &str, side: Side) -> Result<u16, ParseError> {
    let bytes = field.as_bytes();
    let plain = !bytes.is_empty()
        && bytes.len() <= 5
        && bytes.iter().all(u8::is_ascii_digit)
        && (bytes[0] != b'0' || bytes.len() == 1);
    if !plain {
        return Err(ParseError::V1Port(side));
    }
    field.parse::<u16>().map_err(|_| ParseError::V1Port(side))
}

// === v2 ===

const CMD_LOCAL: u8 = 0x0;
const CMD_PROXY: u8 = 0x1;
const FAM_UNSPEC: u8 = 0x0;
const FAM_INET: u8 = 0x1;
const FAM_INET6: u8 = 0x2;
const FAM_UNIX: u8 = 0x3;
const TRANSPORT_STREAM: u8 = 0x1;

fn parse_v2(buf: &[u8], opts: &ParseOptions) -> Result<Parsed, ParseError> {
    let incomplete = |want: usize| Ok(Parsed::Incomplete { needed: want - buf.len() });
    let Some(&ver_cmd) = buf.get(12) else { return incomplete(V2_FIXED_LEN) };
    if ver_cmd >> 4 != 2 {
        return Err(ParseError::V2Version(ver_cmd >> 4));
    }
    let command = ver_cmd & 0x0f;
    if command != CMD_LOCAL && command != CMD_PROXY {
        return Err(ParseError::V2Command(command));
    }
    let Some(&fam) = buf.get(13) else { return incomplete(V2_FIXED_LEN) };
    let (family, transport) = (fam >> 4, fam & 0x0f);
    if family > FAM_UNIX || transport > 2 {
        return Err(ParseError::V2Family(fam));
    }
    if command == CMD_PROXY && (family == FAM_UNSPEC || transport != TRANSPORT_STREAM) {
        return Err(ParseError::V2Unsupported(fam));
    }
    if buf.len() < V2_FIXED_LEN {
        return incomplete(V2_FIXED_LEN);
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > opts.max_v2_len {
        return Err(ParseError::V2TooLong { len, max: opts.max_v2_len });
    }
    let block = match family {
        FAM_INET => 12,
        FAM_INET6 => 36,
        FAM_UNIX => 216,
        _ => 0,
    };
    if len < block {
        return Err(ParseError::V2ShortAddress { len, block });
    }
    let total = V2_FIXED_LEN + len;
    if buf.len() < total {
        return incomplete(total);
    }
    let header = &buf[..total];
    let addr = &header[V2_FIXED_LEN..V2_FIXED_LEN + block];

    let (source, destination) = if command == CMD_LOCAL {
        (None, None)
    } else {
        match family {
            FAM_INET => {
                let ip = |at: usize| IpAddr::from([addr[at], addr[at + 1], addr[at + 2], addr[at + 3]]);
                let port = |at: usize| u16::from_be_bytes([addr[at], addr[at + 1]]);
                (Some(SocketAddr::new(ip(0), port(8))), Some(SocketAddr::new(ip(4), port(10))))
            }
            FAM_INET6 => {
                let ip = |at: usize| {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&addr[at..at + 16]);
                    IpAddr::from(octets)
                };
                let port = |at: usize| u16::from_be_bytes([addr[at], addr[at + 1]]);
                (Some(SocketAddr::new(ip(0), port(32))), Some(SocketAddr::new(ip(16), port(34))))
            }
            _ => (None, None), // UNIX: no IP addresses
        }
    };
    let mut info =
        ProxyInfo::new(ProxyVersion::V2, source.map(fold_socket_addr), destination.map(fold_socket_addr));

    let mut crc: Option<(usize, u32)> = None;
    for tlv in (Tlvs { header, offset: V2_FIXED_LEN + block }) {
        let tlv = tlv?;
        let value = tlv.value;
        match tlv.kind {
            tlv::CRC32C => {
                let Ok(bytes) = <[u8; 4]>::try_from(value) else {
                    return Err(ParseError::TlvMalformed {
                        kind: tlv::CRC32C,
                        reason: "value is not 4 bytes",
                    });
                };
                if crc.replace((tlv.offset + 3, u32::from_be_bytes(bytes))).is_some() {
                    return Err(ParseError::TlvDuplicate(tlv::CRC32C));
                }
            }
            tlv::UNIQUE_ID => {
                if value.len() > 128 {
                    return Err(ParseError::TlvMalformed {
                        kind: tlv::UNIQUE_ID,
                        reason: "longer than 128 bytes",
                    });
                }
                if info.unique_id.replace(Arc::from(value)).is_some() {
                    return Err(ParseError::TlvDuplicate(tlv::UNIQUE_ID));
                }
            }
            tlv::SSL if info.ssl.is_some() => return Err(ParseError::TlvDuplicate(tlv::SSL)),
            tlv::SSL => info.ssl = Some(parse_ssl(value)?),
            kind @ (tlv::AZURE | tlv::AWS | tlv::GCP) => {
                if let Some(link) = vendor_link_id(kind, value, &opts.vendors)
                    && info.link_id.replace(link).is_some()
                {
                    return Err(ParseError::LinkIdConflict);
                }
            }
            _ => {} // ALPN, AUTHORITY, NOOP, NETNS, and types we have no use for
        }
    }

    if let Some((at, expected)) = crc {
        let computed = crc32c::crc32c_append(
            crc32c::crc32c_append(crc32c::crc32c(&header[..at]), &[0; 4]),
            &header[at + 4..],
        );
        if computed != expected {
            return Err(ParseError::Crc32c { expected, computed });
        }
    }
    if command == CMD_LOCAL {
        // The balancer's own connection: it relays no client, so it carries no client's private link.
        info.link_id = None;
    }
    Ok(Parsed::Complete { info, consumed: total })
}

fn vendor_link_id(kind: u8, value: &[u8], vendors: &LinkIdVendors) -> Option<LinkId> {
    match (kind, value) {
        (tlv::AZURE, [tlv::AZURE_SUBTYPE_LINK_ID, a, b, c, d]) if vendors.azure => {
            Some(LinkId::Azure(u32::from_le_bytes([*a, *b, *c, *d])))
        }
        (tlv::AWS, [tlv::AWS_SUBTYPE_VPCE_ID, id @ ..]) if vendors.aws => {
            let printable = !id.is_empty() && id.iter().all(u8::is_ascii_graphic);
            let id = std::str::from_utf8(id).ok().filter(|_| printable)?;
            Some(LinkId::Aws(Arc::from(id)))
        }
        (tlv::GCP, value) if vendors.gcp => {
            let bytes = <[u8; 8]>::try_from(value).ok()?;
            Some(LinkId::Gcp(u64::from_be_bytes(bytes)))
        }
        _ => None,
    }
}

fn parse_ssl(value: &[u8]) -> Result<ProxySsl, ParseError> {
    let [client, v0, v1, v2, v3, subs @ ..] = value else {
        return Err(ParseError::TlvMalformed { kind: tlv::SSL, reason: "shorter than 5 bytes" });
    };
    let mut ssl = ProxySsl {
        client_ssl: client & 0x01 != 0,
        client_cert_conn: client & 0x02 != 0,
        client_cert_sess: client & 0x04 != 0,
        verify: u32::from_be_bytes([*v0, *v1, *v2, *v3]),
        ..ProxySsl::default()
    };
    for sub in (Tlvs { header: subs, offset: 0 }) {
        let sub = sub?;
        let slot = match sub.kind {
            tlv::SUBTYPE_SSL_VERSION => &mut ssl.version,
            tlv::SUBTYPE_SSL_CN => &mut ssl.common_name,
            tlv::SUBTYPE_SSL_CIPHER => &mut ssl.cipher,
            _ => continue, // signature and key algorithms, and future subtypes
        };
        let text = std::str::from_utf8(sub.value)
            .map_err(|_| ParseError::TlvMalformed { kind: sub.kind, reason: "not UTF-8" })?;
        if slot.replace(Arc::from(text)).is_some() {
            return Err(ParseError::TlvDuplicate(sub.kind));
        }
    }
    Ok(ssl)
}

/// One TLV of a v2 header (see [`tlvs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The type byte.
    pub kind: u8,
    /// The value.
    pub value: &'a [u8],
    /// Where the TLV starts, from the start of the header.
    pub offset: usize,
}

/// An iterator over the TLVs of a complete v2 header (see [`tlvs`]).
#[derive(Debug, Clone)]
pub struct Tlvs<'a> {
    header: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Result<Tlv<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        let offset = self.offset;
        let rest = self.header.get(offset..).filter(|rest| !rest.is_empty())?;
        let truncated = || Some(Err(ParseError::TlvTruncated { offset }));
        let [kind, hi, lo, tail @ ..] = rest else {
            self.offset = self.header.len();
            return truncated();
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let Some(value) = tail.get(..len) else {
            self.offset = self.header.len();
            return truncated();
        };
        self.offset = offset + 3 + len;
        Some(Ok(Tlv { kind: *kind, value, offset }))
    }
}

/// The raw TLVs of the complete v2 header at the start of `buf`, for the types [`ProxyInfo`] does not carry
/// (ALPN, AUTHORITY, NOOP, vendor subtypes...).
///
/// # Errors
/// The errors of [`parse`] when `buf` does not start with a valid v2 header (a v1 line is
/// [`ParseError::NotProxy`] here, and an incomplete header is [`ParseError::TlvTruncated`] at offset 0).
///
/// ```
/// use portcullis_proxy_protocol::{tlvs, tlv};
/// let header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x13\x7f\0\0\x01\x7f\0\0\x01\x00\x50\x01\xbb\x02\x00\x04a.io";
/// let all: Vec<_> = tlvs(header)?.collect::<Result<_, _>>()?;
/// assert_eq!((all[0].kind, all[0].value), (tlv::AUTHORITY, &b"a.io"[..]));
/// # Ok::<(), portcullis_proxy_protocol::ParseError>(())
/// ```
pub fn tlvs(buf: &[u8]) -> Result<Tlvs<'_>, ParseError> {
    let opts = ParseOptions { max_v2_len: usize::from(u16::MAX), vendors: LinkIdVendors::NONE };
    if detect(buf) != Detected::V2 {
        return Err(ParseError::NotProxy);
    }
    match parse_v2(buf, &opts)? {
        Parsed::Incomplete { .. } => Err(ParseError::TlvTruncated { offset: 0 }),
        Parsed::Complete { consumed, .. } => {
            let block = match buf[13] >> 4 {
                FAM_INET => 12,
                FAM_INET6 => 36,
                FAM_UNIX => 216,
                _ => 0,
            };
            Ok(Tlvs { header: &buf[..consumed], offset: V2_FIXED_LEN + block })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(ver_cmd);
        h.push(fam);
        h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    const TCP4_BLOCK: [u8; 12] = [192, 0, 2, 1, 198, 51, 100, 2, 0x1f, 0x90, 0x01, 0xbb];

    fn complete(buf: &[u8]) -> (ProxyInfo, usize) {
        match parse(buf) {
            Ok(Parsed::Complete { info, consumed }) => (info, consumed),
            other => panic!("expected a complete header, got {other:?}"),
        }
    }

    #[test]
    fn sample_is_sixty_bytes_of_azure() {
        let (info, consumed) = complete(&SAMPLE_V2_AZURE);
        assert_eq!(consumed, 60);
        assert_eq!(info.source, Some("[2001:db8::1]:50000".parse().unwrap()));
        assert_eq!(info.destination, Some("[2001:db8::2]:443".parse().unwrap()));
        assert_eq!(info.link_id, Some(LinkId::Azure(0x2200_0011)));
    }

    #[test]
    fn every_prefix_of_a_valid_header_is_incomplete_never_an_error() {
        let v1 = b"PROXY TCP6 2001:db8::1 2001:db8::2 50000 443\r\n".to_vec();
        for full in [SAMPLE_V2_AZURE.to_vec(), v1] {
            for cut in 0..full.len() {
                match parse(&full[..cut]) {
                    Ok(Parsed::Incomplete { needed }) => {
                        assert!(needed >= 1 && cut + needed <= full.len(), "cut {cut}: needed {needed}")
                    }
                    other => panic!("cut {cut}: {other:?}"),
                }
            }
            assert!(matches!(parse(&full), Ok(Parsed::Complete { consumed, .. }) if consumed == full.len()));
        }
    }

    #[test]
    fn azure_link_id_is_little_endian() {
        let mut body = TCP4_BLOCK.to_vec();
        body.extend_from_slice(&[0xee, 0, 5, 0x01, 0x78, 0x56, 0x34, 0x12]);
        assert_eq!(complete(&v2(0x21, 0x11, &body)).0.link_id, Some(LinkId::Azure(0x1234_5678)));
    }

    #[test]
    fn gcp_link_id_is_big_endian_without_subtype() {
        let mut body = TCP4_BLOCK.to_vec();
        body.extend_from_slice(&[0xe0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(complete(&v2(0x21, 0x11, &body)).0.link_id, Some(LinkId::Gcp(0x0102_0304_0506_0708)));
    }

    #[test]
    fn aws_link_id_is_ascii_after_subtype() {
        let mut body = TCP4_BLOCK.to_vec();
        body.extend_from_slice(&[0xea, 0, 9, 0x01]);
        body.extend_from_slice(b"vpce-abc");
        assert_eq!(complete(&v2(0x21, 0x11, &body)).0.link_id, Some(LinkId::Aws(Arc::from("vpce-abc"))));
    }

    #[test]
    fn vendor_values_of_the_wrong_shape_are_not_link_ids() {
        for tlv in [
            &[0xee, 0, 4, 0x01, 1, 2, 3][..],          // Azure LinkID too short
            &[0xee, 0, 6, 0x01, 1, 2, 3, 4, 5][..],    // too long
            &[0xee, 0, 5, 0x02, 1, 2, 3, 4][..],       // another subtype
            &[0xea, 0, 1, 0x01][..],                   // AWS, empty id
            &[0xea, 0, 3, 0x01, b'v', 0xff][..],       // AWS, not ASCII
            &[0xea, 0, 4, 0x02, b'a', b'b', b'c'][..], // AWS, another subtype
            &[0xe0, 0, 7, 1, 2, 3, 4, 5, 6, 7][..],    // GCP, 7 bytes
        ] {
            let mut body = TCP4_BLOCK.to_vec();
            body.extend_from_slice(tlv);
            assert_eq!(complete(&v2(0x21, 0x11, &body)).0.link_id, None, "{tlv:x?}");
        }
    }

    #[test]
    fn vendors_can_be_switched_off() {
        let opts = ParseOptions {
            vendors: LinkIdVendors { azure: false, ..LinkIdVendors::ALL },
            ..Default::default()
        };
        match parse_with(&SAMPLE_V2_AZURE, &opts) {
            Ok(Parsed::Complete { info, .. }) => assert_eq!(info.link_id, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn two_link_ids_are_a_conflict() {
        let mut body = TCP4_BLOCK.to_vec();
        body.extend_from_slice(&[0xee, 0, 5, 0x01, 1, 0, 0, 0]);
        body.extend_from_slice(&[0xe0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(parse(&v2(0x21, 0x11, &body)), Err(ParseError::LinkIdConflict));
        let mut body = TCP4_BLOCK.to_vec();
        body.extend_from_slice(&[0xee, 0, 5, 0x01, 1, 0, 0, 0]);
        body.extend_from_slice(&[0xee, 0, 5, 0x01, 1, 0, 0, 0]);
        assert_eq!(parse(&v2(0x21, 0x11, &body)), Err(ParseError::LinkIdConflict));
    }

    #[test]
    fn local_carries_no_addresses_and_no_link_id() {
        let mut body = TCP4_BLOCK.to_vec();
        body.extend_from_slice(&[0xee, 0, 5, 0x01, 1, 0, 0, 0]);
        let (info, _) = complete(&v2(0x20, 0x11, &body));
        assert_eq!((info.source, info.destination, info.link_id), (None, None, None));
    }

    #[test]
    fn crc32c_is_checked_and_a_flipped_bit_is_caught() {
        let mut body = TCP4_BLOCK.to_vec();
        body.extend_from_slice(&[0x03, 0, 4, 0, 0, 0, 0]);
        let mut header = v2(0x21, 0x11, &body);
        let crc = crc32c::crc32c(&header);
        let at = header.len() - 4;
        header[at..].copy_from_slice(&crc.to_be_bytes());
        complete(&header);
        header[17] ^= 1; // a source address bit
        assert!(matches!(parse(&header), Err(ParseError::Crc32c { .. })));
    }

    #[test]
    fn crc32c_of_the_wrong_size_or_twice_is_refused() {
        let mut body = TCP4_BLOCK.to_vec();
        body.extend_from_slice(&[0x03, 0, 3, 0, 0, 0]);
        assert!(matches!(parse(&v2(0x21, 0x11, &body)), Err(ParseError::TlvMalformed { kind: 0x03, .. })));
    }

    #[test]
    fn unique_id_up_to_128_bytes() {
        let mut body = TCP4_BLOCK.to_vec();
        body.extend_from_slice(&[0x05, 0, 128]);
        body.extend_from_slice(&[7; 128]);
        assert_eq!(complete(&v2(0x21, 0x11, &body)).0.unique_id.as_deref(), Some(&[7u8; 128][..]));
        let mut body = TCP4_BLOCK.to_vec();
        body.extend_from_slice(&[0x05, 0, 129]);
        body.extend_from_slice(&[7; 129]);
        assert!(matches!(parse(&v2(0x21, 0x11, &body)), Err(ParseError::TlvMalformed { kind: 0x05, .. })));
    }

    #[test]
    fn ssl_sub_tlvs_must_fit() {
        let mut body = TCP4_BLOCK.to_vec();
        body.extend_from_slice(&[0x20, 0, 8, 0x01, 0, 0, 0, 0, 0x21, 0, 9]);
        assert_eq!(parse(&v2(0x21, 0x11, &body)), Err(ParseError::TlvTruncated { offset: 0 }));
        let mut body = TCP4_BLOCK.to_vec();
        body.extend_from_slice(&[0x20, 0, 4, 0x01, 0, 0, 0]);
        assert!(matches!(parse(&v2(0x21, 0x11, &body)), Err(ParseError::TlvMalformed { kind: 0x20, .. })));
    }

    #[test]
    fn length_cap_is_configurable_and_checked_before_the_body_arrives() {
        // 12 address bytes and 63 empty type-0 TLVs.
        let header = v2(0x21, 0x11, &[0; 201]);
        let opts = ParseOptions { max_v2_len: 100, ..Default::default() };
        assert_eq!(parse_with(&header[..16], &opts), Err(ParseError::V2TooLong { len: 201, max: 100 }));
        assert!(matches!(parse(&header), Ok(Parsed::Complete { consumed: 217, .. })));
    }

    #[test]
    fn datagram_and_unspec_proxy_are_refused() {
        assert_eq!(parse(&v2(0x21, 0x12, &TCP4_BLOCK)), Err(ParseError::V2Unsupported(0x12)));
        assert_eq!(parse(&v2(0x21, 0x10, &TCP4_BLOCK)), Err(ParseError::V2Unsupported(0x10)));
        assert_eq!(parse(&v2(0x21, 0x41, &TCP4_BLOCK)), Err(ParseError::V2Family(0x41)));
    }

    #[test]
    fn v4_mapped_v2_addresses_are_folded() {
        let mut body = vec![0; 36];
        body[10..16].copy_from_slice(&[0xff, 0xff, 10, 0, 0, 9]);
        body[26..32].copy_from_slice(&[0xff, 0xff, 10, 0, 0, 1]);
        body[32..36].copy_from_slice(&[0x30, 0x39, 0x00, 0x50]);
        let (info, _) = complete(&v2(0x21, 0x21, &body));
        assert_eq!(info.source, Some("10.0.0.9:12345".parse().unwrap()));
        assert_eq!(info.destination, Some("10.0.0.1:80".parse().unwrap()));
    }

    #[test]
    fn v1_ports_and_fields() {
        let (info, _) = complete(b"PROXY TCP4 1.2.3.4 5.6.7.8 0 65535\r\n");
        assert_eq!(info.source.map(|s| s.port()), Some(0));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 1\r\n"), Err(ParseError::V1Port(Side::Source)));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 -1\r\n"), Err(ParseError::V1Port(Side::Destination)));
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"),
            Err(ParseError::V1Malformed("missing destination port"))
        );
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4\r\n"),
            Err(ParseError::V1Malformed("missing destination address"))
        );
        assert_eq!(parse(b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"), Err(ParseError::V1UnknownProtocol));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r"), Err(ParseError::V1NoCrlf));
        assert!(matches!(parse(b"PROXY UNKNOWN \xff\x01 x\r\n"), Ok(Parsed::Complete { consumed: 20, .. })));
        assert_eq!(parse(b"PROXY UNKNOWNX\r\n"), Err(ParseError::V1UnknownProtocol));
    }

    #[test]
    fn only_the_first_header_is_consumed() {
        let mut two = SAMPLE_V2_AZURE.to_vec();
        two.extend_from_slice(b"PROXY UNKNOWN\r\n");
        assert_eq!(complete(&two).1, 60);
    }

    #[test]
    fn tlv_iterator_reports_offsets() {
        let mut body = TCP4_BLOCK.to_vec();
        body.extend_from_slice(&[0x04, 0, 2, 0, 0, 0x01, 0, 2, b'h', b'2']);
        let header = v2(0x21, 0x11, &body);
        let all: Vec<_> = tlvs(&header).unwrap().map(Result::unwrap).collect();
        assert_eq!(all.len(), 2);
        assert_eq!((all[1].kind, all[1].value, all[1].offset), (tlv::ALPN, &b"h2"[..], 33));
        assert_eq!(tlvs(b"PROXY UNKNOWN\r\n").err(), Some(ParseError::NotProxy));
    }
}
