//! [`Gate`]: one request-level decision, the unit the gateway stack composes.
//!
//! Every refusing layer of portcullis is a gate: a synchronous decision on a request's head that either
//! lets it through (recording what it decided in the request's [`Decisions`]) or refuses
//! it with a [`Denial`]. A gate in shadow mode records its would-be denial and lets the request through.
//!
//! A gate can be used alone as a tower layer ([`GateLayer`]), or several gates can run in one service
//! ([`Gates`]): one future, one decision context for the whole stack, which is what keeps
//! a full stack within a few hundred instructions of the bare application.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode, request::Parts};
//! use portcullis_core::{Denial, Gate, GateLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! /// Refuses requests without a `x-api-version` header.
//! struct NeedsVersion;
//! impl Gate for NeedsVersion {
//!     fn check(&self, head: &mut Parts) -> Result<(), Denial> {
//!         match head.headers.contains_key("x-api-version") {
//!             true => Ok(()),
//!             false => Err(Denial::new("example", "example.no-version", StatusCode::BAD_REQUEST, "say which version")),
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let svc = ServiceBuilder::new()
//!     .layer(GateLayer::new(NeedsVersion))
//!     .service(service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) }));
//! let ok = Request::builder().header("x-api-version", "2").body(())?;
//! assert_eq!(svc.clone().oneshot(ok).await?.status(), StatusCode::OK);
//! let refused = Request::builder().body(())?;
//! assert_eq!(svc.oneshot(refused).await?.status(), StatusCode::BAD_REQUEST);
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};

use http::request::Parts;
use http::{Extensions, HeaderMap, Method, Request, Response, Uri, Version};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::ResponseFuture;
use crate::conn::ConnInfo;
use crate::decisions::{Decisions, new_record};
use crate::denial::{Denial, Responder};
use crate::headers::{HeaderIndex, Scanned};

/// What the gates of one run share while they decide on a request: its [`Decisions`], taken out of the
/// request for the run and put back after it, and its connection facts, looked up once.
///
/// [`Gates`] builds one per request, so that a whole stack costs two extension lookups (take the
/// decisions, put them back) rather than several per gate. Gates that implement [`Gate::check_in`] read
/// them with [`decisions`](Self::decisions) and write them with [`decisions_mut`](Self::decisions_mut);
/// gates that only implement [`Gate::check`] see the request's extensions exactly as if every gate before
/// them had written there.
#[derive(Debug, Default)]
pub struct GateContext {
    /// The request's connection facts ([`ConnInfo::from_extensions`]), `None` when not wired.
    pub conn: Option<ConnInfo>,
    /// The request's decisions so far (not in the request during the run). Boxed, as they are kept in the
    /// request's [`ConnInfo`] copy: a run moves a pointer in and out, never the record itself, and
    /// allocates it only when a gate records something.
    decisions: Option<Box<Decisions>>,
    /// Where the decisions were taken from, and go back to.
    slot: Slot,
    /// The request's [`HeaderIndex`], once a gate asked for it.
    headers: Option<HeaderIndex>,
}

/// A request's head split for a run that borrows what it reads: the request line and headers, the
/// connection facts and the decisions to record in, all at once (see [`GateContext::with_parts`]).
///
/// Code written against it runs on a request alone ([`GateContext::with_parts`]) and inside a run of
/// several gates ([`GateContext::parts`]) alike.
#[derive(Debug)]
pub struct HeadParts<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request target.
    pub uri: &'a Uri,
    /// The HTTP version.
    pub version: Version,
    /// The request headers.
    pub headers: &'a mut HeaderMap,
    /// The connection facts ([`ConnInfo::from_extensions`]), `None` when not wired.
    pub conn: Option<&'a ConnInfo>,
    /// The request's decisions, to read and to record in.
    pub decisions: &'a mut Decisions,
}

/// What [`GateContext::decisions`] shows before anything was recorded.
static NO_DECISIONS: Decisions = Decisions { client: None, host: None, origin: None, shadow: Vec::new() };

