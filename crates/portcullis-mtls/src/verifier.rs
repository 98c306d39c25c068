//! [`PolicyVerifier`]: rustls-webpki path validation with a [`ChainPolicy`] on the path it verified.

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Mutex};

use portcullis_core::ratelimit::TLS_HANDSHAKES;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use webpki::{EndEntityCert, KeyPurposeId, KeyPurposeIdIter, VerifiedPath};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::identity::{AllowedIdentity, MAX_ALLOWED_IDENTITIES, client_cert};
use crate::policy::{ChainPolicy, ChainRefusal, EkuRule, Role, Rule, parse};
use crate::store::{Anchor, AnchorRefusal, ConfigError, Truststore};

/// Whether a client certificate is asked for, and whether it is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    Off,
    /// A client certificate is asked for; a client without one is let through without identity. A client
    /// that presents a chain must pass the policy.
    Optional,
    /// A client certificate that passes the policy is required.
    #[default]
    Required,
}

/// Revocation checking with certificate revocation lists (done by rustls-webpki).
#[derive(Debug, Clone, Default)]
pub struct Revocation {
    /// The CRLs, DER.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// Check only the leaf's revocation status (default: the whole chain).
    pub end_entity_only: bool,
    /// Let a certificate whose status no CRL covers through (default: refuse, fail closed).
    pub allow_unknown_status: bool,
}

/// A rustls [`ClientCertVerifier`] that judges a client chain by the path rustls-webpki verified.
///
/// One verification, in this order:
///
/// 1. at most [`max_presented`](ChainPolicy::max_presented) certificates, then the leaf's own policy checks
///    ([`ChainPolicy::check_leaf`]: key, signature algorithm, validity, CA flags, critical extensions, EKU),
///    parsing only: a weak leaf never costs a signature verification;
/// 2. rustls-webpki's `EndEntityCert::verify_for_usage`, called once, builds and verifies the path from the
///    certificates the client sent, in whatever order, and hands every candidate path to the policy's CA
///    checks (issuers' keys and algorithms, validity, CA flags, pathLenConstraint per RFC 5280, path
///    length, the anchor's validity and pathLenConstraint); a candidate the policy refuses makes webpki try
///    the next one. Certificates the client sent that the path does not use are ignored (logged at debug);
/// 3. the allowed identities.
///
/// Every refusal is a typed [`ChainRefusal`] naming the rule and, where known, the certificate; it is
/// logged with `tracing` and mapped to the fitting TLS alert ([`ChainRefusal::certificate_error`]).
pub struct PolicyVerifier {
    policy: Arc<ChainPolicy>,
    /// The trust anchors for webpki, in the order of `anchors`.
    roots: Vec<TrustAnchor<'static>>,
    anchors: Vec<Anchor>,
    hints: Vec<DistinguishedName>,
    algs: WebPkiSupportedAlgorithms,
    crls: Vec<webpki::CertRevocationList<'static>>,
    revocation: Revocation,
    identities: Vec<AllowedIdentity>,
    auth: ClientAuth,
}

impl fmt::Debug for PolicyVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyVerifier")
            .field("policy", &self.policy.name())
            .field("anchors", &self.anchors.len())
            .field("crls", &self.crls.len())
            .field("identities", &self.identities.len())
            .field("auth", &self.auth)
            .finish()
    }
}

/// Builds a [`PolicyVerifier`]; see [`PolicyVerifier::builder`].
#[derive(Debug)]
pub struct PolicyVerifierBuilder {
    policy: ChainPolicy,
    truststore: Truststore,
    provider: Option<Arc<CryptoProvider>>,
    auth: ClientAuth,
    revocation: Revocation,
    identities: Vec<AllowedIdentity>,
    audit_at: Option<UnixTime>,
}

