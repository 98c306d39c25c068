//! axum extractors for what portcullis decided (feature `axum`).
//!
//! Each extractor reads the request's [`Decisions`] (or connection facts). When the layer that produces the
//! value is not installed, the extractor rejects with a 500 problem+json naming the missing layer: a
//! handler never runs on a guess. Use `Option<T>` to accept requests without the value.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::{ClientAddr, ClientCert, ConnInfo, Decisions, Denial, MatchedHost, Origin, Responder};
use std::convert::Infallible;
use std::sync::Arc;

/// The rejection of portcullis' extractors: the layer that produces the value did not run.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what} is not in the request: {hint}")]
pub struct MissingDecision {
    what: &'static str,
    hint: &'static str,
}

impl IntoResponse for MissingDecision {
    fn into_response(self) -> Response {
        let denial =
            Denial::new("extract", "extract.missing", StatusCode::INTERNAL_SERVER_ERROR, self.to_string())
                .with_reason(self);
        Responder::default().respond_headers(denial, &http::HeaderMap::new()).map(axum::body::Body::new)
    }
}

fn decisions(parts: &Parts) -> Option<&Decisions> {
    Decisions::get(&parts.extensions)
}

macro_rules! decision_extractor {
    ($ty:ty, $field:ident, $what:literal, $hint:literal) => {
        impl<S: Send + Sync> FromRequestParts<S> for $ty {
            type Rejection = MissingDecision;

            async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
                decisions(parts)
                    .and_then(|d| d.$field.clone())
                    .ok_or(MissingDecision { what: $what, hint: $hint })
            }
        }

        impl<S: Send + Sync> OptionalFromRequestParts<S> for $ty {
            type Rejection = Infallible;

            async fn from_request_parts(
                parts: &mut Parts,
                _state: &S,
            ) -> Result<Option<Self>, Self::Rejection> {
                Ok(decisions(parts).and_then(|d| d.$field.clone()))
            }
        }
    };
}

decision_extractor!(
    ClientAddr,
    client,
    "ClientAddr",
    "add portcullis_core::ResolveClientAddrLayer in front of the handler"
);
decision_extractor!(
    MatchedHost,
    host,
    "MatchedHost",
    "route through portcullis-host's HostRouter or HostFilterLayer"
);
decision_extractor!(Origin, origin, "Origin", "add portcullis-origin's OriginLayer in front of the handler");

impl<S: Send + Sync> FromRequestParts<S> for ConnInfo {
    type Rejection = MissingDecision;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        ConnInfo::from_extensions(&parts.extensions).ok_or(MissingDecision {
            what: "ConnInfo",
            hint: "serve with `into_make_service_with_connect_info::<ConnInfo>()` or add ConnInfoLayer",
        })
    }
}

/// The verified client certificate of the connection (mTLS), for handlers.
///
/// Rejects with 500 when there is no verified certificate; use `Option<PeerCert>` where client
/// authentication is optional.
#[derive(Debug, Clone)]
pub struct PeerCert(pub Arc<ClientCert>);

fn peer_cert(parts: &Parts) -> Option<PeerCert> {
    ConnInfo::from_extensions(&parts.extensions)
        .and_then(|c| c.tls.and_then(|t| t.client_cert.clone()))
        .map(PeerCert)
}

impl<S: Send + Sync> FromRequestParts<S> for PeerCert {
    type Rejection = MissingDecision;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        peer_cert(parts).ok_or(MissingDecision {
            what: "a verified client certificate",
            hint: "serve through portcullis-mtls with client auth on this virtual host",
        })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for PeerCert {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(peer_cert(parts))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Decisions {
    type Rejection = Infallible;

    /// Everything the layers decided (empty when no layer ran).
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(decisions(parts).cloned().unwrap_or_default())
    }
}
