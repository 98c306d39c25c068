//! Two TLS virtual hosts on one port, chosen by SNI: `api.contoso.test` for everyone, and
//! `partners.contoso.test`, which requires a client certificate from the partners' CA and checks its chain
//! against a strict policy (clientAuth EKU required, RSA ≥ 3072, at most two certificates presented).
//!
//! - [`VirtualHosts`] holds the keystores, the partners' truststore (audited when it is put) and the two
//!   virtual hosts; [`MtlsAcceptor`] runs the handshakes.
//! - The gateway's host gate binds each request's `Host` to the virtual host of its connection: a request
//!   for `partners.contoso.test` sent over a connection made for `api.contoso.test` (so without a client
//!   certificate) gets 421 Misdirected Request.
//! - The handler shows the verified client identity ([`ClientIdentity`]).
//!
//! Certificates are generated at start ([`Pki::generate`]); the example binary writes the CA and the client
//! certificate to a temporary directory and prints the curl commands.
//!
//! ```text
//! cargo run -p portcullis-examples --example mtls_vhosts
//! ```

use std::future::Future;

use axum::routing::get;
use axum::{Json, Router};
use portcullis::host::{Endpoint, HostFilterLayer, Hosts};
use portcullis::mtls::{
    ChainPolicy, ClientAuth, ClientIdentity, Curve, EkuRule, Keystore, MtlsAcceptor, Truststore, VirtualHost,
    VirtualHosts,
};
use portcullis::serve::{DEFAULT_GRACE, ListenerSpec, serve_listeners};
use portcullis::{ConnInfo, Decisions, Gateway};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::Layer;

use crate::BoxError;
use crate::pki::{Ca, Issued};

/// The open virtual host's name.
pub const API_HOST: &str = "api.contoso.test";
/// The client-certificate virtual host's name.
pub const PARTNERS_HOST: &str = "partners.contoso.test";

/// The example's certificates.
#[derive(Debug)]
pub struct Pki {
    /// The CA of the server certificates: what clients trust.
    pub server_ca: Ca,
    /// The partners' client CA: what the `partners` virtual host trusts.
    pub partners_ca: Ca,
    /// The certificate of `api.contoso.test`.
    pub api: Issued,
    /// The certificate of `partners.contoso.test`.
    pub partners: Issued,
    /// A partner's client certificate (`CN=partner-app, O=Fabrikam`).
    pub client: Issued,
}

impl Pki {
    /// Generates every certificate.
    ///
    /// # Errors
    /// Key generation or signing failed.
    pub fn generate() -> Result<Pki, BoxError> {
        let server_ca = Ca::new("contoso example server CA")?;
        let partners_ca = Ca::new("contoso example partners CA")?;
        Ok(Pki {
            api: server_ca.server(&[API_HOST])?,
            partners: server_ca.server(&[PARTNERS_HOST])?,
            client: partners_ca.client("partner-app", "Fabrikam")?,
            server_ca,
            partners_ca,
        })
    }
}

/// The strict policy of the partners' virtual host.
pub fn strict_policy() -> ChainPolicy {
    ChainPolicy::new("strict")
        .min_rsa_bits(3072)
        .curves(vec![Curve::P256, Curve::P384])
        .eku(EkuRule::Required)
        .max_chain_len(2)
}

/// The two virtual hosts, their keystores and the partners' truststore.
///
/// # Errors
/// A store or virtual host the TLS layer refuses (for example a weak trust anchor).
pub fn virtual_hosts(pki: &Pki) -> Result<VirtualHosts, BoxError> {
    let vhosts = VirtualHosts::new();
    vhosts.put_keystore(Keystore::from_pem("api-tls", &pki.api.cert_pem, &pki.api.key_pem)?)?;
    vhosts.put_keystore(Keystore::from_pem(
        "partners-tls",
        &pki.partners.cert_pem,
        &pki.partners.key_pem,
    )?)?;
    let mut partners_ca = Truststore::new("partners-ca");
    partners_ca.add_pem(pki.partners_ca.cert_pem(), "partners-ca.crt")?;
    vhosts.put_truststore(partners_ca)?;

    vhosts.put(VirtualHost::new("api", [API_HOST], "api-tls"))?;
    vhosts.put(
        VirtualHost::new("partners", [PARTNERS_HOST], "partners-tls")
            .client_auth(ClientAuth::Required)
            .truststore("partners-ca")
            .policy(strict_policy()),
    )?;
    // A client that sends no SNI gets the open host, never the client-certificate one.
    vhosts.set_default(Some("api"))?;
    Ok(vhosts)
}

/// The gateway: one endpoint per virtual host, each tagged with it so that a request's host must belong to
/// its connection's virtual host.
///
/// # Errors
/// A host table the host layer refuses.
pub fn gateway() -> Result<Gateway, BoxError> {
    let hosts = Hosts::builder()
        .endpoint(Endpoint::new("api").host(API_HOST).vhost("api"))
        .endpoint(Endpoint::new("partners").host(PARTNERS_HOST).vhost("partners"))
        .build()?;
    Ok(Gateway::builder().hosts(HostFilterLayer::new(hosts)).build())
}

/// Shows the connection's virtual host and the verified client identity, if any.
async fn whoami(decisions: Decisions, conn: ConnInfo, id: Option<ClientIdentity>) -> Json<Value> {
    let tls = conn.tls.as_deref();
    Json(json!({
        "endpoint": decisions.host.as_ref().map(|h| h.endpoint.to_string()),
        "sni": tls.and_then(|t| t.sni.as_deref()),
        "virtual_host": tls.and_then(|t| t.vhost.as_deref()),
        "client_certificate": id.map(|ClientIdentity(c)| json!({
            "subject": c.subject,
            "issuer": c.issuer,
            "sha256": c.sha256,
        })),
    }))
}

/// The application.
pub fn app() -> Router {
    Router::new().route("/", get(whoami))
}

/// Serves the example over TLS on `listener` until `shutdown` resolves.
///
/// # Errors
/// A refused configuration, or an I/O error from serving.
pub async fn run(
    listener: TcpListener,
    pki: &Pki,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BoxError> {
    let mut spec = ListenerSpec::new("https");
    spec.tls = Some(MtlsAcceptor::new(virtual_hosts(pki)?));
    let app = gateway()?.layer().layer(app().into_service());
    serve_listeners(vec![(listener, spec)], app, shutdown, DEFAULT_GRACE).await?;
    Ok(())
}
