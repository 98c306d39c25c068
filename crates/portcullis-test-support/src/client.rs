//! Real clients: hyper HTTP/1.1 and HTTP/2 over sockets bound to a chosen loopback address, a rustls client,
//! raw sockets, and `curl`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::bounded;
use crate::pki::Issued;

/// The loopback address playing the virtual network (and the trusted proxy) in the tests.
pub const VNET: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
/// The loopback address playing the public internet.
pub const PUBLIC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
/// The loopback address the connection rules refuse.
pub const BLOCKED: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

/// A response, read to the end.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Its HTTP version.
    pub version: Version,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the text when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.text()))
    }

    /// A string field of the JSON body, or `""`.
    pub fn field(&self, key: &str) -> String {
        self.json().get(key).and_then(Value::as_str).unwrap_or("").to_owned()
    }

    /// The denial code of a problem+json refusal (`host.unknown`), checking the content type.
    pub fn denial(&self) -> String {
        assert_eq!(
            self.headers.get(http::header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("")),
            Some("application/problem+json"),
            "a refusal is problem+json; got status {} body {}",
            self.status,
            self.text()
        );
        let ty = self.field("type");
        ty.strip_prefix("urn:portcullis:denial:").unwrap_or_else(|| panic!("problem type {ty}")).to_owned()
    }
}

/// A TCP connection to `server` from the loopback address `from` (an ephemeral port).
pub async fn tcp_from(from: IpAddr, server: SocketAddr) -> TcpStream {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .expect("socket");
    socket.bind(SocketAddr::new(from, 0)).unwrap_or_else(|e| panic!("bind {from}: {e}"));
    bounded("connect", socket.connect(server)).await.unwrap_or_else(|e| panic!("connect {server}: {e}"))
}

/// A GET request for `target` (origin-form `/x` or absolute-form `http://h/x`) with an optional `Host` header
/// and extra headers (several values of one name are sent as separate lines).
pub fn get(target: &str, host: Option<&str>, headers: &[(&str, &str)]) -> Request<Empty<Bytes>> {
    let mut b = Request::get(target);
    if let Some(h) = host {
        b = b.header(http::header::HOST, h);
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Empty::new()).expect("request")
}

async fn collect(res: http::Response<hyper::body::Incoming>) -> Result<Reply, hyper::Error> {
    let (parts, body) = res.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply { status: parts.status, version: parts.version, headers: parts.headers, body })
}

/// Sends `req` over HTTP/1.1 on `io` (hyper's connection-level client: the request target and headers are sent
/// as given, nothing is added).
///
/// # Errors
/// The connection failed or was closed before a response.
pub async fn h1<IO>(io: IO, req: Request<Empty<Bytes>>) -> Result<Reply, hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    bounded("HTTP/1.1 exchange", async move {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(conn);
        let res = sender.send_request(req).await?;
        collect(res).await
    })
    .await
}

/// Sends `req` over HTTP/2 (prior knowledge on cleartext, or ALPN `h2` on TLS) on `io`. The request's URI
/// should be absolute: its authority is the `:authority` pseudo-header.
///
/// # Errors
/// The connection failed or was closed before a response.
pub async fn h2<IO>(io: IO, req: Request<Empty<Bytes>>) -> Result<Reply, hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    bounded("HTTP/2 exchange", async move {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
        tokio::spawn(conn);
        let res = sender.send_request(req).await?;
        collect(res).await
    })
    .await
}

/// `GET path` with `Host: host` over HTTP/1.1 from the loopback address `from`; panics when no response comes.
pub async fn get_from(from: IpAddr, server: SocketAddr, host: &str, headers: &[(&str, &str)]) -> Reply {
    let io = tcp_from(from, server).await;
    h1(io, get("/echo", Some(host), headers)).await.unwrap_or_else(|e| panic!("GET Host {host}: {e}"))
}

/// Reads until the peer closes (or resets) the connection; returns what was read. Bounded by the safety
/// net.
pub async fn read_until_closed<IO: AsyncRead + Unpin>(io: &mut IO) -> Vec<u8> {
    bounded("waiting for the server to close", async {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match io.read(&mut buf).await {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return out,
                Err(e) => panic!("read: {e}"),
            }
        }
    })
    .await
}

// === TLS ===

