//! The authority of a request, parsed and normalised without allocating.
//!
//! [`RequestHost::parse`] reads one authority (`host[:port]`) as sent in a `Host` header, an absolute-form
//! request target or an HTTP/2 `:authority`, checks it against the host grammar of RFC 3986 §3.2.2 (as
//! referenced by RFC 9110 §4.2 and §7.2) and normalises it into a fixed stack buffer:
//!
//! - ASCII letters are lower-cased; bytes outside ASCII are refused (send A-labels, `xn--…`);
//! - one trailing dot is removed (`example.com.` is `example.com`), a second one is an empty label;
//! - the port is split off and parsed (`host:` with an empty port is the same as no port, RFC 3986 §6.2.3);
//! - names longer than 253 octets, labels longer than 63 octets and empty labels are refused;
//! - RFC 3986 allows percent-encoding and sub-delimiters (`!$&'()*+,;=`) in a reg-name; no DNS name holds
//!   them, and decoding them would open a second spelling of every name, so they are refused too;
//! - IPv4 literals (dotted quad) and bracketed IPv6 literals are told apart from names. A name whose last
//!   label is numeric (`127.1`, `0x7f.1`, `2130706433`) is not a dotted quad but is read as an address by
//!   many resolvers and URL parsers: it is refused rather than guessed at;
//! - userinfo (`user@host`) is refused (RFC 9110 §4.2.4 calls it an error), IPv6 zone identifiers and
//!   `IPvFuture` literals are refused.
//!
//! [`request_host`] picks the authority of a whole request: the target's authority (absolute-form, or
//! HTTP/2 `:authority`) when present, else the `Host` header; both present and different, several `Host`
//! headers, or no `Host` header on HTTP/1.1 are errors. Forwarded headers (`X-Forwarded-Host`, `Forwarded:
//! host=`) are never read.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use http::{Request, Version, header};

/// The longest host name accepted, in octets, without a trailing dot (RFC 1035 §2.3.4 as used by DNS
/// resolvers: 255 octets on the wire are 253 in text).
pub const MAX_NAME_LEN: usize = 253;

/// The longest label accepted, in octets (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// Why an authority could not be read. Every variant but [`AuthorityError::NoHost`] answers 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// An HTTP/1.1 (or later) request without a `Host` header, or an HTTP/2 request with neither
    /// `:authority` nor `Host` (RFC 9112 §3.2, RFC 9113 §8.3.1).
    #[error("the request has no Host header")]
    MissingHost,
    /// An HTTP/1.0 request naming no host at all: not malformed, but it names no host that is served (421).
    #[error("the request names no host")]
    NoHost,
    /// Several `Host` headers (RFC 9112 §3.2).
    #[error("the request has {0} Host headers")]
    MultipleHost(usize),
    /// The request target (absolute-form or `:authority`) and the `Host` header name different authorities.
    #[error("the request target names {target:?} but the Host header names {header:?}")]
    Mismatch {
        /// The authority of the request target (lossy, at most 256 characters).
        target: String,
        /// The `Host` header (lossy, at most 256 characters).
        header: String,
    },
    /// An empty host.
    #[error("the host is empty")]
    Empty,
    /// A byte outside ASCII: host names travel as A-labels (`xn--bcher-kva.example`).
    #[error("the host contains a byte outside ASCII (send A-labels such as xn--bcher-kva.example)")]
    NonAscii,
    /// Userinfo (`user@host`) in the authority.
    #[error("the authority contains userinfo ('@')")]
    UserInfo,
    /// A character outside the RFC 3986 host grammar.
    #[error("the host contains {0:?}, outside the host grammar")]
    InvalidChar(char),
    /// A character the RFC 3986 reg-name grammar allows but no DNS name holds (percent-encoding,
    /// sub-delimiters, `~`).
    #[error("the host contains {0:?}, which no DNS name holds")]
    NotDnsName(char),
    /// An empty label (`a..b`, `.a`, or two trailing dots).
    #[error("the host contains an empty label")]
    EmptyLabel,
    /// A label longer than [`MAX_LABEL_LEN`] octets.
    #[error("a label of the host is longer than 63 octets")]
    LabelTooLong,
    /// A name longer than [`MAX_NAME_LEN`] octets.
    #[error("the host is longer than 253 octets")]
    NameTooLong,
    /// A port that is not a decimal number up to 65535.
    #[error("the port is not a number from 0 to 65535")]
    InvalidPort,
    /// A bracketed literal that is not a plain IPv6 address (zone identifiers and `IPvFuture` are refused).
    #[error("the IP literal is not a plain IPv6 address")]
    InvalidIpLiteral,
    /// A name whose last label is numeric but which is not a dotted-quad IPv4 address.
    #[error("the host ends in a numeric label but is not a dotted-quad IPv4 address")]
    NumericName,
}

