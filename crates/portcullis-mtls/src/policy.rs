//! [`ChainPolicy`]: what a client certificate chain must look like, on top of path validation.
//!
//! rustls-webpki proves that a chain leads to a trusted anchor and that every signature is right. It does not
//! refuse a chain for being *weak*: an RSA-1024 leaf, a SHA-1 signed intermediate, an expired root. The
//! [`ChainPolicy`] adds those rules. Every check here only parses certificates (x509-parser), so it runs
//! before any signature is verified and a weak chain is refused for a fraction of the cost of verifying a good
//! one.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::CertificateError;
use rustls::pki_types::{CertificateDer, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{self as oids, Oid};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::signature_algorithm::SignatureAlgorithm;

/// An elliptic curve a certificate key may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256 (secp256r1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
    /// NIST P-521 (secp521r1).
    P521,
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        })
    }
}

/// What the policy asks of the leaf's extended key usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EkuRule {
    /// A leaf with an EKU extension must list clientAuth (or anyExtendedKeyUsage); a leaf without one passes.
    #[default]
    IfPresent,
    /// The leaf must carry an EKU extension that lists clientAuth.
    Required,
    /// The EKU is not looked at.
    Ignore,
}

/// Which part of a certificate path a checked certificate plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The client's own certificate (depth 0).
    Leaf,
    /// A certificate between the leaf and the trust anchor.
    Intermediate,
    /// A trust anchor from the truststore.
    Anchor,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Leaf => "leaf",
            Role::Intermediate => "intermediate",
            Role::Anchor => "trust anchor",
        })
    }
}

/// A client-chain policy, checked on every presented certificate and on the trust anchor the chain ends at.
///
/// Built with [`ChainPolicy::new`] (the default rules below) and the knob setters. The name appears in every
/// refusal.
///
/// The default policy refuses:
///
/// | rule | knob |
/// | --- | --- |
/// | MD2, MD4, MD5 signatures | always |
/// | SHA-1 signatures (RSA, DSA, ECDSA) | [`allow_sha1`](ChainPolicy::allow_sha1) |
/// | DSA keys and DSA signatures | [`allow_dsa`](ChainPolicy::allow_dsa) (webpki cannot verify DSA anyway) |
/// | RSA keys under 2048 or over 8192 bits | [`min_rsa_bits`](ChainPolicy::min_rsa_bits), [`max_rsa_bits`](ChainPolicy::max_rsa_bits) |
/// | EC keys on curves other than P-256, P-384, P-521 | [`curves`](ChainPolicy::curves); Ed25519: [`allow_ed25519`](ChainPolicy::allow_ed25519) |
/// | any certificate outside its validity, the anchor included | [`check_validity`](ChainPolicy::check_validity), [`clock_skew`](ChainPolicy::clock_skew) |
/// | an intermediate without CA:TRUE, or with a key usage lacking keyCertSign | [`check_ca_constraints`](ChainPolicy::check_ca_constraints) |
/// | a pathLenConstraint exceeded | [`check_ca_constraints`](ChainPolicy::check_ca_constraints) |
/// | a leaf with CA:TRUE | [`refuse_ca_leaf`](ChainPolicy::refuse_ca_leaf) |
/// | a leaf whose EKU lacks clientAuth (strict: or has no EKU) | [`eku`](ChainPolicy::eku) |
/// | more than 4 presented certificates | [`max_chain_len`](ChainPolicy::max_chain_len) |
///
/// ```
/// use portcullis_mtls::{ChainPolicy, EkuRule};
/// // A stricter policy: RSA keys of at least 3072 bits, and the leaf must say clientAuth.
/// let policy = ChainPolicy::new("strict").min_rsa_bits(3072).eku(EkuRule::Required);
/// assert_eq!(policy.name(), "strict");
/// ```