/// Where a run found a request's decisions (see [`Decisions::get`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Nowhere yet: they go where [`Decisions::get_mut`] puts them, if a gate records anything.
    #[default]
    Unplaced,
    /// The request's own copy of [`ConnInfo`].
    Conn,
    /// An extension of their own.
    Own,
}

impl GateContext {
    /// Takes the decisions out of `ext` (none yet when there are none) and reads the connection facts.
    ///
    /// The decisions are moved out of their place (the request's [`ConnInfo`] copy, or their own
    /// extension), which stays where it is until [`restore`](Self::restore): a run adds no extension when
    /// the request has either, and allocates at most the copy's decision box, once per request.
    pub fn take(ext: &mut Extensions) -> GateContext {
        let mut cx = GateContext::default();
        cx.load(ext);
        cx
    }

    /// [`take`](Self::take) into this (empty) context, in place.
    fn load(&mut self, ext: &mut Extensions) {
        // What every request served with connection facts carries before the first gate: its ConnInfo
        // copy and nothing else, so no decisions of their own.
        if ext.len() == 1
            && let Some(c) = ext.get_mut::<ConnInfo>()
        {
            self.decisions = c.decisions.0.take();
            self.slot = Slot::Conn;
            self.conn = Some(c.clone());
            return;
        }
        self.conn = ConnInfo::from_extensions(ext);
        if let Some(own) = ext.get_mut::<Decisions>() {
            let mut record = crate::decisions::new_record();
            *record = std::mem::take(own);
            self.decisions = Some(record);
            self.slot = Slot::Own;
        } else if let Some(c) = ConnInfo::in_request_mut(ext) {
            self.decisions = c.decisions.0.take();
            self.slot = Slot::Conn;
        }
    }

    /// The request's decisions so far (empty ones when no gate recorded anything yet).
    #[inline]
    pub fn decisions(&self) -> &Decisions {
        self.decisions.as_deref().unwrap_or(&NO_DECISIONS)
    }

    /// The request's decisions, to record in: created (allocated) on the first call of a request.
    #[inline]
    pub fn decisions_mut(&mut self) -> &mut Decisions {
        self.decisions.get_or_insert_with(new_record)
    }

    /// The connection facts and the decisions to record in, at once (for a decision that reads the one and
    /// writes the other).
    #[inline]
    pub fn conn_and_decisions_mut(&mut self) -> (Option<&ConnInfo>, &mut Decisions) {
        (self.conn.as_ref(), self.decisions.get_or_insert_with(new_record))
    }