impl AuthorityError {
    /// The stable code used in denials (`host.malformed`, `host.missing`, `host.mismatch`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            AuthorityError::MissingHost => "host.missing",
            AuthorityError::NoHost => "host.none",
            AuthorityError::MultipleHost(_) => "host.multiple",
            AuthorityError::Mismatch { .. } => "host.mismatch",
            _ => "host.malformed",
        }
    }
}

/// A parsed, normalised request authority: a host name or an IP literal, and the port if one was named.
///
/// Lives on the stack (a 253-byte buffer); parsing and matching allocate nothing.
#[derive(Clone, Copy)]
pub struct RequestHost {
    buf: [u8; MAX_NAME_LEN],
    len: u8,
    ip: Option<IpAddr>,
    port: Option<u16>,
}

impl RequestHost {
    /// Parses and normalises one authority (`host`, `host:port`, `1.2.3.4:80`, `[::1]:8443`).
    ///
    /// # Errors
    /// An [`AuthorityError`] telling which rule of the host grammar the input breaks.
    #[inline]
    pub fn parse(input: &[u8]) -> Result<RequestHost, AuthorityError> {
        // The common case runs one pass; every error is re-examined by `precedence` so that non-ASCII bytes
        // and userinfo are reported as such wherever they appear.
        let mut out = RequestHost::empty();
        RequestHost::parse_into(input, &mut out)?;
        Ok(out)
    }

    /// An empty host, to parse into.
    #[inline]
    pub(crate) fn empty() -> RequestHost {
        RequestHost { buf: [0; MAX_NAME_LEN], len: 0, ip: None, port: None }
    }

    /// [`RequestHost::parse`] into `out` (which must be [`RequestHost::empty`]), without moving the buffer.
    #[inline]
    pub(crate) fn parse_into(input: &[u8], out: &mut RequestHost) -> Result<(), AuthorityError> {
        RequestHost::parse_inner(input, out).map_err(|e| precedence(input, e))
    }

    #[inline]
    fn parse_inner(input: &[u8], out: &mut RequestHost) -> Result<(), AuthorityError> {
        if input.first() == Some(&b'[') {
            let close = input.iter().position(|&b| b == b']').ok_or(AuthorityError::InvalidIpLiteral)?;
            out.port = match &input[close + 1..] {
                [] => None,
                [b':', port @ ..] => parse_port(port)?,
                _ => return Err(AuthorityError::InvalidIpLiteral),
            };
            let inner = &input[1..close];
            if inner.first().is_some_and(|b| b.eq_ignore_ascii_case(&b'v')) || inner.contains(&b'%') {
                return Err(AuthorityError::InvalidIpLiteral);
            }
            let text = std::str::from_utf8(inner).map_err(|_| AuthorityError::InvalidIpLiteral)?;
            let ip = Ipv6Addr::from_str(text).map_err(|_| AuthorityError::InvalidIpLiteral)?;
            out.ip = Some(IpAddr::V6(ip));
            return Ok(());
        }
        let scan = scan_name(input, &mut out.buf)?;
        if let Some(&stop) = input.get(scan.consumed) {
            if stop != b':' {
                return Err(refused_byte(stop));
            }
            let port = &input[scan.consumed + 1..];
            out.port = parse_port(port).map_err(|e| {
                // A second colon is an unbracketed IPv6 address or a second port, not a bad port.
                if port.contains(&b':') { AuthorityError::InvalidChar(':') } else { e }
            })?;
        }
        let len = scan.len;
        if len == 0 {
            return Err(AuthorityError::Empty);
        }
        out.len = len as u8;
        // A last label starting with a digit may make the whole name an address (`10.0.0.1`) or a spelling
        // of one that resolvers accept (`127.1`, `0x7f.1`): dotted quads are addresses, the rest refused.
        let last = &out.buf[scan.last_label..len];
        if last.first().is_some_and(u8::is_ascii_digit)
            && (last.iter().all(u8::is_ascii_digit) || last.starts_with(b"0x"))
        {
            let text = std::str::from_utf8(&out.buf[..len]).map_err(|_| AuthorityError::NumericName)?;
            let ip = Ipv4Addr::from_str(text).map_err(|_| AuthorityError::NumericName)?;
            out.ip = Some(IpAddr::V4(ip));
            out.len = 0;
        }
        Ok(())
    }

