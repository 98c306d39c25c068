//! Typed denials and the responses they become.
//!
//! Every refusal in portcullis is a [`Denial`]: which layer refused, under which rule, and why. A layer that
//! refuses answers with the response its [`Responder`] builds from the denial (by default an RFC 9457
//! `application/problem+json` body, see [`ProblemJson`]), attaches the denial to the response extensions and
//! logs it with `tracing`. A layer in shadow mode records the denial in the request's
//! [`Decisions`](crate::Decisions) instead and lets the request through.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// Why a request (or connection) was refused: which layer, which rule, and the details.
///
/// Cheap to clone; attached to refused responses' extensions and to [`Decisions::shadow`](crate::Decisions)
/// in shadow mode. The typed reason of the refusing layer can be recovered with [`Denial::reason`].
#[derive(Clone)]
pub struct Denial {
    // Boxed so that `Result<_, Denial>` stays one pointer wide on the allow path.
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    layer: &'static str,
    code: &'static str,
    status: StatusCode,
    title: Cow<'static, str>,
    detail: String,
    rule: Option<Cow<'static, str>>,
    refused: Option<String>,
    reason: Option<Arc<dyn Error + Send + Sync>>,
}

impl Denial {
    /// A denial by `layer` (for example `"host"`), with a stable machine-readable `code` (for example
    /// `"host.unknown"`), the HTTP status to answer with and a human-readable detail.
    pub fn new(
        layer: &'static str,
        code: &'static str,
        status: StatusCode,
        detail: impl Into<String>,
    ) -> Self {
        Denial {
            inner: Box::new(Inner {
                layer,
                code,
                status,
                title: Cow::Borrowed(status.canonical_reason().unwrap_or("Refused")),
                detail: detail.into(),
                rule: None,
                refused: None,
                reason: None,
            }),
        }
    }

    /// Sets the short human-readable title (defaults to the status' reason phrase).
    pub fn with_title(mut self, title: impl Into<Cow<'static, str>>) -> Self {
        self.inner.title = title.into();
        self
    }

    /// Names the rule that refused (for example `deny 10.0.66.0/24`, or `no rule matched`).
    pub fn with_rule(mut self, rule: impl Into<Cow<'static, str>>) -> Self {
        self.inner.rule = Some(rule.into());
        self
    }

    /// Names the refused value (an address, a host name, a certificate subject).
    pub fn with_refused(mut self, refused: impl Into<String>) -> Self {
        self.inner.refused = Some(refused.into());
        self
    }

    /// Attaches the refusing layer's typed reason, recoverable with [`Denial::reason`].
    pub fn with_reason<E: Error + Send + Sync + 'static>(mut self, reason: E) -> Self {
        self.inner.reason = Some(Arc::new(reason));
        self
    }

    /// The layer that refused (`client-addr`, `host`, `ip`, `origin`, `public-access`, `mtls`, ...).
    pub fn layer(&self) -> &'static str {
        self.inner.layer
    }

    /// The stable machine-readable code of the refusal (`host.unknown`, `ip.denied`, ...).
    pub fn code(&self) -> &'static str {
        self.inner.code
    }

    /// The HTTP status the refusal answers with.
    pub fn status(&self) -> StatusCode {
        self.inner.status
    }

    /// The short title.
    pub fn title(&self) -> &str {
        &self.inner.title
    }

    /// The human-readable detail.
    pub fn detail(&self) -> &str {
        &self.inner.detail
    }

    /// The rule that refused, if the layer names one.
    pub fn rule(&self) -> Option<&str> {
        self.inner.rule.as_deref()
    }

    /// The refused value, if the layer names one.
    pub fn refused(&self) -> Option<&str> {
        self.inner.refused.as_deref()
    }

    /// The refusing layer's typed reason, if it is an `E`.
    pub fn reason<E: Error + 'static>(&self) -> Option<&E> {
        self.inner.reason.as_deref().and_then(|r| r.downcast_ref::<E>())
    }

    /// The typed reason as a trait object, if one was attached.
    pub fn reason_dyn(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        self.inner.reason.as_deref()
    }

    /// Logs the denial with `tracing` at warn level (or info level when `shadow` is true, since nothing was
    /// refused), at most [`DEFAULT_LINES_PER_WINDOW`](crate::ratelimit::DEFAULT_LINES_PER_WINDOW) lines a
    /// second for each of the two kinds ([`REFUSALS`](crate::ratelimit::REFUSALS),
    /// [`SHADOW_REFUSALS`](crate::ratelimit::SHADOW_REFUSALS)); past that, each denial is logged at debug
    /// level and a "N more … suppressed" line follows in the next second.
    pub fn log(&self, shadow: bool) {
        let d = &*self.inner;
        let (layer, code, status, rule, refused) =
            (d.layer, d.code, d.status.as_u16(), d.rule.as_deref(), d.refused.as_deref());
        let limit = if shadow { &crate::ratelimit::SHADOW_REFUSALS } else { &crate::ratelimit::REFUSALS };
        match (shadow, limit.admit()) {
            (true, true) => tracing::info!(
                layer,
                code,
                status,
                rule,
                refused,
                "portcullis shadow mode: would refuse: {}",
                d.detail
            ),
            (false, true) => {
                tracing::warn!(layer, code, status, rule, refused, "portcullis refused: {}", d.detail)
            }
            (true, false) => tracing::debug!(
                layer,
                code,
                status,
                rule,
                refused,
                "portcullis shadow mode: would refuse: {}",
                d.detail
            ),
            (false, false) => {
                tracing::debug!(layer, code, status, rule, refused, "portcullis refused: {}", d.detail)
            }
        }
    }
}