    /// Runs `f` on `head` split into [`HeadParts`], as a gate run does: the decisions are taken out of their
    /// place for the run and put back after it. On a request whose extensions hold its [`ConnInfo`] copy
    /// and nothing else (what `portcullis::serve` and [`AddConnInfo`](crate::AddConnInfo) give every
    /// request before the application's layers), the facts are borrowed from that copy and the copy is
    /// found once; any other request (axum's `ConnectInfo<ConnInfo>`, tonic's connect info, more
    /// extensions, none) goes through a context ([`take`](Self::take) and [`restore`](Self::restore)),
    /// with the same result.
    pub fn with_parts<R>(head: &mut Parts, f: impl FnOnce(&mut HeadParts<'_>) -> R) -> R {
        let Parts { method, uri, version, headers, extensions, .. } = head;
        if extensions.len() == 1
            && let Some(conn) = extensions.get_mut::<ConnInfo>()
        {
            let mut record = conn.decisions.0.take().unwrap_or_else(new_record);
            let result = f(&mut HeadParts {
                method,
                uri,
                version: *version,
                headers,
                conn: Some(&*conn),
                decisions: &mut record,
            });
            conn.decisions.0 = Some(record);
            return result;
        }
        let mut cx = GateContext::take(extensions);
        let result = f(&mut cx.parts_of(method, uri, *version, headers));
        cx.restore(extensions);
        result
    }

    /// The request's head and this context's facts and decisions as [`HeadParts`], for code written against
    /// them inside a gate run. The context forgets its [`HeaderIndex`]: the parts give the headers out
    /// mutably.
    pub fn parts<'a>(&'a mut self, head: &'a mut Parts) -> HeadParts<'a> {
        self.parts_of(&head.method, &head.uri, head.version, &mut head.headers)
    }

    fn parts_of<'a>(
        &'a mut self,
        method: &'a Method,
        uri: &'a Uri,
        version: Version,
        headers: &'a mut HeaderMap,
    ) -> HeadParts<'a> {
        self.headers = None;
        HeadParts {
            method,
            uri,
            version,
            headers,
            conn: self.conn.as_ref(),
            decisions: self.decisions.get_or_insert_with(new_record),
        }
    }

    /// The connection facts, `headers` with the index a gate of this run built of them (if any, and only
    /// if it describes them: see [`HeaderIndex::scanned`]), and the decisions to record in, at once: what
    /// a layer's `decide` takes, in its [`Gate::check_in`].
    #[inline]
    pub fn scanned<'a>(
        &'a mut self,
        headers: &'a HeaderMap,
    ) -> (Option<&'a ConnInfo>, Scanned<'a>, &'a mut Decisions) {
        let scanned = match &self.headers {
            Some(index) => index.scanned(headers),
            None => Scanned::plain(headers),
        };
        (self.conn.as_ref(), scanned, self.decisions.get_or_insert_with(new_record))
    }

    /// Walks the request's header names once for the headers the portcullis gates read (see
    /// [`HeaderIndex`]); later calls in the same run do nothing. Read the result with
    /// [`header_index`](Self::header_index).
    pub fn index_headers(&mut self, headers: &HeaderMap) {
        if self.headers.is_none() {
            self.headers.get_or_insert_default().fill(headers);
        }
    }

    /// The index built by [`index_headers`](Self::index_headers), if a gate built it in this run.
    pub fn header_index(&self) -> Option<&HeaderIndex> {
        self.headers.as_ref()
    }

    /// Forgets the header index, so that later gates index the request again. A gate that says it
    /// [preserves headers](Gate::preserves_headers) and still adds, removes or changes a header must call
    /// this; for every other gate a [`Gates`] run does it.
    pub fn headers_changed(&mut self) {
        self.headers = None;
    }

    /// Puts the decisions back where they were taken from (or, when the request had none, where
    /// [`Decisions::get_mut`] puts them, if a gate recorded anything), as if every gate had written to the
    /// extensions directly. The context is left without decisions (a second call does nothing).
    pub fn restore(&mut self, ext: &mut Extensions) {
        let decisions = self.decisions.take();
        match std::mem::take(&mut self.slot) {
            Slot::Conn => {
                // The plain copy, else axum's ConnectInfo<ConnInfo>.
                let place = match ext.get_mut::<ConnInfo>() {
                    Some(c) => Some(c),
                    None => ConnInfo::in_request_mut(ext),
                };
                if let Some(c) = place {
                    c.decisions.0 = decisions;
                    return;
                }
            }
            Slot::Own => {
                if let Some(own) = ext.get_mut::<Decisions>() {
                    if let Some(mut d) = decisions {
                        *own = std::mem::take(&mut *d);
                        crate::decisions::recycle(d);
                    }
                    return;
                }
            }
            Slot::Unplaced => {}
        }
        // Unplaced, or a gate moved the place (say, removed the ConnInfo copy): wherever it is now, unless
        // nothing was recorded.
        if let Some(mut d) = decisions
            && !d.is_empty()
        {
            // Into an extension of their own: the box goes back to the thread's spare.
            *Decisions::get_mut(ext) = std::mem::take(&mut *d);
            crate::decisions::recycle(d);
        }
    }

    /// Runs `gate` alone on `head` through a context: what a gate that implements [`Gate::check_in`] does
    /// in its [`Gate::check`].
    ///
    /// # Errors
    /// The gate's denial.
    pub fn run<G: Gate + ?Sized>(gate: &G, head: &mut Parts) -> Result<(), Denial> {
        let mut cx = GateContext::default();
        cx.load(&mut head.extensions);
        let result = gate.check_in(head, &mut cx);
        cx.restore(&mut head.extensions);
        result
    }
}

