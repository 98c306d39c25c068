//! Reading the PROXY header off an accepted stream: who may send one ([`SourcePolicy`] per peer range), how
//! long it may take and how large it may be ([`ProxyProtocolConfig`]), and what happens otherwise
//! ([`AcceptError`]: the connection is closed and a warning names the peer).
//!
//! ```
//! use std::time::Duration;
//! use portcullis_proxy_protocol::{ProxyProtocolConfig, SourcePolicy};
//! use tokio::io::AsyncReadExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ProxyProtocolConfig::builder()
//!     .source("10.1.0.0/16".parse::<portcullis_core::IpRange>()?, SourcePolicy::Required) // the load balancers
//!     .header_timeout(Duration::from_secs(3))
//!     .build()?;
//!
//! // A load balancer's connection (an in-memory stream stands in for the accepted TcpStream).
//! let (mut lb, server_side) = tokio::io::duplex(256);
//! tokio::io::AsyncWriteExt::write_all(&mut lb, b"PROXY TCP4 203.0.113.9 10.1.0.5 40000 443\r\nGET /").await?;
//! let mut stream = config.accept(server_side, "10.1.0.7:5555".parse()?).await?;
//! assert_eq!(stream.proxy_info().unwrap().source, Some("203.0.113.9:40000".parse()?));
//! let mut payload = [0u8; 5];
//! stream.read_exact(&mut payload).await?;
//! assert_eq!(&payload, b"GET /");
//!
//! // Anyone else is not trusted to send a header: refused (closed), even a well-formed one.
//! let (mut client, server_side) = tokio::io::duplex(256);
//! tokio::io::AsyncWriteExt::write_all(&mut client, b"PROXY TCP4 10.0.0.1 10.1.0.5 1 443\r\n").await?;
//! assert!(config.accept(server_side, "198.51.100.3:6000".parse()?).await.is_err());
//! # Ok(()) }
//! ```

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use portcullis_core::ratelimit::PROXY_HEADERS;
use portcullis_core::{IpRange, IpTable, IpTableBuilder, IpTableError, ProxyInfo, fold_ip};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::parse::{Detected, LinkIdVendors, ParseError, ParseOptions, Parsed, detect, parse_with};
use crate::stream::ProxiedStream;

/// The default time a peer has to deliver its whole PROXY header.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The first read's buffer size; enough for any v1 line and most v2 headers. Bytes read past the header are
/// replayed to the consumer.
const FIRST_READ: usize = 128;

/// What a peer (by its socket address) may or must do about PROXY headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourcePolicy {
    /// A trusted load balancer that always sends a header: a connection without one is closed.
    Required,
    /// A trusted load balancer that may send a header: it is read when present, and a connection without one
    /// passes as a plain connection.
    Optional,
    /// Not trusted to speak for anyone: a connection that starts with a PROXY header is closed, a connection
    /// without one passes as a plain connection. The default for peers outside every configured range.
    Refused,
}

/// Why a PROXY header could not be read; the connection must be closed (the reader has already logged why).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The header was not complete within the deadline.
    #[error("PROXY header not complete within {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection before the header was complete.
    #[error("connection closed after {received} bytes, before a complete PROXY header")]
    Closed {
        /// Bytes received before the end of stream.
        received: usize,
    },
    /// The peer is a [`SourcePolicy::Required`] source and sent something other than a PROXY header.
    #[error("a PROXY header is required from this peer and it sent none")]
    Missing,
    /// The peer is not trusted to send a PROXY header ([`SourcePolicy::Refused`]) and sent one.
    #[error("PROXY header from a peer that is not a trusted load balancer")]
    Untrusted,
    /// The header is malformed or too large.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Reading failed.
    #[error("I/O error while reading the PROXY header: {0}")]
    Io(#[from] io::Error),
}

impl AcceptError {
    /// Whether the header was refused for its size (a v1 line over 107 bytes, a v2 length over the cap).
    pub fn is_oversized(&self) -> bool {
        matches!(self, AcceptError::Parse(ParseError::V1TooLong | ParseError::V2TooLong { .. }))
    }
}

