//! [`PolicyVerifier`]: rustls-webpki path validation with a [`ChainPolicy`] on top.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use portcullis_core::ratelimit::TLS_HANDSHAKES;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::identity::{AllowedIdentity, MAX_ALLOWED_IDENTITIES, client_cert};
use crate::policy::{ChainPolicy, ChainRefusal, Role, Rule};
use crate::store::{Anchor, AuditAllowances, ConfigError, Truststore};

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

/// A rustls [`ClientCertVerifier`] that checks a [`ChainPolicy`] on every presented certificate and on the
/// trust anchor the chain ends at, then hands the chain to rustls' [`WebPkiClientVerifier`] for path
/// validation and signatures, then checks the allowed identities.
///
/// The policy checks only parse certificates and run first, so a weak chain never costs a signature
/// verification. A refusal is logged with `tracing` and mapped to the fitting TLS alert
/// ([`ChainRefusal::certificate_error`]).
pub struct PolicyVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    policy: Arc<ChainPolicy>,
    anchors: HashMap<Vec<u8>, Vec<Anchor>>,
    allow: AuditAllowances,
    identities: Vec<AllowedIdentity>,
    auth: ClientAuth,
}

impl fmt::Debug for PolicyVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyVerifier")
            .field("policy", &self.policy.name())
            .field("anchors", &self.anchors.len())
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

    /// Audits the truststore against the policy (now) and builds the verifier.
    ///
    /// # Errors
    /// [`ConfigError::WeakAnchor`] from the audit, [`ConfigError::VirtualHost`] for too many or empty
    /// identities, [`ConfigError::Rustls`] when webpki refuses the roots or CRLs.
    pub fn build(self) -> Result<PolicyVerifier, ConfigError> {
        self.truststore.audit(&self.policy, UnixTime::now())?;
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
        let roots = Arc::new(self.truststore.root_store()?);
        let mut builder = WebPkiClientVerifier::builder_with_provider(roots, provider);
        if !self.revocation.crls.is_empty() {
            builder = builder.with_crls(self.revocation.crls.clone());
            if self.revocation.end_entity_only {
                builder = builder.only_check_end_entity_revocation();
            }
            if self.revocation.allow_unknown_status {
                builder = builder.allow_unknown_revocation_status();
            }
        }
        if self.auth == ClientAuth::Optional {
            builder = builder.allow_unauthenticated();
        }
        let inner = builder.build().map_err(|e| ConfigError::Rustls(e.to_string()))?;
        Ok(PolicyVerifier {
            inner,
            policy: Arc::new(self.policy),
            anchors: self.truststore.index(),
            allow: self.truststore.allowances(),
            identities: self.identities,
            auth: self.auth,
        })
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
        }
    }

    /// The policy.
    pub fn policy(&self) -> &ChainPolicy {
        &self.policy
    }

    /// Runs the policy checks only (parse-only, no signature): every presented certificate, then the anchors
    /// the chain can end at.
    ///
    /// # Errors
    /// The first [`ChainRefusal`].
    pub fn check_policy(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), ChainRefusal> {
        let policy = &*self.policy;
        let count = 1 + intermediates.len();
        if count > policy.max_chain_len {
            let subject = X509Certificate::from_der(end_entity).map(|(_, c)| c.subject().to_string());
            return Err(policy.refusal(
                0,
                Role::Leaf,
                subject.unwrap_or_default(),
                Rule::TooDeep { presented: count, max: policy.max_chain_len },
            ));
        }
        let certs = std::iter::once(end_entity).chain(intermediates);
        for (depth, der) in certs.enumerate() {
            let role = if depth == 0 { Role::Leaf } else { Role::Intermediate };
            let cert = match X509Certificate::from_der(der) {
                Ok((_, cert)) => cert,
                Err(e) => {
                    return Err(policy.refusal(depth, role, String::new(), Rule::Malformed(e.to_string())));
                }
            };
            if let Err(rule) = policy.check_cert(&cert, role, depth, Some(now)) {
                return Err(policy.refusal(depth, role, cert.subject().to_string(), rule));
            }
            // The anchors this certificate can chain to (a self-issued certificate is its own anchor).
            let issuer = cert.issuer().as_raw();
            if issuer == cert.subject().as_raw() {
                continue;
            }
            if let Some(candidates) = self.anchors.get(issuer) {
                self.check_anchor(candidates, depth + 1, now)?;
            }
        }
        Ok(())
    }

    /// Some anchor among `candidates` (same subject) must be usable at `depth`.
    fn check_anchor(&self, candidates: &[Anchor], depth: usize, now: UnixTime) -> Result<(), ChainRefusal> {
        let t = now.as_secs() as i64;
        let skew = self.policy.clock_skew.as_secs() as i64;
        let mut first_rule = None;
        for a in candidates {
            let rule = if self.policy.check_validity && !self.allow.expired_anchors && t + skew < a.not_before
            {
                Some(Rule::NotYetValid { not_before: a.not_before, now: t })
            } else if self.policy.check_validity && !self.allow.expired_anchors && t - skew > a.not_after {
                Some(Rule::Expired { not_after: a.not_after, now: t })
            } else if self.policy.check_ca_constraints
                && a.path_len.is_some_and(|l| (l as usize) < depth.saturating_sub(1))
            {
                Some(Rule::PathLen { limit: a.path_len.unwrap_or(0), below: depth - 1 })
            } else {
                None
            };
            match rule {
                None => return Ok(()),
                Some(r) => {
                    first_rule.get_or_insert((a, r));
                }
            }
        }
        match first_rule {
            Some((a, rule)) => Err(self.policy.refusal(depth, Role::Anchor, a.subject.clone(), rule)),
            None => Ok(()),
        }
    }

    /// The whole verification with a typed reason: policy, then webpki path validation, then allowed
    /// identities.
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
        if let Err(refusal) = self.check_policy(end_entity, intermediates, now) {
            let err = Error::InvalidCertificate(refusal.certificate_error());
            return Err((refusal, err));
        }
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now).map_err(|err| {
            let subject = X509Certificate::from_der(end_entity).map(|(_, c)| c.subject().to_string());
            let refusal = self.policy.refusal(
                0,
                Role::Leaf,
                subject.unwrap_or_default(),
                Rule::PathValidation(err.to_string()),
            );
            (refusal, err)
        })?;
        if !self.identities.is_empty() {
            let chain = [end_entity.clone()];
            let allowed = client_cert(&chain).is_some_and(|c| self.identities.iter().any(|i| i.matches(&c)));
            if !allowed {
                let subject = X509Certificate::from_der(end_entity).map(|(_, c)| c.subject().to_string());
                let refusal =
                    self.policy.refusal(0, Role::Leaf, subject.unwrap_or_default(), Rule::IdentityNotAllowed);
                let err = Error::InvalidCertificate(refusal.certificate_error());
                return Err((refusal, err));
            }
        }
        Ok(verified)
    }
}

/// Logs a refused chain at warn level, rate-limited with the other handshake failures
/// ([`TLS_HANDSHAKES`]): past the limit, at debug level.
fn log_refusal(refusal: &ChainRefusal) {
    let (policy, depth, role, subject, rule) =
        (&refusal.policy, refusal.depth, &refusal.role, &refusal.subject, refusal.rule.code());
    if TLS_HANDSHAKES.admit() {
        tracing::warn!(%policy, depth, %role, %subject, rule, "portcullis mtls: {refusal}");
    } else {
        tracing::debug!(%policy, depth, %role, %subject, rule, "portcullis mtls: {refusal}");
    }
}

impl ClientCertVerifier for PolicyVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
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
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
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