/// One request-level decision. See the [module docs](self).
pub trait Gate: Send + Sync + 'static {
    /// Decides on a request's head: `Ok` to let it through (after recording in its
    /// [`Decisions`]), `Err` to refuse it with the denial.
    ///
    /// # Errors
    /// The [`Denial`] to answer with.
    fn check(&self, head: &mut Parts) -> Result<(), Denial>;

    /// The same decision inside a run of several gates, with the request's decisions and connection facts
    /// in `cx` rather than in the request's extensions (see [`GateContext`]). Implement it (and make
    /// [`check`](Gate::check) call [`GateContext::run`]) to skip the extension lookups; the default puts
    /// the decisions back into the extensions, calls [`check`](Gate::check) and takes them out again.
    ///
    /// A gate may change the request's headers here; unless it says otherwise with
    /// [`preserves_headers`](Gate::preserves_headers), a [`Gates`] run forgets the context's
    /// [`HeaderIndex`] after it, so that no later gate reads a value it replaced.
    ///
    /// # Errors
    /// The [`Denial`] to answer with.
    fn check_in(&self, head: &mut Parts, cx: &mut GateContext) -> Result<(), Denial> {
        cx.restore(&mut head.extensions);
        let result = self.check(head);
        *cx = GateContext::take(&mut head.extensions);
        result
    }

    /// Whether this gate leaves the request's headers as it found them, or reports each change it makes with
    /// [`GateContext::headers_changed`]. `false` (the default): a [`Gates`] run then forgets the
    /// [`HeaderIndex`] after this gate, and the next gate that needs one builds it again. Say `true` only
    /// when it holds for every request: a stale index would show later gates (the host filter, the
    /// client-address resolver, the origin strip) header values the request no longer has.
    fn preserves_headers(&self) -> bool {
        false
    }
}

impl<G: Gate + ?Sized> Gate for Arc<G> {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        (**self).check(head)
    }

    fn check_in(&self, head: &mut Parts, cx: &mut GateContext) -> Result<(), Denial> {
        (**self).check_in(head, cx)
    }

    fn preserves_headers(&self) -> bool {
        (**self).preserves_headers()
    }
}

impl<G: Gate + ?Sized> Gate for Box<G> {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        (**self).check(head)
    }

    fn check_in(&self, head: &mut Parts, cx: &mut GateContext) -> Result<(), Denial> {
        (**self).check_in(head, cx)
    }

    fn preserves_headers(&self) -> bool {
        (**self).preserves_headers()
    }
}

/// Several gates run in order; the first refusal wins.
#[derive(Clone, Default)]
pub struct Gates(Arc<[Arc<dyn Gate>]>);

impl Gates {
    /// The gates, in the order they run.
    pub fn new(gates: impl IntoIterator<Item = Arc<dyn Gate>>) -> Self {
        Gates(gates.into_iter().collect())
    }

    /// The number of gates.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no gate.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Gates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gates({})", self.0.len())
    }
}

impl Gate for Gates {
    fn check(&self, head: &mut Parts) -> Result<(), Denial> {
        GateContext::run(self, head)
    }

    fn check_in(&self, head: &mut Parts, cx: &mut GateContext) -> Result<(), Denial> {
        for gate in self.0.iter() {
            gate.check_in(head, cx)?;
            if !gate.preserves_headers() {
                cx.headers_changed();
            }
        }
        Ok(())
    }

    fn preserves_headers(&self) -> bool {
        self.0.iter().all(|gate| gate.preserves_headers())
    }
}

