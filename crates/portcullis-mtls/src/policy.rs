//! [`ChainPolicy`]: what a client certificate chain must look like, on top of path validation.
//!
//! rustls-webpki proves that a chain leads to a trusted anchor and that every signature is right. It does not
//! refuse a chain for being *weak*: an RSA-1024 leaf, a SHA-1 signed intermediate, an expired root. The
//! [`ChainPolicy`] adds those rules. Its checks only parse certificates (x509-parser). They run on the leaf
//! before any signature is verified (a weak leaf is refused for a fraction of the cost of verifying a good
//! chain), and on the issuers of the path rustls-webpki built, once that path is verified: certificates the
//! client sent that the path does not use are never judged.

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

/// The weakest hash a certificate signature (RSA PKCS#1, RSA-PSS, ECDSA) may use. Ed25519 signatures are
/// governed by [`ChainPolicy::allow_ed25519`] alone; SHA-1 by [`ChainPolicy::allow_sha1`], which only has
/// an effect with the `Sha256` floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum SignatureHash {
    /// SHA-256 or better (default).
    #[default]
    Sha256,
    /// SHA-384 or better.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl fmt::Display for SignatureHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureHash::Sha256 => "SHA-256",
            SignatureHash::Sha384 => "SHA-384",
            SignatureHash::Sha512 => "SHA-512",
        })
    }
}

/// What the policy asks of extended key usage (EKU).
///
/// The same rule holds in the policy's own leaf check and in rustls-webpki's path validation (which looks
/// at the EKU of every certificate of the path), so what is documented here is what a handshake does:
///
/// | variant | leaf without EKU | leaf EKU with clientAuth | leaf EKU with only anyExtendedKeyUsage | leaf EKU without either | intermediate EKU without clientAuth or anyExtendedKeyUsage |
/// | --- | --- | --- | --- | --- | --- |
/// | `IfPresent` | accepted | accepted | accepted | refused | refused |
/// | `Required` | refused | accepted | refused | refused | refused |
/// | `Ignore` | accepted | accepted | accepted | accepted | accepted |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EkuRule {
    /// An EKU extension, where present, must list clientAuth or anyExtendedKeyUsage (RFC 5280 §4.2.1.12);
    /// a certificate without one passes.
    #[default]
    IfPresent,
    /// The leaf must carry an EKU extension that lists clientAuth itself (anyExtendedKeyUsage is not
    /// enough); intermediates as with `IfPresent`.
    Required,
    /// No certificate's EKU is looked at, neither by the policy nor by path validation.
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

/// The rules of one named preset, as data. See [`ChainPolicy::preset`] and the table there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// The preset's name (`modern`, `strict`, `cnsa`).
    pub name: &'static str,
    /// Smallest RSA modulus, bits.
    pub min_rsa_bits: u32,
    /// Curves accepted for EC keys.
    pub curves: &'static [Curve],
    /// Whether Ed25519 keys and signatures are accepted.
    pub allow_ed25519: bool,
    /// The weakest signature hash.
    pub min_signature_hash: SignatureHash,
    /// The EKU rule.
    pub eku: EkuRule,
    /// Most certificates in the verified path, leaf included, anchor excluded.
    pub max_chain_len: usize,
}

/// The named presets, weakest first. Every rule not listed in [`Preset`] keeps the value of
/// [`ChainPolicy::new`] (no SHA-1, no DSA, RSA at most 8192 bits, validity checked, CA constraints checked,
/// CA leaves refused).
pub const PRESETS: [Preset; 3] = [
    Preset {
        name: "modern",
        min_rsa_bits: 2048,
        curves: &[Curve::P256, Curve::P384, Curve::P521],
        allow_ed25519: true,
        min_signature_hash: SignatureHash::Sha256,
        eku: EkuRule::IfPresent,
        max_chain_len: 4,
    },
    Preset {
        name: "strict",
        min_rsa_bits: 3072,
        curves: &[Curve::P384, Curve::P521],
        allow_ed25519: true,
        min_signature_hash: SignatureHash::Sha384,
        eku: EkuRule::Required,
        max_chain_len: 3,
    },
    Preset {
        name: "cnsa",
        min_rsa_bits: 3072,
        curves: &[Curve::P384],
        allow_ed25519: false,
        min_signature_hash: SignatureHash::Sha384,
        eku: EkuRule::IfPresent,
        max_chain_len: 4,
    },
];

