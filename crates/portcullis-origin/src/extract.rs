//! The axum extractor mirroring Azure's `context.Request.PrivateEndpointConnection` (feature `axum`).

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;
use portcullis_core::{Decisions, Denial, Origin, PrivateEndpoint, Responder};

/// The private endpoint connection a request came over: its name and group id (and link id), like Azure's
/// `context.Request.PrivateEndpointConnection`.
///
/// Extract `Option<PrivateEndpointConnection>`: `None` when the request is not over a private endpoint
/// connection (public, or private via a network), as Azure's is null. Both forms reject with a 500 when the
/// [`OriginLayer`](crate::OriginLayer) did not run: "no origin decided" is never read as "public". The plain
/// form also rejects with a 403 when the request did not come over a connection.
///
/// ```
/// use axum::{Router, routing::get};
/// use portcullis_origin::PrivateEndpointConnection;
///
/// async fn handler(pe: Option<PrivateEndpointConnection>) -> String {
///     match pe {
///         Some(pe) => format!("via {} ({})", pe.name, pe.group_id),
///         None => "not over a private endpoint".to_owned(),
///     }
/// }
/// let app: Router = Router::new().route("/", get(handler));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateEndpointConnection(pub Arc<PrivateEndpoint>);

impl Deref for PrivateEndpointConnection {
    type Target = PrivateEndpoint;

    fn deref(&self) -> &PrivateEndpoint {
        &self.0
    }
}

/// The rejection of [`PrivateEndpointConnection`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrivateEndpointRejection {
    /// The origin layer did not run (500).
    #[error("no origin decision in the request: add portcullis_origin::OriginLayer in front of the handler")]
    NoOrigin,
    /// The request did not come over a private endpoint connection (403; only for the non-optional form).
    #[error("this request did not come over a private endpoint connection")]
    NotPrivateEndpoint,
}

impl IntoResponse for PrivateEndpointRejection {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            PrivateEndpointRejection::NoOrigin => (StatusCode::INTERNAL_SERVER_ERROR, "extract.missing"),
            PrivateEndpointRejection::NotPrivateEndpoint => {
                (StatusCode::FORBIDDEN, "origin.not-private-endpoint")
            }
        };
        let denial = Denial::new("extract", code, status, self.to_string()).with_reason(self);
        Responder::default().respond_headers(denial, &http::HeaderMap::new()).map(axum::body::Body::new)
    }
}

fn connection(parts: &Parts) -> Result<Option<PrivateEndpointConnection>, PrivateEndpointRejection> {
    let origin: &Origin = Decisions::get(&parts.extensions)
        .and_then(|d| d.origin.as_ref())
        .ok_or(PrivateEndpointRejection::NoOrigin)?;
    Ok(origin.private_endpoint().cloned().map(PrivateEndpointConnection))
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for PrivateEndpointConnection {
    type Rejection = PrivateEndpointRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Self::Rejection> {
        connection(parts)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PrivateEndpointConnection {
    type Rejection = PrivateEndpointRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        connection(parts)?.ok_or(PrivateEndpointRejection::NotPrivateEndpoint)
    }
}
