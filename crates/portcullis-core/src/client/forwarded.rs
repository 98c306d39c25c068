//! Parsing of `X-Forwarded-For` entries and RFC 7239 `Forwarded` headers.
//!
//! The parsers here never allocate on the request path: [`scan_forwarded`] validates a `Forwarded` line and
//! reports each pair as borrowed slices, [`parse_node`] and [`parse_xff_entry`] turn one entry into an
//! address. [`parse_forwarded`] builds an owned structure for tooling and tests.
//!
//! Policy (stricter than some proxies, on purpose): an entry that is not an address (garbage, `unknown`,
//! an obfuscated `_identifier`, an IPv6 zone id, a port out of range) is an error, never skipped, so that a
//! walk over the header can never attribute a request to a proxy or to an arbitrary entry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::client::addr::fold_ip;

/// Why a forwarded entry is not usable as a client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The entry is empty.
    #[error("empty entry")]
    Empty,
    /// `unknown`: the proxy did not know the client.
    #[error("`unknown` identifier")]
    Unknown,
    /// An obfuscated identifier (`_hidden`).
    #[error("obfuscated identifier")]
    Obfuscated,
    /// Not an IPv4 address, a bracketed IPv6 address or either with a port.
    #[error("not an IP address (with an optional port)")]
    Garbage,
}

/// A `Forwarded` header that does not follow RFC 7239's grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed Forwarded header at byte {index}")]
pub struct SyntaxError {
    /// The byte offset of the first offending byte (the length of the input for an unexpected end).
    pub index: usize,
}

/// One `name=value` pair of a `Forwarded` element, as found in the header (borrowed, not unescaped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair<'a> {
    /// The index of the element (comma-separated) within the line, from 0.
    pub element: usize,
    /// The parameter name as written (compare case-insensitively).
    pub name: &'a [u8],
    /// The value without its quotes; still escaped if [`escaped`](Pair::escaped).
    pub value: &'a [u8],
    /// Whether the value was a quoted-string.
    pub quoted: bool,
    /// Whether the quoted value holds quoted-pairs (`\x`).
    pub escaped: bool,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Validates one `Forwarded` header line (RFC 7239 section 4, with optional whitespace around `,` and `;`)
/// and calls `pair` for every pair, left to right. Returns the number of elements.
///
/// # Errors
/// [`SyntaxError`] with the offset of the first byte that breaks the grammar.
pub fn scan_forwarded<'a>(line: &'a [u8], mut pair: impl FnMut(Pair<'a>)) -> Result<usize, SyntaxError> {
    let n = line.len();
    let mut i = 0;
    let mut element = 0;
    let err = |index: usize| SyntaxError { index };
    loop {
        // A pair: token "=" value.
        let name_start = i;
        while i < n && is_tchar(line[i]) {
            i += 1;
        }
        if i == name_start {
            return Err(err(i));
        }
        let name = &line[name_start..i];
        if i >= n {
            return Err(err(n));
        }
        if line[i] != b'=' {
            return Err(err(i));
        }
        i += 1;
        if i >= n {
            return Err(err(n));
        }
        let (value, quoted, escaped);
        if line[i] == b'"' {
            i += 1;
            let start = i;
            let mut esc = false;
            loop {
                if i >= n {
                    return Err(err(n));
                }
                match line[i] {
                    b'"' => break,
                    b'\\' => {
                        esc = true;
                        if i + 1 >= n {
                            return Err(err(n));
                        }
                        let c = line[i + 1];
                        if !(c == b'\t' || c == b' ' || (0x21..=0x7e).contains(&c) || c >= 0x80) {
                            return Err(err(i + 1));
                        }
                        i += 2;
                    }
                    c if c == b'\t'
                        || c == b' '
                        || c == 0x21
                        || (0x23..=0x5b).contains(&c)
                        || (0x5d..=0x7e).contains(&c)
                        || c >= 0x80 =>
                    {
                        i += 1
                    }
                    _ => return Err(err(i)),
                }
            }
            value = &line[start..i];
            i += 1; // closing quote
            quoted = true;
            escaped = esc;
        } else {
            let start = i;
            while i < n && is_tchar(line[i]) {
                i += 1;
            }
            if i == start {
                return Err(err(i));
            }
            value = &line[start..i];
            quoted = false;
            escaped = false;
        }
        pair(Pair { element, name, value, quoted, escaped });
        if i >= n {
            return Ok(element + 1);
        }
        // Separator with optional whitespace around it.
        while i < n && is_ows(line[i]) {
            i += 1;
        }
        if i >= n {
            return Err(err(n));
        }
        match line[i] {
            b';' => {}
            b',' => element += 1,
            _ => return Err(err(i)),
        }
        i += 1;
        while i < n && is_ows(line[i]) {
            i += 1;
        }
        if i >= n {
            return Err(err(n));
        }
    }
}

