//! The reverse proxy of `portcullis serve`: each request the gateway let through goes to its endpoint's
//! upstream over a pooled hyper-util client, streamed both ways.
//!
//! Towards the upstream:
//!
//! - hop-by-hop headers are removed (RFC 9110 §7.6.1): `Connection` and every header it names,
//!   `Keep-Alive`, `Proxy-Connection`, `TE` (but `TE: trailers`, which gRPC needs), `Trailer`,
//!   `Transfer-Encoding`, `Upgrade`, `Proxy-Authenticate`, `Proxy-Authorization`, `HTTP2-Settings`; an
//!   upgrade request (WebSocket; never to HTTP itself, such as `h2c`) keeps its `Connection: upgrade`
//!   and `Upgrade` and is joined to the upstream's once both sides switched protocols; the tunnel keeps
//!   the client connection's places in the connection limits and ends when the serve helper closes that
//!   connection ([`ConnectionHold`]) or after the listener's idle time without a byte either way;
//! - `X-Forwarded-For`, `Forwarded`, `X-Forwarded-Proto`, `X-Forwarded-Host`, `X-Real-IP`,
//!   `X-Forwarded-Port`, `X-Forwarded-Ssl`, `X-Forwarded-Scheme`, the origin header and the
//!   client-certificate header are removed whatever the client sent (with every spelling that has `_`
//!   for a `-`, which some servers fold into the same names), then set from what the stack resolved: the
//!   client address ([`ClientAddr`](portcullis::ClientAddr)), the protocol of the connection, the host the
//!   host rule matched ([`MatchedHost`](portcullis::MatchedHost)), the request's
//!   [`Origin`](portcullis::Origin) and the verified client certificate (URL-encoded PEM); the request's
//!   trailers (which reach an h2c upstream) lose the same headers;
//! - the request's `Host` is kept;
//! - `CONNECT` (a raw tunnel to an address) is answered `405` (`sidecar.connect`), never forwarded.
//!
//! Bodies are streamed in both directions without buffering. When the upstream cannot be reached the answer
//! is a `502`, when it does not answer in time a `504`, both problem+json from the gateway's responder (a
//! gRPC status for gRPC calls).

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::serve::{ConnectionHold, RequestBody};
use portcullis::{ConnInfo, Decisions, Denial, Origin, Responder};
use portcullis_core::PrivateVia;

use crate::sidecar::{Settings, Upstream, UpstreamProtocol};

/// Upstream failures are logged at most so often (a failing upstream fails every request).
static UPSTREAM_ERRORS: portcullis_core::LogLimit =
    portcullis_core::LogLimit::new("sidecar upstream error", tracing::Level::WARN);

/// The response body: the upstream's, streamed, or the gateway's own problem+json.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Hop-by-hop headers (RFC 9110 §7.6.1), besides those `Connection` names.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "http2-settings",
];

/// Headers a client may never set towards the upstream: the proxy sets the first four from the stack's
/// decisions; the others, which frameworks combine with them into the URL the client used (Rack, Spring,
/// Werkzeug's `ProxyFix`), are removed. Every spelling with `_` for any `-` is removed too
/// ([`owned_spellings`]).
const FORWARDED: &[&str] = &[
    "x-forwarded-for",
    "forwarded",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "x-forwarded-port",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
];

/// The client's headers that are `owned` once each `_` is read as `-`: servers that fold the two (CGI and
/// WSGI's `HTTP_X_FORWARDED_FOR`, PHP, some Node frameworks) would read `X-Forwarded_For` or
/// `X_Forwarded-For` as the header the proxy sets.
fn owned_spellings(headers: &HeaderMap, owned: &[&str]) -> Vec<HeaderName> {
    headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .filter(|name| {
            let folded = name.as_str().replace('_', "-");
            owned.contains(&folded.as_str())
        })
        .cloned()
        .collect()
}

