//! [`MtlsAcceptor`]: picks the virtual host by SNI, runs the handshake, and learns the client identity.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::StatusCode;
use portcullis_core::ratelimit::TLS_HANDSHAKES;
use portcullis_core::{ConnInfo, ConnectionFacts, Denial, TlsInfo};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use crate::identity::client_cert;
use crate::policy::ChainRefusal;
use crate::verifier::ClientAuth;
use crate::vhost::{CompiledVhost, VirtualHosts, normalize_host};
use rustls_pki_types::CertificateDer;

/// A fatal `unrecognized_name` alert record (TLS 1.2 record framing, as sent before any key exists).
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

/// Why a TLS connection was not established.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The client sent no SNI or an unknown one and there is no default virtual host; the client got an
    /// `unrecognized_name` alert.
    #[error("no virtual host for server name {sni:?} and no default virtual host")]
    UnknownHost {
        /// The normalised SNI, if any.
        sni: Option<String>,
    },
    /// The client chain was refused by the virtual host's policy or path validation.
    #[error("virtual host `{vhost}`: {refusal}")]
    ClientChain {
        /// The virtual host.
        vhost: String,
        /// The typed reason.
        refusal: ChainRefusal,
    },
    /// The handshake failed for another reason (protocol error, I/O).
    #[error("virtual host `{vhost}`: TLS handshake failed: {error}")]
    Handshake {
        /// The virtual host.
        vhost: String,
        /// The error.
        error: io::Error,
    },
    /// Reading the ClientHello failed.
    #[error("reading the ClientHello failed: {0}")]
    ClientHello(io::Error),
    /// The handshake did not complete in time.
    #[error("TLS handshake timed out")]
    Timeout,
    /// The virtual host's configuration could not be built (should not happen: it was checked when set).
    #[error("configuration: {0}")]
    Config(String),
}

/// Counts one handshake in `portcullis_tls_handshakes_total` (see `portcullis_core::telemetry`): the
/// virtual host comes from the configuration, never from the client's SNI.
fn record_handshake<IO>(result: &Result<MtlsStream<IO>, AcceptError>) {
    let (vhost, outcome, rule): (String, &'static str, &'static str) = match result {
        Ok(s) => (s.info.vhost.as_deref().unwrap_or("").to_owned(), "ok", ""),
        Err(AcceptError::ClientChain { vhost, refusal }) => {
            (vhost.clone(), "chain-refused", refusal.rule.code())
        }
        Err(AcceptError::Handshake { vhost, .. }) => (vhost.clone(), "failed", ""),
        Err(AcceptError::UnknownHost { .. }) => (String::new(), "unknown-host", ""),
        Err(AcceptError::ClientHello(_)) => (String::new(), "client-hello", ""),
        Err(AcceptError::Timeout) => (String::new(), "timeout", ""),
        Err(AcceptError::Config(_)) => (String::new(), "config", ""),
    };
    metrics::counter!(
        portcullis_core::telemetry::TLS_HANDSHAKES,
        "vhost" => vhost, "outcome" => outcome, "rule" => rule
    )
    .increment(1);
}

impl AcceptError {
    /// The chain refusal, if that is why the handshake failed.
    pub fn refusal(&self) -> Option<&ChainRefusal> {
        match self {
            AcceptError::ClientChain { refusal, .. } => Some(refusal),
            _ => None,
        }
    }
}

/// Accepts TLS connections for a set of [`VirtualHosts`].
///
/// The virtual host is chosen by SNI (without case, without a trailing dot): exact name, then a `*.` wildcard,
/// then the default virtual host. A connection without SNI only ever reaches the default virtual host, so
/// it cannot reach a host that requires client auth unless that host is the default. With no match, the
/// client gets an `unrecognized_name` alert.
#[derive(Debug, Clone)]
pub struct MtlsAcceptor {
    hosts: VirtualHosts,
    timeout: Duration,
}

impl MtlsAcceptor {
    /// An acceptor for `hosts` with a 10 s handshake timeout.
    pub fn new(hosts: VirtualHosts) -> Self {
        MtlsAcceptor { hosts, timeout: Duration::from_secs(10) }
    }

