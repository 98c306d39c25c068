//! Loopback servers and a hyper client that connects from a chosen loopback source address.

use std::net::SocketAddr;

use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use portcullis_core::ConnInfo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Serves `router` on 127.0.0.1 (port 0) with `ConnInfo` connection info.
pub async fn serve_axum(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<ConnInfo>()).await.unwrap();
    });
    addr
}

/// A TCP connection to `addr` from `source` (a loopback address such as 127.0.0.2), port chosen by the OS.
pub async fn connect_from(source: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.parse().unwrap(), 0))?;
    socket.connect(addr).await
}

/// The answer to one request.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The `content-type` header (empty when absent).
    pub content_type: String,
    /// The body, as text.
    pub body: String,
}

impl Answer {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 GET of `path` from `source`, with extra header lines.
pub async fn get_from(source: &str, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    let stream = connect_from(source, addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder().uri(path).header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
    let status = res.status();
    let content_type =
        res.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer { status, content_type, body: String::from_utf8(body.to_vec()).unwrap() }
}

/// GET from 127.0.0.1.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    get_from("127.0.0.1", addr, path, headers).await
}