    /// The normalised name's bytes (empty for IP literals), for allocation-free lookups.
    #[inline]
    pub(crate) fn name_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// The normalised host name, or `None` for an IP literal.
    pub fn name(&self) -> Option<&str> {
        match self.ip {
            Some(_) => None,
            // The buffer holds only bytes checked by `scan_name` (ASCII), so this cannot fail.
            None => std::str::from_utf8(&self.buf[..usize::from(self.len)]).ok(),
        }
    }

    /// The IP address, for an IPv4 literal or a bracketed IPv6 literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// The port, if the authority named one (an empty port counts as none).
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

impl PartialEq for RequestHost {
    fn eq(&self, other: &Self) -> bool {
        self.ip == other.ip && self.port == other.port && self.name() == other.name()
    }
}

impl Eq for RequestHost {}

impl fmt::Display for RequestHost {
    /// The normalised host without its port: `example.com`, `10.0.0.1`, `[::1]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ip, self.name()) {
            (Some(IpAddr::V6(ip)), _) => write!(f, "[{ip}]"),
            (Some(IpAddr::V4(ip)), _) => write!(f, "{ip}"),
            (None, Some(name)) => f.write_str(name),
            (None, None) => Ok(()),
        }
    }
}

impl fmt::Debug for RequestHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestHost")
            .field("host", &format_args!("{self}"))
            .field("port", &self.port)
            .finish()
    }
}

/// Parses a port: decimal digits, at most 65535. Empty means "no port" (RFC 3986 §6.2.3).
pub(crate) fn parse_port(digits: &[u8]) -> Result<Option<u16>, AuthorityError> {
    if digits.is_empty() {
        return Ok(None);
    }
    if digits.len() > 5 {
        return Err(AuthorityError::InvalidPort);
    }
    let mut value: u32 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(AuthorityError::InvalidPort);
        }
        value = value * 10 + u32::from(b - b'0');
    }
    u16::try_from(value).map(Some).map_err(|_| AuthorityError::InvalidPort)
}

/// What [`scan_name`] read.
struct Scan {
    /// The length of the normalised name (without its trailing dot).
    len: usize,
    /// How many input bytes belong to the name (the trailing dot included); the next byte, if any, ends it.
    consumed: usize,
    /// Where the last label starts in the normalised name.
    last_label: usize,
}

/// Name bytes: `a-z 0-9 - _` map to themselves, `A-Z` to lower case, `.` to itself; everything else to 0.
const NAME_BYTE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = match c {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => c,
            b'A'..=b'Z' => c + 32,
            _ => 0,
        };
        b += 1;
    }
    table
};

/// Which error to report for a refused authority: bytes outside ASCII first, then userinfo, then the first
/// rule the scan found broken.
#[cold]
fn precedence(input: &[u8], found: AuthorityError) -> AuthorityError {
    if input.is_empty() {
        AuthorityError::Empty
    } else if !input.is_ascii() {
        AuthorityError::NonAscii
    } else if input.contains(&b'@') {
        AuthorityError::UserInfo
    } else {
        found
    }
}