    /// Sets the handshake timeout (ClientHello to Finished).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The virtual hosts, to change at runtime.
    pub fn hosts(&self) -> &VirtualHosts {
        &self.hosts
    }

    /// Runs the TLS handshake on `io`.
    ///
    /// # Errors
    /// [`AcceptError`]; a refused client chain is [`AcceptError::ClientChain`] with its typed reason.
    pub async fn accept<IO>(&self, io: IO) -> Result<MtlsStream<IO>, AcceptError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let result = match tokio::time::timeout(self.timeout, self.handshake(io)).await {
            Ok(r) => r,
            Err(_) => Err(AcceptError::Timeout),
        };
        record_handshake(&result);
        result
    }

    async fn handshake<IO>(&self, io: IO) -> Result<MtlsStream<IO>, AcceptError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let mut start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io)
            .await
            .map_err(AcceptError::ClientHello)?;
        let sni = start.client_hello().server_name().and_then(normalize_host);
        let snapshot = self.hosts.snapshot();
        let Some(vhost) = snapshot.lookup(sni.as_deref()).cloned() else {
            if TLS_HANDSHAKES.admit() {
                tracing::info!(sni = ?sni, "portcullis mtls: no virtual host for server name");
            } else {
                tracing::debug!(sni = ?sni, "portcullis mtls: no virtual host for server name");
            }
            let _ = start.io.write_all(&UNRECOGNIZED_NAME_ALERT).await;
            let _ = start.io.shutdown().await;
            return Err(AcceptError::UnknownHost { sni });
        };
        drop(snapshot);
        let (config, slot) = vhost.connection_config().map_err(|e| AcceptError::Config(e.to_string()))?;
        let take_refusal = || slot.lock().ok().and_then(|mut s| s.take());
        let stream = match start.into_stream(config).await {
            Ok(s) => s,
            Err(error) => {
                return Err(match take_refusal() {
                    Some(refusal) => AcceptError::ClientChain { vhost: vhost.name.to_string(), refusal },
                    None => AcceptError::Handshake { vhost: vhost.name.to_string(), error },
                });
            }
        };
        let conn = stream.get_ref().1;
        let alpn = conn.alpn_protocol().map(Arc::from);
        let info = tls_info(&vhost, sni, alpn, take_refusal(), conn.peer_certificates());
        Ok(MtlsStream { inner: stream, info: Arc::new(info) })
    }
}

