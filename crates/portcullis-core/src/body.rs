//! The response body and future shared by every refusing layer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response that went through a portcullis layer: either the inner service's body, or the
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
    /// The response future of every portcullis layer: the inner service's future, or a ready refusal.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Denied { response: Option<Response<Full<Bytes>>> },
    }
}

impl<F> ResponseFuture<F> {
    /// The inner service's future: its response passes through.
    pub fn inner(future: F) -> Self {
        ResponseFuture { kind: Kind::Inner { future } }
    }

    /// A refusal, answered without calling the inner service.
    pub fn denied(response: Response<Full<Bytes>>) -> Self {
        ResponseFuture { kind: Kind::Denied { response: Some(response) } }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<GateBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => match future.poll(cx) {
                Poll::Ready(Ok(res)) => Poll::Ready(Ok(res.map(GateBody::inner))),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
            KindProj::Denied { response } => {
                // Polled again after completion: the contract of `Future` allows a panic, but we fail
                // closed with an empty refusal instead.
                let res = response.take().unwrap_or_else(|| {
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = http::StatusCode::FORBIDDEN;
                    r
                });
                Poll::Ready(Ok(res.map(|body| GateBody::Denied { body })))
            }
        }
    }
}