impl PolicyVerifierBuilder {
    /// Uses `provider` for signatures (default: [`default_provider`](crate::default_provider)).
    #[must_use]
    pub fn provider(mut self, provider: Arc<CryptoProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Optional or required client authentication (default required). [`ClientAuth::Off`] is treated as
    /// required here: a virtual host with client auth off has no verifier.
    #[must_use]
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Revocation checking with CRLs.
    #[must_use]
    pub fn revocation(mut self, revocation: Revocation) -> Self {
        self.revocation = revocation;
        self
    }

    /// Only these identities are let through (at most [`MAX_ALLOWED_IDENTITIES`]); empty lets every
    /// verified identity through.
    #[must_use]
    pub fn identities(mut self, identities: Vec<AllowedIdentity>) -> Self {
        self.identities = identities;
        self
    }

    /// The time the truststore is audited at (default: the wall clock when [`build`](Self::build) runs).
    /// Each chain is still judged at its handshake's time.
    #[must_use]
    pub fn audit_at(mut self, time: UnixTime) -> Self {
        self.audit_at = Some(time);
        self
    }

    /// Audits the truststore against the policy (at [`audit_at`](Self::audit_at)) and builds the verifier.
    ///
    /// # Errors
    /// [`ConfigError::WeakAnchor`] from the audit or for an anchor webpki cannot use,
    /// [`ConfigError::VirtualHost`] for too many or empty identities, [`ConfigError::Rustls`] for a CRL that
    /// cannot be parsed.
    pub fn build(self) -> Result<PolicyVerifier, ConfigError> {
        self.truststore.audit(&self.policy, self.audit_at.unwrap_or_else(UnixTime::now))?;
        if self.identities.len() > MAX_ALLOWED_IDENTITIES
            || self.identities.iter().any(AllowedIdentity::is_empty)
        {
            return Err(ConfigError::VirtualHost {
                vhost: String::new(),
                detail: format!(
                    "allowed identities: at most {MAX_ALLOWED_IDENTITIES}, each with at least one field"
                ),
            });
        }
        let provider = self.provider.unwrap_or_else(crate::default_provider);
        let anchors = self.truststore.anchors().to_vec();
        let mut roots = Vec::with_capacity(anchors.len());
        for a in &anchors {
            let anchor = webpki::anchor_from_trusted_cert(&a.der).map_err(|_| {
                ConfigError::WeakAnchor(Box::new(AnchorRefusal {
                    store: self.truststore.name().to_owned(),
                    file: a.file.to_string(),
                    subject: a.subject.clone(),
                    policy: self.policy.name().to_owned(),
                    rule: Rule::Malformed("not usable as a trust anchor by rustls-webpki".into()),
                    more: Vec::new(),
                }))
            })?;
            roots.push(anchor.to_owned());
        }
        let hints = roots.iter().map(|ta| DistinguishedName::in_sequence(ta.subject.as_ref())).collect();
        let mut crls = Vec::with_capacity(self.revocation.crls.len());
        for (i, der) in self.revocation.crls.iter().enumerate() {
            let crl = webpki::OwnedCertRevocationList::from_der(der.as_ref())
                .map_err(|_| ConfigError::Rustls(format!("CRL #{} cannot be parsed", i + 1)))?;
            crls.push(crl.into());
        }
        Ok(PolicyVerifier {
            policy: Arc::new(self.policy),
            roots,
            anchors,
            hints,
            algs: provider.signature_verification_algorithms,
            crls,
            revocation: self.revocation,
            identities: self.identities,
            auth: self.auth,
        })
    }
}

/// The EKU rule as rustls-webpki applies it to every certificate of a candidate path (see [`EkuRule`]).
/// `Required`'s "the leaf must carry clientAuth" is the policy's own leaf check; here intermediates are
/// held to `IfPresent`.
struct PathEku(EkuRule);

/// id-kp-clientAuth, 1.3.6.1.5.5.7.3.2.
const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
/// anyExtendedKeyUsage, 2.5.29.37.0.
const EKU_ANY: &[u8] = &[0x55, 0x1d, 0x25, 0x00];

impl webpki::ExtendedKeyUsageValidator for PathEku {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        if self.0 == EkuRule::Ignore {
            return Ok(());
        }
        let (client_auth, any) = (KeyPurposeId::new(EKU_CLIENT_AUTH), KeyPurposeId::new(EKU_ANY));
        let mut present = Vec::new();
        for id in iter {
            let id = id?;
            if id == client_auth || id == any {
                return Ok(());
            }
            present.push(id.to_decoded_oid());
        }
        if present.is_empty() {
            return Ok(());
        }
        Err(webpki::Error::RequiredEkuNotFoundContext(webpki::RequiredEkuNotFoundContext {
            required: webpki::KeyUsage::client_auth(),
            present,
        }))
    }
}