/// A tower layer running one [`Gate`] (or [`Gates`]) in front of a service.
pub struct GateLayer<G> {
    gate: Arc<G>,
    responder: Responder,
}

// Not derived: the gate is shared, so the layer is `Clone` whatever `G` is.
impl<G> Clone for GateLayer<G> {
    fn clone(&self) -> Self {
        GateLayer { gate: self.gate.clone(), responder: self.responder.clone() }
    }
}

impl<G: Gate> GateLayer<G> {
    /// A layer running `gate`, refusing with the default problem+json responder.
    pub fn new(gate: G) -> Self {
        GateLayer::shared(Arc::new(gate))
    }

    /// A layer running a gate shared with others (no second `Arc`).
    pub fn shared(gate: Arc<G>) -> Self {
        GateLayer { gate, responder: Responder::default() }
    }

    /// Replaces the refusal response.
    pub fn responder(mut self, responder: Responder) -> Self {
        self.responder = responder;
        self
    }

    /// The gate.
    pub fn gate(&self) -> &G {
        &self.gate
    }
}

impl<G> std::fmt::Debug for GateLayer<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GateLayer(..)")
    }
}

impl<G, S> Layer<S> for GateLayer<G> {
    type Service = GateService<G, S>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService { inner, gate: self.gate.clone(), responder: self.responder.clone() }
    }
}

/// The service of [`GateLayer`].
pub struct GateService<G, S> {
    inner: S,
    gate: Arc<G>,
    responder: Responder,
}

impl<G, S: Clone> Clone for GateService<G, S> {
    fn clone(&self) -> Self {
        GateService { inner: self.inner.clone(), gate: self.gate.clone(), responder: self.responder.clone() }
    }
}

impl<G, S: std::fmt::Debug> std::fmt::Debug for GateService<G, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateService").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<G, S, B, ResBody> Service<Request<B>> for GateService<G, S>
where
    G: Gate,
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: crate::body::GateResponseBody,
{
    type Response = Response<<ResBody as crate::body::GateResponseBody>::Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        call_gate(&*self.gate, &self.responder, &mut self.inner, req)
    }
}

