//! The response body and future shared by every refusing layer.
//!
//! A layer answers either with its inner service's response or with a refusal built by a
//! [`Responder`](crate::Responder) (a `Response<Full<Bytes>>`). Both must have one body type: the inner
//! service's own when that type can hold a refusal's bytes ([`GateResponseBody`]: axum's and tonic's
//! `Body`, `Full<Bytes>`, http-body-util's boxed bodies), so that a response passes through untouched and
//! axum's `Router::layer` need not box it again; otherwise [`GateBody`] around it.

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

/// The body type a portcullis layer answers in, for an inner service answering with `Self`.
///
/// Body types that can hold a refusal's bytes are answered as they are (`Body = Self`): axum's `Body`
/// (feature `axum`), tonic's `Body` (feature `tonic`), [`Full<Bytes>`], and http-body-util's
/// [`BoxBody`](http_body_util::combinators::BoxBody) and
/// [`UnsyncBoxBody`](http_body_util::combinators::UnsyncBoxBody). Others are wrapped in [`GateBody`]:
/// `String`, `Vec<u8>`, `Bytes`, `&'static str`, `()`, [`Empty<Bytes>`](http_body_util::Empty), hyper's
/// `Incoming` (feature `hyper`), and [`GateBody`] itself. For a body type of your own, implement this
/// trait, or map your service's responses into [`GateBody::inner`] first
/// (`tower_http::map_response_body` or `ServiceBuilder::map_response`).
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use portcullis_core::body::{GateBody, GateResponseBody};
///
/// // `Full<Bytes>` holds a refusal as it is; a `String` body is wrapped.
/// let refusal: Full<Bytes> = <Full<Bytes> as GateResponseBody>::refusal(Full::new(Bytes::from("no")));
/// let passed: GateBody<String> = <String as GateResponseBody>::pass("hello".to_owned());
/// assert!(matches!(passed, GateBody::Inner { .. }));
/// # let _ = refusal;
/// ```
#[diagnostic::on_unimplemented(
    message = "a portcullis layer cannot answer refusals in `{Self}` bodies",
    label = "the inner service's response body",
    note = "wrap the inner service's response body in `portcullis_core::GateBody::inner` (for example with `tower::ServiceBuilder::map_response`), or implement `GateResponseBody` for it"
)]
pub trait GateResponseBody: Sized {
    /// The body type of the layer's responses.
    type Body;

    /// The inner service's body, as the layer answers it.
    fn pass(self) -> Self::Body;

    /// A refusal's body, as the layer answers it.
    fn refusal(body: Full<Bytes>) -> Self::Body;