#[derive(Debug, Clone, PartialEq)]
pub struct ChainPolicy {
    name: Arc<str>,
    /// Smallest RSA modulus accepted, in bits (default 2048).
    pub min_rsa_bits: u32,
    /// Largest RSA modulus accepted, in bits (default 8192).
    pub max_rsa_bits: u32,
    /// Elliptic curves accepted for EC keys (default P-256, P-384, P-521).
    pub curves: Vec<Curve>,
    /// Whether Ed25519 keys and signatures are accepted (default true).
    pub allow_ed25519: bool,
    /// Whether SHA-1 signatures are accepted (default false). MD2, MD4 and MD5 are never accepted.
    pub allow_sha1: bool,
    /// Whether DSA keys are accepted by the policy (default false).
    pub allow_dsa: bool,
    /// Whether every certificate of the path, the anchor included, must be within its validity (default true).
    pub check_validity: bool,
    /// Tolerance applied to both ends of the validity window (default zero).
    pub clock_skew: Duration,
    /// Whether intermediates must be CAs with keyCertSign and pathLenConstraint is enforced (default true).
    pub check_ca_constraints: bool,
    /// Whether a leaf with basicConstraints CA:TRUE is refused (default true).
    pub refuse_ca_leaf: bool,
    /// The extended key usage rule for the leaf (default [`EkuRule::IfPresent`]).
    pub eku: EkuRule,
    /// Most certificates a client may present, leaf included (default 4).
    pub max_chain_len: usize,
}

impl Default for ChainPolicy {
    fn default() -> Self {
        ChainPolicy::new("default")
    }
}

macro_rules! knob {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, value: $ty) -> Self {
            self.$name = value;
            self
        }
    };
}

