//! The HTTP side: [`RefusedAtHttpLayer`] answers 403 on connections whose chain was refused in "refuse at
//! HTTP" mode, and puts the verified [`ClientIdentity`] into request extensions.

use std::sync::Arc;

use http::StatusCode;
use http::request::Parts;
use portcullis_core::{ClientCert, ConnInfo, Denial, Gate, GateLayer, Responder, Rule};
use tower_layer::Layer;

/// The verified client certificate of the connection a request came on; in request extensions after
/// [`RefusedAtHttpLayer`], and an axum extractor (feature `axum`) that reads [`ConnInfo`] directly.
///
/// As an extractor, a request without a verified client certificate is rejected with 403; use
/// `Option<ClientIdentity>` on virtual hosts with optional client auth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity(pub Arc<ClientCert>);

impl ClientIdentity {
    /// The identity of a request: from its extensions, or from its [`ConnInfo`].
    pub fn from_extensions(ext: &http::Extensions) -> Option<ClientIdentity> {
        if let Some(id) = ext.get::<ClientIdentity>() {
            return Some(id.clone());
        }
        ConnInfo::from_extensions(ext)
            .and_then(|c| c.tls.as_ref().and_then(|t| t.client_cert.clone()))
            .map(ClientIdentity)
    }
}

/// The rule of [`RefusedAtHttpLayer`]: on a TLS connection whose client chain was refused in the
/// "refuse at HTTP" mode, every request is refused with the chain's reason; on a connection with a
/// verified client certificate, the request gets a [`ClientIdentity`] extension.
#[derive(Debug, Clone, Copy, Default)]
pub struct RefusedAtHttpRule;

impl Rule for RefusedAtHttpRule {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        let Some(conn) = ConnInfo::lookup(&head.extensions) else {
            return Err(Denial::new(
                "mtls",
                "mtls.no-connection-facts",
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server did not wire connection facts (ConnInfo); refusing rather than guessing",
            ));
        };
        let Some(tls) = conn.tls.clone() else { return Ok(()) };
        drop(conn);
        if let Some(denial) = &tls.refused {
            return Err((**denial).clone());
        }
        if let Some(cert) = &tls.client_cert {
            head.extensions.insert(ClientIdentity(cert.clone()));
        }
        Ok(())
    }
}

/// Refuses, with the chain policy's reason, every request on a TLS connection whose client certificate was
/// refused in the "refuse at HTTP" mode ([`VirtualHost::refuse_at_http`](crate::VirtualHost::refuse_at_http)),
/// and hands verified client identities to handlers ([`ClientIdentity`]).
#[derive(Debug, Clone)]
pub struct RefusedAtHttpLayer(GateLayer<RefusedAtHttpRule>);

impl Default for RefusedAtHttpLayer {
    fn default() -> Self {
        RefusedAtHttpLayer(GateLayer::new(RefusedAtHttpRule))
    }
}

impl RefusedAtHttpLayer {
    /// The layer, refusing with the default responder.
    pub fn new() -> Self {
        RefusedAtHttpLayer::default()
    }

    /// Replaces the refusal response.
    #[must_use]
    pub fn responder(self, responder: Responder) -> Self {
        RefusedAtHttpLayer(self.0.responder(responder))
    }
}

impl<S> Layer<S> for RefusedAtHttpLayer {
    type Service = RefusedAtHttp<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.0.layer(inner)
    }
}

/// The service of [`RefusedAtHttpLayer`].
pub type RefusedAtHttp<S> = Gate<S, RefusedAtHttpRule>;

#[cfg(feature = "axum")]
mod extract {
    use axum::extract::{FromRequestParts, OptionalFromRequestParts};
    use axum::response::{IntoResponse, Response};
    use http::request::Parts;
    use portcullis_core::{Denial, ProblemJson, RespondDenial};

    use super::ClientIdentity;

    /// The rejection of [`ClientIdentity`]: 403 problem+json.
    #[derive(Debug)]
    pub struct NoClientIdentity;

    impl IntoResponse for NoClientIdentity {
        fn into_response(self) -> Response {
            let denial = Denial::new(
                "mtls",
                "mtls.no-client-identity",
                http::StatusCode::FORBIDDEN,
                "no verified client certificate on this connection",
            );
            ProblemJson.respond(&denial).map(axum::body::Body::new)
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for ClientIdentity {
        type Rejection = NoClientIdentity;

        async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
            ClientIdentity::from_extensions(&parts.extensions).ok_or(NoClientIdentity)
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for ClientIdentity {
        type Rejection = std::convert::Infallible;

        async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Self::Rejection> {
            Ok(ClientIdentity::from_extensions(&parts.extensions))
        }
    }
}

#[cfg(feature = "axum")]
pub use extract::NoClientIdentity;
