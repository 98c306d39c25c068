//! An optional access log: one structured line per request, with what the stack decided about it.
//!
//! The line is written through `tracing` at info level with the target `portcullis::access`, and carries
//! the method, path, host, HTTP version, status, duration, the connection's peer, and either the decisions
//! of an allowed request (client address and how it was learnt, endpoint, origin, the IP rule that let it
//! through, shadow refusals) or the refusal's code and layer.
//!
//! A public caller decides how many requests there are, so the lines are rate-limited like every other
//! line a client can cause ([`ratelimit`](portcullis_core::ratelimit)): at most `lines_per_second` are
//! written, the rest are counted into one "N more … suppressed" line, and each suppressed one is written at
//! debug level.
//!
//! It takes two layers, because the decisions of an allowed request travel with the request into the
//! application: [`AccessLog::outer`] goes outside the gateway (it sees refusals and the final status) and
//! [`AccessLog::inner`] inside it (it copies the decisions for the outer one). Without the inner one the
//! lines of allowed requests carry no decisions. The serve helper installs both when the configuration
//! has an `[access_log]` table.
//!
//! ```
//! use axum::{Router, routing::get};
//! use portcullis::access_log::AccessLog;
//! use portcullis::Gateway;
//! use tower::ServiceBuilder;
//!
//! let gateway = Gateway::builder().build();
//! let access = AccessLog::new(Some(1000));
//! let app: Router = Router::new().route("/", get(|| async { "hello" }));
//! let service = ServiceBuilder::new()
//!     .layer(access.outer())
//!     .layer(gateway.layer())
//!     .layer(access.inner())
//!     .service(app);
//! # let _ = service;
//! ```

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::{Request, Response};
use portcullis_core::ratelimit::LogLimit;
use portcullis_core::{ConnInfo, Decisions, Denial};
use tower::{Layer, Service};

/// The longest host or path written to a line (longer ones are cut, with `…`): a client chooses them.
pub const MAX_FIELD_CHARS: usize = 256;

/// The switch and rate of the access log, shared by its two layers; changed at runtime with
/// [`set`](Self::set) (a reload does).
#[derive(Debug, Clone, Default)]
pub struct AccessLog {
    limit: Arc<ArcSwapOption<LogLimit>>,
}

impl AccessLog {
    /// An access log writing at most `lines_per_second` lines (`None`: off).
    pub fn new(lines_per_second: Option<u64>) -> Self {
        let log = AccessLog::default();
        log.set(lines_per_second);
        log
    }

    /// Turns the log on at `lines_per_second` lines at most, or off (`None`), from the next request.
    pub fn set(&self, lines_per_second: Option<u64>) {
        let limit = lines_per_second.map(|n| {
            Arc::new(LogLimit::with_rate(
                "access log",
                tracing::Level::INFO,
                n.max(1),
                Duration::from_secs(1),
            ))
        });
        self.limit.store(limit);
    }

    /// Whether the log is on.
    pub fn is_on(&self) -> bool {
        self.limit.load().is_some()
    }

    /// The layer outside the gateway: it writes the lines.
    pub fn outer(&self) -> AccessLogLayer {
        AccessLogLayer { log: self.clone() }
    }

    /// The layer inside the gateway: it hands the decisions of an allowed request to the outer one.
    pub fn inner(&self) -> CaptureDecisionsLayer {
        CaptureDecisionsLayer { _private: () }
    }
}

/// Where the inner layer leaves an allowed request's decisions for the outer one.
#[derive(Clone, Default)]
struct Slot(Arc<Mutex<Option<Decisions>>>);

impl Slot {
    fn take(&self) -> Option<Decisions> {
        self.0.lock().ok().and_then(|mut d| d.take())
    }
}

/// The outer layer of the access log (see [`AccessLog::outer`]).
#[derive(Debug, Clone)]
pub struct AccessLogLayer {
    log: AccessLog,
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLogService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLogService { inner, log: self.log.clone() }
    }
}

/// The outer service of the access log.
#[derive(Debug, Clone)]
pub struct AccessLogService<S> {
    inner: S,
    log: AccessLog,
}