/// An owned, unescaped `Forwarded` element: its pairs with lower-cased names, in order.
pub type Element = Vec<(String, String)>;

/// Parses a `Forwarded` header line into owned elements (names lower-cased, quoted-strings unescaped).
/// For tooling and tests; the client-address layer uses the allocation-free [`scan_forwarded`].
///
/// ```
/// use portcullis_core::client::forwarded::parse_forwarded;
/// let els = parse_forwarded(r#"for=192.0.2.60;proto=http, For="[2001:db8::1]:4711""#).unwrap();
/// assert_eq!(els[1][0], ("for".to_string(), "[2001:db8::1]:4711".to_string()));
/// ```
///
/// # Errors
/// [`SyntaxError`] as [`scan_forwarded`].
pub fn parse_forwarded(line: &str) -> Result<Vec<Element>, SyntaxError> {
    let mut out: Vec<Element> = Vec::new();
    scan_forwarded(line.as_bytes(), |p| {
        if out.len() <= p.element {
            out.push(Vec::new());
        }
        let mut v = Vec::with_capacity(p.value.len());
        let mut k = 0;
        while k < p.value.len() {
            if p.escaped && p.value[k] == b'\\' && k + 1 < p.value.len() {
                k += 1;
            }
            v.push(p.value[k]);
            k += 1;
        }
        let name = String::from_utf8_lossy(p.name).to_ascii_lowercase();
        out[p.element].push((name, String::from_utf8_lossy(&v).into_owned()));
    })?;
    Ok(out)
}

fn parse_port(s: &str) -> Result<u16, EntryError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EntryError::Garbage);
    }
    s.parse::<u16>().map_err(|_| EntryError::Garbage)
}

/// Parses a forwarded node (`Forwarded`'s `for=` value, unquoted, or one `X-Forwarded-For` entry):
/// `a.b.c.d`, `a.b.c.d:port`, `[v6]`, `[v6]:port`, or (X-Forwarded-For only in practice) a bare `v6`.
/// The address is folded ([`fold_ip`]); the port is checked and dropped.
///
/// ```
/// use portcullis_core::client::forwarded::{parse_node, EntryError};
/// assert_eq!(parse_node("[2001:db8::1]:443"), Ok("2001:db8::1".parse().unwrap()));
/// assert_eq!(parse_node("::ffff:10.0.0.1"), Ok("10.0.0.1".parse().unwrap()));
/// assert_eq!(parse_node("_hidden"), Err(EntryError::Obfuscated));
/// assert_eq!(parse_node("fe80::1%eth0"), Err(EntryError::Garbage));
/// ```
///
/// # Errors
/// [`EntryError`] naming why the node is not an address.
pub fn parse_node(s: &str) -> Result<IpAddr, EntryError> {
    if s.is_empty() {
        return Err(EntryError::Empty);
    }
    if s.eq_ignore_ascii_case("unknown") {
        return Err(EntryError::Unknown);
    }
    if s.starts_with('_') {
        return Err(EntryError::Obfuscated);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or(EntryError::Garbage)?;
        let ip: Ipv6Addr = inside.parse().map_err(|_| EntryError::Garbage)?;
        if !after.is_empty() {
            let port = after.strip_prefix(':').ok_or(EntryError::Garbage)?;
            parse_port(port)?;
        }
        return Ok(fold_ip(IpAddr::V6(ip)));
    }
    match s.bytes().filter(|b| *b == b':').count() {
        0 => s.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| EntryError::Garbage),
        1 => {
            let (host, port) = s.split_once(':').ok_or(EntryError::Garbage)?;
            let ip: Ipv4Addr = host.parse().map_err(|_| EntryError::Garbage)?;
            parse_port(port)?;
            Ok(IpAddr::V4(ip))
        }
        _ => s.parse::<Ipv6Addr>().map(|a| fold_ip(IpAddr::V6(a))).map_err(|_| EntryError::Garbage),
    }
}

/// `bytes` without the spaces and tabs at either end.
fn trim_blanks(bytes: &[u8]) -> &[u8] {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !blank(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !blank(b)).map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Parses one `X-Forwarded-For` entry (surrounding spaces and tabs ignored). See [`parse_node`].
///
/// # Errors
/// As [`parse_node`].
pub fn parse_xff_entry(entry: &str) -> Result<IpAddr, EntryError> {
    parse_xff_bytes(entry.as_bytes())
}

/// [`parse_xff_entry`] on the bytes of a header line, which must be UTF-8 (else [`EntryError::Garbage`]).
pub(crate) fn parse_xff_bytes(entry: &[u8]) -> Result<IpAddr, EntryError> {
    let entry = trim_blanks(entry);
    std::str::from_utf8(entry).map_err(|_| EntryError::Garbage).and_then(parse_node)
}

#[cfg(test)]
mod tests;