impl ChainPolicy {
    /// The default rules, under `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        ChainPolicy {
            name: name.into(),
            min_rsa_bits: 2048,
            max_rsa_bits: 8192,
            curves: vec![Curve::P256, Curve::P384, Curve::P521],
            allow_ed25519: true,
            allow_sha1: false,
            allow_dsa: false,
            check_validity: true,
            clock_skew: Duration::ZERO,
            check_ca_constraints: true,
            refuse_ca_leaf: true,
            eku: EkuRule::IfPresent,
            max_chain_len: 4,
        }
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    knob!(
        /// Sets [`min_rsa_bits`](Self::min_rsa_bits).
        min_rsa_bits: u32
    );
    knob!(
        /// Sets [`max_rsa_bits`](Self::max_rsa_bits).
        max_rsa_bits: u32
    );
    knob!(
        /// Sets [`curves`](Self::curves).
        curves: Vec<Curve>
    );
    knob!(
        /// Sets [`allow_ed25519`](Self::allow_ed25519).
        allow_ed25519: bool
    );
    knob!(
        /// Sets [`allow_sha1`](Self::allow_sha1).
        allow_sha1: bool
    );
    knob!(
        /// Sets [`allow_dsa`](Self::allow_dsa).
        allow_dsa: bool
    );
    knob!(
        /// Sets [`check_validity`](Self::check_validity).
        check_validity: bool
    );
    knob!(
        /// Sets [`clock_skew`](Self::clock_skew).
        clock_skew: Duration
    );
    knob!(
        /// Sets [`check_ca_constraints`](Self::check_ca_constraints).
        check_ca_constraints: bool
    );
    knob!(
        /// Sets [`refuse_ca_leaf`](Self::refuse_ca_leaf).
        refuse_ca_leaf: bool
    );
    knob!(
        /// Sets [`eku`](Self::eku).
        eku: EkuRule
    );
    knob!(
        /// Sets [`max_chain_len`](Self::max_chain_len).
        max_chain_len: usize
    );

    /// Checks the presented chain (leaf first) at time `now`, parsing only: no signature is verified.
    ///
    /// The trust anchor is not looked at here: [`PolicyVerifier`](crate::PolicyVerifier) checks the anchors
    /// a chain can end at, which were audited when the truststore was loaded.
    ///
    /// # Errors
    /// The first rule a certificate breaks, with its depth and subject.
    pub fn check_presented(&self, presented: &[&[u8]], now: UnixTime) -> Result<(), ChainRefusal> {
        if presented.len() > self.max_chain_len {
            let subject = subject_of(presented.first().copied().unwrap_or_default());
            return Err(self.refusal(
                0,
                Role::Leaf,
                subject,
                Rule::TooDeep { presented: presented.len(), max: self.max_chain_len },
            ));
        }
        for (depth, der) in presented.iter().enumerate() {
            let role = if depth == 0 { Role::Leaf } else { Role::Intermediate };
            let cert = match X509Certificate::from_der(der) {
                Ok((_, cert)) => cert,
                Err(e) => {
                    return Err(self.refusal(depth, role, String::new(), Rule::Malformed(e.to_string())));
                }
            };
            if let Err(rule) = self.check_cert(&cert, role, depth, Some(now)) {
                return Err(self.refusal(depth, role, cert.subject().to_string(), rule));
            }
        }
        Ok(())
    }

    /// Checks one parsed certificate playing `role` at `depth` (0 for the leaf). `now` is `None` to skip the
    /// validity rule (the truststore audit checks validity itself).
    pub(crate) fn check_cert(
        &self,
        cert: &X509Certificate<'_>,
        role: Role,
        depth: usize,
        now: Option<UnixTime>,
    ) -> Result<(), Rule> {
        self.check_signature(cert)?;
        self.check_key(cert)?;
        if let Some(now) = now {
            self.check_validity_at(cert, now)?;
        }
        let bc = cert.basic_constraints().map_err(|e| Rule::Malformed(e.to_string()))?;
        match role {
            Role::Leaf => {
                if self.refuse_ca_leaf && bc.as_ref().is_some_and(|bc| bc.value.ca) {
                    return Err(Rule::LeafIsCa);
                }
                self.check_eku(cert)?;
            }
            Role::Intermediate | Role::Anchor => {
                if self.check_ca_constraints {
                    let Some(bc) = bc.filter(|bc| bc.value.ca) else {
                        return Err(Rule::NotCa);
                    };
                    let ku = cert.key_usage().map_err(|e| Rule::Malformed(e.to_string()))?;
                    if ku.is_some_and(|ku| !ku.value.key_cert_sign()) {
                        return Err(Rule::NoKeyCertSign);
                    }
                    // A CA at depth d has d - 1 intermediates below it (the leaf does not count).
                    if let Some(limit) = bc.value.path_len_constraint {
                        let below = depth.saturating_sub(1);
                        if (limit as usize) < below {
                            return Err(Rule::PathLen { limit, below });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn check_signature(&self, cert: &X509Certificate<'_>) -> Result<(), Rule> {
        let alg = &cert.signature_algorithm.algorithm;
        if *alg == oids::OID_PKCS1_SHA256WITHRSA
            || *alg == oids::OID_PKCS1_SHA384WITHRSA
            || *alg == oids::OID_PKCS1_SHA512WITHRSA
            || *alg == oids::OID_SIG_ECDSA_WITH_SHA256
            || *alg == oids::OID_SIG_ECDSA_WITH_SHA384
            || *alg == oids::OID_SIG_ECDSA_WITH_SHA512
        {
            return Ok(());
        }
        if *alg == oids::OID_SIG_ED25519 {
            return if self.allow_ed25519 { Ok(()) } else { Err(Rule::Signature("Ed25519".into())) };
        }
        if *alg == oids::OID_PKCS1_RSASSAPSS {
            return match SignatureAlgorithm::try_from(&cert.signature_algorithm) {
                Ok(SignatureAlgorithm::RSASSA_PSS(params)) => {
                    let hash = params.hash_algorithm_oid();
                    if *hash == oids::OID_NIST_HASH_SHA256
                        || *hash == oids::OID_NIST_HASH_SHA384
                        || *hash == oids::OID_NIST_HASH_SHA512
                        || (*hash == oids::OID_HASH_SHA1 && self.allow_sha1)
                    {
                        Ok(())
                    } else {
                        Err(Rule::Signature(format!("RSASSA-PSS with {}", hash_name(hash))))
                    }
                }
                _ => Err(Rule::Malformed("RSASSA-PSS parameters".into())),
            };
        }
        let name = signature_name(alg);
        let sha1 = matches!(name, "sha1WithRSAEncryption" | "ecdsa-with-SHA1" | "dsa-with-SHA1");
        let dsa = name.starts_with("dsa-with");
        if sha1 && self.allow_sha1 && (!dsa || self.allow_dsa) {
            return Ok(());
        }
        if dsa && self.allow_dsa && !sha1 {
            return Ok(());
        }
        Err(Rule::Signature(name.to_owned()))
    }

    fn check_key(&self, cert: &X509Certificate<'_>) -> Result<(), Rule> {
        let spki = cert.public_key();
        let alg = &spki.algorithm.algorithm;
        if *alg == oids::OID_PKCS1_RSAENCRYPTION || *alg == oids::OID_PKCS1_RSASSAPSS {
            let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
                return Err(Rule::Malformed("RSA public key".into()));
            };
            let bits = bit_len(rsa.modulus);
            if bits < self.min_rsa_bits || bits > self.max_rsa_bits {
                return Err(Rule::RsaKeySize { bits, min: self.min_rsa_bits, max: self.max_rsa_bits });
            }
            return Ok(());
        }
        if *alg == oids::OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .ok_or_else(|| Rule::Malformed("EC key without a named curve".into()))?;
            let named = if curve == oids::OID_EC_P256 {
                Some(Curve::P256)
            } else if curve == oids::OID_NIST_EC_P384 {
                Some(Curve::P384)
            } else if curve == oids::OID_NIST_EC_P521 {
                Some(Curve::P521)
            } else {
                None
            };
            return match named {
                Some(c) if self.curves.contains(&c) => Ok(()),
                Some(c) => Err(Rule::Curve(c.to_string())),
                None => Err(Rule::Curve(curve.to_id_string())),
            };
        }
        if *alg == oids::OID_SIG_ED25519 {
            return if self.allow_ed25519 { Ok(()) } else { Err(Rule::KeyAlgorithm("Ed25519".into())) };
        }
        if *alg == oids::OID_KEY_TYPE_DSA {
            return if self.allow_dsa { Ok(()) } else { Err(Rule::KeyAlgorithm("DSA".into())) };
        }
        Err(Rule::KeyAlgorithm(alg.to_id_string()))
    }

    fn check_validity_at(&self, cert: &X509Certificate<'_>, now: UnixTime) -> Result<(), Rule> {
        if !self.check_validity {
            return Ok(());
        }
        let now = now.as_secs() as i64;
        let skew = self.clock_skew.as_secs() as i64;
        let validity = cert.validity();
        let not_before = validity.not_before.timestamp();
        let not_after = validity.not_after.timestamp();
        if now + skew < not_before {
            return Err(Rule::NotYetValid { not_before, now });
        }
        if now - skew > not_after {
            return Err(Rule::Expired { not_after, now });
        }
        Ok(())
    }

    fn check_eku(&self, cert: &X509Certificate<'_>) -> Result<(), Rule> {
        if self.eku == EkuRule::Ignore {
            return Ok(());
        }
        match cert.extended_key_usage().map_err(|e| Rule::Malformed(e.to_string()))? {
            Some(eku) if eku.value.client_auth || eku.value.any => Ok(()),
            Some(_) => Err(Rule::EkuWithoutClientAuth),
            None if self.eku == EkuRule::Required => Err(Rule::EkuMissing),
            None => Ok(()),
        }
    }

    pub(crate) fn refusal(&self, depth: usize, role: Role, subject: String, rule: Rule) -> ChainRefusal {
        ChainRefusal { policy: self.name.clone(), depth, role, subject, rule }
    }
}

/// Bits of a big-endian unsigned integer, leading zero bytes ignored.
fn bit_len(be: &[u8]) -> u32 {
    let be = match be.iter().position(|b| *b != 0) {
        Some(i) => &be[i..],
        None => return 0,
    };
    (be.len() as u32) * 8 - be[0].leading_zeros()
}

fn subject_of(der: &[u8]) -> String {
    X509Certificate::from_der(der).map(|(_, c)| c.subject().to_string()).unwrap_or_default()
}

fn signature_name(oid: &Oid<'_>) -> &'static str {
    match oid.to_id_string().as_str() {
        "1.2.840.113549.1.1.2" => "md2WithRSAEncryption",
        "1.2.840.113549.1.1.3" => "md4WithRSAEncryption",
        "1.2.840.113549.1.1.4" | "1.3.14.3.2.25" => "md5WithRSAEncryption",
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" => "sha1WithRSAEncryption",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.10040.4.3" => "dsa-with-SHA1",
        "2.16.840.1.101.3.4.3.1" => "dsa-with-SHA224",
        "2.16.840.1.101.3.4.3.2" => "dsa-with-SHA256",
        "1.2.840.113549.1.1.14" => "sha224WithRSAEncryption",
        "1.2.840.10045.4.3.1" => "ecdsa-with-SHA224",
        "1.3.101.113" => "Ed448",
        _ => "an unknown signature algorithm",
    }
}

fn hash_name(oid: &Oid<'_>) -> &'static str {
    if *oid == oids::OID_HASH_SHA1 { "SHA-1" } else { "an unsupported hash" }
}

/// The rule a certificate broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rule {
    /// The certificate could not be parsed.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// The certificate is signed with a weak or unsupported algorithm (MD5, SHA-1, DSA, ...).
    #[error("signature algorithm {0} is not accepted")]
    Signature(String),
    /// The RSA key is too short or too long.
    #[error("RSA key of {bits} bits is outside {min}..={max}")]
    RsaKeySize {
        /// The key's modulus length.
        bits: u32,
        /// The policy's minimum.
        min: u32,
        /// The policy's maximum.
        max: u32,
    },
    /// The EC key is on a curve the policy does not accept.
    #[error("elliptic curve {0} is not accepted")]
    Curve(String),
    /// The key algorithm is not accepted (DSA, unknown).
    #[error("key algorithm {0} is not accepted")]
    KeyAlgorithm(String),
    /// The certificate expired.
    #[error("expired at {not_after} (now {now}, Unix seconds)")]
    Expired {
        /// notAfter, Unix seconds.
        not_after: i64,
        /// Verification time, Unix seconds.
        now: i64,
    },
    /// The certificate is not valid yet.
    #[error("not valid before {not_before} (now {now}, Unix seconds)")]
    NotYetValid {
        /// notBefore, Unix seconds.
        not_before: i64,
        /// Verification time, Unix seconds.
        now: i64,
    },
    /// A certificate used as an issuer is not a CA (no basicConstraints CA:TRUE).
    #[error("issuer is not a CA (basicConstraints CA:TRUE missing)")]
    NotCa,
    /// A CA certificate's key usage lacks keyCertSign.
    #[error("CA key usage lacks keyCertSign")]
    NoKeyCertSign,
    /// A CA's pathLenConstraint is smaller than the number of intermediates below it.
    #[error("pathLenConstraint {limit} exceeded by {below} intermediates below")]
    PathLen {
        /// The constraint.
        limit: u32,
        /// Intermediates below the CA.
        below: usize,
    },
    /// The leaf is a CA certificate.
    #[error("leaf certificate is a CA (basicConstraints CA:TRUE)")]
    LeafIsCa,
    /// The leaf's extended key usage does not include clientAuth.
    #[error("extended key usage lacks clientAuth")]
    EkuWithoutClientAuth,
    /// The leaf has no extended key usage and the policy requires one.
    #[error("extended key usage missing (strict policy requires clientAuth)")]
    EkuMissing,
    /// More certificates were presented than the policy allows.
    #[error("{presented} certificates presented, at most {max} allowed")]
    TooDeep {
        /// Presented certificates.
        presented: usize,
        /// The policy's maximum.
        max: usize,
    },
    /// The trust anchor is not a CA: a pinned leaf would skip chain validation.
    #[error("trust anchor is not a CA certificate")]
    AnchorNotCa,
    /// rustls-webpki refused the path (unknown issuer, bad signature, revoked, ...).
    #[error("path validation failed: {0}")]
    PathValidation(String),
    /// The verified identity is not among the virtual host's allowed identities.
    #[error("identity is not among the allowed identities")]
    IdentityNotAllowed,
}

impl Rule {
    /// A short stable code for the rule (`signature`, `rsa-key-size`, ...), used in denials and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Rule::Malformed(_) => "malformed",
            Rule::Signature(_) => "signature",
            Rule::RsaKeySize { .. } => "rsa-key-size",
            Rule::Curve(_) => "curve",
            Rule::KeyAlgorithm(_) => "key-algorithm",
            Rule::Expired { .. } => "expired",
            Rule::NotYetValid { .. } => "not-yet-valid",
            Rule::NotCa => "not-ca",
            Rule::NoKeyCertSign => "no-key-cert-sign",
            Rule::PathLen { .. } => "path-len",
            Rule::LeafIsCa => "leaf-is-ca",
            Rule::EkuWithoutClientAuth => "eku-client-auth",
            Rule::EkuMissing => "eku-missing",
            Rule::TooDeep { .. } => "too-deep",
            Rule::AnchorNotCa => "anchor-not-ca",
            Rule::PathValidation(_) => "path-validation",
            Rule::IdentityNotAllowed => "identity",
        }
    }
}

/// Why a client chain was refused: the policy, which certificate (depth and subject) and which rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("client chain refused by policy `{policy}`: {role} at depth {depth} ({subject}): {rule}")]
pub struct ChainRefusal {
    /// The name of the policy that refused.
    pub policy: Arc<str>,
    /// The depth of the certificate: 0 for the leaf, 1 for its issuer, ...
    pub depth: usize,
    /// The part the certificate plays in the path.
    pub role: Role,
    /// The certificate's subject, RFC 4514 text (empty when it could not be parsed).
    pub subject: String,
    /// The rule it broke.
    pub rule: Rule,
}

impl ChainRefusal {
    /// The rustls certificate error for this refusal, chosen for the TLS alert the client receives:
    ///
    /// | rule | error | alert |
    /// | --- | --- | --- |
    /// | expired, not yet valid | `ExpiredContext` / `NotValidYetContext` | certificate_expired |
    /// | signature algorithm, key size, curve, key algorithm, EKU | `InvalidPurpose` | unsupported_certificate |
    /// | malformed, CA constraints, pathLen, CA leaf, too deep | `BadEncoding` | bad_certificate |
    /// | identity not allowed | `ApplicationVerificationFailure` | access_denied |
    /// | path validation | `Other` (carrying this refusal) | certificate_unknown |
    ///
    /// The typed reason is logged, and the acceptor reports it with the handshake error.
    pub fn certificate_error(&self) -> CertificateError {
        match &self.rule {
            Rule::Expired { not_after, now } => CertificateError::ExpiredContext {
                time: UnixTime::since_unix_epoch(Duration::from_secs((*now).max(0) as u64)),
                not_after: UnixTime::since_unix_epoch(Duration::from_secs((*not_after).max(0) as u64)),
            },
            Rule::NotYetValid { not_before, now } => CertificateError::NotValidYetContext {
                time: UnixTime::since_unix_epoch(Duration::from_secs((*now).max(0) as u64)),
                not_before: UnixTime::since_unix_epoch(Duration::from_secs((*not_before).max(0) as u64)),
            },
            Rule::Signature(_)
            | Rule::RsaKeySize { .. }
            | Rule::Curve(_)
            | Rule::KeyAlgorithm(_)
            | Rule::EkuWithoutClientAuth
            | Rule::EkuMissing => CertificateError::InvalidPurpose,
            Rule::Malformed(_)
            | Rule::NotCa
            | Rule::NoKeyCertSign
            | Rule::PathLen { .. }
            | Rule::LeafIsCa
            | Rule::TooDeep { .. }
            | Rule::AnchorNotCa => CertificateError::BadEncoding,
            Rule::IdentityNotAllowed => CertificateError::ApplicationVerificationFailure,
            Rule::PathValidation(_) => CertificateError::Other(rustls::OtherError(Arc::new(self.clone()))),
        }
    }
}

/// Parses `der` for callers that hold a [`CertificateDer`].
pub(crate) fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, Rule> {
    X509Certificate::from_der(der.as_ref()).map(|(_, c)| c).map_err(|e| Rule::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_len_ignores_leading_zeros() {
        assert_eq!(bit_len(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(bit_len(&[0x01, 0x00]), 9);
        assert_eq!(bit_len(&[0, 0]), 0);
        assert_eq!(bit_len(&[0x7f]), 7);
    }

    #[test]
    fn knobs_change_the_policy() {
        let p = ChainPolicy::new("p").min_rsa_bits(3072).allow_sha1(true).max_chain_len(2);
        assert_eq!((p.min_rsa_bits, p.allow_sha1, p.max_chain_len), (3072, true, 2));
        assert_ne!(p, ChainPolicy::default());
    }

    #[test]
    fn garbage_is_malformed_at_depth_zero() {
        let err = ChainPolicy::default().check_presented(&[b"nope"], UnixTime::now()).unwrap_err();
        assert_eq!(err.depth, 0);
        assert_eq!(err.rule.code(), "malformed");
        assert_eq!(err.certificate_error(), CertificateError::BadEncoding);
    }

    #[test]
    fn too_many_certificates_refused_before_parsing() {
        let junk: &[u8] = b"junk";
        let err = ChainPolicy::default().check_presented(&[junk; 5], UnixTime::now()).unwrap_err();
        assert!(matches!(err.rule, Rule::TooDeep { presented: 5, max: 4 }));
    }
}