    /// The inner service's response future's poll result, as the layer's future returns it. The default
    /// maps the body with [`pass`](Self::pass); body types answered as they are return the result itself,
    /// so the response is not moved once more on its way out.
    #[inline]
    fn pass_poll<E>(poll: Poll<Result<Response<Self>, E>>) -> Poll<Result<Response<Self::Body>, E>> {
        match poll {
            Poll::Ready(Ok(res)) => Poll::Ready(Ok(res.map(Self::pass))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `GateResponseBody` for a body type that holds a refusal itself: `$refusal` turns a `Full<Bytes>` into it.
macro_rules! answered_as_is {
    ($(#[$attr:meta])* [$($gen:tt)*] $ty:ty, |$full:ident| $refusal:expr) => {
        $(#[$attr])*
        impl<$($gen)*> GateResponseBody for $ty {
            type Body = Self;
            #[inline]
            fn pass(self) -> Self {
                self
            }
            fn refusal($full: Full<Bytes>) -> Self {
                $refusal
            }
            #[inline]
            fn pass_poll<Er>(poll: Poll<Result<Response<Self>, Er>>) -> Poll<Result<Response<Self>, Er>> {
                poll
            }
        }
    };
}

/// `GateResponseBody` for a body type answered inside [`GateBody`].
macro_rules! wrapped {
    ($(#[$attr:meta])* $ty:ty) => {
            $(#[$attr])*
            impl GateResponseBody for $ty {
                type Body = GateBody<Self>;
                #[inline]
                fn pass(self) -> GateBody<Self> {
                    GateBody::Inner { body: self }
                }
                fn refusal(body: Full<Bytes>) -> GateBody<Self> {
                    GateBody::Denied { body }
                }
            }
    };
}

answered_as_is!([] Full<Bytes>, |full| full);
answered_as_is!([B] GateBody<B>, |full| GateBody::Denied { body: full });
answered_as_is!(
    [E: 'static] http_body_util::combinators::BoxBody<Bytes, E>,
    |full| http_body_util::BodyExt::boxed(http_body_util::BodyExt::map_err(full, |never| match never {}))
);
answered_as_is!(
    [E: 'static] http_body_util::combinators::UnsyncBoxBody<Bytes, E>,
    |full| http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(full, |never| match never {}))
);
answered_as_is!(#[cfg(feature = "axum")] [] axum::body::Body, |full| axum::body::Body::new(full));
answered_as_is!(#[cfg(feature = "tonic")] [] tonic::body::Body, |full| tonic::body::Body::new(full));

wrapped!(String);
wrapped!(Vec<u8>);
wrapped!(Bytes);
wrapped!(&'static str);
wrapped!(());
wrapped!(http_body_util::Empty<Bytes>);
wrapped!(
    #[cfg(feature = "hyper")]
    hyper::body::Incoming
);

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
    B: GateResponseBody,
{
    type Output = Result<Response<B::Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => B::pass_poll(future.poll(cx)),
            KindProj::Denied { response } => {
                // Polled again after completion: the contract of `Future` allows a panic, but we fail
                // closed with an empty refusal instead.
                let res = response.take().unwrap_or_else(|| {
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = http::StatusCode::FORBIDDEN;
                    r
                });
                Poll::Ready(Ok(res.map(B::refusal)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::{Request, StatusCode, request::Parts};
    use http_body_util::BodyExt;
    use tower::{Layer, ServiceExt, service_fn};

    use super::*;
    use crate::{Denial, Gate, GateLayer};

    /// Refuses requests with an `x-refuse` header.
    struct RefuseMarked;
    impl Gate for RefuseMarked {
        fn check(&self, head: &mut Parts) -> Result<(), Denial> {
            match head.headers.contains_key("x-refuse") {
                false => Ok(()),
                true => Err(Denial::new("test", "test.marked", StatusCode::FORBIDDEN, "marked")),
            }
        }
    }

    fn request<B: Default>(refuse: bool) -> Request<B> {
        let mut b = Request::builder().uri("/");
        if refuse {
            b = b.header("x-refuse", "1");
        }
        b.body(B::default()).unwrap()
    }

    async fn bytes<B: Body<Data = Bytes>>(body: B) -> Bytes
    where
        B::Error: std::fmt::Debug,
    {
        body.collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_body_that_holds_refusals_is_answered_as_it_is() {
        let svc = GateLayer::new(RefuseMarked).layer(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("app"))))
        }));
        // The layer's responses are the inner service's own type: no wrapper to unpack, nothing to re-box.
        let served: Response<Full<Bytes>> = svc.clone().oneshot(request(false)).await.unwrap();
        assert_eq!((served.status(), bytes(served.into_body()).await), (StatusCode::OK, Bytes::from("app")));
        let refused: Response<Full<Bytes>> = svc.oneshot(request(true)).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let body = bytes(refused.into_body()).await;
        assert!(std::str::from_utf8(&body).unwrap().contains("test.marked"), "{body:?}");
    }

    #[tokio::test]
    async fn other_bodies_are_wrapped() {
        let svc = GateLayer::new(RefuseMarked).layer(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::from("app")))
        }));
        let served: Response<GateBody<String>> = svc.clone().oneshot(request(false)).await.unwrap();
        assert!(matches!(served.body(), GateBody::Inner { body } if body == "app"));
        let refused = svc.oneshot(request(true)).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let body = bytes(refused.into_body()).await;
        assert!(std::str::from_utf8(&body).unwrap().contains("test.marked"), "{body:?}");
    }

    #[tokio::test]
    async fn boxed_bodies_hold_refusals() {
        type Boxed = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;
        let svc = GateLayer::new(RefuseMarked).layer(service_fn(|_req: Request<()>| async {
            let body: Boxed = Full::new(Bytes::from("app")).map_err(|never| match never {}).boxed();
            Ok::<_, Infallible>(Response::new(body))
        }));
        let served: Response<Boxed> = svc.clone().oneshot(request(false)).await.unwrap();
        assert_eq!(bytes(served.into_body()).await, Bytes::from("app"));
        let refused: Response<Boxed> = svc.oneshot(request(true)).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(!bytes(refused.into_body()).await.is_empty());
    }

    /// axum's `Router::layer` takes the layer directly, and its responses stay axum bodies.
    #[cfg(feature = "axum")]
    #[tokio::test]
    async fn an_axum_router_keeps_its_body_type() {
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "app" }));
        let layered = GateLayer::new(RefuseMarked).layer(app.clone());
        let req = request::<axum::body::Body>;
        let served: Response<axum::body::Body> = layered.clone().oneshot(req(false)).await.unwrap();
        assert_eq!(bytes(served.into_body()).await, Bytes::from("app"));
        let refused: Response<axum::body::Body> = layered.oneshot(req(true)).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let inside = app.layer(GateLayer::new(RefuseMarked));
        let refused = inside.oneshot(req(true)).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }
}