impl PolicyVerifier {
    /// A builder for a verifier of `policy` over `truststore`.
    pub fn builder(policy: ChainPolicy, truststore: Truststore) -> PolicyVerifierBuilder {
        PolicyVerifierBuilder {
            policy,
            truststore,
            provider: None,
            auth: ClientAuth::Required,
            revocation: Revocation::default(),
            identities: Vec::new(),
            audit_at: None,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &ChainPolicy {
        &self.policy
    }

    /// The policy's checks of a verification, parsing only (no signature): the leaf's own checks, then the
    /// CA checks over `path`, the intermediates of a path with the leaf's issuer first, ending at the
    /// truststore's anchor number `anchor` (`None` skips the anchor checks).
    ///
    /// [`verify`](Self::verify) runs the same checks, the leaf's before path building and the CA checks on
    /// each path rustls-webpki verified; this entry point exists to measure and test them alone.
    ///
    /// # Errors
    /// The first [`ChainRefusal`], with the depth and role of the certificate at fault.
    pub fn check_policy(
        &self,
        end_entity: &CertificateDer<'_>,
        path: &[CertificateDer<'_>],
        anchor: Option<usize>,
        now: UnixTime,
    ) -> Result<(), ChainRefusal> {
        let policy = &*self.policy;
        let leaf = parse(end_entity).map_err(|rule| policy.refusal(0, Role::Leaf, String::new(), rule))?;
        policy
            .check_leaf(&leaf, now)
            .map_err(|rule| policy.refusal(0, Role::Leaf, leaf.subject().to_string(), rule))?;
        let anchor = anchor.and_then(|i| self.anchors.get(i));
        self.check_issuers(path.iter().map(|c| c.as_ref()), path.len(), anchor, now)
    }

    fn check_issuers<'a>(
        &self,
        path: impl Iterator<Item = &'a [u8]>,
        count: usize,
        anchor: Option<&Anchor>,
        now: UnixTime,
    ) -> Result<(), ChainRefusal> {
        let policy = &*self.policy;
        if 1 + count > policy.max_chain_len {
            return Err(
                policy.refusal_in_path(Rule::TooDeep { presented: 1 + count, max: policy.max_chain_len })
            );
        }
        // Intermediates between the issuer being checked and the leaf, self-issued ones not counted.
        let mut below = 0;
        for (i, der) in path.enumerate() {
            let depth = i + 1;
            let cert = match X509Certificate::from_der(der) {
                Ok((_, cert)) => cert,
                Err(e) => {
                    let rule = Rule::Malformed(e.to_string());
                    return Err(policy.refusal(depth, Role::Intermediate, String::new(), rule));
                }
            };
            if let Err(rule) = policy.check_issuer(&cert, below, Some(now)) {
                return Err(policy.refusal(depth, Role::Intermediate, cert.subject().to_string(), rule));
            }
            if cert.subject().as_raw() != cert.issuer().as_raw() {
                below += 1;
            }
        }
        let Some(a) = anchor else { return Ok(()) };
        let refuse = |rule| policy.refusal(count + 1, Role::Anchor, a.subject.clone(), rule);
        if policy.check_validity {
            policy.check_window(a.not_before, a.not_after, now).map_err(refuse)?;
        }
        if policy.check_ca_constraints
            && let Some(limit) = a.path_len
            && (limit as usize) < below
        {
            return Err(refuse(Rule::PathLen { limit, below }));
        }
        Ok(())
    }

    /// The policy's CA checks on a candidate path rustls-webpki verified.
    fn check_verified(&self, path: &VerifiedPath<'_>, now: UnixTime) -> Result<(), ChainRefusal> {
        let ta = path.anchor();
        let anchor = self
            .roots
            .iter()
            .position(|r| {
                r.subject.as_ref() == ta.subject.as_ref()
                    && r.subject_public_key_info.as_ref() == ta.subject_public_key_info.as_ref()
            })
            .and_then(|i| self.anchors.get(i));
        let count = path.intermediate_certificates().count();
        let ders: Vec<CertificateDer<'_>> = path.intermediate_certificates().map(|c| c.der()).collect();
        self.check_issuers(ders.iter().map(|d| d.as_ref()), count, anchor, now)
    }

    /// The whole verification with a typed reason: leaf checks, path validation with the policy's CA checks
    /// on the verified path, allowed identities.
    ///
    /// # Errors
    /// The [`ChainRefusal`] and the rustls error to hand to the handshake (unboxed: the refusal path is
    /// the cold one and is used right away).
    #[allow(clippy::result_large_err)]
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, (ChainRefusal, Error)> {
        self.judge(end_entity, intermediates, now).map(|()| ClientCertVerified::assertion()).map_err(
            |refusal| {
                let err = Error::InvalidCertificate(refusal.certificate_error());
                (refusal, err)
            },
        )
    }

    fn judge(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), ChainRefusal> {
        let policy = &*self.policy;
        let presented = 1 + intermediates.len();
        if presented > policy.max_presented {
            let rule = Rule::TooDeep { presented, max: policy.max_presented };
            return Err(policy.refusal(0, Role::Leaf, String::new(), rule));
        }
        let leaf = parse(end_entity).map_err(|rule| policy.refusal(0, Role::Leaf, String::new(), rule))?;
        let subject = || leaf.subject().to_string();
        policy.check_leaf(&leaf, now).map_err(|rule| policy.refusal(0, Role::Leaf, subject(), rule))?;

        let ee = EndEntityCert::try_from(end_entity)
            .map_err(|e| policy.refusal(0, Role::Leaf, subject(), rule_of(&e)))?;
        let crl_refs: Vec<&webpki::CertRevocationList<'_>> = self.crls.iter().collect();
        let revocation = webpki::RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
            b.with_depth(if self.revocation.end_entity_only {
                webpki::RevocationCheckDepth::EndEntity
            } else {
                webpki::RevocationCheckDepth::Chain
            })
            .with_status_policy(if self.revocation.allow_unknown_status {
                webpki::UnknownStatusPolicy::Allow
            } else {
                webpki::UnknownStatusPolicy::Deny
            })
            .with_expiration_policy(webpki::ExpirationPolicy::Ignore)
            .build()
        });
        // The policy's refusal of the first candidate path webpki verified, if no candidate passes.
        let refused: RefCell<Option<ChainRefusal>> = RefCell::new(None);
        let on_path = |path: &VerifiedPath<'_>| -> Result<(), webpki::Error> {
            self.check_verified(path, now).map_err(|refusal| {
                refused.borrow_mut().get_or_insert(refusal);
                webpki::Error::UnknownIssuer
            })
        };
        let path = ee
            .verify_for_usage(
                self.algs.all,
                &self.roots,
                intermediates,
                now,
                PathEku(policy.eku),
                revocation,
                Some(&on_path),
            )
            .map_err(|e| {
                refused
                    .take()
                    .or_else(|| self.diagnose(&leaf, intermediates, &e, now))
                    .unwrap_or_else(|| webpki_refusal(policy, &e, &leaf))
            })?;
        let used = path.intermediate_certificates().count();
        if used < intermediates.len() {
            tracing::debug!(
                policy = %policy.name(),
                presented = intermediates.len(),
                used,
                "portcullis mtls: certificates the client sent outside the verified path were ignored"
            );
        }
        if !self.identities.is_empty() {
            let chain = [end_entity.clone().into_owned()];
            let allowed = client_cert(&chain).is_some_and(|c| self.identities.iter().any(|i| i.matches(&c)));
            if !allowed {
                return Err(policy.refusal(0, Role::Leaf, subject(), Rule::IdentityNotAllowed));
            }
        }
        Ok(())
    }
}