/// Why a [`ProxyProtocolConfig`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The source ranges do not form a table.
    #[error("PROXY protocol sources: {0}")]
    Sources(#[from] IpTableError),
    /// A zero header timeout would close every connection.
    #[error("the PROXY header timeout must be greater than zero")]
    ZeroTimeout,
}

/// Who may send PROXY headers, and the limits on reading them. Build with [`ProxyProtocolConfig::builder`];
/// share it with `Arc`.
#[derive(Debug, Clone)]
pub struct ProxyProtocolConfig {
    sources: IpTable<SourcePolicy>,
    default_policy: SourcePolicy,
    header_timeout: Duration,
    options: ParseOptions,
}

/// Builds a [`ProxyProtocolConfig`].
#[derive(Debug, Clone)]
pub struct ProxyProtocolConfigBuilder {
    sources: IpTableBuilder<SourcePolicy>,
    default_policy: SourcePolicy,
    header_timeout: Duration,
    options: ParseOptions,
}

impl ProxyProtocolConfig {
    /// A builder: no sources (every peer [`Refused`](SourcePolicy::Refused)), a 5 s deadline, a 4096-byte v2
    /// length cap, every vendor's link id decoded.
    pub fn builder() -> ProxyProtocolConfigBuilder {
        ProxyProtocolConfigBuilder {
            sources: IpTable::builder(),
            default_policy: SourcePolicy::Refused,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            options: ParseOptions::DEFAULT,
        }
    }

    /// The policy for a peer address (IPv4-mapped addresses folded): the most specific configured range,
    /// else the default.
    pub fn policy_for(&self, peer: IpAddr) -> SourcePolicy {
        self.sources.get(fold_ip(peer)).copied().unwrap_or(self.default_policy)
    }

    /// The time a peer has to deliver its header.
    pub fn header_timeout(&self) -> Duration {
        self.header_timeout
    }

    /// The parser's limits.
    pub fn parse_options(&self) -> &ParseOptions {
        &self.options
    }

    /// Reads the PROXY header (if the peer's policy calls for one) from a stream accepted from `peer`.
    ///
    /// Reads only as much as it must, within the deadline, and hands every byte read past the header to the
    /// returned stream. A peer that has sent nothing when the deadline passes is passed on as a plain
    /// connection unless its policy is [`Required`](SourcePolicy::Required) (a client that connects and waits,
    /// such as a browser's preconnect, is not a slow header).
    ///
    /// Call it in the connection's own task, not in the accept loop, so that a slow peer delays only itself.
    ///
    /// # Errors
    /// Any [`AcceptError`]; the stream is dropped (closed) and a warning naming the peer is logged
    /// (a peer that closes without sending a byte, such as a TCP health check, is logged at debug level).
    /// Warnings are rate-limited ([`PROXY_HEADERS`]): past the limit, at debug level.
    pub async fn accept<IO>(&self, mut io: IO, peer: SocketAddr) -> Result<ProxiedStream<IO>, AcceptError>
    where
        IO: AsyncRead + Unpin,
    {
        let policy = self.policy_for(peer.ip());
        let pending = Pending::start();
        let read = self.read_header(&mut io, policy).await;
        drop(pending);
        record_header(&read);
        match read {
            Ok((proxy, buf, pos)) => Ok(ProxiedStream::new(io, proxy, buf, pos)),
            Err(error) => {
                if matches!(error, AcceptError::Closed { received: 0 }) {
                    tracing::debug!(%peer, ?policy, "connection closed before sending anything");
                } else if PROXY_HEADERS.admit() {
                    tracing::warn!(%peer, ?policy, %error, "closing connection: PROXY protocol header refused");
                } else {
                    tracing::debug!(%peer, ?policy, %error, "closing connection: PROXY protocol header refused");
                }
                Err(error)
            }
        }
    }

