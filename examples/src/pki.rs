//! A throwaway certificate authority for the examples and their tests, made with rcgen at start (P-256
//! keys, ECDSA-SHA256 signatures, which the default and strict chain policies accept).
//!
//! Never use these certificates beyond a demo: the keys live in memory and in a temporary directory.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};

use crate::BoxError;

/// A certificate and its private key, as PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate (PEM), leaf only: the examples' CAs sign leaves directly.
    pub cert_pem: String,
    /// The PKCS#8 private key (PEM).
    pub key_pem: String,
}

/// A self-signed certificate authority.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

impl Ca {
    /// A new CA named `common_name`.
    ///
    /// # Errors
    /// Key generation or signing failed.
    pub fn new(common_name: &str) -> Result<Ca, BoxError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(common_name, None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Ok(Ca { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// The CA certificate (PEM): what clients trust for server certificates, or what a truststore holds for
    /// client certificates.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    fn issue(
        &self,
        dn: DistinguishedName,
        names: &[&str],
        eku: ExtendedKeyUsagePurpose,
    ) -> Result<Issued, BoxError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A server certificate for `names` (DNS names), with the serverAuth extended key usage.
    ///
    /// # Errors
    /// Key generation or signing failed.
    pub fn server(&self, names: &[&str]) -> Result<Issued, BoxError> {
        let cn = names.first().copied().unwrap_or("server");
        self.issue(name(cn, None), names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate for `common_name` in `organization`, with the clientAuth extended key usage.
    ///
    /// # Errors
    /// Key generation or signing failed.
    pub fn client(&self, common_name: &str, organization: &str) -> Result<Issued, BoxError> {
        self.issue(name(common_name, Some(organization)), &[], ExtendedKeyUsagePurpose::ClientAuth)
    }
}