impl PolicyVerifier {
    /// After path validation failed without a candidate path reaching the policy: the policy's verdict on
    /// the one path the names allow. Starting at the leaf, each issuer must be the only presented
    /// certificate with that subject, until a name the truststore holds; such a path is the only one webpki
    /// could have tried, so a certificate on it that breaks the policy is the certificate at fault, named
    /// with its depth; and when webpki found no issuer, the last certificate of that path is the one whose
    /// issuer is neither sent nor trusted. `None` when the names do not single out one path or nothing is
    /// found there.
    fn diagnose(
        &self,
        leaf: &X509Certificate<'_>,
        intermediates: &[CertificateDer<'_>],
        error: &webpki::Error,
        now: UnixTime,
    ) -> Option<ChainRefusal> {
        let parsed: Vec<X509Certificate<'_>> = intermediates
            .iter()
            .map(|d| X509Certificate::from_der(d.as_ref()).map(|(_, c)| c))
            .collect::<Result<_, _>>()
            .ok()?;
        let mut path: Vec<usize> = Vec::new();
        let mut issuer = leaf.issuer().as_raw();
        while !self.anchors.iter().any(|a| a.subject_raw == issuer) {
            let mut candidates = parsed.iter().enumerate().filter(|(_, c)| c.subject().as_raw() == issuer);
            let Some((i, cert)) = candidates.next() else {
                if !matches!(error, webpki::Error::UnknownIssuer) {
                    return None;
                }
                let depth = path.len();
                let (role, subject) = match path.last() {
                    None => (Role::Leaf, leaf.subject().to_string()),
                    Some(&i) => (Role::Intermediate, parsed[i].subject().to_string()),
                };
                // The policy's own faults on the way come first.
                let ders = path.iter().map(|&i| intermediates[i].as_ref());
                return Some(
                    self.check_issuers(ders, path.len(), None, now)
                        .err()
                        .unwrap_or_else(|| self.policy.refusal(depth, role, subject, Rule::UnknownIssuer)),
                );
            };
            if candidates.next().is_some() || path.contains(&i) {
                return None;
            }
            path.push(i);
            issuer = cert.issuer().as_raw();
        }
        let ders = path.iter().map(|&i| intermediates[i].as_ref());
        self.check_issuers(ders, path.len(), None, now).err()
    }
}

/// A webpki refusal as a typed [`ChainRefusal`]: the leaf where webpki's error can only be about the leaf,
/// "in the path" otherwise.
fn webpki_refusal(policy: &ChainPolicy, e: &webpki::Error, leaf: &X509Certificate<'_>) -> ChainRefusal {
    let rule = rule_of(e);
    match e {
        webpki::Error::CaUsedAsEndEntity => policy.refusal(0, Role::Leaf, leaf.subject().to_string(), rule),
        _ => policy.refusal_in_path(rule),
    }
}

/// The policy rule for a webpki error, in plain words (webpki's own `Display` is its `Debug`).
#[allow(deprecated)] // the deprecated variants are still matched, so a webpki that returns them is mapped
fn rule_of(e: &webpki::Error) -> Rule {
    use webpki::Error as E;
    match e {
        E::UnknownIssuer => Rule::UnknownIssuer,
        E::PathLenConstraintViolated => Rule::PathLenExceeded,
        E::NameConstraintViolation => Rule::NameConstraints,
        E::CertExpired { time, not_after } => {
            Rule::Expired { not_after: not_after.as_secs() as i64, now: time.as_secs() as i64 }
        }
        E::CertNotValidYet { time, not_before } => {
            Rule::NotYetValid { not_before: not_before.as_secs() as i64, now: time.as_secs() as i64 }
        }
        E::InvalidSignatureForPublicKey => Rule::BadSignature,
        E::CertRevoked => Rule::Revoked,
        E::UnknownRevocationStatus => Rule::RevocationUnknown("no CRL covers the certificate"),
        E::CrlExpired { .. } => Rule::RevocationUnknown("a CRL is expired"),
        E::IssuerNotCrlSigner
        | E::InvalidCrlSignatureForPublicKey
        | E::UnsupportedCrlSignatureAlgorithm
        | E::UnsupportedCrlSignatureAlgorithmContext(_)
        | E::UnsupportedCrlSignatureAlgorithmForPublicKey
        | E::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_)
        | E::UnsupportedCrlVersion
        | E::UnsupportedDeltaCrl
        | E::UnsupportedIndirectCrl
        | E::UnsupportedCrlIssuingDistributionPoint
        | E::UnsupportedRevocationReason
        | E::UnsupportedRevocationReasonsPartitioning
        | E::InvalidCrlNumber => Rule::RevocationUnknown("a CRL cannot be used"),
        E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) | E::EmptyEkuExtension => {
            Rule::EkuWithoutClientAuth
        }
        E::UnsupportedCriticalExtension => Rule::CriticalExtension("(not named by path validation)".into()),
        E::CaUsedAsEndEntity => Rule::LeafIsCa,
        E::EndEntityUsedAsCa => Rule::NotCa,
        E::UnsupportedSignatureAlgorithm | E::UnsupportedSignatureAlgorithmContext(_) => {
            Rule::Signature("(not supported by path validation)".into())
        }
        E::UnsupportedSignatureAlgorithmForPublicKey
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            Rule::Signature("(does not fit the issuer's key)".into())
        }
        E::SignatureAlgorithmMismatch => Rule::Malformed("the two signature algorithm fields differ".into()),
        E::CertDistrusted => Rule::PathValidation("a certificate of the path is distrusted"),
        E::MaximumPathDepthExceeded => Rule::PathValidation("the path is too deep"),
        E::MaximumSignatureChecksExceeded
        | E::MaximumPathBuildCallsExceeded
        | E::MaximumNameConstraintComparisonsExceeded => {
            Rule::PathValidation("the path building budget is exhausted")
        }
        E::MalformedNameConstraint | E::InvalidNetworkMaskConstraint => {
            Rule::Malformed("name constraints cannot be parsed".into())
        }
        E::UnsupportedCertVersion => Rule::Malformed("unsupported certificate version".into()),
        E::InvalidCertValidity => Rule::Malformed("invalid validity period".into()),
        E::InvalidSerialNumber => Rule::Malformed("invalid serial number".into()),
        E::BadDer
        | E::BadDerTime
        | E::TrailingData(_)
        | E::MalformedExtensions
        | E::ExtensionValueInvalid
        | E::MalformedDnsIdentifier => Rule::Malformed("DER encoding rejected by path validation".into()),
        _ => Rule::PathValidation("refused by path validation"),
    }
}

