//! The response body and future of [`Gate`](crate::Gate), the service every refusing layer runs.
//!
//! A layer answers either with its inner service's response or with a refusal built by a
//! [`Responder`](crate::Responder) (a `Response<Full<Bytes>>`). [`GateBody<B>`] holds either, for any
//! inner body type `B` (the shape of tower-http's `ResponseBody<B>`): layers compose with compression,
//! tracing, CORS and any body of an application's own.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response that went through a portcullis layer: the inner service's body, or the
    /// body of a refusal built by a [`Responder`](crate::Responder).
    #[project = GateBodyProj]
    #[derive(Debug)]
    #[allow(missing_docs)] // each variant's only field is `body`: the inner service's, or the refusal's
    pub enum GateBody<B> {
        /// The inner service's body.
        Inner { #[pin] body: B },
        /// A refusal's body.
        Denied { #[pin] body: Full<Bytes> },
    }
}

impl<B> GateBody<B> {
    /// Wraps the inner service's body.
    pub fn inner(body: B) -> Self {
        GateBody::Inner { body }
    }

    /// A refusal's body.
    pub fn denied(body: Full<Bytes>) -> Self {
        GateBody::Denied { body }
    }

    /// The inner service's body, if this is not a refusal.
    pub fn into_inner(self) -> Option<B> {
        match self {
            GateBody::Inner { body } => Some(body),
            GateBody::Denied { .. } => None,
        }
    }
}

/// An empty inner body: what tower-http's CORS layer answers preflight requests with.
impl<B: Default> Default for GateBody<B> {
    fn default() -> Self {
        GateBody::Inner { body: B::default() }
    }
}

impl<B> Body for GateBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project() {
            GateBodyProj::Inner { body } => body.poll_frame(cx),
            GateBodyProj::Denied { body } => match body.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GateBody::Inner { body } => body.is_end_stream(),
            GateBody::Denied { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GateBody::Inner { body } => body.size_hint(),
            GateBody::Denied { body } => body.size_hint(),
        }
    }
}

pin_project! {
    /// The response future of [`Gate`](crate::Gate) (and of the other portcullis services that may
    /// refuse): the inner service's future, or a ready refusal.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Future { #[pin] future: F },
        Refused { response: Option<Response<Full<Bytes>>> },
    }
}

impl<F> ResponseFuture<F> {
    /// The inner service's future.
    pub fn future(future: F) -> Self {
        ResponseFuture { kind: Kind::Future { future } }
    }

    /// A ready refusal.
    pub fn refused(response: Response<Full<Bytes>>) -> Self {
        ResponseFuture { kind: Kind::Refused { response: Some(response) } }
    }
}

impl<F: std::fmt::Debug> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture(..)")
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<GateBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Future { future } => match future.poll(cx) {
                Poll::Ready(Ok(res)) => Poll::Ready(Ok(res.map(GateBody::inner))),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
            KindProj::Refused { response } => {
                // Polled again after completion: the contract of `Future` allows a panic, but we fail
                // closed with an empty refusal instead.
                let res = response.take().unwrap_or_else(|| {
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = http::StatusCode::FORBIDDEN;
                    r
                });
                Poll::Ready(Ok(res.map(GateBody::denied)))
            }
        }
    }
}
