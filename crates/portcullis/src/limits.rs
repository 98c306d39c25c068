//! Connection-level deadlines and sizes of the serve helper: every step of a connection has a deadline,
//! and request heads have a size limit answered `431` in problem+json.
//!
//! | step | setting | default |
//! |---|---|---|
//! | TCP accept → first byte (PROXY header, TLS ClientHello or HTTP) | [`ConnectionTimeouts::first_byte`] | 10 s |
//! | the whole PROXY header | `ProxyProtocolConfig::header_timeout` | 5 s |
//! | TLS handshake (ClientHello to Finished) | [`ConnectionTimeouts::tls_handshake`] | 10 s |
//! | HTTP start: the first byte of HTTP/1, or the HTTP/2 preface and the client's SETTINGS frame | [`ConnectionTimeouts::http_preface`] | 10 s |
//! | an HTTP/1 request head (hyper's header-read timer; it also runs while a keep-alive connection waits for its next request) | [`ConnectionTimeouts::header_read`] | 30 s |
//! | a request body: the wait for each next piece while the application reads it ([`TimedBody`]) | [`ConnectionTimeouts::body_read`] | 30 s |
//! | a connection with no request in flight (HTTP/1 and HTTP/2) | [`ConnectionTimeouts::idle`] | 60 s |
//! | a connection's whole life, then a graceful close | [`ConnectionTimeouts::max_age`] | none |
//! | a connection being closed (idle, maximum age, virtual host changed): its requests in flight | [`ConnectionTimeouts::drain`] | 30 s |
//! | after a shutdown signal: requests in flight | [`ConnectionTimeouts::shutdown_grace`] | 10 s |
//!
//! A silent peer is closed at the first deadline it misses; none of these waits is unbounded (the
//! maximum age is optional because idle connections are already bounded).
//!
//! Sizes ([`HeaderLimits`]): the request head's header list (each field counted as name + value + 32 bytes,
//! the accounting of HTTP/2's `SETTINGS_MAX_HEADER_LIST_SIZE`) at most 32 KiB and one field at most 16 KiB
//! by default; larger heads are answered `431` with a problem+json body by the serve helper. hyper's own
//! limits sit above these (the HTTP/1 read buffer and HTTP/2's advertised header list size are set 16 KiB
//! higher), so a head between the two is refused in problem+json; a head past hyper's limit, more than
//! 100 header fields in HTTP/1, a malformed head (400) or a URI longer than 65,534 bytes (414) are answered
//! by hyper itself, with an empty body, and cannot be reshaped (hyper offers no hook for them).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::Full;
use portcullis_core::{Denial, Responder};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The deadlines of one listener (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    /// From TCP accept to the first byte.
    pub first_byte: Duration,
    /// The TLS handshake.
    pub tls_handshake: Duration,
    /// From the start of HTTP to the first byte of HTTP/1, or to the end of the HTTP/2 preface and the
    /// client's first SETTINGS frame.
    pub http_preface: Duration,
    /// An HTTP/1 request head (hyper's header-read timeout).
    pub header_read: Duration,
    /// While the application reads a request body, the longest wait for its next piece ([`TimedBody`]).
    pub body_read: Duration,
    /// A connection without a request in flight is closed (gracefully) after this long.
    pub idle: Duration,
    /// A connection older than this is closed gracefully (requests in flight finish). None: no limit.
    pub max_age: Option<Duration>,
    /// A connection being closed (idle, maximum age, or its virtual host changed so that its handshake
    /// would be refused now) gets this long for its requests in flight, then it is dropped.
    pub drain: Duration,
    /// After a shutdown signal, open connections get this long for their requests in flight.
    pub shutdown_grace: Duration,
}