/// Runs `gate` on `req` in front of `inner`: the inner service's future when the gate lets the request
/// through, a ready refusal built by `responder` otherwise.
///
/// Every portcullis layer's service calls this, so a layer used alone and the same layer inside the
/// gateway's [`Gates`] decide through one code path (its [`Gate`] impl).
pub fn call_gate<G, S, B, ResBody>(
    gate: &G,
    responder: &Responder,
    inner: &mut S,
    req: Request<B>,
) -> ResponseFuture<S::Future>
where
    G: Gate + ?Sized,
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    let (mut head, body) = req.into_parts();
    match gate.check(&mut head) {
        Ok(()) => ResponseFuture::inner(inner.call(Request::from_parts(head, body))),
        Err(denial) => ResponseFuture::denied(responder.respond(denial)),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use http::StatusCode;

    use super::*;
    use crate::{ClientAddr, LearntVia};

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

    /// Records a client through the context (as the built-in gates do).
    struct Records;
    impl Gate for Records {
        fn check(&self, head: &mut Parts) -> Result<(), Denial> {
            GateContext::run(self, head)
        }
        fn check_in(&self, _head: &mut Parts, cx: &mut GateContext) -> Result<(), Denial> {
            cx.decisions_mut().client = Some(ClientAddr { ip: IP, learnt_via: LearntVia::Peer });
            Ok(())
        }
    }

    /// A user gate with `check` only: reads the decisions from the extensions, refuses without a client,
    /// and records a shadow denial there.
    struct ReadsExtensions;
    impl Gate for ReadsExtensions {
        fn check(&self, head: &mut Parts) -> Result<(), Denial> {
            match Decisions::client_of(&head.extensions) {
                Some(c) if c.ip == IP => {
                    let d = Denial::new("test", "test.shadow", StatusCode::FORBIDDEN, "would refuse");
                    Decisions::record_shadow(&mut head.extensions, d);
                    Ok(())
                }
                _ => Err(Denial::new("test", "test.no-client", StatusCode::FORBIDDEN, "no client")),
            }
        }
    }

    /// Reads what the user gate recorded, through the context.
    struct SeesShadow;
    impl Gate for SeesShadow {
        fn check(&self, head: &mut Parts) -> Result<(), Denial> {
            GateContext::run(self, head)
        }
        fn check_in(&self, _head: &mut Parts, cx: &mut GateContext) -> Result<(), Denial> {
            match cx.decisions().shadow.len() {
                1 => Ok(()),
                n => Err(Denial::new("test", "test.shadow-count", StatusCode::FORBIDDEN, format!("{n}"))),
            }
        }
    }

    fn head() -> Parts {
        Request::new(()).into_parts().0
    }

    #[test]
    fn gates_with_and_without_check_in_see_each_others_decisions() {
        let gates =
            Gates::new([Arc::new(Records) as Arc<dyn Gate>, Arc::new(ReadsExtensions), Arc::new(SeesShadow)]);
        let mut h = head();
        gates.check(&mut h).expect("every gate sees the decisions of the ones before");
        let d = Decisions::get(&h.extensions).expect("decisions are put back after the run");
        assert_eq!(d.client.as_ref().map(|c| c.ip), Some(IP));
        assert_eq!(d.shadow.len(), 1);
    }

    #[test]
    fn a_refusal_is_not_hidden_by_the_context() {
        // The user gate runs without a recorded client: it refuses.
        let gates = Gates::new([Arc::new(ReadsExtensions) as Arc<dyn Gate>, Arc::new(Records)]);
        let mut h = head();
        let denial = gates.check(&mut h).expect_err("refused");
        assert_eq!(denial.code(), "test.no-client");
        // Nothing was recorded and the request had no decisions: none are invented.
        assert!(Decisions::get(&h.extensions).is_none());
    }

    fn head_with_conn() -> Parts {
        let mut h = head();
        h.extensions.insert(ConnInfo::new("127.0.0.1:40000".parse().unwrap(), None));
        h
    }

    #[test]
    fn decisions_live_in_the_requests_conn_info_copy() {
        let gates =
            Gates::new([Arc::new(Records) as Arc<dyn Gate>, Arc::new(ReadsExtensions), Arc::new(SeesShadow)]);
        let mut h = head_with_conn();
        gates.check(&mut h).expect("allowed");
        // No extension of their own: they are in the ConnInfo copy, and found there.
        assert_eq!(h.extensions.len(), 1);
        let d = Decisions::get(&h.extensions).expect("recorded");
        assert_eq!((d.client.map(|c| c.ip), d.shadow.len()), (Some(IP), 1));
        // A clone of the copy (what an extractor hands out) carries the facts, not the decisions.
        let copy = ConnInfo::from_extensions(&h.extensions).expect("conn");
        assert!(copy.decisions.0.is_none());
        // Cloned extensions copy the facts only (documented on ConnInfo).
        let cloned = h.extensions.clone();
        assert!(Decisions::get(&cloned).is_none());
        // A second run on the same request sees and extends them.
        Records.check(&mut h).expect("allowed");
        assert_eq!(Decisions::get(&h.extensions).map(|d| d.shadow.len()), Some(1));
        // A request whose gates recorded nothing has no decisions.
        let mut h = head_with_conn();
        Gates::new([]).check(&mut h).expect("nothing to refuse");
        assert!(Decisions::get(&h.extensions).is_none());
    }

    /// A gate that changes the request's connection facts mid-run, in place (an application's own gate
    /// could; replacing the copy with another would replace its decisions too, see `ConnInfo`).
    struct ChangesConn;
    impl Gate for ChangesConn {
        fn check(&self, head: &mut Parts) -> Result<(), Denial> {
            if let Some(c) = head.extensions.get_mut::<ConnInfo>() {
                c.peer = "127.0.0.2:1".parse().unwrap();
            }
            Ok(())
        }
    }

    #[test]
    fn decisions_survive_gates_that_change_the_conn_info_copy() {
        for gates in [
            Gates::new([Arc::new(ChangesConn) as Arc<dyn Gate>, Arc::new(Records)]),
            Gates::new([Arc::new(Records) as Arc<dyn Gate>, Arc::new(ChangesConn)]),
        ] {
            let mut h = head_with_conn();
            gates.check(&mut h).expect("allowed");
            assert_eq!(Decisions::client_of(&h.extensions).map(|c| c.ip), Some(IP));
            assert_eq!(h.extensions.get::<ConnInfo>().map(|c| c.peer.port()), Some(1));
        }
    }

    /// Runs `req` through `Records` as a layer over a `ConnInfoLayer` (a second copy inside the gates: a
    /// wiring mistake, not a reason to lose the decisions) and returns the client the handler sees.
    fn client_seen_behind_an_inner_conn_info_layer(req: Request<()>) -> Option<std::net::IpAddr> {
        use tower::ServiceExt;
        let seen = tower::service_fn(|req: Request<()>| async move {
            Ok::<_, std::convert::Infallible>(Response::new(crate::GateBody::inner(
                Decisions::client_of(req.extensions()).map(|c| c.ip),
            )))
        });
        let inner =
            crate::ConnInfoLayer::new(ConnInfo::new("127.0.0.3:3".parse().unwrap(), None)).layer(seen);
        let svc = GateLayer::new(Records).layer(inner);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        match rt.block_on(svc.oneshot(req)).unwrap().into_body() {
            crate::GateBody::Inner { body } => body,
            crate::GateBody::Denied { .. } => panic!("refused"),
        }
    }

    #[test]
    fn a_second_conn_info_layer_keeps_the_decisions() {
        let mut req = Request::new(());
        req.extensions_mut().insert(ConnInfo::new("127.0.0.1:40000".parse().unwrap(), None));
        assert_eq!(client_seen_behind_an_inner_conn_info_layer(req), Some(IP));
    }

    /// axum's `ConnectInfo<ConnInfo>` holds the slot; the inner layer carries the decisions over to its
    /// plain copy, which `Decisions::get` reads first.
    #[cfg(feature = "axum")]
    #[test]
    fn decisions_move_from_axum_connect_info_to_an_inner_conn_info_layer() {
        let mut req = Request::new(());
        let conn = ConnInfo::new("127.0.0.1:40000".parse().unwrap(), None);
        req.extensions_mut().insert(axum::extract::ConnectInfo(conn));
        assert_eq!(client_seen_behind_an_inner_conn_info_layer(req), Some(IP));
    }

    #[test]
    fn an_own_extension_takes_precedence_over_the_conn_info_copy() {
        let mut h = head_with_conn();
        h.extensions.insert(Decisions::default());
        Records.check(&mut h).expect("allowed");
        assert!(h.extensions.get::<Decisions>().and_then(|d| d.client).is_some());
        assert!(h.extensions.get::<ConnInfo>().unwrap().decisions.0.is_none());
        assert_eq!(Decisions::client_of(&h.extensions).map(|c| c.ip), Some(IP));
    }

    #[test]
    fn existing_decisions_are_kept_and_extended() {
        let mut h = head();
        Decisions::get_mut(&mut h.extensions).shadow.push(Denial::new(
            "earlier",
            "earlier.shadow",
            StatusCode::FORBIDDEN,
            "recorded before the run",
        ));
        Gates::new([Arc::new(Records) as Arc<dyn Gate>]).check(&mut h).expect("allowed");
        let d = Decisions::get(&h.extensions).expect("kept");
        assert_eq!((d.shadow.len(), d.client.is_some()), (1, true));
        // A single gate run alone behaves the same.
        let mut h = head();
        Records.check(&mut h).expect("allowed");
        assert!(Decisions::client_of(&h.extensions).is_some());
    }
}