/// A rustls client (ring provider) trusting one CA, with or without a client certificate.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Trusts `ca` for server certificates, presents `client` when given, offers the ALPN protocols `alpn`.
    pub fn new(ca: &Issued, client: Option<&Issued>, alpn: &[&[u8]]) -> TlsClient {
        TlsClient { connector: TlsConnector::from(Arc::new(Self::config(ca, client, alpn))) }
    }

    fn config(ca: &Issued, client: Option<&Issued>, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_file_iter(&ca.cert).expect("CA file") {
            roots.add(der.expect("CA certificate")).expect("add CA");
        }
        let builder = rustls::ClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some(c) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.cert)
                    .expect("client certificate file")
                    .map(|d| d.expect("client certificate"))
                    .collect();
                let key = PrivateKeyDer::from_pem_file(&c.key).expect("client key");
                builder.with_client_auth_cert(chain, key).expect("client certificate and key")
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// As [`TlsClient::new`], keeping session tickets in `store` (for resumption tests).
    pub fn with_store(
        ca: &Issued,
        client: Option<&Issued>,
        alpn: &[&[u8]],
        store: Arc<dyn rustls::client::ClientSessionStore>,
    ) -> TlsClient {
        let mut config = Self::config(ca, client, alpn);
        config.resumption = rustls::client::Resumption::store(store);
        TlsClient { connector: TlsConnector::from(Arc::new(config)) }
    }

    /// A TLS connection to `server` with SNI `sni`.
    ///
    /// # Errors
    /// The handshake failed.
    pub async fn connect(&self, server: SocketAddr, sni: &str) -> io::Result<TlsStream<TcpStream>> {
        self.connect_from(VNET, server, sni).await
    }

    /// A TLS connection to `server` from the loopback address `from` (127.0.0.2 plays the public internet),
    /// with SNI `sni`.
    ///
    /// # Errors
    /// The handshake failed.
    pub async fn connect_from(
        &self,
        from: IpAddr,
        server: SocketAddr,
        sni: &str,
    ) -> io::Result<TlsStream<TcpStream>> {
        let tcp = tcp_from(from, server).await;
        let name = ServerName::try_from(sni.to_owned()).expect("SNI");
        bounded("TLS handshake", self.connector.connect(name, tcp)).await
    }

    /// `GET /echo` with `Host: host` over HTTP/1.1 on a new connection with SNI `sni`.
    ///
    /// # Errors
    /// The handshake or the exchange failed (a handshake the server refused, a connection closed with an
    /// alert).
    pub async fn get(&self, server: SocketAddr, sni: &str, host: &str) -> Result<Reply, String> {
        let tls = self.connect(server, sni).await.map_err(|e| format!("handshake: {e}"))?;
        h1(tls, get("/echo", Some(host), &[])).await.map_err(|e| format!("exchange: {e}"))
    }
}

// === curl ===

/// What `curl` printed.
#[derive(Debug, Clone)]
pub struct CurlReply {
    /// `%{http_code}`: 0 when no response came (a refused handshake).
    pub code: u16,
    /// The body.
    pub body: String,
    /// curl's exit code.
    pub exit: Option<i32>,
    /// curl's error output.
    pub stderr: String,
}

impl CurlReply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Runs `curl -sS <args>` (with `OPENSSL_CONF=<openssl_conf>` when given), bounded by `--max-time` and the
/// safety net.
pub async fn curl(args: &[&str], openssl_conf: Option<&Path>) -> CurlReply {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"]).args(args).kill_on_drop(true);
    if let Some(conf) = openssl_conf {
        cmd.env("OPENSSL_CONF", conf);
    }
    let out = bounded("curl", cmd.output()).await.expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    CurlReply {
        code: code.trim().parse().unwrap_or(0),
        body: body.to_owned(),
        exit: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A client session store that keeps every server's tickets under one name: it offers a ticket obtained from
/// one virtual host to another, as an attacker replaying tickets across host names would. Counts what it is
/// given and what it hands out.
#[derive(Debug)]
pub struct SharedTickets {
    inner: rustls::client::ClientSessionMemoryCache,
    inserted: std::sync::atomic::AtomicUsize,
    taken: std::sync::atomic::AtomicUsize,
}

impl Default for SharedTickets {
    fn default() -> Self {
        SharedTickets {
            inner: rustls::client::ClientSessionMemoryCache::new(64),
            inserted: Default::default(),
            taken: Default::default(),
        }
    }
}

impl SharedTickets {
    const NAME: &'static str = "any-host.invalid";

    fn name() -> ServerName<'static> {
        ServerName::try_from(Self::NAME).expect("name")
    }

    /// TLS 1.3 tickets received.
    pub fn inserted(&self) -> usize {
        self.inserted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// TLS 1.3 tickets offered to a server.
    pub fn taken(&self) -> usize {
        self.taken.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl rustls::client::ClientSessionStore for SharedTickets {
    fn set_kx_hint(&self, _: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(Self::name(), group);
    }

    fn kx_hint(&self, _: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(&Self::name())
    }

    fn set_tls12_session(&self, _: ServerName<'static>, value: rustls::client::Tls12ClientSessionValue) {
        self.inner.set_tls12_session(Self::name(), value);
    }

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(&Self::name())
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {
        self.inner.remove_tls12_session(&Self::name());
    }

    fn insert_tls13_ticket(&self, _: ServerName<'static>, value: rustls::client::Tls13ClientSessionValue) {
        self.inserted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.insert_tls13_ticket(Self::name(), value);
    }

    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<rustls::client::Tls13ClientSessionValue> {
        let t = self.inner.take_tls13_ticket(&Self::name());
        if t.is_some() {
            self.taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        t
    }
}

/// rustls' `ring` provider, what the mTLS crate uses by default (rustls deprecates it for lacking
/// post-quantum key exchange; the tests' clients need what the servers under test speak).
#[expect(
    deprecated,
    reason = "the servers under test use ring by default; see portcullis_mtls::default_provider"
)]
fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
