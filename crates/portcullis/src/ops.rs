//! The ops listener: `/healthz`, `/readyz` and `/metrics` on a port of its own (`[ops] listen`).
//!
//! It sits outside the host and IP layers on purpose: probes address the pod IP, which the host layer
//! rightly answers with 421. So it answers only these three paths, exposes nothing secret (a status line
//! and the generation number; metrics carry no client address), and belongs on loopback, or on the pod
//! address behind a NetworkPolicy that admits only the kubelet and the metrics scraper.
//!
//! | path | answer |
//! |---|---|
//! | `GET /healthz` | `200 ok` while the process serves |
//! | `GET /readyz` | `200 ready generation=N` once the configuration is built and the listeners accept; `503` before and during the shutdown drain |
//! | `GET /metrics` | the Prometheus text the binary's recorder renders (`404` when the binary installed none) |
//!
//! Anything else is `404`; a method other than `GET` or `HEAD` is `405`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::reload::ServeHandle;

/// Renders the metrics text (for example `PrometheusHandle::render`), given to the ops listener by the
/// binary, which chose the exporter.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// At most this many ops connections at once; more wait in the kernel's queue.
const MAX_OPS_CONNECTIONS: usize = 64;

/// The deadline of an ops request head, and of a whole ops connection.
const OPS_DEADLINE: Duration = Duration::from_secs(10);

/// The answer to one ops request.
pub(crate) fn answer<B>(
    req: &Request<B>,
    handle: &ServeHandle,
    metrics: Option<&MetricsRender>,
) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String, content_type: &'static str| {
        let mut res = Response::new(Full::new(Bytes::from(body)));
        *res.status_mut() = status;
        res.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
        res.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
        res
    };
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n".into(), PLAIN);
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into(), PLAIN),
        "/readyz" if handle.is_ready() => {
            text(StatusCode::OK, format!("ready generation={}\n", handle.generation()), PLAIN)
        }
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into(), PLAIN),
        "/metrics" => match metrics {
            Some(render) => text(StatusCode::OK, render(), "text/plain; version=0.0.4; charset=utf-8"),
            None => text(StatusCode::NOT_FOUND, "no metrics recorder installed\n".into(), PLAIN),
        },
        _ => text(StatusCode::NOT_FOUND, "not found: /healthz, /readyz, /metrics\n".into(), PLAIN),
    }
}

/// Serves the ops endpoints on `listener` until the task is dropped.
pub(crate) async fn serve_ops(listener: TcpListener, handle: ServeHandle, metrics: Option<MetricsRender>) {
    let permits = Arc::new(Semaphore::new(MAX_OPS_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("portcullis ops listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (handle, metrics) = (handle.clone(), metrics.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let res = answer(&req, &handle, metrics.as_ref());
                async move { Ok::<_, Infallible>(res) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(OPS_DEADLINE)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(OPS_DEADLINE, conn).await;
        });
    }
}
