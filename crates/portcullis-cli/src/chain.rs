//! `portcullis check-chain`: the verdict of a chain policy on a client certificate chain, certificate by
//! certificate, and of the path verification.
//!
//! Nothing here judges a certificate: each certificate's line is [`ChainPolicy::check_leaf`] (the leaf) or
//! [`ChainPolicy::check_issuer`] (the others, in the order presented), and the verdict is
//! [`PolicyVerifier::verify`], the verifier a TLS listener runs in the handshake (rustls-webpki path
//! validation, the policy's checks on the path it verified, the allowed identities).

use std::path::Path;

use portcullis_mtls::{ChainPolicy, PolicyVerifier, Truststore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde_json::{Value, json};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

/// Reads a PEM file of certificates (leaf first).
///
/// # Errors
/// The file cannot be read or holds no certificate.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(chain)
}

/// What `check-chain` found.
#[derive(Debug, Clone)]
pub struct ChainReport {
    /// The chain file.
    pub file: String,
    /// The policy's name.
    pub policy: String,
    /// The truststore's name and anchor subjects.
    pub truststore: (String, Vec<String>),
    /// One entry per presented certificate.
    pub certificates: Vec<Value>,
    /// The truststore audit under the policy: `None` when it passes.
    pub audit: Option<String>,
    /// The verifier's verdict: `None` when accepted, else the refusal and its rule code.
    pub refusal: Option<(String, String)>,
}

impl ChainReport {
    /// Whether the chain is accepted.
    pub fn accepted(&self) -> bool {
        self.audit.is_none() && self.refusal.is_none()
    }

    /// The report for machines.
    pub fn json(&self) -> Value {
        json!({
            "chain": self.file,
            "policy": self.policy,
            "truststore": { "name": self.truststore.0, "anchors": self.truststore.1 },
            "certificates": self.certificates,
            "truststore_audit": self.audit,
            "verdict": if self.accepted() { "accepted" } else { "refused" },
            "refusal": self.refusal.as_ref().map(|(text, code)| json!({ "detail": text, "rule": code })),
        })
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let push = |out: &mut String, line: String| {
            out.push_str(&line);
            out.push('\n');
        };
        push(
            &mut out,
            format!(
                "chain {}: {} certificate(s), policy `{}`, truststore `{}` ({} anchor(s))",
                self.file,
                self.certificates.len(),
                self.policy,
                self.truststore.0,
                self.truststore.1.len()
            ),
        );
        for c in &self.certificates {
            push(&mut out, String::new());
            push(&mut out, format!("certificate {} ({})", c["index"], c["role"].as_str().unwrap_or("")));
            for key in ["subject", "issuer", "key", "signature", "validity", "ca", "key_usage", "eku"] {
                push(&mut out, format!("  {key:<11} {}", c[key].as_str().unwrap_or("-")));
            }
            let verdict = match c["policy"]["verdict"].as_str() {
                Some("pass") => "pass".to_owned(),
                _ => format!(
                    "refused: {} [{}]",
                    c["policy"]["detail"].as_str().unwrap_or(""),
                    c["policy"]["rule"].as_str().unwrap_or("")
                ),
            };
            push(&mut out, format!("  {:<11} {verdict}", "policy"));
        }
        push(&mut out, String::new());
        for (i, a) in self.truststore.1.iter().enumerate() {
            push(&mut out, format!("anchor {i}: {a}"));
        }
        match &self.audit {
            None => push(&mut out, "truststore audit: pass".into()),
            Some(e) => push(&mut out, format!("truststore audit: refused: {e}")),
        }
        match &self.refusal {
            None => push(
                &mut out,
                "path verification: pass (rustls-webpki, then the policy on the verified path)".into(),
            ),
            Some((text, code)) => push(&mut out, format!("path verification: refused: {text} [{code}]")),
        }
        push(&mut out, format!("verdict: {}", if self.accepted() { "accepted" } else { "refused" }));
        out
    }
}