/// Logs a refused chain at warn level, rate-limited with the other handshake failures
/// ([`TLS_HANDSHAKES`]): past the limit, at debug level.
fn log_refusal(refusal: &ChainRefusal) {
    let depth = refusal.depth.map_or_else(|| "in the path".to_owned(), |d| d.to_string());
    let role = refusal.role.map_or_else(|| "unknown".to_owned(), |r| r.to_string());
    let (policy, subject, rule) = (&refusal.policy, &refusal.subject, refusal.rule.code());
    if TLS_HANDSHAKES.admit() {
        tracing::warn!(%policy, %depth, %role, %subject, rule, "portcullis mtls: {refusal}");
    } else {
        tracing::debug!(%policy, %depth, %role, %subject, rule, "portcullis mtls: {refusal}");
    }
}

impl ClientCertVerifier for PolicyVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.auth != ClientAuth::Optional
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.verify(end_entity, intermediates, now).map_err(|(refusal, err)| {
            log_refusal(&refusal);
            err
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The verifier of one connection: records the refusal for the acceptor and, in "refuse at HTTP" mode,
/// completes the handshake without identity.
#[derive(Debug)]
pub(crate) struct ConnVerifier {
    pub(crate) inner: Arc<PolicyVerifier>,
    pub(crate) slot: Arc<Mutex<Option<ChainRefusal>>>,
    pub(crate) refuse_at_http: bool,
}

impl ConnVerifier {
    /// In "refuse at HTTP" mode, whether this connection's chain was already refused. Its signature then
    /// proves nothing that matters (no identity is granted, every request is answered 403 with the reason),
    /// and checking it could only turn the readable 403 into a handshake failure: ring cannot verify
    /// signatures of the very keys the policy refuses (RSA under 2048 bits).
    fn refused_at_http(&self) -> bool {
        self.refuse_at_http && self.slot.lock().map(|s| s.is_some()).unwrap_or(false)
    }
}

impl ClientCertVerifier for ConnVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        // In "refuse at HTTP" mode a client without certificate is answered 403 rather than at TLS.
        !self.refuse_at_http && self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        match self.inner.verify(end_entity, intermediates, now) {
            Ok(v) => Ok(v),
            Err((refusal, err)) => {
                log_refusal(&refusal);
                if let Ok(mut slot) = self.slot.lock() {
                    *slot = Some(refusal);
                }
                if self.refuse_at_http { Ok(ClientCertVerified::assertion()) } else { Err(err) }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        if self.refused_at_http() {
            return Ok(HandshakeSignatureValid::assertion());
        }
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        if self.refused_at_http() {
            return Ok(HandshakeSignatureValid::assertion());
        }
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