impl fmt::Debug for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Denial")
            .field("layer", &self.inner.layer)
            .field("code", &self.inner.code)
            .field("status", &self.inner.status)
            .field("detail", &self.inner.detail)
            .field("rule", &self.inner.rule)
            .field("refused", &self.inner.refused)
            .field("reason", &self.inner.reason)
            .finish()
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {}): {}",
            self.inner.code,
            self.inner.layer,
            self.inner.status.as_u16(),
            self.inner.detail
        )
    }
}

impl Error for Denial {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.inner.reason.as_deref().map(|r| r as &(dyn Error + 'static))
    }
}

// === impl Responder ===

/// Builds the response for a [`Denial`]. Implemented for closures `Fn(&Denial) -> Response<Full<Bytes>>`.
pub trait RespondDenial: Send + Sync + 'static {
    /// The response to send for `denial`.
    fn respond(&self, denial: &Denial) -> Response<Full<Bytes>>;
}

impl<F> RespondDenial for F
where
    F: Fn(&Denial) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    fn respond(&self, denial: &Denial) -> Response<Full<Bytes>> {
        self(denial)
    }
}

/// The default responder: an RFC 9457 `application/problem+json` body.
///
/// ```json
/// {"type":"urn:portcullis:denial:host.unknown","title":"Misdirected Request","status":421,
///  "detail":"...","layer":"host","rule":"...","refused":"..."}
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ProblemJson;

impl ProblemJson {
    /// The problem+json document for `denial`.
    pub fn body(denial: &Denial) -> String {
        /// The document, in the order RFC 9457 lists its members, then the extension members.
        #[derive(serde::Serialize)]
        struct Problem<'a> {
            #[serde(rename = "type")]
            kind: String,
            title: &'a str,
            status: u16,
            detail: &'a str,
            layer: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            rule: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            refused: Option<&'a str>,
        }
        let problem = Problem {
            kind: format!("urn:portcullis:denial:{}", denial.inner.code),
            title: denial.title(),
            status: denial.inner.status.as_u16(),
            detail: denial.detail(),
            layer: denial.inner.layer,
            rule: denial.rule(),
            refused: denial.refused(),
        };
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_string(&problem).unwrap_or_default()
    }
}

impl RespondDenial for ProblemJson {
    fn respond(&self, denial: &Denial) -> Response<Full<Bytes>> {
        let mut res = Response::new(Full::new(Bytes::from(ProblemJson::body(denial))));
        *res.status_mut() = denial.inner.status;
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }
}