/// Judges `chain` (leaf first) under `policy` against `truststore` at `now`.
pub fn check_chain(
    file: &str,
    chain: &[CertificateDer<'static>],
    policy: ChainPolicy,
    truststore: Truststore,
    now: UnixTime,
) -> ChainReport {
    let mut certificates = Vec::new();
    for (i, der) in chain.iter().enumerate() {
        certificates.push(describe(i, der, &policy, now));
    }
    let anchors: Vec<String> =
        truststore.anchors().iter().map(|a| format!("{} ({})", a.subject, a.file)).collect();
    let trust = (truststore.name().to_owned(), anchors);
    let audit = truststore.audit(&policy, now).err().map(|e| e.to_string());
    let policy_name = policy.name().to_owned();
    let refusal = match PolicyVerifier::builder(policy, truststore).audit_at(now).build() {
        Err(e) => Some((e.to_string(), "configuration".to_owned())),
        Ok(verifier) => match chain.split_first() {
            None => Some(("no certificate".to_owned(), "malformed".to_owned())),
            Some((leaf, rest)) => verifier
                .verify(leaf, rest, now)
                .err()
                .map(|(refusal, _)| (refusal.to_string(), refusal.rule.code().to_owned())),
        },
    };
    ChainReport {
        file: file.to_owned(),
        policy: policy_name,
        truststore: trust,
        certificates,
        audit,
        refusal,
    }
}

/// One certificate: what it is, and the policy's rule on it alone.
fn describe(index: usize, der: &CertificateDer<'_>, policy: &ChainPolicy, now: UnixTime) -> Value {
    let role = if index == 0 { "leaf" } else { "issuer, as presented" };
    let cert = match X509Certificate::from_der(der.as_ref()) {
        Ok((_, cert)) => cert,
        Err(e) => {
            return json!({
                "index": index, "role": role, "subject": "(unparsable)",
                "policy": { "verdict": "refused", "rule": "malformed", "detail": format!("malformed certificate: {e}") },
            });
        }
    };
    let registry = x509_parser::objects::oid_registry();
    let signature = x509_parser::objects::oid2sn(&cert.signature_algorithm.algorithm, registry)
        .map_or_else(|_| cert.signature_algorithm.algorithm.to_id_string(), str::to_owned);
    let validity =
        format!("{} .. {}", rfc3339(cert.validity().not_before), rfc3339(cert.validity().not_after));
    let ca = match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => match bc.value.path_len_constraint {
            Some(n) => format!("yes (CA:TRUE, pathLenConstraint {n})"),
            None => "yes (CA:TRUE)".to_owned(),
        },
        Ok(Some(_)) => "no (CA:FALSE)".to_owned(),
        Ok(None) => "no (no basicConstraints)".to_owned(),
        Err(e) => format!("unreadable: {e}"),
    };
    let key_usage = match cert.key_usage() {
        Ok(Some(ku)) => ku.value.to_string(),
        Ok(None) => "-".to_owned(),
        Err(e) => format!("unreadable: {e}"),
    };
    let eku = match cert.extended_key_usage() {
        Ok(Some(e)) => {
            let e = e.value;
            let mut names = Vec::new();
            for (on, name) in [
                (e.any, "any"),
                (e.server_auth, "serverAuth"),
                (e.client_auth, "clientAuth"),
                (e.code_signing, "codeSigning"),
                (e.email_protection, "emailProtection"),
                (e.time_stamping, "timeStamping"),
                (e.ocsp_signing, "ocspSigning"),
            ] {
                if on {
                    names.push(name.to_owned());
                }
            }
            names.extend(e.other.iter().map(|o| o.to_id_string()));
            names.join(", ")
        }
        Ok(None) => "-".to_owned(),
        Err(e) => format!("unreadable: {e}"),
    };
    // Below an issuer presented at index i are the i - 1 certificates presented between it and the leaf.
    let verdict = if index == 0 {
        policy.check_leaf(&cert, now)
    } else {
        policy.check_issuer(&cert, index - 1, Some(now))
    };
    let policy_verdict = match verdict {
        Ok(()) => json!({ "verdict": "pass" }),
        Err(rule) => json!({ "verdict": "refused", "rule": rule.code(), "detail": rule.to_string() }),
    };
    json!({
        "index": index,
        "role": role,
        "subject": cert.subject().to_string(),
        "issuer": cert.issuer().to_string(),
        "key": key_description(&cert),
        "signature": signature,
        "validity": validity,
        "not_before": cert.validity().not_before.timestamp(),
        "not_after": cert.validity().not_after.timestamp(),
        "ca": ca,
        "key_usage": key_usage,
        "eku": eku,
        "policy": policy_verdict,
    })
}

fn key_description(cert: &X509Certificate<'_>) -> String {
    use x509_parser::oid_registry::{OID_EC_P256, OID_NIST_EC_P384, OID_NIST_EC_P521, OID_SIG_ED25519};
    let spki = cert.public_key();
    if spki.algorithm.algorithm == OID_SIG_ED25519 {
        return "Ed25519".to_owned();
    }
    match spki.parsed() {
        Ok(PublicKey::RSA(k)) => format!("RSA {} bits", k.key_size()),
        Ok(PublicKey::EC(_)) => {
            let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
            match curve {
                Some(c) if c == OID_EC_P256 => "EC P-256".to_owned(),
                Some(c) if c == OID_NIST_EC_P384 => "EC P-384".to_owned(),
                Some(c) if c == OID_NIST_EC_P521 => "EC P-521".to_owned(),
                Some(c) => format!("EC {}", c.to_id_string()),
                None => "EC (no named curve)".to_owned(),
            }
        }
        Ok(PublicKey::DSA(y)) => format!("DSA {} bits", y.len() * 8),
        Ok(_) | Err(_) => {
            let registry = x509_parser::objects::oid_registry();
            x509_parser::objects::oid2sn(&spki.algorithm.algorithm, registry)
                .map_or_else(|_| spki.algorithm.algorithm.to_id_string(), str::to_owned)
        }
    }
}

/// An X.509 time as RFC 3339 UTC text (`2026-12-05T22:47:01Z`).
fn rfc3339(t: x509_parser::time::ASN1Time) -> String {
    t.to_datetime().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