/// Whether a request asks to switch to a protocol the proxy tunnels: `Connection: upgrade` with an
/// `Upgrade` header naming no version of HTTP. A tunnel to HTTP (`h2c`, `HTTP/2.0`) would leave the client
/// speaking HTTP straight to the upstream, every later request on it unchecked by the gateway (h2c
/// smuggling): such a request goes on as a plain request, its `Upgrade` removed.
fn is_upgrade(headers: &HeaderMap) -> bool {
    let names_http = |protocol: &str| {
        let name = protocol.trim().split('/').next().unwrap_or_default();
        ["h2c", "h2", "http"].iter().any(|http| name.eq_ignore_ascii_case(http))
    };
    let tunnelled = headers
        .get_all(header::UPGRADE)
        .iter()
        .all(|v| v.to_str().is_ok_and(|v| !v.split(',').any(names_http)));
    headers.contains_key(header::UPGRADE)
        && tunnelled
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes the hop-by-hop headers, keeping `Connection: upgrade` and `Upgrade` when `upgrade` is set and
/// `TE: trailers`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let upgrade_value = upgrade.then(|| headers.get(header::UPGRADE).cloned()).flatten();
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers"))));
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::try_from(t.trim()).ok())
        // The request's host and framing are not the client's to drop.
        .filter(|n| *n != header::HOST && *n != header::CONTENT_LENGTH)
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(value) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, value);
    }
}

/// The origin header's value: `public`, `private; network=<name>` or
/// `private; connection=<name>; group-id=<group>`.
fn origin_value(origin: &Origin) -> Option<HeaderValue> {
    let text = match origin {
        Origin::Public => "public".to_owned(),
        Origin::Private(PrivateVia::Network(n)) => format!("private; network={n}"),
        Origin::Private(PrivateVia::Connection(c)) => {
            format!("private; connection={}; group-id={}", c.name, c.group_id)
        }
    };
    HeaderValue::try_from(text).ok()
}

/// Removes the client's copies of the headers the proxy owns: [`FORWARDED`] and `configured` (the origin
/// and client-certificate headers), in every spelling.
fn remove_owned(headers: &mut HeaderMap, configured: [&HeaderName; 2]) {
    let mut owned: Vec<&str> = FORWARDED.to_vec();
    owned.extend(configured.map(HeaderName::as_str));
    for name in owned_spellings(headers, &owned) {
        headers.remove(name);
    }
    for name in owned {
        headers.remove(name);
    }
}

/// PEM of a DER certificate, URL-encoded (as NGINX's `$ssl_client_escaped_cert`).
fn escaped_pem(der: &[u8]) -> Option<HeaderValue> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).ok()?);
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    HeaderValue::try_from(percent_encoding::utf8_percent_encode(&pem, SET).to_string()).ok()
}