/// A client-chain policy, checked on the leaf before path validation and on the verified path's issuers and
/// trust anchor after it.
///
/// Built with [`ChainPolicy::new`] (the `modern` rules below) or [`ChainPolicy::preset`], and the knob
/// setters. The name appears in every refusal.
///
/// The rules, with the named presets (a cell names the value; `—` means the `modern` value):
///
/// | rule | knob | `modern` (default) | `strict` | `cnsa` |
/// | --- | --- | --- | --- | --- |
/// | MD2, MD4, MD5 signatures refused | always | yes | yes | yes |
/// | SHA-1 signatures (RSA, DSA, ECDSA) | [`allow_sha1`](ChainPolicy::allow_sha1) | refused | refused | refused |
/// | weakest signature hash | [`min_signature_hash`](ChainPolicy::min_signature_hash) | SHA-256 | SHA-384 | SHA-384 |
/// | DSA keys and signatures | [`allow_dsa`](ChainPolicy::allow_dsa) | refused | refused | refused |
/// | RSA modulus | [`min_rsa_bits`](ChainPolicy::min_rsa_bits), [`max_rsa_bits`](ChainPolicy::max_rsa_bits) | 2048..=8192 | 3072..=8192 | 3072..=8192 |
/// | EC curves | [`curves`](ChainPolicy::curves) | P-256, P-384, P-521 | P-384, P-521 | P-384 |
/// | Ed25519 keys and signatures | [`allow_ed25519`](ChainPolicy::allow_ed25519) | accepted | accepted | refused |
/// | every certificate of the path within its validity, the anchor included | [`check_validity`](ChainPolicy::check_validity), [`clock_skew`](ChainPolicy::clock_skew) | yes, no skew | — | — |
/// | issuers are CAs (CA:TRUE, keyCertSign where keyUsage is present), pathLenConstraint (RFC 5280: self-issued intermediates do not count), the anchor's too | [`check_ca_constraints`](ChainPolicy::check_ca_constraints) | yes | — | — |
/// | leaf with CA:TRUE or keyUsage keyCertSign refused | [`refuse_ca_leaf`](ChainPolicy::refuse_ca_leaf) | yes | — | — |
/// | leaf critical extension the verifier does not understand refused | always | yes | yes | yes |
/// | extended key usage | [`eku`](ChainPolicy::eku) ([`EkuRule`]) | clientAuth if present | clientAuth required | clientAuth if present |
/// | most certificates in the verified path (leaf + intermediates) | [`max_chain_len`](ChainPolicy::max_chain_len) | 4 | 3 | 4 |
/// | most certificates a client may send (unused ones included) | [`max_presented`](ChainPolicy::max_presented) | 8 | — | — |
///
/// rustls-webpki adds its own refusals on top (unknown issuer, bad signature, name constraints, revocation,
/// unsupported critical extensions in intermediates), each mapped to a [`Rule`].
///
/// ```
/// use portcullis_mtls::{ChainPolicy, EkuRule};
/// // The strict preset, with a longer path allowed.
/// let policy = ChainPolicy::preset("strict").expect("a preset").max_chain_len(4);
/// assert_eq!(policy.name(), "strict");
/// assert_eq!((policy.min_rsa_bits, policy.eku), (3072, EkuRule::Required));
/// assert!(ChainPolicy::preset("lenient").is_none());
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
    /// The weakest hash of an RSA or ECDSA signature (default SHA-256).
    pub min_signature_hash: SignatureHash,
    /// Whether DSA keys are accepted by the policy (default false).
    pub allow_dsa: bool,
    /// Whether every certificate of the path, the anchor included, must be within its validity (default true).
    pub check_validity: bool,
    /// Tolerance applied to both ends of the validity window in the policy's checks (default zero).
    /// rustls-webpki checks the validity of the leaf and intermediates without tolerance.
    pub clock_skew: Duration,
    /// Whether issuers must be CAs with keyCertSign and pathLenConstraint is enforced (default true).
    pub check_ca_constraints: bool,
    /// Whether a leaf with basicConstraints CA:TRUE or keyUsage keyCertSign is refused (default true).
    pub refuse_ca_leaf: bool,
    /// The extended key usage rule (default [`EkuRule::IfPresent`]).
    pub eku: EkuRule,
    /// Most certificates in the verified path, leaf and intermediates, the anchor not counted (default 4).
    pub max_chain_len: usize,
    /// Most certificates a client may send, unused ones included; checked before anything is parsed
    /// (default 8).
    pub max_presented: usize,
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
    /// The default rules (the `modern` preset), under `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        ChainPolicy {
            name: name.into(),
            min_rsa_bits: 2048,
            max_rsa_bits: 8192,
            curves: vec![Curve::P256, Curve::P384, Curve::P521],
            allow_ed25519: true,
            allow_sha1: false,
            min_signature_hash: SignatureHash::Sha256,
            allow_dsa: false,
            check_validity: true,
            clock_skew: Duration::ZERO,
            check_ca_constraints: true,
            refuse_ca_leaf: true,
            eku: EkuRule::IfPresent,
            max_chain_len: 4,
            max_presented: 8,
        }
    }

    /// The named preset (`modern`, `strict`, `cnsa`; see [`PRESETS`] and the table above), named after
    /// itself; `None` for another name.
    pub fn preset(name: &str) -> Option<Self> {
        PRESETS.iter().find(|p| p.name == name).map(|p| ChainPolicy::from_preset(p, p.name))
    }

    /// The rules of `preset`, under `name`.
    pub fn from_preset(preset: &Preset, name: impl Into<Arc<str>>) -> Self {
        ChainPolicy {
            min_rsa_bits: preset.min_rsa_bits,
            curves: preset.curves.to_vec(),
            allow_ed25519: preset.allow_ed25519,
            min_signature_hash: preset.min_signature_hash,
            eku: preset.eku,
            max_chain_len: preset.max_chain_len,
            ..ChainPolicy::new(name)
        }
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same rules under another name.
    #[must_use]
    pub fn renamed(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
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
        /// Sets [`min_signature_hash`](Self::min_signature_hash).
        min_signature_hash: SignatureHash
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
    knob!(
        /// Sets [`max_presented`](Self::max_presented).
        max_presented: usize
    );

    /// The leaf's own checks at time `now`, parsing only: key, signature algorithm, validity, CA flags
    /// (CA:TRUE, keyCertSign), critical extensions, extended key usage. These run before path building.
    ///
    /// # Errors
    /// The rule the leaf breaks.
    pub fn check_leaf(&self, leaf: &X509Certificate<'_>, now: UnixTime) -> Result<(), Rule> {
        self.check_algorithms(leaf)?;
        self.check_validity_at(leaf, now)?;
        let bc = leaf.basic_constraints().map_err(|e| Rule::Malformed(e.to_string()))?;
        if self.refuse_ca_leaf {
            if bc.is_some_and(|bc| bc.value.ca) {
                return Err(Rule::LeafIsCa);
            }
            let ku = leaf.key_usage().map_err(|e| Rule::Malformed(e.to_string()))?;
            if ku.is_some_and(|ku| ku.value.key_cert_sign()) {
                return Err(Rule::LeafKeyCertSign);
            }
        }
        if let Some(oid) = unknown_critical_extension(leaf, LEAF_EXTENSIONS) {
            return Err(Rule::CriticalExtension(oid));
        }
        self.check_eku(leaf)
    }

    /// The checks of an issuer in a verified path at time `now` (`None` skips validity): key, signature
    /// algorithm, validity, and with [`check_ca_constraints`](Self::check_ca_constraints) CA:TRUE,
    /// keyCertSign and pathLenConstraint, where `below` counts the intermediates between this issuer and
    /// the leaf that are not self-issued (RFC 5280 §6.1.4).
    pub fn check_issuer(
        &self,
        cert: &X509Certificate<'_>,
        below: usize,
        now: Option<UnixTime>,
    ) -> Result<(), Rule> {
        self.check_algorithms(cert)?;
        if let Some(now) = now {
            self.check_validity_at(cert, now)?;
        }
        self.check_ca_flags(cert, below)
    }

    /// The CA rules (when the policy checks CA constraints): basicConstraints CA, keyCertSign where a key
    /// usage is present, and a path length that allows `below` CAs under this one.
    pub(crate) fn check_ca_flags(&self, cert: &X509Certificate<'_>, below: usize) -> Result<(), Rule> {
        if !self.check_ca_constraints {
            return Ok(());
        }
        let bc = cert.basic_constraints().map_err(|e| Rule::Malformed(e.to_string()))?;
        let Some(bc) = bc.filter(|bc| bc.value.ca) else {
            return Err(Rule::NotCa);
        };
        let ku = cert.key_usage().map_err(|e| Rule::Malformed(e.to_string()))?;
        if ku.is_some_and(|ku| !ku.value.key_cert_sign()) {
            return Err(Rule::NoKeyCertSign);
        }
        if let Some(limit) = bc.value.path_len_constraint
            && (limit as usize) < below
        {
            return Err(Rule::PathLen { limit, below });
        }
        Ok(())
    }

    /// The signature algorithm and key rules.
    pub(crate) fn check_algorithms(&self, cert: &X509Certificate<'_>) -> Result<(), Rule> {
        self.check_signature(cert)?;
        self.check_key(cert)
    }

    pub(crate) fn check_signature(&self, cert: &X509Certificate<'_>) -> Result<(), Rule> {
        let alg = &cert.signature_algorithm.algorithm;
        let hashed = [
            (oids::OID_PKCS1_SHA256WITHRSA, SignatureHash::Sha256, "sha256WithRSAEncryption"),
            (oids::OID_PKCS1_SHA384WITHRSA, SignatureHash::Sha384, "sha384WithRSAEncryption"),
            (oids::OID_PKCS1_SHA512WITHRSA, SignatureHash::Sha512, "sha512WithRSAEncryption"),
            (oids::OID_SIG_ECDSA_WITH_SHA256, SignatureHash::Sha256, "ecdsa-with-SHA256"),
            (oids::OID_SIG_ECDSA_WITH_SHA384, SignatureHash::Sha384, "ecdsa-with-SHA384"),
            (oids::OID_SIG_ECDSA_WITH_SHA512, SignatureHash::Sha512, "ecdsa-with-SHA512"),
        ];
        if let Some((_, hash, name)) = hashed.iter().find(|(oid, _, _)| oid == alg) {
            return self.check_hash(*hash, name);
        }
        if *alg == oids::OID_SIG_ED25519 {
            return if self.allow_ed25519 { Ok(()) } else { Err(Rule::Signature("Ed25519".into())) };
        }
        if *alg == oids::OID_PKCS1_RSASSAPSS {
            return match SignatureAlgorithm::try_from(&cert.signature_algorithm) {
                Ok(SignatureAlgorithm::RSASSA_PSS(params)) => {
                    let hash = params.hash_algorithm_oid();
                    if *hash == oids::OID_NIST_HASH_SHA256 {
                        self.check_hash(SignatureHash::Sha256, "RSASSA-PSS with SHA-256")
                    } else if *hash == oids::OID_NIST_HASH_SHA384 {
                        self.check_hash(SignatureHash::Sha384, "RSASSA-PSS with SHA-384")
                    } else if *hash == oids::OID_NIST_HASH_SHA512 {
                        self.check_hash(SignatureHash::Sha512, "RSASSA-PSS with SHA-512")
                    } else if *hash == oids::OID_HASH_SHA1 && self.sha1_allowed() {
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
        if sha1 && self.sha1_allowed() && (!dsa || self.allow_dsa) {
            return Ok(());
        }
        if dsa && self.allow_dsa && !sha1 && self.min_signature_hash == SignatureHash::Sha256 {
            return Ok(());
        }
        Err(Rule::Signature(name.to_owned()))
    }

    fn sha1_allowed(&self) -> bool {
        self.allow_sha1 && self.min_signature_hash == SignatureHash::Sha256
    }

    fn check_hash(&self, hash: SignatureHash, name: &str) -> Result<(), Rule> {
        if hash >= self.min_signature_hash {
            Ok(())
        } else {
            Err(Rule::Signature(format!("{name} (below {})", self.min_signature_hash)))
        }
    }

    pub(crate) fn check_key(&self, cert: &X509Certificate<'_>) -> Result<(), Rule> {
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
        let validity = cert.validity();
        self.check_window(validity.not_before.timestamp(), validity.not_after.timestamp(), now)
    }

    /// The validity rule on a window (Unix seconds), with the policy's clock skew.
    pub(crate) fn check_window(&self, not_before: i64, not_after: i64, now: UnixTime) -> Result<(), Rule> {
        let now = now.as_secs() as i64;
        let skew = self.clock_skew.as_secs() as i64;
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
            Some(eku) if eku.value.client_auth => Ok(()),
            Some(eku) if eku.value.any && self.eku == EkuRule::IfPresent => Ok(()),
            Some(_) => Err(Rule::EkuWithoutClientAuth),
            None if self.eku == EkuRule::Required => Err(Rule::EkuMissing),
            None => Ok(()),
        }
    }

    /// A refusal of the certificate at `depth` playing `role`.
    pub(crate) fn refusal(&self, depth: usize, role: Role, subject: String, rule: Rule) -> ChainRefusal {
        ChainRefusal { policy: self.name.clone(), depth: Some(depth), role: Some(role), subject, rule }
    }

    /// A refusal of a certificate somewhere in the path (path validation does not say which).
    pub(crate) fn refusal_in_path(&self, rule: Rule) -> ChainRefusal {
        ChainRefusal { policy: self.name.clone(), depth: None, role: None, subject: String::new(), rule }
    }
}

/// Extensions (id-ce arcs 2.5.29.N) rustls-webpki understands in a leaf or intermediate.
const LEAF_EXTENSIONS: &[u64] = &[14, 15, 17, 19, 30, 31, 35, 37];
/// Extensions whose meaning is honoured for a trust anchor: basicConstraints and keyUsage (the audit),
/// nameConstraints (rustls-webpki), and the harmless identifiers and names.
pub(crate) const ANCHOR_EXTENSIONS: &[u64] = &[14, 15, 17, 19, 30, 35, 37];

/// The first critical extension of `cert` outside `known` (id-ce arcs), as dotted text.
pub(crate) fn unknown_critical_extension(cert: &X509Certificate<'_>, known: &[u64]) -> Option<String> {
    cert.extensions().iter().filter(|e| e.critical).map(|e| &e.oid).find_map(|oid| {
        let arcs: Option<Vec<u64>> = oid.iter().map(|i| i.collect());
        match arcs.as_deref() {
            Some([2, 5, 29, n]) if known.contains(n) => None,
            _ => Some(oid.to_id_string()),
        }
    })
}

/// Bits of a big-endian unsigned integer, leading zero bytes ignored.
fn bit_len(be: &[u8]) -> u32 {
    let be = match be.iter().position(|b| *b != 0) {
        Some(i) => &be[i..],
        None => return 0,
    };
    (be.len() as u32) * 8 - be[0].leading_zeros()
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
///
/// Every message is plain text written here: no error value of another crate is shown with `Debug`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rule {
    /// The certificate could not be parsed.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// The certificate is signed with a weak or unsupported algorithm (MD5, SHA-1, DSA, a hash below the
    /// policy's floor, an algorithm path validation does not support, ...).
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
    /// A CA's pathLenConstraint is smaller than the number of intermediates below it that are not
    /// self-issued.
    #[error("pathLenConstraint {limit} exceeded by {below} intermediates below")]
    PathLen {
        /// The constraint.
        limit: u32,
        /// Intermediates below the CA, self-issued ones not counted.
        below: usize,
    },
    /// Path validation found a pathLenConstraint exceeded (it does not say which, and counts self-issued
    /// intermediates too).
    #[error("a pathLenConstraint is exceeded")]
    PathLenExceeded,
    /// The leaf is a CA certificate.
    #[error("leaf certificate is a CA (basicConstraints CA:TRUE)")]
    LeafIsCa,
    /// The leaf's key usage includes keyCertSign: a CA key used as a client.
    #[error("leaf certificate's key usage includes keyCertSign")]
    LeafKeyCertSign,
    /// The leaf's extended key usage does not include clientAuth.
    #[error("extended key usage lacks clientAuth")]
    EkuWithoutClientAuth,
    /// The leaf has no extended key usage and the policy requires one.
    #[error("extended key usage missing (the policy requires clientAuth)")]
    EkuMissing,
    /// More certificates were presented, or are in the path, than the policy allows.
    #[error("{presented} certificates, at most {max} allowed")]
    TooDeep {
        /// Presented certificates, or certificates in the path.
        presented: usize,
        /// The policy's maximum.
        max: usize,
    },
    /// The trust anchor is not a CA: a pinned leaf would skip chain validation.
    #[error("trust anchor is not a CA certificate")]
    AnchorNotCa,
    /// A critical extension the verifier does not understand (its OID).
    #[error("unsupported critical extension {0}")]
    CriticalExtension(String),
    /// No path from the chain to a trust anchor of the truststore.
    #[error("issuer unknown: no path to a trusted anchor")]
    UnknownIssuer,
    /// A signature in the path does not verify with its issuer's key.
    #[error("signature does not verify with the issuer's key")]
    BadSignature,
    /// A name in the path is outside an issuer's name constraints.
    #[error("name outside an issuer's name constraints")]
    NameConstraints,
    /// A certificate of the path is revoked.
    #[error("certificate is revoked")]
    Revoked,
    /// The revocation status of a certificate of the path is unknown (no CRL covers it) or the CRL is
    /// unusable.
    #[error("revocation status unknown: {0}")]
    RevocationUnknown(&'static str),
    /// Path validation refused for another reason (named in plain words).
    #[error("path validation failed: {0}")]
    PathValidation(&'static str),
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
            Rule::PathLen { .. } | Rule::PathLenExceeded => "path-len",
            Rule::LeafIsCa => "leaf-is-ca",
            Rule::LeafKeyCertSign => "leaf-key-cert-sign",
            Rule::EkuWithoutClientAuth => "eku-client-auth",
            Rule::EkuMissing => "eku-missing",
            Rule::TooDeep { .. } => "too-deep",
            Rule::AnchorNotCa => "anchor-not-ca",
            Rule::CriticalExtension(_) => "critical-extension",
            Rule::UnknownIssuer => "unknown-issuer",
            Rule::BadSignature => "bad-signature",
            Rule::NameConstraints => "name-constraints",
            Rule::Revoked => "revoked",
            Rule::RevocationUnknown(_) => "revocation-unknown",
            Rule::PathValidation(_) => "path-validation",
            Rule::IdentityNotAllowed => "identity",
        }
    }
}

/// Why a client chain was refused: the policy, which certificate (depth, role and subject, where known)
/// and which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRefusal {
    /// The name of the policy that refused.
    pub policy: Arc<str>,
    /// The depth of the certificate in the verified path: 0 for the leaf, 1 for its issuer, ...; `None`
    /// when path validation refused without saying which certificate ("in the path").
    pub depth: Option<usize>,
    /// The part the certificate plays in the path; `None` as for `depth`.
    pub role: Option<Role>,
    /// The certificate's subject, RFC 4514 text (empty when unknown or unparsable).
    pub subject: String,
    /// The rule it broke.
    pub rule: Rule,
}

impl fmt::Display for ChainRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client chain refused by policy `{}`: ", self.policy)?;
        match (self.role, self.depth) {
            (Some(role), Some(depth)) => write!(f, "{role} at depth {depth}")?,
            (Some(role), None) => write!(f, "{role}")?,
            (None, _) => f.write_str("a certificate in the path")?,
        }
        if !self.subject.is_empty() {
            write!(f, " ({})", self.subject)?;
        }
        write!(f, ": {}", self.rule)
    }
}

impl std::error::Error for ChainRefusal {}

impl ChainRefusal {
    /// The rustls certificate error for this refusal, chosen for the TLS alert the client receives:
    ///
    /// | rule | error | alert |
    /// | --- | --- | --- |
    /// | expired, not yet valid | `ExpiredContext` / `NotValidYetContext` | certificate_expired |
    /// | signature algorithm, key size, curve, key algorithm, EKU | `InvalidPurpose` | unsupported_certificate |
    /// | unknown issuer | `UnknownIssuer` | unknown_ca |
    /// | bad signature | `BadSignature` | decrypt_error |
    /// | revoked | `Revoked` | certificate_revoked |
    /// | revocation status unknown | `UnknownRevocationStatus` | certificate_unknown |
    /// | identity not allowed | `ApplicationVerificationFailure` | access_denied |
    /// | every other rule (malformed, CA constraints, pathLen, CA leaf, too deep, name constraints, critical extension, ...) | `BadEncoding` | bad_certificate |
    ///
    /// The typed reason is logged, and the acceptor reports it with the handshake error.
    pub fn certificate_error(&self) -> CertificateError {
        let at = |secs: i64| UnixTime::since_unix_epoch(Duration::from_secs(secs.max(0) as u64));
        match &self.rule {
            Rule::Expired { not_after, now } => {
                CertificateError::ExpiredContext { time: at(*now), not_after: at(*not_after) }
            }
            Rule::NotYetValid { not_before, now } => {
                CertificateError::NotValidYetContext { time: at(*now), not_before: at(*not_before) }
            }
            Rule::Signature(_)
            | Rule::RsaKeySize { .. }
            | Rule::Curve(_)
            | Rule::KeyAlgorithm(_)
            | Rule::EkuWithoutClientAuth
            | Rule::EkuMissing => CertificateError::InvalidPurpose,
            Rule::UnknownIssuer => CertificateError::UnknownIssuer,
            Rule::BadSignature => CertificateError::BadSignature,
            Rule::Revoked => CertificateError::Revoked,
            Rule::RevocationUnknown(_) => CertificateError::UnknownRevocationStatus,
            Rule::IdentityNotAllowed => CertificateError::ApplicationVerificationFailure,
            Rule::Malformed(_)
            | Rule::NotCa
            | Rule::NoKeyCertSign
            | Rule::PathLen { .. }
            | Rule::PathLenExceeded
            | Rule::LeafIsCa
            | Rule::LeafKeyCertSign
            | Rule::TooDeep { .. }
            | Rule::AnchorNotCa
            | Rule::CriticalExtension(_)
            | Rule::NameConstraints
            | Rule::PathValidation(_) => CertificateError::BadEncoding,
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
    fn modern_is_the_default_rules() {
        assert_eq!(ChainPolicy::preset("modern"), Some(ChainPolicy::new("modern")));
    }

    #[test]
    fn presets_hold_the_documented_rules() {
        let strict = ChainPolicy::preset("strict").expect("strict");
        assert_eq!(strict.min_rsa_bits, 3072);
        assert_eq!(strict.curves, [Curve::P384, Curve::P521]);
        assert!(strict.allow_ed25519);
        assert_eq!(strict.min_signature_hash, SignatureHash::Sha384);
        assert_eq!(strict.eku, EkuRule::Required);
        assert_eq!(strict.max_chain_len, 3);
        let cnsa = ChainPolicy::preset("cnsa").expect("cnsa");
        assert_eq!(cnsa.min_rsa_bits, 3072);
        assert_eq!(cnsa.curves, [Curve::P384]);
        assert!(!cnsa.allow_ed25519);
        assert_eq!(cnsa.min_signature_hash, SignatureHash::Sha384);
        for p in [&strict, &cnsa] {
            assert!(!p.allow_sha1 && !p.allow_dsa && p.check_validity && p.check_ca_constraints);
            assert!(p.refuse_ca_leaf);
        }
        assert!(ChainPolicy::preset("Strict").is_none());
    }

    #[test]
    fn the_hash_floor_refuses_sha256_and_forbids_sha1() {
        let p = ChainPolicy::new("p").min_signature_hash(SignatureHash::Sha384).allow_sha1(true);
        assert!(p.check_hash(SignatureHash::Sha256, "x").is_err());
        assert!(p.check_hash(SignatureHash::Sha384, "x").is_ok());
        assert!(!p.sha1_allowed());
    }

    #[test]
    fn refusal_text_says_in_the_path_when_the_certificate_is_unknown() {
        let r = ChainPolicy::new("p").refusal_in_path(Rule::UnknownIssuer);
        assert_eq!(
            r.to_string(),
            "client chain refused by policy `p`: a certificate in the path: issuer unknown: no path to a trusted anchor"
        );
        let r = ChainPolicy::new("p").refusal(1, Role::Intermediate, "CN=i".into(), Rule::NotCa);
        assert!(r.to_string().contains("intermediate at depth 1 (CN=i): issuer is not a CA"), "{r}");
    }
}