/// What the outer layer learnt from the request, for its line.
struct Started {
    limit: Arc<LogLimit>,
    at: Instant,
    method: http::Method,
    path: String,
    host: String,
    version: http::Version,
    peer: Option<std::net::SocketAddr>,
    slot: Slot,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AccessLogService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = AccessLogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let Some(limit) = self.log.limit.load_full() else {
            return AccessLogFuture { inner: self.inner.call(req), started: None };
        };
        let slot = Slot::default();
        req.extensions_mut().insert(slot.clone());
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()));
        let started = Started {
            limit,
            at: Instant::now(),
            method: req.method().clone(),
            path: cut(req.uri().path()),
            host: cut(host.unwrap_or("-")),
            version: req.version(),
            peer: ConnInfo::lookup(req.extensions()).map(|c| c.peer),
            slot,
        };
        AccessLogFuture { inner: self.inner.call(req), started: Some(started) }
    }
}

pin_project_lite::pin_project! {
    /// The outer service's future: writes the line when the response head is ready.
    pub struct AccessLogFuture<F> {
        #[pin]
        inner: F,
        started: Option<Started>,
    }
}

impl<F, ResBody, E> Future for AccessLogFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some(started) = this.started.take() {
            match &result {
                Ok(res) => write_line(&started, Some(res.status()), res.extensions().get::<Denial>()),
                Err(_) => write_line(&started, None, None),
            }
        }
        Poll::Ready(result)
    }
}

/// At most [`MAX_FIELD_CHARS`] characters of `s`.
fn cut(s: &str) -> String {
    match s.char_indices().nth(MAX_FIELD_CHARS) {
        Some((at, _)) => format!("{}…", s.get(..at).unwrap_or_default()),
        None => s.to_owned(),
    }
}

fn write_line(started: &Started, status: Option<http::StatusCode>, denial: Option<&Denial>) {
    let decisions = started.slot.take();
    let d = decisions.as_ref();
    let status = status.map_or(0, |s| s.as_u16());
    let millis = started.at.elapsed().as_secs_f64() * 1000.0;
    let peer = started.peer.map(|p| p.to_string());
    let client = d.and_then(|d| d.client).map(|c| format!("{} ({})", c.ip, c.learnt_via));
    let endpoint = d.and_then(|d| d.host.as_ref()).map(|h| h.endpoint.to_string());
    let origin = d.and_then(|d| d.origin.as_ref()).map(ToString::to_string);
    let ip_rule = d.map(|d| d.ip.iter().map(|a| a.rule.to_string()).collect::<Vec<_>>().join(", "));
    let shadow = d.map(|d| {
        d.shadow.iter().fold(String::new(), |mut s, x| {
            let _ = write!(s, "{}{}", if s.is_empty() { "" } else { ", " }, x.code());
            s
        })
    });
    let refused = denial.map(Denial::code);
    let layer = denial.map(Denial::layer);
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                target: "portcullis::access",
                method = %started.method,
                path = ?started.path,
                host = ?started.host,
                version = ?started.version,
                status,
                millis,
                peer = %peer.as_deref().filter(|s| !s.is_empty()).unwrap_or("-"),
                client = %client.as_deref().filter(|s| !s.is_empty()).unwrap_or("-"),
                endpoint = %endpoint.as_deref().filter(|s| !s.is_empty()).unwrap_or("-"),
                origin = %origin.as_deref().filter(|s| !s.is_empty()).unwrap_or("-"),
                ip_rule = %ip_rule.as_deref().filter(|s| !s.is_empty()).unwrap_or("-"),
                shadow = %shadow.as_deref().filter(|s| !s.is_empty()).unwrap_or("-"),
                refused = %refused.unwrap_or("-"),
                layer = %layer.unwrap_or("-"),
                "access"
            )
        };
    }
    if started.limit.admit() {
        line!(info);
    } else {
        line!(debug);
    }
}

/// The inner layer of the access log (see [`AccessLog::inner`]).
#[derive(Debug, Clone)]
pub struct CaptureDecisionsLayer {
    _private: (),
}

impl<S> Layer<S> for CaptureDecisionsLayer {
    type Service = CaptureDecisions<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CaptureDecisions { inner }
    }
}

/// The inner service of the access log: copies the request's decisions to the outer layer's slot.
#[derive(Debug, Clone)]
pub struct CaptureDecisions<S> {
    inner: S,
}

impl<S, ReqBody> Service<Request<ReqBody>> for CaptureDecisions<S>
where
    S: Service<Request<ReqBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if let Some(slot) = req.extensions().get::<Slot>()
            && let Some(decisions) = req.extensions().get::<Decisions>()
            && let Ok(mut s) = slot.0.lock()
        {
            *s = Some(decisions.clone());
        }
        self.inner.call(req)
    }
}