/// The facts of a completed handshake on `vhost`: the chain `refusal` the verifier recorded (only in
/// "refuse at HTTP" mode does a handshake complete with one), else the identity of the verified `chain`,
/// else, where the virtual host requires a certificate or lists allowed identities, the refusal of a
/// connection without one. The acceptor and [`MtlsAcceptor::explain`] both decide here.
fn tls_info(
    vhost: &CompiledVhost,
    sni: Option<String>,
    alpn: Option<Arc<[u8]>>,
    refusal: Option<ChainRefusal>,
    chain: Option<&[CertificateDer<'_>]>,
) -> TlsInfo {
    let mut info =
        TlsInfo { sni: sni.map(Arc::from), vhost: Some(vhost.name.clone()), alpn, ..TlsInfo::default() };
    if let Some(refusal) = refusal {
        info.refused = Some(Arc::new(refused_denial(&vhost.name, Some(refusal))));
    } else if let Some(chain) = chain.filter(|c| !c.is_empty()) {
        info.client_cert = client_cert(chain).map(Arc::new);
        if info.client_cert.is_none() {
            info.refused = Some(Arc::new(refused_denial(&vhost.name, None)));
        }
    } else if vhost.config.client_auth == ClientAuth::Required || !vhost.config.allowed_identities.is_empty()
    {
        // Required client auth without a certificate only completes in "refuse at HTTP" mode. A host that
        // lists allowed identities admits only those: no certificate is no allowed identity, even where
        // client auth is optional.
        info.refused = Some(Arc::new(refused_denial(&vhost.name, None)));
    }
    info
}

impl MtlsAcceptor {
    /// What a connection with the server name `sni` presenting the client `chain` (leaf first; empty for
    /// none) would establish at time `now`, without a network: the virtual host SNI selects, the verdict
    /// of its verifier (rustls-webpki path validation and the chain policy, the very objects a handshake
    /// uses) and the resulting [`TlsInfo`], or the reason the handshake would fail. The proof of key
    /// possession (the client's signature in the handshake) is not part of it: there is no handshake.
    ///
    /// # Errors
    /// [`AcceptError::UnknownHost`], [`AcceptError::ClientChain`] (refused at TLS), or
    /// [`AcceptError::Handshake`] when a required certificate is missing.
    pub fn explain(
        &self,
        sni: Option<&str>,
        chain: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<TlsInfo, AcceptError> {
        let sni = sni.and_then(normalize_host);
        let snapshot = self.hosts.snapshot();
        let Some(vhost) = snapshot.lookup(sni.as_deref()).cloned() else {
            return Err(AcceptError::UnknownHost { sni });
        };
        let vhost_name = || vhost.name.to_string();
        let Some(verifier) = &vhost.verifier else {
            // Client auth off: no certificate is requested, whatever the client holds.
            return Ok(tls_info(&vhost, sni, None, None, None));
        };
        let Some((leaf, intermediates)) = chain.split_first() else {
            if !vhost.config.refuse_at_http && vhost.config.client_auth == ClientAuth::Required {
                let error =
                    io::Error::other("the client sent no certificate and the virtual host requires one");
                return Err(AcceptError::Handshake { vhost: vhost_name(), error });
            }
            return Ok(tls_info(&vhost, sni, None, None, None));
        };
        match verifier.verify(leaf, intermediates, now) {
            Ok(_) => Ok(tls_info(&vhost, sni, None, None, Some(chain))),
            Err((refusal, _)) if vhost.config.refuse_at_http => {
                Ok(tls_info(&vhost, sni, None, Some(refusal), None))
            }
            Err((refusal, _)) => Err(AcceptError::ClientChain { vhost: vhost_name(), refusal }),
        }
    }
}

fn refused_denial(vhost: &str, refusal: Option<ChainRefusal>) -> Denial {
    match refusal {
        Some(r) => Denial::new("mtls", "mtls.client-chain", StatusCode::FORBIDDEN, r.to_string())
            .with_rule(format!("policy {}: {}", r.policy, r.rule.code()))
            .with_refused(r.subject.clone())
            .with_reason(r),
        None => Denial::new(
            "mtls",
            "mtls.no-client-certificate",
            StatusCode::FORBIDDEN,
            format!("virtual host `{vhost}` requires a client certificate"),
        )
        .with_rule("client auth required"),
    }
}

/// A TLS connection accepted by [`MtlsAcceptor`], with the facts of its handshake.
#[derive(Debug)]
pub struct MtlsStream<IO> {
    inner: TlsStream<IO>,
    info: Arc<TlsInfo>,
}

impl<IO> MtlsStream<IO> {
    /// The handshake's facts: SNI, virtual host, client certificate, refusal, ALPN.
    pub fn tls_info(&self) -> &Arc<TlsInfo> {
        &self.info
    }

    /// The rustls stream.
    pub fn get_ref(&self) -> &TlsStream<IO> {
        &self.inner
    }

    /// The rustls stream and the facts.
    pub fn into_parts(self) -> (TlsStream<IO>, Arc<TlsInfo>) {
        (self.inner, self.info)
    }
}

/// The inner stream's facts (a TCP stream's addresses, a PROXY protocol stream's header) plus the TLS facts.
impl<IO: ConnectionFacts> ConnectionFacts for MtlsStream<IO> {
    fn conn_info(&self, remote: SocketAddr) -> ConnInfo {
        let mut info = self.inner.get_ref().0.conn_info(remote);
        info.tls = Some(self.info.clone());
        info
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for MtlsStream<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MtlsStream<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