/// A refusal in gRPC's terms: HTTP 200 with no body and the status in `grpc-status` and `grpc-message`
/// (a trailers-only response), which every gRPC client reads as a failed call. gRPC clients do not read
/// HTTP bodies: a problem+json refusal reaches them as a protocol error.
///
/// The denial's HTTP status maps onto a gRPC code ([`GrpcStatus::code`]):
///
/// | HTTP | gRPC | why |
/// |---|---|---|
/// | 400 | `INVALID_ARGUMENT` (3) | the request itself is malformed (its host, its forwarded header) |
/// | 401 | `UNAUTHENTICATED` (16) | no credentials |
/// | 403 | `PERMISSION_DENIED` (7) | a rule refused the caller |
/// | 421 | `FAILED_PRECONDITION` (9) | the request names a host this server does not serve: retrying it unchanged cannot succeed |
/// | 429, 431 | `RESOURCE_EXHAUSTED` (8) | a limit |
/// | 5xx | `INTERNAL` (13) | the server is wired wrongly (no connection facts) |
/// | other | `UNKNOWN` (2) | |
///
/// `grpc-message` carries the HTTP status, the denial's code and its detail (`403 Forbidden
/// (ip.no-rule-matched): …`), percent-encoded as the gRPC protocol asks; the `portcullis-denial` metadata
/// carries the code alone, for clients that branch on it.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcStatus;

impl GrpcStatus {
    /// The gRPC status code for a refusal answered with `status` over HTTP.
    pub fn code(status: StatusCode) -> u16 {
        match status.as_u16() {
            400 => 3,
            401 => 16,
            403 => 7,
            421 => 9,
            429 | 431 => 8,
            500..=599 => 13,
            _ => 2,
        }
    }

    /// Whether a request is a gRPC call (its content type is `application/grpc` or `application/grpc+…`).
    pub fn is_grpc(headers: &http::HeaderMap) -> bool {
        headers.get(header::CONTENT_TYPE).is_some_and(|v| {
            let v = v.as_bytes();
            v.len() >= 16
                && v[..16].eq_ignore_ascii_case(b"application/grpc")
                && matches!(v.get(16), None | Some(b'+' | b';'))
        })
    }

    /// `text` percent-encoded for `grpc-message`: bytes outside printable ASCII, and `%`, as `%XX`.
    pub fn encode_message(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for b in text.bytes() {
            match b {
                b' '..=b'~' if b != b'%' => out.push(char::from(b)),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }
}

impl RespondDenial for GrpcStatus {
    fn respond(&self, denial: &Denial) -> Response<Full<Bytes>> {
        let mut res = Response::new(Full::new(Bytes::new()));
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from(GrpcStatus::code(denial.status())));
        let message = GrpcStatus::encode_message(&format!(
            "{} ({}): {}",
            denial.status(),
            denial.code(),
            denial.detail()
        ));
        if let Ok(value) = HeaderValue::from_str(&message) {
            headers.insert("grpc-message", value);
        }
        headers.insert("portcullis-denial", HeaderValue::from_static(denial.code()));
        res
    }
}

/// A shareable handle on a [`RespondDenial`]; every layer takes one.
///
/// The default answers gRPC calls (content type `application/grpc*`) with [`GrpcStatus`] and every other
/// request with [`ProblemJson`]. A responder of your own answers HTTP requests; gRPC calls keep
/// [`GrpcStatus`] unless you switch it off with [`grpc`](Self::grpc).
#[derive(Clone)]
pub struct Responder {
    http: Arc<dyn RespondDenial>,
    grpc: Option<Arc<dyn RespondDenial>>,
}

impl Responder {
    /// Wraps a responder (a [`RespondDenial`] implementation or a closure) for HTTP requests; gRPC calls
    /// are still answered with [`GrpcStatus`].
    pub fn new(responder: impl RespondDenial) -> Self {
        Responder { http: Arc::new(responder), grpc: Some(Arc::new(GrpcStatus)) }
    }

    /// Answers gRPC calls with `responder` too (`None`: like every other request).
    pub fn grpc(mut self, responder: Option<Arc<dyn RespondDenial>>) -> Self {
        self.grpc = responder;
        self
    }

    /// Builds the response for `denial` refusing the request whose head is `head`, attaches the denial to
    /// its extensions and logs it.
    pub fn respond(&self, denial: Denial, head: &http::request::Parts) -> Response<Full<Bytes>> {
        self.respond_headers(denial, &head.headers)
    }

    /// [`respond`](Self::respond) for a request whose headers are `headers`.
    pub fn respond_headers(&self, denial: Denial, headers: &http::HeaderMap) -> Response<Full<Bytes>> {
        denial.log(false);
        let responder = match &self.grpc {
            Some(grpc) if GrpcStatus::is_grpc(headers) => grpc,
            _ => &self.http,
        };
        let mut res = responder.respond(&denial);
        res.extensions_mut().insert(denial);
        res
    }
}

impl Default for Responder {
    fn default() -> Self {
        Responder::new(ProblemJson)
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Responder(..)")
    }
}
