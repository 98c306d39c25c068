//! Named keystores (a server certificate chain and its key) and truststores (the client CAs), and the
//! truststore audit.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::sign::CertifiedKey;

use crate::policy::{ANCHOR_EXTENSIONS, ChainPolicy, Rule, parse, unknown_critical_extension};

/// A configuration error: a store that cannot be loaded, a weak trust anchor, a virtual host that refers to
/// a store that does not exist, ...
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read or holds no usable PEM.
    #[error("{file}: {detail}")]
    File {
        /// The file.
        file: String,
        /// What went wrong.
        detail: String,
    },
    /// The keystore's certificate and key do not fit together or are not usable by rustls.
    #[error("keystore `{name}`: {detail}")]
    Keystore {
        /// The keystore's name.
        name: String,
        /// What went wrong.
        detail: String,
    },
    /// A trust anchor breaks a rule of the policy it is audited against.
    #[error("{0}")]
    WeakAnchor(Box<AnchorRefusal>),
    /// The truststore has no anchors.
    #[error("truststore `{0}` holds no certificate")]
    EmptyTruststore(String),
    /// A virtual host refers to a store that does not exist.
    #[error("virtual host `{vhost}`: no {kind} named `{name}`")]
    UnknownStore {
        /// The virtual host.
        vhost: String,
        /// `keystore` or `truststore`.
        kind: &'static str,
        /// The missing name.
        name: String,
    },
    /// A virtual host's settings are inconsistent.
    #[error("virtual host `{vhost}`: {detail}")]
    VirtualHost {
        /// The virtual host.
        vhost: String,
        /// What is wrong.
        detail: String,
    },
    /// The refusal of a runtime change (deleting the default virtual host, a store still in use, ...).
    #[error("refused: {0}")]
    Refused(String),
    /// rustls refused to build a configuration.
    #[error("rustls: {0}")]
    Rustls(String),
}

/// Why the truststore audit refused an anchor: which truststore, file, subject, policy and rule.
///
/// Every weakness of the anchor is listed: the first in `rule`, the others in `more`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "truststore `{store}`: anchor {subject} from {file} refused by policy `{policy}`: {rule}{}",
    more.iter().map(|r| format!("; also {r}")).collect::<String>()
)]
pub struct AnchorRefusal {
    /// The truststore.
    pub store: String,
    /// The file the anchor came from (or `<memory>`).
    pub file: String,
    /// The anchor's subject.
    pub subject: String,
    /// The policy.
    pub policy: String,
    /// The rule broken (the first found).
    pub rule: Rule,
    /// The other rules the same anchor breaks.
    pub more: Vec<Rule>,
}

/// A named server certificate chain and private key, referenced by virtual hosts.
#[derive(Debug, Clone)]
pub struct Keystore {
    name: Arc<str>,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: Arc<PrivateKeyDer<'static>>,
}

impl Keystore {
    /// A keystore from DER values.
    pub fn new(
        name: impl Into<Arc<str>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Self {
        Keystore { name: name.into(), chain, key: Arc::new(key) }
    }

    /// A keystore from PEM text (the chain, leaf first, and a PKCS#8, PKCS#1 or SEC1 key).
    ///
    /// # Errors
    /// [`ConfigError::File`] when no certificate or key is found.
    pub fn from_pem(name: impl Into<Arc<str>>, chain_pem: &str, key_pem: &str) -> Result<Self, ConfigError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::File { file: "<memory>".into(), detail: e.to_string() })?;
        if chain.is_empty() {
            return Err(ConfigError::File { file: "<memory>".into(), detail: "no certificate".into() });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| ConfigError::File { file: "<memory>".into(), detail: e.to_string() })?;
        Ok(Keystore::new(name, chain, key))
    }

    /// A keystore from PEM files.
    ///
    /// # Errors
    /// [`ConfigError::File`] naming the file that cannot be read or holds nothing usable.
    pub fn from_pem_files(
        name: impl Into<Arc<str>>,
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, ConfigError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| ConfigError::File { file: p.display().to_string(), detail: e.to_string() })
        };
        let (chain_path, key_path) = (chain.as_ref(), key.as_ref());
        let (c, k) = (read(chain_path)?, read(key_path)?);
        Keystore::from_pem(name, &c, &k).map_err(|e| match e {
            ConfigError::File { detail, .. } => ConfigError::File {
                file: format!("{} / {}", chain_path.display(), key_path.display()),
                detail,
            },
            other => other,
        })
    }

    /// The keystore's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks that the private key can be used and belongs to the leaf certificate.
    ///
    /// # Errors
    /// [`ConfigError::Keystore`] when the key cannot be loaded or is another certificate's.
    pub fn check_key(&self) -> Result<(), ConfigError> {
        self.certified_key(&crate::default_provider()).map(|_| ())
    }

    pub(crate) fn certified_key(&self, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, ConfigError> {
        CertifiedKey::from_der(self.chain.clone(), self.key.clone_key(), provider)
            .map(Arc::new)
            .map_err(|e| ConfigError::Keystore { name: self.name.to_string(), detail: e.to_string() })
    }
}

/// One trust anchor of a [`Truststore`] and where it came from.
#[derive(Debug, Clone)]
pub struct Anchor {
    /// The certificate, DER.
    pub der: CertificateDer<'static>,
    /// The file it was read from (`<memory>` otherwise).
    pub file: Arc<str>,
    /// Its subject, RFC 4514 text.
    pub subject: String,
    pub(crate) subject_raw: Vec<u8>,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    pub(crate) path_len: Option<u32>,
}

