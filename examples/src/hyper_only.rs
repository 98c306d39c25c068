//! No axum: a `tower::service_fn` behind [`Gateway::layer`], served by a hyper-util accept loop written
//! out in full (HTTP/1.1 and HTTP/2, graceful shutdown), for servers that use hyper directly.
//!
//! Per connection the loop puts the connection facts ([`ConnInfo`], from [`ConnectionFacts`]) into every
//! request with [`ConnInfoLayer`]: the gates decide on them, and without them they refuse (fail closed).
//! The gateway serves the host `api.contoso.test` only (a bare IP or another name gets 421) and only to the
//! allowed addresses (127.0.0.1 here; anyone else gets 403).
//!
//! ```text
//! cargo run -p portcullis-examples --example hyper_only
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use portcullis::core::{ConnInfoLayer, ConnectionFacts};
use portcullis::host::{Endpoint, HostFilterLayer, Hosts};
use portcullis::ip::{Action, IpFilterLayer, IpRules};
use portcullis::{ConnInfo, Decisions, Gateway, IpRange};
use tokio::net::TcpListener;
use tower::{Layer, service_fn};

use crate::BoxError;

/// The host name served.
pub const HOST: &str = "api.contoso.test";

/// The gateway: the host name, and the addresses allowed (everything else is refused).
///
/// In front of any tower service, here called without a socket (the accept loop of [`run`] adds the
/// [`ConnInfo`] the same way):
///
/// ```
/// use http::{Request, Response, StatusCode};
/// use portcullis::ConnInfo;
/// use portcullis_examples::hyper_only::{HOST, gateway};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let app = gateway(&["10.0.0.0/24".parse()?])?.layer().layer(service_fn(|_req: Request<String>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(String::from("hello")))
/// }));
/// let call = |host: &str, peer: &str| {
///     let mut req = Request::get("/").header("host", host).body(String::new()).unwrap();
///     req.extensions_mut().insert(ConnInfo::new(peer.parse().unwrap(), None));
///     app.clone().oneshot(req)
/// };
/// assert_eq!(call(HOST, "10.0.0.7:40000").await?.status(), StatusCode::OK);
/// assert_eq!(call(HOST, "192.0.2.1:40000").await?.status(), StatusCode::FORBIDDEN);
/// assert_eq!(call("10.0.0.1", "10.0.0.7:40000").await?.status(), StatusCode::MISDIRECTED_REQUEST);
/// # Ok(()) }
/// ```
///
/// # Errors
/// A host table or rule set the layers refuse.
pub fn gateway(allowed: &[IpRange]) -> Result<Gateway, BoxError> {
    let hosts = Hosts::builder().endpoint(Endpoint::new("api").host(HOST)).build()?;
    let mut rules = IpRules::builder(Action::Deny);
    rules.name("allowed-clients");
    for r in allowed {
        rules.allow(*r);
    }
    Ok(Gateway::builder().hosts(HostFilterLayer::new(hosts)).ip(IpFilterLayer::new(rules.build()?)).build())
}

/// The application: a plain function from request to response.
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let decisions = Decisions::get(req.extensions());
    let endpoint = decisions.and_then(|d| d.host.as_ref()).map_or("-".into(), |h| h.endpoint.to_string());
    let client = decisions.and_then(|d| d.client).map_or("-".into(), |c| c.to_string());
    let body = format!("hello from hyper: endpoint={endpoint} client={client} path={}\n", req.uri().path());
    let mut res = Response::new(Full::new(Bytes::from(body)));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    Ok(res)
}

/// Serves the example on `listener` until `shutdown` resolves, then lets open connections finish (for up to
/// ten seconds).
///
/// # Errors
/// A refused configuration.
pub async fn run(
    listener: TcpListener,
    allowed: &[IpRange],
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BoxError> {
    // The whole stack, built once: the gateway in front of the application.
    let app = gateway(allowed)?.layer().layer(service_fn(handle));
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Once per connection: the connection facts go into every request.
        let info: ConnInfo = stream.conn_info(peer);
        let svc = TowerToHyperService::new(ConnInfoLayer::new(info).layer(app.clone()));
        let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after ten seconds; closing them");
    }
    Ok(())
}
