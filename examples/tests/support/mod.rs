//! Loopback servers and real clients for the smoke tests.
//!
//! No assertion is about time: every wait is bounded by [`BOUND`], which only turns a hang into a failure.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_examples::BoxError;
use portcullis_examples::pki::Issued;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The bound on any single wait; reaching it is a failure (a hang), not a measurement.
pub const BOUND: Duration = Duration::from_secs(20);

/// An example served on 127.0.0.1, port 0.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), BoxError>>,
}

impl Server {
    /// Binds 127.0.0.1:0 and runs `run(listener, shutdown)` in a task.
    pub async fn start<F, Fut>(run: F) -> Server
    where
        F: FnOnce(TcpListener, Box<dyn Future<Output = ()> + Send + Unpin>) -> Fut,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = Box::new(Box::pin(async move {
            let _ = stopped.await;
        }));
        let task = tokio::spawn(run(listener, shutdown));
        Server { addr, stop: Some(stop), task }
    }

    /// Signals shutdown and asserts the example returns `Ok` (within the bound).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let ended = tokio::time::timeout(BOUND, &mut self.task).await.expect("the example did not stop");
        ended.expect("the example's task panicked").expect("the example returned an error");
    }
}

/// Connects to `addr` from the local address `from` (any loopback address works on Linux).
pub async fn connect_from(addr: SocketAddr, from: Option<IpAddr>) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
    }
    tokio::time::timeout(BOUND, socket.connect(addr)).await.expect("connect: no answer").expect("connect")
}

/// An answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The denial code of a problem+json refusal (`urn:portcullis:denial:<code>`).
    pub fn denial_code(&self) -> String {
        let v = self.json();
        let t = v["type"].as_str().unwrap_or_else(|| panic!("no type in {}", self.body));
        t.strip_prefix("urn:portcullis:denial:").unwrap_or(t).to_owned()
    }
}

/// One GET over `io` with hyper's HTTP/1.1 client, `Host: host`, plus `headers`.
pub async fn http1_over<IO>(io: IO, host: &str, path: &str, headers: &[(&str, &str)]) -> Result<Reply, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut req = Request::get(path).header(http::header::HOST, host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let exchange = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
        read(res).await
    };
    tokio::time::timeout(BOUND, exchange).await.map_err(|_| "no answer within the bound".to_owned())?
}

/// One GET over `io` with hyper's HTTP/2 client (prior knowledge), `:authority` from `uri`.
pub async fn http2_over<IO>(io: IO, uri: &str) -> Result<Reply, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let req = Request::get(uri).body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let exchange = async {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
        read(res).await
    };
    tokio::time::timeout(BOUND, exchange).await.map_err(|_| "no answer within the bound".to_owned())?
}

async fn read(res: http::Response<hyper::body::Incoming>) -> Result<Reply, String> {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// One HTTP/1.1 GET from `from` to `addr` naming `host`.
pub async fn get(addr: SocketAddr, from: &str, host: &str, path: &str) -> Reply {
    get_with(addr, from, host, path, &[]).await
}

/// As [`get`], with extra request headers.
pub async fn get_with(
    addr: SocketAddr,
    from: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let tcp = connect_from(addr, Some(from.parse().expect("an address"))).await;
    http1_over(tcp, host, path, headers).await.unwrap_or_else(|e| panic!("GET {host}{path} from {from}: {e}"))
}

/// Writes `preface` (a PROXY header), then one HTTP/1.1 GET naming `host`.
pub async fn get_after(addr: SocketAddr, preface: &[u8], host: &str, path: &str) -> Result<Reply, String> {
    let mut tcp = connect_from(addr, None).await;
    tcp.write_all(preface).await.map_err(|e| e.to_string())?;
    http1_over(tcp, host, path, &[]).await
}

/// Asserts the server closes `tcp` without an HTTP answer.
pub async fn assert_closed_unanswered(mut tcp: TcpStream) {
    let mut got = Vec::new();
    let read = tokio::time::timeout(BOUND, tcp.read_to_end(&mut got)).await.expect("the server never closed");
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    assert!(got.is_empty(), "the server answered: {:?}", String::from_utf8_lossy(&got));
}

/// A TLS client trusting `ca_pem`, presenting `client` if given, offering HTTP/1.1.
pub fn tls_client(ca_pem: &str, client: Option<&Issued>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM")).expect("CA");
    let builder = rustls::ClientConfig::builder_with_provider(portcullis::mtls::default_provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let mut config = match client {
        Some(c) => {
            let chain = vec![CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).expect("client cert PEM")];
            let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).expect("client key PEM");
            builder.with_client_auth_cert(chain, key).expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A TLS connection for `sni`, then one HTTP/1.1 GET naming `host`. `Err` when the handshake or the
/// exchange fails.
pub async fn get_tls(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    sni: &str,
    host: &str,
) -> Result<Reply, String> {
    let tcp = connect_from(addr, None).await;
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(BOUND, connector.connect(name, tcp))
        .await
        .map_err(|_| "no handshake within the bound".to_owned())?
        .map_err(|e| format!("handshake: {e}"))?;
    http1_over(tls, host, "/", &[]).await
}

/// A fresh directory under the system temporary directory, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("portcullis-examples-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
