//! Facts learnt from the TLS handshake of a connection: SNI, the virtual host it selected and the verified
//! client certificate.
//!
//! The types live here so that host routing (SNI ↔ Host binding) and handlers can read them without
//! depending on `portcullis-mtls`, which fills them in.

use std::sync::Arc;
use std::time::SystemTime;

use crate::Denial;

/// What the TLS handshake established for a connection.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// The server name the client sent (SNI), lower-cased, without a trailing dot. `None` without SNI.
    pub sni: Option<Arc<str>>,
    /// The name of the virtual host the acceptor selected for this connection.
    pub vhost: Option<Arc<str>>,
    /// The client certificate, once verified against the virtual host's truststore and chain policy.
    pub client_cert: Option<Arc<ClientCert>>,
    /// In "refuse at HTTP" mode, the reason the client chain was refused: the handshake completed without a
    /// client identity and every request on the connection is answered 403 with this denial.
    pub refused: Option<Arc<Denial>>,
    /// The negotiated ALPN protocol, if any.
    pub alpn: Option<Arc<[u8]>>,
}

/// The verified client certificate of a connection, for handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject distinguished name, RFC 4514 text.
    pub subject: String,
    /// The issuer distinguished name, RFC 4514 text.
    pub issuer: String,
    /// The serial number, lower-case hexadecimal.
    pub serial: String,
    /// The SHA-256 thumbprint of the leaf DER, lower-case hexadecimal.
    pub sha256: String,
    /// Subject alternative names (DNS names, IP addresses, URIs, e-mail addresses) as text.
    pub sans: Vec<String>,
    /// The end of the leaf's validity.
    pub not_after: SystemTime,
    /// The presented chain, leaf first, DER encoded.
    pub chain: Vec<Arc<[u8]>>,
}