/// Rewrites a request head for the upstream: hop-by-hop headers removed, the client's copies of the
/// forwarded, origin and client-certificate headers removed, then those set from the stack's decisions.
/// `upgrade` keeps an upgrade request's `Connection` and `Upgrade`.
pub fn forward_headers(head: &mut Parts, settings: &Settings, upgrade: bool) {
    let Parts { headers, extensions, .. } = head;
    remove_hop_by_hop(headers, upgrade);
    remove_owned(headers, [&settings.origin_header, &settings.client_cert_header]);
    let conn = ConnInfo::lookup(extensions);
    let decisions = Decisions::get(extensions);
    let client: Option<IpAddr> =
        decisions.and_then(|d| d.client.as_ref()).map(|c| c.ip).or(conn.as_ref().map(|c| c.peer.ip()));
    let tls = conn.as_ref().and_then(|c| c.tls.as_ref());
    let lb_tls = conn
        .as_ref()
        .and_then(|c| c.proxy.as_ref())
        .and_then(|p| p.ssl.as_ref())
        .is_some_and(|s| s.client_ssl);
    let proto = if tls.is_some() || lb_tls { "https" } else { "http" };
    let host = decisions.and_then(|d| d.host.as_ref()).map(|h| &h.host);
    let mut forwarded = String::with_capacity(64);
    if let Some(ip) = client {
        headers.insert("x-forwarded-for", ip_value(ip));
        match ip {
            IpAddr::V4(v4) => forwarded.push_str(&format!("for={v4};")),
            IpAddr::V6(v6) => forwarded.push_str(&format!("for=\"[{v6}]\";")),
        }
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    forwarded.push_str("proto=");
    forwarded.push_str(proto);
    if let Some(host) = host
        && let Ok(v) = HeaderValue::try_from(host.as_ref())
    {
        headers.insert("x-forwarded-host", v);
        forwarded.push_str(&format!(";host=\"{host}\""));
    }
    if let Ok(v) = HeaderValue::try_from(forwarded) {
        headers.insert(header::FORWARDED, v);
    }
    if let Some(v) = decisions.and_then(|d| d.origin.as_ref()).and_then(origin_value) {
        headers.insert(settings.origin_header.clone(), v);
    }
    if let Some(v) =
        tls.and_then(|t| t.client_cert.as_ref()).and_then(|c| c.chain.first()).and_then(|d| escaped_pem(d))
    {
        headers.insert(settings.client_cert_header.clone(), v);
    }
}

fn ip_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// A connection to an upstream: TCP, or a Unix socket.
pub enum UpstreamIo {
    /// TCP.
    Tcp(tokio::net::TcpStream),
    /// A Unix socket.
    Unix(tokio::net::UnixStream),
}

impl tokio::io::AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Tcp(s) => s.is_write_vectored(),
            UpstreamIo::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Tcp(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl hyper_util::client::legacy::connect::Connection for UpstreamIo {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        match self {
            UpstreamIo::Tcp(s) => s.connected(),
            UpstreamIo::Unix(s) => s.connected(),
        }
    }
}

/// Where a [`FixedConnector`] connects.
#[derive(Clone)]
enum Target {
    Tcp(Uri),
    Unix(Arc<std::path::Path>),
}

/// A connector that connects to one upstream whatever the request's URI names: the URI keeps the host the
/// client asked for (the `:authority` of an HTTP/2 upstream request, and the pool key).
#[derive(Clone)]
struct FixedConnector {
    inner: HttpConnector,
    target: Target,
    timeout: std::time::Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for FixedConnector {
    type Response = TokioIo<UpstreamIo>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::<Uri>::poll_ready(&mut self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        match &self.target {
            Target::Tcp(uri) => {
                let connecting = tower::Service::call(&mut self.inner, uri.clone());
                Box::pin(async move {
                    let io = connecting.await?;
                    Ok(TokioIo::new(UpstreamIo::Tcp(io.into_inner())))
                })
            }
            Target::Unix(path) => {
                let (path, timeout) = (path.clone(), self.timeout);
                Box::pin(async move {
                    let stream = tokio::time::timeout(timeout, tokio::net::UnixStream::connect(&*path))
                        .await
                        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
                    Ok(TokioIo::new(UpstreamIo::Unix(stream)))
                })
            }
        }
    }
}

/// The request body towards the upstream: the client's, streamed, telling when it has ended (the response
/// deadline starts there, so that a long upload is not cut by it). Its trailers lose the headers the proxy
/// owns, as the head does (an h2c upstream receives trailers).
struct TrackedBody {
    inner: RequestBody,
    ended: Option<tokio::sync::watch::Sender<bool>>,
    /// The configured origin and client-certificate header names.
    configured: [HeaderName; 2],
}

impl TrackedBody {
    fn new(inner: RequestBody, settings: &Settings) -> (TrackedBody, tokio::sync::watch::Receiver<bool>) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let configured = [settings.origin_header.clone(), settings.client_cert_header.clone()];
        let mut body = TrackedBody { inner, ended: Some(tx), configured };
        if http_body::Body::is_end_stream(&body.inner) {
            body.end();
        }
        (body, rx)
    }

    fn end(&mut self) {
        if let Some(tx) = self.ended.take() {
            let _ = tx.send(true);
        }
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let mut polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) || self.inner.is_end_stream() {
            self.end();
        }
        if let Poll::Ready(Some(Ok(frame))) = &mut polled
            && let Some(trailers) = frame.trailers_mut()
        {
            let [origin, cert] = &self.configured;
            remove_owned(trailers, [origin, cert]);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

struct Inner {
    settings: Settings,
    /// One pooled client per endpoint with an upstream.
    clients: std::collections::HashMap<String, Client<FixedConnector, TrackedBody>>,
    responder: Responder,
}

/// The reverse proxy, a tower service for the gateway's serve helper (cloned per connection; the client
/// pools are shared).
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("upstreams", &self.inner.settings.upstreams).finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy to the upstreams of `settings`, refusing with `responder`.
    pub fn new(settings: Settings, responder: Responder) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        let mut clients = std::collections::HashMap::new();
        for (endpoint, upstream) in &settings.upstreams {
            let target = match &upstream.unix {
                Some(path) => Target::Unix(Arc::from(path.as_path())),
                None => {
                    let uri = Uri::builder()
                        .scheme(upstream.scheme.clone())
                        .authority(upstream.authority.clone())
                        .path_and_query("/")
                        .build();
                    let Ok(uri) = uri else { continue };
                    Target::Tcp(uri)
                }
            };
            let connector =
                FixedConnector { inner: connector.clone(), target, timeout: settings.connect_timeout };
            let mut builder = Client::builder(TokioExecutor::new());
            builder.pool_idle_timeout(std::time::Duration::from_secs(60));
            if upstream.protocol == UpstreamProtocol::H2c {
                builder.http2_only(true);
            }
            clients.insert(endpoint.clone(), builder.build(connector));
        }
        Proxy { inner: Arc::new(Inner { settings, clients, responder }) }
    }

    /// The upstream for a request: its endpoint's, or the only one configured when no endpoint was
    /// recorded (host rule in shadow mode).
    fn upstream(&self, head: &Parts) -> Option<(String, Upstream)> {
        let upstreams = &self.inner.settings.upstreams;
        match Decisions::get(&head.extensions).and_then(|d| d.host.as_ref()) {
            Some(h) => upstreams.get(h.endpoint.as_ref()).map(|u| (h.endpoint.to_string(), u.clone())),
            None if upstreams.len() == 1 => upstreams.iter().next().map(|(e, u)| (e.clone(), u.clone())),
            None => None,
        }
    }

    fn refuse(
        &self,
        code: &'static str,
        status: StatusCode,
        detail: String,
        headers: &HeaderMap,
    ) -> Response<ProxyBody> {
        let denial = Denial::new("sidecar", code, status, detail).with_title(match status {
            StatusCode::GATEWAY_TIMEOUT => "Gateway Timeout",
            _ => "Bad Gateway",
        });
        self.inner.responder.respond_headers(denial, headers).map(Either::Right)
    }

    async fn forward(self, req: Request<RequestBody>) -> Response<ProxyBody> {
        let (mut head, body) = req.into_parts();
        // CONNECT asks a proxy for a raw tunnel to any address: this one forwards HTTP to its upstreams only.
        if head.method == http::Method::CONNECT {
            return self.refuse(
                "sidecar.connect",
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not forwarded: this proxy forwards HTTP requests to the endpoint's upstream only"
                    .into(),
                &head.headers,
            );
        }
        let Some((endpoint, upstream)) = self.upstream(&head) else {
            return self.refuse(
                "sidecar.no-upstream",
                StatusCode::BAD_GATEWAY,
                "no upstream is configured for this endpoint".into(),
                &head.headers,
            );
        };
        let upgrade = is_upgrade(&head.headers) && upstream.protocol == UpstreamProtocol::Http1;
        let client_upgrade = upgrade.then(|| head.extensions.remove::<hyper::upgrade::OnUpgrade>()).flatten();
        // The tunnel holds the client connection's places in the connection limits while it runs.
        let hold = head.extensions.remove::<ConnectionHold>();
        // What a refusal needs of the request: whether it is a gRPC call (answered with a gRPC status).
        let mut original = HeaderMap::new();
        if let Some(ct) = head.headers.get(header::CONTENT_TYPE) {
            original.insert(header::CONTENT_TYPE, ct.clone());
        }
        // An HTTP/2 request has no Host header: the upstream gets the authority the client asked for.
        if !head.headers.contains_key(header::HOST)
            && let Some(v) = head.uri.authority().and_then(|a| HeaderValue::try_from(a.as_str()).ok())
        {
            head.headers.insert(header::HOST, v);
        }
        forward_headers(&mut head, &self.inner.settings, upgrade);
        let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
        // The URI names the host the client asked for (HTTP/2's `:authority`); the connector goes to the
        // upstream's address whatever it says.
        let authority = head
            .headers
            .get(header::HOST)
            .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
            .unwrap_or_else(|| upstream.authority.clone());
        head.uri = match Uri::builder()
            .scheme(upstream.scheme.clone())
            .authority(authority)
            .path_and_query(path)
            .build()
        {
            Ok(uri) => uri,
            Err(_) => {
                return self.refuse(
                    "sidecar.bad-target",
                    StatusCode::BAD_GATEWAY,
                    "request target".into(),
                    &original,
                );
            }
        };
        let Some(client) = self.inner.clients.get(&endpoint) else {
            return self.refuse(
                "sidecar.no-upstream",
                StatusCode::BAD_GATEWAY,
                "no upstream is configured for this endpoint".into(),
                &original,
            );
        };
        head.version = match upstream.protocol {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::H2c => Version::HTTP_2,
        };
        // Request extensions (connection facts, decisions) stay here.
        head.extensions = http::Extensions::new();
        let (body, mut ended) = TrackedBody::new(body, &self.inner.settings);
        let sent = client.request(Request::from_parts(head, body));
        // The response deadline runs from the end of the request body.
        let deadline = async {
            let _ = ended.wait_for(|ended| *ended).await;
            tokio::time::sleep(self.inner.settings.response_timeout).await;
        };
        let sent = tokio::select! {
            sent = sent => Ok(sent),
            () = deadline => Err(()),
        };
        let mut response = match sent {
            Err(()) => {
                if UPSTREAM_ERRORS.admit() {
                    tracing::warn!(%endpoint, "portcullis sidecar: the upstream did not answer in time");
                }
                return self.refuse(
                    "sidecar.upstream-timeout",
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("the upstream of endpoint `{endpoint}` did not answer in time"),
                    &original,
                );
            }
            Ok(Err(e)) => {
                let timed_out = source_chain(&e).any(|s| {
                    s.downcast_ref::<std::io::Error>()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
                });
                if UPSTREAM_ERRORS.admit() {
                    tracing::warn!(%endpoint, "portcullis sidecar: upstream request failed: {e:?}");
                }
                return if timed_out {
                    self.refuse(
                        "sidecar.upstream-timeout",
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("the upstream of endpoint `{endpoint}` could not be reached in time"),
                        &original,
                    )
                } else {
                    self.refuse(
                        "sidecar.upstream-unavailable",
                        StatusCode::BAD_GATEWAY,
                        format!("the upstream of endpoint `{endpoint}` could not be reached"),
                        &original,
                    )
                };
            }
            Ok(Ok(response)) => response,
        };
        let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switched && let Some(client_side) = client_upgrade {
            let upstream_side = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                match tokio::join!(client_side, upstream_side) {
                    (Ok(c), Ok(u)) => {
                        let last_read = Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
                        let mut c = Watched { io: TokioIo::new(c), last_read: last_read.clone() };
                        let mut u = Watched { io: TokioIo::new(u), last_read: last_read.clone() };
                        let idle = hold.as_ref().map(ConnectionHold::idle_timeout);
                        let closed = async {
                            match hold {
                                Some(mut hold) => hold.closed().await,
                                None => std::future::pending().await,
                            }
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut c, &mut u) => {}
                            () = closed => {}
                            () = quiet_for(idle, &last_read) => {}
                        }
                    }
                    (c, u) => {
                        tracing::debug!(client = ?c.err(), upstream = ?u.err(), "portcullis sidecar: upgrade failed")
                    }
                }
            });
        }
        remove_hop_by_hop(response.headers_mut(), switched);
        response.map(Either::Left)
    }
}

/// Resolves once no byte was read for `idle` (never without an idle time).
async fn quiet_for(idle: Option<std::time::Duration>, last_read: &std::sync::Mutex<tokio::time::Instant>) {
    let Some(idle) = idle else { return std::future::pending().await };
    loop {
        let last = *last_read.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.elapsed() >= idle {
            return;
        }
        tokio::time::sleep_until(last + idle).await;
    }
}

/// One side of a tunnel, noting when it last read bytes.
struct Watched<T> {
    io: T,
    last_read: Arc<std::sync::Mutex<tokio::time::Instant>>,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            *self.last_read.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                tokio::time::Instant::now();
        }
        polled
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

fn source_chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

impl tower::Service<Request<RequestBody>> for Proxy {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RequestBody>) -> Self::Future {
        let proxy = self.clone();
        Box::pin(async move { Ok(proxy.forward(req).await) })
    }
}
