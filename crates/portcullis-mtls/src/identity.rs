//! The verified client identity ([`ClientCert`]) and the allowed-identities rule.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portcullis_core::ClientCert;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::policy::parse;

/// Most allowed identities a virtual host may list (the limit Azure API Management applies).
pub const MAX_ALLOWED_IDENTITIES: usize = 10;

/// One allowed client identity of a virtual host. Every field that is set must match; a client is allowed
/// when any identity of the list matches. An identity with no field set is a configuration error.
///
/// ```
/// use portcullis_mtls::AllowedIdentity;
/// let id = AllowedIdentity::thumbprint("AB:CD").issuer("CN=Client CA");
/// assert_eq!(id.sha256.as_deref(), Some("abcd"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedIdentity {
    /// SHA-256 thumbprint of the leaf DER, lower-case hexadecimal without separators.
    pub sha256: Option<String>,
    /// The leaf's subject, RFC 4514 text as shown in [`ClientCert::subject`].
    pub subject: Option<String>,
    /// The leaf's issuer, RFC 4514 text as shown in [`ClientCert::issuer`].
    pub issuer: Option<String>,
    /// One subject alternative name the leaf must carry (DNS names compared without case).
    pub san: Option<String>,
}

impl AllowedIdentity {
    /// An identity matching a SHA-256 thumbprint (hexadecimal; case, `:` and spaces are ignored).
    pub fn thumbprint(hex: &str) -> Self {
        AllowedIdentity::default().sha256(hex)
    }

    /// Also requires the SHA-256 thumbprint.
    #[must_use]
    pub fn sha256(mut self, hex: &str) -> Self {
        self.sha256 =
            Some(hex.chars().filter(|c| c.is_ascii_hexdigit()).collect::<String>().to_ascii_lowercase());
        self
    }

    /// Also requires the subject.
    #[must_use]
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Also requires the issuer.
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Also requires a subject alternative name.
    #[must_use]
    pub fn san(mut self, san: impl Into<String>) -> Self {
        self.san = Some(san.into());
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sha256.is_none() && self.subject.is_none() && self.issuer.is_none() && self.san.is_none()
    }

    /// Whether `cert` matches every field set.
    pub fn matches(&self, cert: &ClientCert) -> bool {
        !self.is_empty()
            && self.sha256.as_ref().is_none_or(|h| *h == cert.sha256)
            && self.subject.as_ref().is_none_or(|s| *s == cert.subject)
            && self.issuer.as_ref().is_none_or(|s| *s == cert.issuer)
            && self.san.as_ref().is_none_or(|want| cert.sans.iter().any(|s| s.eq_ignore_ascii_case(want)))
    }
}

/// Lower-case hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The [`ClientCert`] of a presented chain (leaf first). `None` when the chain is empty or the leaf cannot
/// be parsed (which path validation would already have refused).
pub fn client_cert(chain: &[CertificateDer<'_>]) -> Option<ClientCert> {
    let leaf_der = chain.first()?;
    let leaf = parse(leaf_der).ok()?;
    Some(ClientCert {
        subject: leaf.subject().to_string(),
        issuer: leaf.issuer().to_string(),
        serial: hex(leaf.raw_serial()),
        sha256: hex(&Sha256::digest(leaf_der.as_ref())),
        sans: sans(&leaf),
        not_after: SystemTime::UNIX_EPOCH
            + Duration::from_secs(leaf.validity().not_after.timestamp().max(0) as u64),
        chain: chain.iter().map(|c| Arc::<[u8]>::from(c.as_ref())).collect(),
    })
}

fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                Some((*s).to_owned())
            }
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> ClientCert {
        ClientCert {
            subject: "CN=alice".into(),
            issuer: "CN=ca".into(),
            serial: "01".into(),
            sha256: "ab".repeat(32),
            sans: vec!["alice.example".into()],
            not_after: SystemTime::UNIX_EPOCH,
            chain: vec![],
        }
    }

    #[test]
    fn every_set_field_must_match() {
        let c = cert();
        assert!(AllowedIdentity::thumbprint(&"AB:".repeat(32)).matches(&c));
        assert!(AllowedIdentity::default().subject("CN=alice").issuer("CN=ca").matches(&c));
        assert!(!AllowedIdentity::default().subject("CN=alice").issuer("CN=other").matches(&c));
        assert!(AllowedIdentity::default().san("ALICE.example").matches(&c));
        assert!(!AllowedIdentity::default().san("bob.example").matches(&c));
    }

    #[test]
    fn an_empty_identity_matches_nothing() {
        assert!(!AllowedIdentity::default().matches(&cert()));
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x0a, 0xff]), "0aff");
    }
}
