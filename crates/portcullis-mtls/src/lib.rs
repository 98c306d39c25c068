//! # portcullis-mtls
//!
//! Mutual TLS virtual hosts for axum, hyper and tonic servers, in the manner of a managed API gateway:
//!
//! - [`ChainPolicy`]: a named client-chain policy, from the presets `modern` (default), `strict` and `cnsa`
//!   ([`ChainPolicy::preset`], [`PRESETS`]; the table is in [`ChainPolicy`]'s docs) or knob by knob. It
//!   refuses MD5/SHA-1 signatures or hashes below its floor, DSA, short RSA keys, curves it does not list,
//!   certificates outside their validity (the anchor included), broken CA constraints (RFC 5280 path
//!   length), CA leaves, a leaf without clientAuth EKU, paths that are too long. [`PolicyVerifier`] runs the
//!   leaf's checks (parse only) before any signature is verified, then calls rustls-webpki's
//!   `verify_for_usage` once and judges the path webpki verified: the order the client sent its certificates
//!   in does not matter, and unused ones are ignored. No signature code here.
//! - Every refusal, path validation's included, is a typed [`ChainRefusal`] (which certificate where known,
//!   which rule), logged and mapped to a fitting TLS alert; or, in "refuse at HTTP" mode, answered 403 by
//!   [`RefusedAtHttpLayer`].
//! - [`Truststore::audit`]: weak, expired or non-CA trust anchors are configuration errors unless allowed.
//! - [`VirtualHosts`]: named [`Keystore`]s and [`Truststore`]s, [`VirtualHost`]s chosen by SNI, changed at
//!   runtime with an atomic swap; [`MtlsAcceptor`] and [`MtlsListener`] accept connections.
//! - The verified identity ([`portcullis_core::ClientCert`]) in [`portcullis_core::ConnInfo`] and the
//!   [`ClientIdentity`] extractor.
//!
//! Features: `ring` (default crypto provider), `aws-lc-rs`, `axum` (`Listener`, extractor).
//!
//! ## Example
//!
//! Named stores, one virtual host that requires client certificates, and the truststore audit at work
//! (certificates from rcgen here; [`Keystore::from_pem_files`] and [`Truststore::add_pem_file`] in real
//! life):
//!
//! ```
//! use portcullis_mtls::{ChainPolicy, ClientAuth, ConfigError, Keystore, Truststore, VirtualHost, VirtualHosts};
//! use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
//! use rustls::pki_types::{CertificateDer, PrivateKeyDer};
//!
//! // A client CA (P-256) and a server certificate for api.example.com.
//! let ca_key = KeyPair::generate()?;
//! let mut ca = CertificateParams::new(vec![])?;
//! ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
//! ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
//! let ca_cert = ca.self_signed(&ca_key)?;
//! let server_key = KeyPair::generate()?;
//! let server_cert = CertificateParams::new(vec!["api.example.com".into()])?.self_signed(&server_key)?;
//!
//! let hosts = VirtualHosts::new();
//! let key = PrivateKeyDer::try_from(server_key.serialize_der())?;
//! hosts.put_keystore(Keystore::new("api-tls", vec![server_cert.der().clone()], key))?;
//! let mut partners = Truststore::new("partners");
//! partners.add_der(CertificateDer::from(ca_cert.der().to_vec()), "partners-ca.pem")?;
//! hosts.put_truststore(partners)?;
//!
//! let api = VirtualHost::new("api", ["api.example.com"], "api-tls")
//!     .client_auth(ClientAuth::Required)
//!     .truststore("partners");
//! hosts.put(api.clone())?;
//!
//! // A policy the partners' anchor itself fails (it is P-256, the policy wants P-384) is refused at
//! // configuration time, naming the file, the subject and the rule; the running host is unchanged.
//! let p384_only = ChainPolicy::new("p384").curves(vec![portcullis_mtls::Curve::P384]);
//! let err = hosts.put(api.policy(p384_only)).unwrap_err();
//! assert!(matches!(&err, ConfigError::WeakAnchor(a) if a.file == "partners-ca.pem"));
//! assert_eq!(hosts.names(), ["api"]);
//!
//! // Serving: `MtlsListener::new(tcp_listener, MtlsAcceptor::new(hosts))` with `axum::serve(..,
//! // router.into_make_service_with_connect_info::<ConnInfo>())` (feature `axum`), or
//! // `MtlsAcceptor::accept` + `serve_connection` with hyper-util.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod acceptor;
mod binding;
mod http;
mod identity;
mod policy;
mod provider;
mod serve;
mod store;
mod verifier;
mod vhost;

pub use acceptor::{AcceptError, MtlsAcceptor, MtlsStream};
#[cfg(feature = "axum")]
pub use http::NoClientIdentity;
pub use http::{ClientIdentity, RefusedAtHttp, RefusedAtHttpLayer, RefusedAtHttpRule};
pub use identity::{AllowedIdentity, MAX_ALLOWED_IDENTITIES, client_cert};
pub use policy::{ChainPolicy, ChainRefusal, Curve, EkuRule, PRESETS, Preset, Role, Rule, SignatureHash};
pub use provider::default_provider;
/// The time type of [`VirtualHosts::recheck`] and the verifier (rustls' `UnixTime`).
pub use rustls::pki_types::UnixTime;
pub use serve::{MtlsListener, serve_connection};
pub use store::{Anchor, AnchorRefusal, AuditAllowances, ConfigError, Keystore, Truststore};
pub use verifier::{ClientAuth, PolicyVerifier, PolicyVerifierBuilder, Revocation};
pub use vhost::{Invalidated, VirtualHost, VirtualHosts, normalize_host};