/// What the truststore audit lets through, when explicitly allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditAllowances {
    /// Allow anchors that break the policy's algorithm and key rules (short keys, SHA-1 self-signatures).
    pub weak_anchors: bool,
    /// Allow anchors that are outside their validity at the audit (loading a truststore whose anchor
    /// expires is then possible). Only the audit is affected: a chain whose verified path ends at an anchor
    /// outside its validity is still refused at its handshake.
    pub expired_anchors: bool,
    /// Allow non-CA certificates as anchors (pinning a leaf).
    pub non_ca_anchors: bool,
}

/// A named set of trust anchors for client certificates, referenced by virtual hosts.
///
/// Audited against each virtual host's [`ChainPolicy`] when the host is configured
/// ([`Truststore::audit`]): a weak anchor, an expired anchor or a non-CA anchor is a configuration error
/// unless allowed with [`Truststore::allow`].
#[derive(Debug, Clone)]
pub struct Truststore {
    name: Arc<str>,
    anchors: Vec<Anchor>,
    allow: AuditAllowances,
}

impl Truststore {
    /// An empty truststore named `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Truststore { name: name.into(), anchors: Vec::new(), allow: AuditAllowances::default() }
    }

    /// The truststore's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The anchors.
    pub fn anchors(&self) -> &[Anchor] {
        &self.anchors
    }

    /// Explicitly allows anchors the audit would refuse.
    #[must_use]
    pub fn allow(mut self, allow: AuditAllowances) -> Self {
        self.allow = allow;
        self
    }

    /// Adds a DER anchor, recording `file` as its origin.
    ///
    /// # Errors
    /// [`ConfigError::File`] when the certificate cannot be parsed.
    pub fn add_der(&mut self, der: CertificateDer<'static>, file: &str) -> Result<(), ConfigError> {
        let cert = parse(&der).map_err(|e| ConfigError::File { file: file.into(), detail: e.to_string() })?;
        let validity = cert.validity();
        let path_len = cert.basic_constraints().ok().flatten().and_then(|bc| bc.value.path_len_constraint);
        let anchor = Anchor {
            file: file.into(),
            subject: cert.subject().to_string(),
            subject_raw: cert.subject().as_raw().to_vec(),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            path_len,
            der: der.clone(),
        };
        self.anchors.push(anchor);
        Ok(())
    }

    /// Adds every certificate of PEM text, recording `file` as their origin.
    ///
    /// # Errors
    /// [`ConfigError::File`] when the PEM or a certificate cannot be parsed.
    pub fn add_pem(&mut self, pem: &str, file: &str) -> Result<(), ConfigError> {
        for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let der = der.map_err(|e| ConfigError::File { file: file.into(), detail: e.to_string() })?;
            self.add_der(der, file)?;
        }
        Ok(())
    }

    /// Adds every certificate of a PEM file.
    ///
    /// # Errors
    /// [`ConfigError::File`] naming the file.
    pub fn add_pem_file(&mut self, path: impl AsRef<Path>) -> Result<(), ConfigError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let pem = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::File { file: file.clone(), detail: e.to_string() })?;
        self.add_pem(&pem, &file)
    }

    /// Checks every anchor against `policy` at time `now`: algorithms and key sizes (of the anchor's own key
    /// and its self-signature), CA constraints, validity. Allowed exceptions are skipped.
    ///
    /// # Errors
    /// [`ConfigError::WeakAnchor`] naming the file, subject and rule of the first refused anchor, or
    /// [`ConfigError::EmptyTruststore`].
    pub fn audit(&self, policy: &ChainPolicy, now: UnixTime) -> Result<(), ConfigError> {
        if self.anchors.is_empty() {
            return Err(ConfigError::EmptyTruststore(self.name.to_string()));
        }
        for anchor in &self.anchors {
            let mut rules = self.audit_one(anchor, policy, now).into_iter();
            if let Some(rule) = rules.next() {
                return Err(ConfigError::WeakAnchor(Box::new(AnchorRefusal {
                    store: self.name.to_string(),
                    file: anchor.file.to_string(),
                    subject: anchor.subject.clone(),
                    policy: policy.name().to_owned(),
                    rule,
                    more: rules.collect(),
                })));
            }
        }
        Ok(())
    }

    /// Every rule `anchor` breaks (none: it passes).
    fn audit_one(&self, anchor: &Anchor, policy: &ChainPolicy, now: UnixTime) -> Vec<Rule> {
        let cert = match parse(&anchor.der) {
            Ok(cert) => cert,
            Err(rule) => return vec![rule],
        };
        let mut broken = Vec::new();
        // A critical extension nothing here enforces would be silently ignored on every chain: refused,
        // whatever the allowances.
        if let Some(oid) = unknown_critical_extension(&cert, ANCHOR_EXTENSIONS) {
            broken.push(Rule::CriticalExtension(oid));
        }
        let is_ca = cert.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca);
        if !is_ca && !self.allow.non_ca_anchors {
            broken.push(Rule::AnchorNotCa);
        }
        if !self.allow.expired_anchors && policy.check_validity {
            broken.extend(policy.check_window(anchor.not_before, anchor.not_after, now).err());
        }
        if !self.allow.weak_anchors {
            broken.extend(policy.check_signature(&cert).err());
            broken.extend(policy.check_key(&cert).err());
            if is_ca {
                // pathLenConstraint is checked per chain, on the verified path.
                broken.extend(policy.check_ca_flags(&cert, 0).err());
            }
        }
        broken
    }
}
