//! Configured host patterns: exact names, one-label wildcards and IP literals, each with an optional port.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use crate::authority::{AuthorityError, RequestHost};

/// Why a configured host pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// The pattern is empty.
    #[error("empty host pattern")]
    Empty,
    /// `*` anywhere but as the whole first label (`*.example.com`), or a bare `*`.
    #[error("host pattern {0:?}: a wildcard must be the whole first label of a name, as in *.example.com")]
    Wildcard(String),
    /// The name is not a valid internationalised domain name (UTS #46).
    #[error("host pattern {pattern:?} is not a valid domain name: {detail}")]
    Idna {
        /// The pattern as configured.
        pattern: String,
        /// What UTS #46 processing reported.
        detail: String,
    },
    /// The name, once in A-label form, breaks the host grammar requests are held to.
    #[error("host pattern {pattern:?}: {error}")]
    Grammar {
        /// The pattern as configured.
        pattern: String,
        /// The grammar rule it breaks.
        #[source]
        error: AuthorityError,
    },
    /// A wildcard over an IP address (`*.10.0.0.1`).
    #[error("host pattern {0:?}: a wildcard cannot cover an IP address")]
    WildcardIp(String),
}

/// What a pattern matches, without its port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PatternKind {
    /// One host name, in A-label form (`api.contoso.com`, `xn--bcher-kva.example`).
    Exact(Box<str>),
    /// Names of exactly one more label than the stored suffix: `*.contoso.com` is stored as `contoso.com`
    /// and matches `api.contoso.com`, not `contoso.com` and not `a.b.contoso.com`.
    Wildcard(Box<str>),
    /// An IP literal: requests for this address are served instead of refused.
    Ip(IpAddr),
}

/// One configured host pattern: what it matches and, optionally, the only port it serves.
///
/// Parsed from text: `api.contoso.com`, `API.Contoso.com.` (normalised), `bücher.example` (stored as
/// `xn--bcher-kva.example`), `*.contoso.com`, `api.contoso.com:8443`, `10.0.0.1`, `[::1]:8443`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPattern {
    kind: PatternKind,
    port: Option<u16>,
}

impl HostPattern {
    /// Parses a pattern; Unicode names are converted to A-labels (UTS #46 processing, as browsers do).
    ///
    /// # Errors
    /// A [`PatternError`] when the pattern is not a name, a wildcard or an IP literal.
    pub fn parse(pattern: &str) -> Result<HostPattern, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        let grammar = |error| PatternError::Grammar { pattern: pattern.to_owned(), error };
        // Split the port first, so that Unicode names keep their port.
        let (host, port) = split_port(pattern).map_err(grammar)?;
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        if name.contains('*') || host == "*" {
            return Err(PatternError::Wildcard(pattern.to_owned()));
        }
        // UTS #46 lower-cases, maps and converts to A-labels, and checks existing A-labels (`xn--…`).
        // IP literals in brackets are left to the grammar check.
        let ascii = if name.starts_with('[') {
            name.into()
        } else {
            idna::domain_to_ascii_cow(name.as_bytes(), idna::AsciiDenyList::EMPTY)
                .map_err(|e| PatternError::Idna { pattern: pattern.to_owned(), detail: e.to_string() })?
        };
        let parsed = RequestHost::parse(ascii.as_bytes()).map_err(grammar)?;
        if parsed.port().is_some() {
            return Err(grammar(AuthorityError::InvalidChar(':')));
        }
        let kind = match (parsed.ip(), parsed.name(), wildcard) {
            (Some(_), _, true) => return Err(PatternError::WildcardIp(pattern.to_owned())),
            (Some(ip), _, false) => PatternKind::Ip(ip),
            (None, Some(name), true) => PatternKind::Wildcard(name.into()),
            (None, Some(name), false) => PatternKind::Exact(name.into()),
            (None, None, _) => return Err(grammar(AuthorityError::Empty)),
        };
        Ok(HostPattern { kind, port })
    }

    /// What the pattern matches.
    pub fn kind(&self) -> &PatternKind {
        &self.kind
    }

    /// The only port the pattern serves, if it names one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The canonical text, as recorded in [`MatchedHost::pattern`](portcullis_core::MatchedHost).
    pub(crate) fn canonical(&self) -> Arc<str> {
        Arc::from(self.to_string())
    }

    /// The host part of the canonical text (no port), used as a virtual-host identity.
    pub(crate) fn host_text(&self) -> String {
        match &self.kind {
            PatternKind::Exact(name) => name.to_string(),
            PatternKind::Wildcard(suffix) => format!("*.{suffix}"),
            PatternKind::Ip(IpAddr::V4(ip)) => ip.to_string(),
            PatternKind::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        }
    }
}