/// The error for a byte that cannot be part of a name.
#[cold]
fn refused_byte(b: u8) -> AuthorityError {
    match b {
        b'%' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => {
            AuthorityError::NotDnsName(char::from(b))
        }
        b'@' => AuthorityError::UserInfo,
        b if !b.is_ascii() => AuthorityError::NonAscii,
        b => AuthorityError::InvalidChar(char::from(b)),
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Per byte of `x`: 0x80 where the byte is at least `k` (for bytes below 0x80 and `k` at most 0x80; the
/// lanes never borrow from each other).
#[inline]
fn swar_ge(x: u64, k: u8) -> u64 {
    ((x | HIGHS) - ONES * u64::from(k)) & HIGHS
}

/// Eight bytes of a name at once: the lower-cased bytes, how many leading bytes are name bytes (8 if
/// all), and a bit per byte for the dots among them.
#[inline]
fn swar_chunk(w: u64) -> (u64, usize, u64) {
    // Setting bit 0x20 maps `A-Z` onto `a-z` and nothing else into that range.
    let folded = w | (ONES * 0x20);
    let letter = swar_ge(folded, b'a') & !swar_ge(folded, b'z' + 1);
    let digit = swar_ge(w, b'0') & !swar_ge(w, b'9' + 1);
    // `-` and `.` are neighbours (0x2d, 0x2e); single bytes are one-wide ranges (cheaper than equality).
    let dot = swar_ge(w, b'.') & !swar_ge(w, b'.' + 1);
    let dash = swar_ge(w, b'-') & !swar_ge(w, b'.');
    let underscore = swar_ge(w, b'_') & !swar_ge(w, b'_' + 1);
    let valid = (letter | digit | dash | dot | underscore) & !w & HIGHS;
    let invalid = !valid & HIGHS;
    let take = if invalid == 0 { 8 } else { invalid.trailing_zeros() as usize / 8 };
    let keep = if take == 8 { u64::MAX } else { (1u64 << (take * 8)) - 1 };
    let dots = (((dot & keep) >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56;
    (w | (letter >> 2), take, dots)
}

/// Reads the reg-name at the start of `input` up to the first byte that is not a name byte, writing it
/// lower-cased (without one trailing dot) into `buf`, and checks its labels (none empty, none over 63
/// octets) and its length (at most 253 octets).
///
/// Names of up to 64 octets (nearly all) are read eight bytes at a time (SWAR: classification,
/// lower-casing and dot positions with word arithmetic, no table and no branch per byte), and their dots
/// kept in a bit mask, so that the label checks are a few bit operations.
#[inline]
fn scan_name(input: &[u8], buf: &mut [u8; MAX_NAME_LEN]) -> Result<Scan, AuthorityError> {
    let limit = input.len().min(64);
    let mut dots = 0u64;
    let mut i = 0usize;
    let mut ended = false;
    while i + 8 <= limit {
        let (lowered, take, chunk_dots) = swar_chunk(word_at(input, i));
        buf[i..i + 8].copy_from_slice(&lowered.to_le_bytes());
        dots |= chunk_dots << i;
        i += take;
        if take < 8 {
            ended = true;
            break;
        }
    }
    if !ended && i < limit {
        // Fewer than eight bytes left: read them into the low lanes of a word, zeros (not name bytes) above.
        let rest = limit - i;
        let w = if input.len() >= 8 {
            word_at(input, input.len() - 8) >> ((8 - rest) * 8)
        } else {
            input[i..].iter().rev().fold(0u64, |w, &b| w << 8 | u64::from(b))
        };
        let (lowered, take, chunk_dots) = swar_chunk(w);
        // A whole word fits (i < 64 here); the bytes past the name are never read.
        buf[i..i + 8].copy_from_slice(&lowered.to_le_bytes());
        dots |= chunk_dots << i;
        i += take.min(rest);
    }
    if i == 64 && input.len() > 64 && NAME_BYTE[usize::from(input[64])] != 0 {
        return scan_long_name(input, buf);
    }
    if i == 0 {
        return Ok(Scan { len: 0, consumed: 0, last_label: 0 });
    }
    // One trailing dot ends the name; any other dot must have a label on each side.
    let trailing = dots >> (i - 1) & 1 == 1;
    let len = if trailing { i - 1 } else { i };
    let inner = if trailing { dots & !(1u64 << (i - 1)) } else { dots };
    if len == 0 || inner & 1 == 1 || inner & (inner >> 1) != 0 || (trailing && inner >> (len - 1) & 1 == 1) {
        return Err(AuthorityError::EmptyLabel);
    }
    if inner == 0 && len > MAX_LABEL_LEN {
        return Err(AuthorityError::LabelTooLong);
    }
    let last_label = if inner == 0 { 0 } else { 64 - inner.leading_zeros() as usize };
    Ok(Scan { len, consumed: i, last_label })
}

/// The eight bytes of `input` at `at`, little-endian.
#[inline]
fn word_at(input: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&input[at..at + 8]);
    u64::from_le_bytes(w)
}

/// [`scan_name`] for names longer than 64 octets: a branch per dot, which long names can afford.
#[cold]
fn scan_long_name(input: &[u8], buf: &mut [u8; MAX_NAME_LEN]) -> Result<Scan, AuthorityError> {
    let mut label_start = 0usize;
    let mut prev_label_start = 0usize;
    let mut i = 0usize;
    while i < input.len() {
        let c = NAME_BYTE[usize::from(input[i])];
        if c == 0 {
            break;
        }
        if c == b'.' {
            if i == label_start {
                return Err(AuthorityError::EmptyLabel);
            }
            if i - label_start > MAX_LABEL_LEN {
                return Err(AuthorityError::LabelTooLong);
            }
            prev_label_start = label_start;
            label_start = i + 1;
        }
        if i < MAX_NAME_LEN {
            buf[i] = c;
        } else if i > MAX_NAME_LEN || c != b'.' {
            // Only a trailing dot may follow 253 octets.
            return Err(AuthorityError::NameTooLong);
        }
        i += 1;
    }
    let (len, last_label) = if input[i - 1] == b'.' {
        // One trailing dot: its label was checked when the dot was read.
        (i - 1, prev_label_start)
    } else {
        if i - label_start > MAX_LABEL_LEN {
            return Err(AuthorityError::LabelTooLong);
        }
        (i, label_start)
    };
    Ok(Scan { len, consumed: i, last_label })
}

/// The authority of a request: the target's authority (absolute-form or HTTP/2 `:authority`) when present,
/// else the `Host` header.
///
/// # Errors
/// - [`AuthorityError::MultipleHost`]: several `Host` headers;
/// - [`AuthorityError::Mismatch`]: the target and the `Host` header name different authorities (compared
///   after normalisation, ports included);
/// - [`AuthorityError::MissingHost`]: no `Host` header on HTTP/1.1, or nothing at all on HTTP/2 and later;
/// - [`AuthorityError::NoHost`]: an HTTP/1.0 request naming no host;
/// - any grammar error of [`RequestHost::parse`].
pub fn request_host<B>(req: &Request<B>) -> Result<RequestHost, AuthorityError> {
    host_of(req.uri(), req.version(), req.headers())
}

/// [`request_host`] on the parts of a request head.
pub(crate) fn host_of(
    uri: &http::Uri,
    version: Version,
    headers: &http::HeaderMap,
) -> Result<RequestHost, AuthorityError> {
    let mut out = RequestHost::empty();
    host_into(uri, version, headers, &mut out)?;
    Ok(out)
}

/// [`host_of`] into `out` (which must be [`RequestHost::empty`]), without moving the name buffer (a
/// request's hot path). On error, `out` holds nothing meaningful.
pub(crate) fn host_into(
    uri: &http::Uri,
    version: Version,
    headers: &http::HeaderMap,
    out: &mut RequestHost,
) -> Result<(), AuthorityError> {
    let mut lines = headers.get_all(header::HOST).iter();
    let host_header = lines.next();
    let more = if host_header.is_some() { lines.count() } else { 0 };
    host_from(uri, version, host_header, more, out)
}

/// The authority of the request target and the first `Host` line (`more` lines after it).
fn host_from(
    uri: &http::Uri,
    version: Version,
    host_header: Option<&http::HeaderValue>,
    more: usize,
    out: &mut RequestHost,
) -> Result<(), AuthorityError> {
    if more > 0 {
        return Err(AuthorityError::MultipleHost(more + 1));
    }
    let target = uri.authority();
    match (target, host_header) {
        (Some(target), Some(header)) => {
            RequestHost::parse_into(target.as_str().as_bytes(), out)?;
            let from_header = RequestHost::parse(header.as_bytes())?;
            if *out != from_header {
                return Err(AuthorityError::Mismatch {
                    target: lossy(target.as_str().as_bytes()),
                    header: lossy(header.as_bytes()),
                });
            }
            Ok(())
        }
        (None, Some(header)) => RequestHost::parse_into(header.as_bytes(), out),
        (Some(_), None) if version == Version::HTTP_11 => Err(AuthorityError::MissingHost),
        (Some(target), None) => RequestHost::parse_into(target.as_str().as_bytes(), out),
        (None, None) if version <= Version::HTTP_10 => Err(AuthorityError::NoHost),
        (None, None) => Err(AuthorityError::MissingHost),
    }
}

/// A printable, bounded copy of untrusted bytes for error messages.
pub(crate) fn lossy(bytes: &[u8]) -> String {
    let bytes = &bytes[..bytes.len().min(256)];
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(input: &str) -> Result<(String, Option<u16>), AuthorityError> {
        let h = RequestHost::parse(input.as_bytes())?;
        Ok((h.to_string(), h.port()))
    }

    #[test]
    fn grammar_table() {
        use AuthorityError::*;
        // (input, expected normalised host and port, or the error). Grammar per RFC 3986 §3.2.2 / §3.2.3
        // and RFC 9110 §4.2.3 / §7.2; the DNS limits per RFC 1035 §2.3.4.
        let long_label = "a".repeat(63);
        let too_long_label = "a".repeat(64);
        let name_253 = format!("{0}.{0}.{0}.{1}", long_label, "a".repeat(61));
        let name_254 = format!("{0}.{0}.{0}.{1}", long_label, "a".repeat(62));
        let ok: &[(&str, &str, Option<u16>)] = &[
            ("example.com", "example.com", None),
            ("EXAMPLE.Com", "example.com", None),
            ("example.com.", "example.com", None),
            ("Example.COM.:8443", "example.com", Some(8443)),
            ("example.com:", "example.com", None),
            ("example.com:0080", "example.com", Some(80)),
            ("example.com:65535", "example.com", Some(65535)),
            ("xn--bcher-kva.example", "xn--bcher-kva.example", None),
            ("_acme-challenge.example", "_acme-challenge.example", None),
            ("localhost", "localhost", None),
            ("a-1.b_2.c3", "a-1.b_2.c3", None),
            ("10.0.0.1", "10.0.0.1", None),
            ("10.0.0.1:80", "10.0.0.1", Some(80)),
            ("10.0.0.1.", "10.0.0.1", None),
            ("[::1]", "[::1]", None),
            ("[::1]:443", "[::1]", Some(443)),
            ("[2001:DB8::1]", "[2001:db8::1]", None),
            ("[::ffff:10.0.0.1]", "[::ffff:10.0.0.1]", None),
            ("123.example", "123.example", None),
            ("example.123a", "example.123a", None),
        ];
        for (input, host, port) in ok {
            assert_eq!(name(input), Ok((host.to_string(), *port)), "{input}");
        }
        assert_eq!(name(&name_253).map(|(h, _)| h.len()), Ok(253));
        assert_eq!(name(&format!("{name_253}.")).map(|(h, _)| h.len()), Ok(253));
        assert_eq!(name(&format!("{long_label}.example")).map(|(h, _)| h.len()), Ok(71));

        let bad: &[(&str, AuthorityError)] = &[
            ("", Empty),
            (":80", Empty),
            (".", EmptyLabel),
            ("example.com..", EmptyLabel),
            ("a..example", EmptyLabel),
            (".example", EmptyLabel),
            ("example.com:80:80", InvalidChar(':')),
            ("::1", InvalidChar(':')),
            ("example.com:http", InvalidPort),
            ("example.com:65536", InvalidPort),
            ("example.com:000080", InvalidPort),
            ("example.com:-1", InvalidPort),
            ("user@example.com", UserInfo),
            ("user:pw@example.com:80", UserInfo),
            ("exa mple.com", InvalidChar(' ')),
            ("example.com/", InvalidChar('/')),
            ("example.com?", InvalidChar('?')),
            ("example.com#", InvalidChar('#')),
            ("exa\"mple", InvalidChar('"')),
            ("exa\\mple", InvalidChar('\\')),
            ("exa\tmple", InvalidChar('\t')),
            ("exa\0mple", InvalidChar('\0')),
            ("%65xample.com", NotDnsName('%')),
            ("*.example.com", NotDnsName('*')),
            ("a+b.example", NotDnsName('+')),
            ("a~b.example", NotDnsName('~')),
            ("a;b.example", NotDnsName(';')),
            ("a=b.example", NotDnsName('=')),
            ("bücher.example", NonAscii),
            ("[::1", InvalidIpLiteral),
            ("[::1]x", InvalidIpLiteral),
            ("[::1]:99999", InvalidPort),
            ("[fe80::1%25eth0]", InvalidIpLiteral),
            ("[v1.fe80::a+en1]", InvalidIpLiteral),
            ("[10.0.0.1]", InvalidIpLiteral),
            ("[example.com]", InvalidIpLiteral),
            ("127.1", NumericName),
            ("2130706433", NumericName),
            ("0x7f.0.0.1", NumericName),
            ("example.0x10", NumericName),
            ("127.000.000.001", NumericName),
            ("010.0.0.1", NumericName),
            ("256.0.0.1", NumericName),
            ("1.2.3.4.5", NumericName),
            ("example.42", NumericName),
        ];
        for (input, err) in bad {
            assert_eq!(name(input).as_ref(), Err(err), "{input:?}");
        }
        assert_eq!(name(&too_long_label), Err(LabelTooLong));
        assert_eq!(name(&format!("{too_long_label}.example")), Err(LabelTooLong));
        assert_eq!(name(&name_254), Err(NameTooLong));
        assert_eq!(RequestHost::parse(b"exa\xffmple"), Err(NonAscii));
    }

    fn req(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn request_authority_table() {
        use AuthorityError::*;
        let v11 = Version::HTTP_11;
        let host = |r: &Request<()>| request_host(r).map(|h| (h.to_string(), h.port()));
        let ok = |s: &str, p: Option<u16>| Ok((s.to_string(), p));

        assert_eq!(host(&req(v11, "/", &["Api.Example."])), ok("api.example", None));
        assert_eq!(host(&req(v11, "http://api.example/x", &["API.example"])), ok("api.example", None));
        assert_eq!(host(&req(v11, "/", &[])), Err(MissingHost));
        assert_eq!(host(&req(v11, "http://api.example/", &[])), Err(MissingHost));
        assert_eq!(host(&req(v11, "/", &["a.example", "a.example"])), Err(MultipleHost(2)));
        assert!(matches!(host(&req(v11, "http://a.example/", &["b.example"])), Err(Mismatch { .. })));
        assert!(matches!(host(&req(v11, "http://a.example:81/", &["a.example"])), Err(Mismatch { .. })));
        assert_eq!(host(&req(Version::HTTP_10, "/", &[])), Err(NoHost));
        assert_eq!(host(&req(Version::HTTP_10, "http://a.example/", &[])), ok("a.example", None));
        assert_eq!(host(&req(Version::HTTP_2, "https://a.example:8443/", &[])), ok("a.example", Some(8443)));
        assert_eq!(host(&req(Version::HTTP_2, "/", &[])), Err(MissingHost));
        assert_eq!(host(&req(Version::HTTP_2, "/", &["a.example"])), ok("a.example", None));
        // The target's userinfo is an error even if the host part agrees with the Host header.
        assert_eq!(host(&req(v11, "http://u@a.example/", &["a.example"])), Err(UserInfo));
        // Forwarded host headers are never read.
        let mut r = req(v11, "/", &["a.example"]);
        r.headers_mut().insert("x-forwarded-host", "b.example".parse().unwrap());
        r.headers_mut().insert("forwarded", "host=b.example".parse().unwrap());
        assert_eq!(host(&r), ok("a.example", None));
    }

    /// A plain byte-by-byte reading of the same grammar, to check the word-at-a-time scanner against.
    fn reference(input: &[u8]) -> Option<(Vec<u8>, Option<u16>, bool)> {
        if input.is_empty() || !input.is_ascii() || input.contains(&b'@') {
            return None;
        }
        let is_name = |b: &u8| b.is_ascii_alphanumeric() || b"-_.".contains(b);
        let end = input.iter().position(|b| !is_name(b)).unwrap_or(input.len());
        let (host, rest) = input.split_at(end);
        let port = match rest {
            [] => None,
            [b':'] => None,
            [b':', digits @ ..] if digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit) => {
                Some(u16::try_from(std::str::from_utf8(digits).ok()?.parse::<u32>().ok()?).ok()?)
            }
            _ => return None,
        };
        let name = host.strip_suffix(b".").unwrap_or(host);
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return None;
        }
        if name.split(|&b| b == b'.').any(|l| l.is_empty() || l.len() > MAX_LABEL_LEN) {
            return None;
        }
        let lower = name.to_ascii_lowercase();
        let last = lower.rsplit(|&b| b == b'.').next()?;
        if last[0].is_ascii_digit() && (last.iter().all(u8::is_ascii_digit) || last.starts_with(b"0x")) {
            std::str::from_utf8(&lower).ok()?.parse::<Ipv4Addr>().ok()?;
            return Some((Vec::new(), port, true));
        }
        Some((lower, port, false))
    }

    fn ours(input: &[u8]) -> Option<(Vec<u8>, Option<u16>, bool)> {
        RequestHost::parse(input).ok().map(|h| (h.name_bytes().to_vec(), h.port(), h.ip().is_some()))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// The word-at-a-time scanner agrees with a byte-by-byte reading on short and long inputs over an
        /// alphabet rich in edge cases (dots, colons, case, bytes just outside the letter and digit ranges).
        #[test]
        fn scanner_agrees_with_reference(
            input in proptest::collection::vec(
                proptest::sample::select(b"aZz09-_.:.:@/[`{~%*\x80 A".to_vec()), 0..90),
        ) {
            proptest::prop_assert_eq!(ours(&input), reference(&input));
        }

        #[test]
        fn scanner_agrees_on_names(
            labels in proptest::collection::vec("[a-zA-Z0-9_-]{0,70}", 1..8),
            trailing in proptest::prelude::any::<bool>(),
            port in proptest::option::of(0u32..70000),
        ) {
            let mut s = labels.join(".");
            if trailing {
                s.push('.');
            }
            if let Some(port) = port {
                s.push_str(&format!(":{port}"));
            }
            proptest::prop_assert_eq!(ours(s.as_bytes()), reference(s.as_bytes()), "{}", s);
        }
    }

    #[test]
    fn display_and_eq() {
        let a = RequestHost::parse(b"A.example.:80").unwrap();
        let b = RequestHost::parse(b"a.example:80").unwrap();
        let c = RequestHost::parse(b"a.example").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(format!("{a:?}"), "RequestHost { host: a.example, port: Some(80) }");
        assert_eq!(RequestHost::parse(b"[::1]").unwrap().name(), None);
    }
}