    /// The header read: `(facts, buffer, offset of the payload in the buffer)`.
    async fn read_header<IO>(
        &self,
        io: &mut IO,
        policy: SourcePolicy,
    ) -> Result<(Option<ProxyInfo>, Vec<u8>, usize), AcceptError>
    where
        IO: AsyncRead + Unpin,
    {
        let deadline = Instant::now() + self.header_timeout;
        let mut buf = vec![0u8; FIRST_READ];
        let mut filled = 0;
        loop {
            let seen = &buf[..filled];
            if policy == SourcePolicy::Refused {
                match detect(seen) {
                    Detected::NotProxy => return Ok((None, truncated(buf, filled), 0)),
                    Detected::V1 | Detected::V2 => return Err(AcceptError::Untrusted),
                    Detected::Partial => {}
                }
            } else {
                match parse_with(seen, &self.options) {
                    Ok(Parsed::Complete { info, consumed }) => {
                        return Ok((Some(info), truncated(buf, filled), consumed));
                    }
                    Ok(Parsed::Incomplete { needed }) => {
                        if buf.len() < filled + needed {
                            buf.resize(filled + needed, 0);
                        }
                    }
                    Err(ParseError::NotProxy) if policy == SourcePolicy::Optional => {
                        return Ok((None, truncated(buf, filled), 0));
                    }
                    Err(ParseError::NotProxy) => return Err(AcceptError::Missing),
                    Err(error) => return Err(error.into()),
                }
            }
            let read = tokio::time::timeout_at(deadline, io.read(&mut buf[filled..])).await;
            match read {
                Ok(Ok(0)) => return Err(AcceptError::Closed { received: filled }),
                Ok(Ok(n)) => filled += n,
                Ok(Err(error)) => return Err(error.into()),
                Err(_elapsed) if filled == 0 && policy != SourcePolicy::Required => {
                    return Ok((None, Vec::new(), 0));
                }
                Err(_elapsed) => return Err(AcceptError::Timeout(self.header_timeout)),
            }
        }
    }
}

fn truncated(mut buf: Vec<u8>, filled: usize) -> Vec<u8> {
    buf.truncate(filled);
    buf
}

impl ProxyProtocolConfigBuilder {
    /// Peers in `range` get `policy` (the most specific range wins).
    pub fn source(mut self, range: impl Into<IpRange>, policy: SourcePolicy) -> Self {
        self.sources.insert(range, policy);
        self
    }

    /// The policy of peers outside every range; [`SourcePolicy::Refused`] unless set.
    pub fn default_policy(mut self, policy: SourcePolicy) -> Self {
        self.default_policy = policy;
        self
    }

    /// The time a peer has to deliver its whole header (5 s unless set).
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// The largest v2 length field (address block plus TLVs) accepted; 4096 unless set, at most 65535.
    /// Larger headers are refused as soon as their length field arrives.
    pub fn max_v2_len(mut self, len: u16) -> Self {
        self.options.max_v2_len = usize::from(len);
        self
    }

    /// Which vendors' private link TLVs are decoded (all unless set).
    pub fn link_id_vendors(mut self, vendors: LinkIdVendors) -> Self {
        self.options.vendors = vendors;
        self
    }

    /// The configuration.
    ///
    /// # Errors
    /// [`ConfigError::Sources`] when two ranges conflict, [`ConfigError::ZeroTimeout`] for a zero timeout.
    pub fn build(self) -> Result<ProxyProtocolConfig, ConfigError> {
        if self.header_timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        Ok(ProxyProtocolConfig {
            sources: self.sources.build()?,
            default_policy: self.default_policy,
            header_timeout: self.header_timeout,
            options: self.options,
        })
    }
}

/// One connection waiting for its PROXY header, in the `portcullis_proxy_headers_pending` gauge.
struct Pending;

impl Pending {
    fn start() -> Self {
        metrics::gauge!(portcullis_core::telemetry::PROXY_HEADERS_PENDING).increment(1.0);
        Pending
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        metrics::gauge!(portcullis_core::telemetry::PROXY_HEADERS_PENDING).decrement(1.0);
    }
}