/// A host name, `*.` wildcard or IP literal in the one normal form every portcullis crate compares (the
/// host rule's routes, the TLS virtual hosts' names, SNI): UTS #46 (lower case, A-labels), no trailing dot,
/// IPv6 in brackets.
///
/// ```
/// use portcullis_host::normalize_name;
/// assert_eq!(normalize_name("API.Example.COM.").unwrap(), "api.example.com");
/// assert_eq!(normalize_name("*.Bücher.example").unwrap(), "*.xn--bcher-kva.example");
/// assert!(normalize_name("api.example.com:443").is_err()); // a name, not an authority
/// ```
///
/// # Errors
/// A [`PatternError`] when `name` is not a name, a wildcard or an IP literal, or carries a port.
pub fn normalize_name(name: &str) -> Result<String, PatternError> {
    let pattern = HostPattern::parse(name)?;
    if pattern.port().is_some() {
        return Err(PatternError::Grammar {
            pattern: name.to_owned(),
            error: AuthorityError::InvalidChar(':'),
        });
    }
    Ok(pattern.host_text())
}

impl FromStr for HostPattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostPattern::parse(s)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host_text())?;
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// Splits `host[:port]` (bracketed IPv6 kept whole); the port must be non-empty digits.
fn split_port(pattern: &str) -> Result<(&str, Option<u16>), AuthorityError> {
    let colon = if pattern.starts_with('[') {
        match pattern.find(']') {
            Some(close) if pattern.len() > close + 1 => Some(close + 1),
            _ => None,
        }
    } else {
        pattern.rfind(':')
    };
    let Some(colon) = colon else { return Ok((pattern, None)) };
    // What follows `]` may be any character, not only an ASCII one: test the byte before slicing, so that a
    // multi-byte character there (`[::1]é`) is refused rather than split.
    if pattern.as_bytes().get(colon) != Some(&b':') {
        return Err(AuthorityError::InvalidIpLiteral);
    }
    // `colon` is the index of an ASCII `:`, so both slices fall on character boundaries.
    let (Some(host), Some(port)) = (pattern.get(..colon), pattern.get(colon + 1..)) else {
        return Err(AuthorityError::InvalidIpLiteral);
    };
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthorityError::InvalidPort);
    }
    port.parse::<u16>().map(|p| (host, Some(p))).map_err(|_| AuthorityError::InvalidPort)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<String, PatternError> {
        HostPattern::parse(s).map(|p| p.to_string())
    }

    #[test]
    fn pattern_table() {
        let ok: &[(&str, &str)] = &[
            ("api.contoso.com", "api.contoso.com"),
            ("API.Contoso.COM.", "api.contoso.com"),
            ("api.contoso.com:8443", "api.contoso.com:8443"),
            ("*.contoso.com", "*.contoso.com"),
            ("*.Contoso.com:443", "*.contoso.com:443"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("BÜCHER.example.", "xn--bcher-kva.example"),
            ("*.bücher.example", "*.xn--bcher-kva.example"),
            ("bücher.example:8443", "xn--bcher-kva.example:8443"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("10.0.0.1", "10.0.0.1"),
            ("10.0.0.1:8080", "10.0.0.1:8080"),
            ("[::1]", "[::1]"),
            ("[2001:DB8::1]:8443", "[2001:db8::1]:8443"),
            ("_internal.corp", "_internal.corp"),
        ];
        for (input, want) in ok {
            assert_eq!(p(input).as_deref(), Ok(*want), "{input}");
        }
        assert_eq!(
            HostPattern::parse("*.contoso.com").unwrap().kind(),
            &PatternKind::Wildcard("contoso.com".into())
        );

        assert_eq!(p(""), Err(PatternError::Empty));
        for bad in ["*", "*.", "a.*.com", "*a.com", "**.com", "api.*", "*.*.com"] {
            assert!(
                matches!(p(bad), Err(PatternError::Wildcard(_)) | Err(PatternError::Grammar { .. })),
                "{bad}"
            );
        }
        assert!(matches!(p("*.10.0.0.1"), Err(PatternError::WildcardIp(_))));
        for bad in [
            "a..b",
            ".a",
            "a b",
            "a/b",
            "api.contoso.com:",
            "api.contoso.com:http",
            "api:99999",
            "::1",
            "[::1",
            "[::1]x",
            "127.1",
            "a%2eb",
            "user@host",
            "a.b:80:80",
        ] {
            assert!(matches!(p(bad), Err(PatternError::Grammar { .. })), "{bad}: {:?}", p(bad));
        }
        // Existing A-labels are checked too: `xn--a` is not valid Punycode.
        assert!(matches!(p("xn--a.example"), Err(PatternError::Idna { .. })), "{:?}", p("xn--a.example"));
        assert!(matches!(
            p("a\u{0000}ü.example"),
            Err(PatternError::Idna { .. }) | Err(PatternError::Grammar { .. })
        ));
    }

    /// A multi-byte character right after a bracketed literal's `]` is refused, not split (this once
    /// panicked with "byte index is not a char boundary", from a config file's host name).
    #[test]
    fn non_ascii_after_bracket_is_refused_not_a_panic() {
        for bad in ["[::1]é", "[::1]é80", "[::1]\u{10ffff}", "[é]", "[::1]€:80", "[]é", "[:é]:1", "[::1]:é"]
        {
            assert!(
                matches!(p(bad), Err(PatternError::Grammar { .. }) | Err(PatternError::Idna { .. })),
                "{bad}: {:?}",
                p(bad)
            );
        }
        assert_eq!(split_port("[::1]é"), Err(AuthorityError::InvalidIpLiteral));
    }
}
