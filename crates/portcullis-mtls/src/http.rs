//! The HTTP side: [`RefusedAtHttpLayer`] answers 403 on connections whose chain was refused in "refuse at
//! HTTP" mode, and puts the verified [`ClientIdentity`] into request extensions.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use portcullis_core::{ClientCert, ConnInfo, Denial, Responder, ResponseFuture};
use tower_layer::Layer;
use tower_service::Service;

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

/// A layer that answers 403, with the reason, every request on a connection whose client chain was refused
/// ("refuse at HTTP" mode, [`TlsInfo::refused`](portcullis_core::TlsInfo::refused)), and puts the
/// [`ClientIdentity`] of verified connections into request extensions.
///
/// A request without connection facts ([`ConnInfo`]) is refused too: the layer cannot tell whether its
/// connection was refused, so it fails closed. Wire `into_make_service_with_connect_info::<ConnInfo>()` or
/// [`serve_connection`](crate::serve_connection).
///
/// ```
/// use std::sync::Arc;
/// use http::{Request, Response, StatusCode};
/// use portcullis_core::{ConnInfo, Denial, TlsInfo};
/// use portcullis_mtls::RefusedAtHttpLayer;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let svc = ServiceBuilder::new().layer(RefusedAtHttpLayer::new()).service_fn(|_req: Request<String>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(String::from("hello")))
/// });
/// let peer = "127.0.0.1:50000".parse().unwrap();
///
/// // A connection whose chain passed.
/// let mut req = Request::new(String::new());
/// req.extensions_mut().insert(ConnInfo::new(peer, None).with_tls(TlsInfo::default()));
/// assert_eq!(svc.clone().oneshot(req).await.unwrap().status(), StatusCode::OK);
///
/// // A connection whose chain was refused in "refuse at HTTP" mode.
/// let denial = Denial::new("mtls", "mtls.client-chain", StatusCode::FORBIDDEN, "RSA key of 1024 bits");
/// let tls = TlsInfo { refused: Some(Arc::new(denial)), ..TlsInfo::default() };
/// let mut req = Request::new(String::new());
/// req.extensions_mut().insert(ConnInfo::new(peer, None).with_tls(tls));
/// assert_eq!(svc.oneshot(req).await.unwrap().status(), StatusCode::FORBIDDEN);
/// # });
/// ```
#[derive(Debug, Clone, Default)]
pub struct RefusedAtHttpLayer {
    responder: Responder,
}

impl RefusedAtHttpLayer {
    /// The layer with the default (problem+json) responder.
    pub fn new() -> Self {
        RefusedAtHttpLayer::default()
    }

    /// Uses `responder` to build refusals.
    #[must_use]
    pub fn responder(mut self, responder: Responder) -> Self {
        self.responder = responder;
        self
    }
}

impl<S> Layer<S> for RefusedAtHttpLayer {
    type Service = RefusedAtHttp<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RefusedAtHttp { inner, responder: self.responder.clone() }
    }
}

/// The service of [`RefusedAtHttpLayer`].
#[derive(Debug, Clone)]
pub struct RefusedAtHttp<S> {
    inner: S,
    responder: Responder,
}

impl<S, B, ResBody> Service<Request<B>> for RefusedAtHttp<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: portcullis_core::GateResponseBody,
{
    type Response = Response<<ResBody as portcullis_core::GateResponseBody>::Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Some(conn) = ConnInfo::from_extensions(req.extensions()) else {
            let denial = Denial::new(
                "mtls",
                "mtls.no-connection-facts",
                StatusCode::FORBIDDEN,
                "the server did not wire connection facts (ConnInfo); refusing rather than guessing",
            );
            return ResponseFuture::denied(self.responder.respond(denial));
        };
        if let Some(tls) = &conn.tls {
            if let Some(denial) = &tls.refused {
                return ResponseFuture::denied(self.responder.respond((**denial).clone()));
            }
            if let Some(cert) = &tls.client_cert {
                req.extensions_mut().insert(ClientIdentity(cert.clone()));
            }
        }
        ResponseFuture::inner(self.inner.call(req))
    }
}

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