/// The default [`ConnectionTimeouts::first_byte`].
pub const DEFAULT_FIRST_BYTE: Duration = Duration::from_secs(10);
/// The default [`ConnectionTimeouts::tls_handshake`].
pub const DEFAULT_TLS_HANDSHAKE: Duration = Duration::from_secs(10);
/// The default [`ConnectionTimeouts::http_preface`].
pub const DEFAULT_HTTP_PREFACE: Duration = Duration::from_secs(10);
/// The default [`ConnectionTimeouts::header_read`].
pub const DEFAULT_HEADER_READ: Duration = Duration::from_secs(30);
/// The default [`ConnectionTimeouts::body_read`].
pub const DEFAULT_BODY_READ: Duration = Duration::from_secs(30);
/// The default [`ConnectionTimeouts::idle`].
pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);
/// The default [`ConnectionTimeouts::drain`].
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);
/// The default [`ConnectionTimeouts::shutdown_grace`].
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl Default for ConnectionTimeouts {
    fn default() -> Self {
        ConnectionTimeouts {
            first_byte: DEFAULT_FIRST_BYTE,
            tls_handshake: DEFAULT_TLS_HANDSHAKE,
            http_preface: DEFAULT_HTTP_PREFACE,
            header_read: DEFAULT_HEADER_READ,
            body_read: DEFAULT_BODY_READ,
            idle: DEFAULT_IDLE,
            max_age: None,
            drain: DEFAULT_DRAIN,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// The default [`HeaderLimits::max_list_bytes`].
pub const DEFAULT_MAX_HEADER_LIST_BYTES: usize = 32 * 1024;
/// The default [`HeaderLimits::max_field_bytes`].
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// How far above [`HeaderLimits::max_list_bytes`] hyper's own limits are set, so that heads in between
/// are refused by the serve helper in problem+json.
pub const HYPER_HEADROOM: usize = 16 * 1024;

/// Request head size limits (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderLimits {
    /// The header list: the sum over all fields of name + value + 32 bytes.
    pub max_list_bytes: usize,
    /// One field: name + value bytes.
    pub max_field_bytes: usize,
}

impl Default for HeaderLimits {
    fn default() -> Self {
        HeaderLimits {
            max_list_bytes: DEFAULT_MAX_HEADER_LIST_BYTES,
            max_field_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

impl HeaderLimits {
    /// hyper's HTTP/1 read buffer limit for these limits (at least hyper's minimum, 8 KiB).
    pub fn hyper_h1_max_buf(&self) -> usize {
        (self.max_list_bytes + HYPER_HEADROOM).max(8 * 1024)
    }

    /// hyper's HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE` for these limits.
    pub fn hyper_h2_max_header_list(&self) -> u32 {
        u32::try_from(self.max_list_bytes + HYPER_HEADROOM).unwrap_or(u32::MAX)
    }

    /// The denial for `headers`, if they are over a limit.
    pub fn check(&self, headers: &HeaderMap) -> Option<Denial> {
        let mut list = 0usize;
        for (name, value) in headers {
            let field = name.as_str().len() + value.len();
            if field > self.max_field_bytes {
                return Some(
                    Denial::new(
                        "http",
                        "http.header-too-large",
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        format!(
                            "the header field `{name}` is {field} bytes; at most {} are accepted",
                            self.max_field_bytes
                        ),
                    )
                    .with_rule(format!("max_header_bytes = {}", self.max_field_bytes)),
                );
            }
            list += field + 32;
        }
        (list > self.max_list_bytes).then(|| {
            Denial::new(
                "http",
                "http.header-list-too-large",
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "the request's header list is {list} bytes; at most {} are accepted",
                    self.max_list_bytes
                ),
            )
            .with_rule(format!("max_header_list_bytes = {}", self.max_list_bytes))
        })
    }

    /// The `431` problem+json response for `headers`, if they are over a limit.
    pub fn refuse(&self, headers: &HeaderMap, responder: &Responder) -> Option<http::Response<Full<Bytes>>> {
        self.check(headers).map(|denial| responder.respond_headers(denial, headers))
    }
}

// === the HTTP start ===

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.x: the first bytes are not the HTTP/2 preface.
    Http1,
    /// HTTP/2: the preface, then the client's first frame.
    Http2,
}

/// Why the start of HTTP was not read.
#[derive(Debug, thiserror::Error)]
pub enum PrefaceError {
    /// The deadline passed first.
    #[error("no HTTP start within {0:?} ({1} bytes received)")]
    Timeout(Duration, usize),
    /// The peer closed the connection.
    #[error("connection closed after {0} bytes, before the start of HTTP")]
    Closed(usize),
    /// Reading failed.
    #[error("I/O error before the start of HTTP: {0}")]
    Io(#[from] std::io::Error),
}

/// The largest first frame waited for after the HTTP/2 preface (the default maximum frame size); a larger
/// one is left to hyper, which refuses it.
const MAX_FIRST_FRAME: usize = 16_384;

/// What the bytes read so far say: `Some` once the protocol is known and its start is complete.
fn judge(buf: &[u8]) -> Option<Protocol> {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] != H2_PREFACE[..n] {
        return Some(Protocol::Http1);
    }
    // The preface is followed by a SETTINGS frame: 9-byte header (24-bit length, type 4), then its payload.
    let frame = buf.get(H2_PREFACE.len()..)?;
    let header = frame.get(..9)?;
    let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    if header[3] != 0x4 || len > MAX_FIRST_FRAME || frame.len() >= 9 + len {
        return Some(Protocol::Http2);
    }
    None
}

/// Reads the start of HTTP within `timeout`: the first byte of HTTP/1, or the HTTP/2 preface and the whole
/// first frame. Returns the protocol and every byte read, to be replayed to the HTTP server.
///
/// # Errors
/// [`PrefaceError`]: the deadline passed, the peer closed, or reading failed.
pub async fn read_http_start<IO: AsyncRead + Unpin>(
    io: &mut IO,
    timeout: Duration,
) -> Result<(Protocol, Vec<u8>), PrefaceError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        if !buf.is_empty()
            && let Some(protocol) = judge(&buf)
        {
            return Ok((protocol, buf));
        }
        match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Err(_) => return Err(PrefaceError::Timeout(timeout, buf.len())),
            Ok(Ok(0)) => return Err(PrefaceError::Closed(buf.len())),
            Ok(Ok(n)) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn judging_the_first_bytes() {
        assert_eq!(judge(b"G"), Some(Protocol::Http1));
        assert_eq!(judge(b"POST / HTTP/1.1"), Some(Protocol::Http1));
        assert_eq!(judge(b"PRI * HTTP/2.0\r\n"), None, "a partial preface");
        assert_eq!(judge(b"PRI * HTTP/1.1\r\n"), Some(Protocol::Http1));
        let mut h2 = H2_PREFACE.to_vec();
        assert_eq!(judge(&h2), None, "the preface without SETTINGS");
        h2.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0]);
        assert_eq!(judge(&h2), None, "a SETTINGS header without its payload");
        h2.extend_from_slice(&[0, 3, 0, 0, 0, 100]);
        assert_eq!(judge(&h2), Some(Protocol::Http2));
        let mut other = H2_PREFACE.to_vec();
        other.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 1]);
        assert_eq!(judge(&other), Some(Protocol::Http2), "not SETTINGS: hyper refuses it");
    }

    #[tokio::test]
    async fn a_partial_preface_misses_its_deadline() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let started = tokio::time::Instant::now();
        let err = read_http_start(&mut server, Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(err, PrefaceError::Timeout(_, 16)), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(100));
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (p, bytes) = read_http_start(&mut server, Duration::from_millis(100)).await.unwrap();
        assert_eq!((p, bytes.as_slice()), (Protocol::Http1, &b"GET / HTTP/1.1\r\n"[..]));
    }

    #[test]
    fn header_limits() {
        let limits = HeaderLimits { max_list_bytes: 200, max_field_bytes: 50 };
        let mut headers = HeaderMap::new();
        headers.insert("a", HeaderValue::from_static("x"));
        assert!(limits.check(&headers).is_none());
        headers.insert("big", HeaderValue::from_str(&"y".repeat(48)).unwrap());
        assert_eq!(limits.check(&headers).unwrap().code(), "http.header-too-large");
        headers.insert("big", HeaderValue::from_str(&"y".repeat(47)).unwrap());
        assert!(limits.check(&headers).is_none(), "exactly 50 bytes");
        for name in ["c", "d", "e"] {
            headers.insert(name, HeaderValue::from_static("zzzzzzzzzzzzzzzzzzzz"));
        }
        let denial = limits.check(&headers).unwrap();
        assert_eq!((denial.code(), denial.status().as_u16()), ("http.header-list-too-large", 431));
    }
}