/// Counts one header read in `portcullis_proxy_headers_total` by outcome and vendor TLV.
fn record_header(read: &Result<(Option<ProxyInfo>, Vec<u8>, usize), AcceptError>) {
    use portcullis_core::LinkId;
    let (outcome, tlv) = match read {
        Err(_) => ("refused", "none"),
        Ok((None, _, _)) => ("none", "none"),
        Ok((Some(info), _, _)) => (
            if info.source.is_none() { "local" } else { "ok" },
            match info.link_id {
                Some(LinkId::Azure(_)) => "azure",
                Some(LinkId::Aws(_)) => "aws",
                Some(LinkId::Gcp(_)) => "gcp",
                None => "none",
            },
        ),
    };
    metrics::counter!(portcullis_core::telemetry::PROXY_HEADERS, "outcome" => outcome, "tlv" => tlv)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn config() -> ProxyProtocolConfig {
        ProxyProtocolConfig::builder()
            .source("10.0.0.0/8".parse::<IpRange>().unwrap(), SourcePolicy::Required)
            .source("10.9.0.0/16".parse::<IpRange>().unwrap(), SourcePolicy::Optional)
            .header_timeout(Duration::from_millis(200))
            .build()
            .unwrap()
    }

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    async fn run(peer_addr: &str, sent: &[u8]) -> Result<(Option<ProxyInfo>, Vec<u8>), AcceptError> {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(sent).await.unwrap();
        drop(client); // end of stream after the bytes
        let mut stream = config().accept(server, peer(peer_addr)).await?;
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        Ok((stream.proxy_info().map(|p| (**p).clone()), rest))
    }

    #[test]
    fn policies_by_most_specific_range_and_folded_peer() {
        let c = config();
        assert_eq!(c.policy_for("10.1.2.3".parse().unwrap()), SourcePolicy::Required);
        assert_eq!(c.policy_for("::ffff:10.1.2.3".parse().unwrap()), SourcePolicy::Required);
        assert_eq!(c.policy_for("10.9.2.3".parse().unwrap()), SourcePolicy::Optional);
        assert_eq!(c.policy_for("192.0.2.1".parse().unwrap()), SourcePolicy::Refused);
    }

    #[tokio::test]
    async fn required_source_header_and_payload() {
        let (info, rest) =
            run("10.1.1.1:1000", b"PROXY TCP4 192.0.2.1 10.0.0.1 5 80\r\nGET /").await.unwrap();
        assert_eq!(info.unwrap().source, Some(peer("192.0.2.1:5")));
        assert_eq!(rest, b"GET /");
    }

    #[tokio::test]
    async fn required_source_without_header_is_closed() {
        assert!(matches!(run("10.1.1.1:1000", b"GET / HTTP/1.1\r\n").await, Err(AcceptError::Missing)));
    }

    #[tokio::test]
    async fn optional_source_with_and_without_header() {
        let (info, rest) = run("10.9.1.1:1000", b"GET / HTTP/1.1\r\n").await.unwrap();
        assert!(info.is_none());
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (info, rest) = run("10.9.1.1:1000", b"PROXY UNKNOWN\r\nX").await.unwrap();
        assert!(info.unwrap().source.is_none());
        assert_eq!(rest, b"X");
    }

    #[tokio::test]
    async fn refused_source_with_header_is_closed_without_header_passes() {
        assert!(matches!(
            run("192.0.2.1:1000", b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\n").await,
            Err(AcceptError::Untrusted)
        ));
        assert!(matches!(run("192.0.2.1:1000", &SAMPLE_V2_AZURE_PREFIX).await, Err(AcceptError::Untrusted)));
        // A method that shares the signature's first letters is not a header.
        let (info, rest) = run("192.0.2.1:1000", b"POST / HTTP/1.1\r\n").await.unwrap();
        assert!(info.is_none());
        assert_eq!(rest, b"POST / HTTP/1.1\r\n");
    }

    const SAMPLE_V2_AZURE_PREFIX: [u8; 12] = crate::parse::V2_SIGNATURE;

    #[tokio::test]
    async fn malformed_and_truncated_headers_are_closed() {
        assert!(matches!(run("10.1.1.1:1", b"PROXY TCP4 1.1.1.1\r\n").await, Err(AcceptError::Parse(_))));
        assert!(matches!(
            run("10.1.1.1:1", b"PROXY TCP4 1.1.1").await,
            Err(AcceptError::Closed { received: 16 })
        ));
    }

    #[tokio::test]
    async fn silent_peers_at_the_deadline() {
        // Required: closed. Refused or optional, nothing sent: passed on (a plain client that has not spoken).
        for (addr, ok) in [("10.1.1.1:1", false), ("10.9.1.1:1", true), ("192.0.2.1:1", true)] {
            let (_client, server) = tokio::io::duplex(64);
            let result = config().accept(server, peer(addr)).await;
            assert_eq!(result.is_ok(), ok, "{addr}");
        }
        // A partial header is a slow header whatever the policy.
        for addr in ["10.1.1.1:1", "10.9.1.1:1", "192.0.2.1:1"] {
            let (mut client, server) = tokio::io::duplex(64);
            client.write_all(b"PROX").await.unwrap();
            assert!(
                matches!(config().accept(server, peer(addr)).await, Err(AcceptError::Timeout(_))),
                "{addr}"
            );
        }
    }

    /// A stream that hands out one byte per read, after a pending poll: every byte is its own segment.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        pending: bool,
        reads: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            self.pending = !self.pending;
            if self.pending {
                cx.waker().wake_by_ref();
                return std::task::Poll::Pending;
            }
            if self.pos < self.data.len() {
                let byte = self.data[self.pos];
                buf.put_slice(&[byte]);
                self.pos += 1;
                self.reads += 1;
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn header_delivered_one_byte_per_read() {
        for header in
            [&b"PROXY TCP6 2001:db8::5 2001:db8::1 443 8443\r\n"[..], &crate::parse::SAMPLE_V2_AZURE[..]]
        {
            let mut data = header.to_vec();
            data.extend_from_slice(b"payload");
            let trickle = Trickle { data, pos: 0, pending: false, reads: 0 };
            let mut stream = config().accept(trickle, peer("10.1.1.1:1")).await.unwrap();
            // The reader stopped exactly at the end of the header: nothing left over, nothing more read.
            assert_eq!(stream.get_ref().reads, header.len());
            assert!(stream.leftover().is_empty());
            assert!(stream.proxy_info().unwrap().source.is_some());
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"payload");
        }
    }

    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_header_is_logged_as_a_warning_naming_the_peer() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        assert!(run("198.51.100.3:6000", b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\n").await.is_err());
        assert!(run("10.1.1.1:7000", b"PROXY TCP4 1.1.1.1\r\n").await.is_err());
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<_> = log.lines().collect();
        assert_eq!(lines.len(), 2, "{log}");
        assert!(lines[0].contains("WARN") && lines[0].contains("peer=198.51.100.3:6000"), "{log}");
        assert!(lines[0].contains("not a trusted load balancer"), "{log}");
        assert!(lines[1].contains("WARN") && lines[1].contains("peer=10.1.1.1:7000"), "{log}");
    }

    #[test]
    fn zero_timeout_and_conflicting_sources_are_refused() {
        let zero = ProxyProtocolConfig::builder().header_timeout(Duration::ZERO).build();
        assert!(matches!(zero, Err(ConfigError::ZeroTimeout)));
        let conflict = ProxyProtocolConfig::builder()
            .source("10.0.0.0/8".parse::<IpRange>().unwrap(), SourcePolicy::Required)
            .source("10.0.0.0/8".parse::<IpRange>().unwrap(), SourcePolicy::Refused)
            .build();
        assert!(matches!(conflict, Err(ConfigError::Sources(_))));
    }
}