/// A request body whose next piece must arrive within a deadline while the application reads it: a client
/// that stops sending in the middle of a body cannot hold the request (and its connection) open. The serve
/// helper gives every request this body ([`RequestBody`](crate::serve::RequestBody)).
///
/// The deadline runs only while the body is polled and nothing is ready; an application that does not
/// read the body is not timed. Past it, the body yields [`BodyTimeout`] as its error (axum's extractors
/// answer `400`) and the connection, its body unread, is closed after the response.
#[derive(Debug)]
pub struct TimedBody<B> {
    inner: B,
    timeout: Duration,
    /// Set when a poll found nothing ready; cleared by each piece.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
}

impl<B> TimedBody<B> {
    /// `inner`, whose next piece must come within `timeout` whenever it is awaited.
    pub fn new(inner: B, timeout: Duration) -> Self {
        TimedBody { inner, timeout, sleep: None, waiting: false }
    }

    /// The body it wraps.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

/// The error of a [`TimedBody`] whose next piece did not come in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request body's next piece did not arrive within {0:?}")]
pub struct BodyTimeout(pub Duration);

impl<B> http_body::Body for TimedBody<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = tokio::time::Instant::now() + this.timeout;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !this.waiting {
            sleep.as_mut().reset(deadline);
            this.waiting = true;
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
