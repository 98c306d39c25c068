//! [`ProxiedStream`]: an accepted stream after its PROXY header, carrying what the header said.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use portcullis_core::{ConnInfo, ConnectionFacts, ProxyInfo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pin_project! {
    /// An accepted stream whose PROXY header (if any) has been read: reads yield first the bytes that arrived
    /// after the header in the same segments, then the inner stream; writes go straight to the inner stream.
    ///
    /// It carries the header's [`ProxyInfo`] and implements [`ConnectionFacts`] when the inner stream does:
    /// `peer` stays the socket peer (the load balancer) and `proxy` holds the header, so the client-address
    /// layer can decide whether to believe it.
    ///
    /// ```
    /// use portcullis_proxy_protocol::ProxiedStream;
    /// use tokio::io::AsyncReadExt;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// // The reader hands over what it read past the header; the consumer sees it first.
    /// let inner: &[u8] = b" world";
    /// let mut stream = ProxiedStream::new(inner, None, b"hello".to_vec(), 0);
    /// let mut text = String::new();
    /// stream.read_to_string(&mut text).await?;
    /// assert_eq!(text, "hello world");
    /// # Ok(()) }
    /// ```
    #[derive(Debug)]
    pub struct ProxiedStream<IO> {
        #[pin]
        inner: IO,
        leftover: Vec<u8>,
        pos: usize,
        proxy: Option<Arc<ProxyInfo>>,
    }
}

impl<IO> ProxiedStream<IO> {
    /// Wraps `inner`; `buf[pos..]` are payload bytes already read from it, replayed before it.
    ///
    /// # Panics
    /// When `pos > buf.len()`.
    pub fn new(inner: IO, proxy: Option<ProxyInfo>, buf: Vec<u8>, pos: usize) -> Self {
        assert!(pos <= buf.len(), "ProxiedStream::new: pos {pos} past the buffer ({})", buf.len());
        let (leftover, pos) = if pos == buf.len() { (Vec::new(), 0) } else { (buf, pos) };
        ProxiedStream { inner, leftover, pos, proxy: proxy.map(Arc::new) }
    }

    /// What the PROXY header said; `None` when the peer sent none (an optional or refused source).
    pub fn proxy_info(&self) -> Option<&Arc<ProxyInfo>> {
        self.proxy.as_ref()
    }

    /// The payload bytes read past the header and not yet consumed.
    pub fn leftover(&self) -> &[u8] {
        &self.leftover[self.pos..]
    }

    /// The inner stream.
    pub fn get_ref(&self) -> &IO {
        &self.inner
    }

    /// The inner stream. Reading from it directly skips the [`leftover`](Self::leftover) bytes.
    pub fn get_mut(&mut self) -> &mut IO {
        &mut self.inner
    }

    /// The inner stream, the header's facts and the unread leftover bytes.
    pub fn into_parts(self) -> (IO, Option<Arc<ProxyInfo>>, Vec<u8>) {
        let mut leftover = self.leftover;
        leftover.drain(..self.pos);
        (self.inner, self.proxy, leftover)
    }
}

impl<IO: ConnectionFacts> ConnectionFacts for ProxiedStream<IO> {
    fn conn_info(&self, remote: SocketAddr) -> ConnInfo {
        let mut info = self.inner.conn_info(remote);
        info.proxy = self.proxy.clone();
        info
    }
}

impl<IO: AsyncRead> AsyncRead for ProxiedStream<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if *this.pos < this.leftover.len() {
            let n = buf.remaining().min(this.leftover.len() - *this.pos);
            buf.put_slice(&this.leftover[*this.pos..*this.pos + n]);
            *this.pos += n;
            if *this.pos == this.leftover.len() {
                *this.leftover = Vec::new();
                *this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite> AsyncWrite for ProxiedStream<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn leftover_is_replayed_in_small_reads_then_inner() {
        let inner: &[u8] = b"DEF";
        let mut s = ProxiedStream::new(inner, None, b"xxABC".to_vec(), 2);
        assert_eq!(s.leftover(), b"ABC");
        let mut one = [0u8; 2];
        assert_eq!(s.read(&mut one).await.unwrap(), 2);
        assert_eq!(&one, b"AB");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"CDEF");
    }

    #[test]
    fn into_parts_returns_unread_leftover() {
        let s = ProxiedStream::new((), None, b"hdrPAY".to_vec(), 3);
        let ((), proxy, left) = s.into_parts();
        assert!(proxy.is_none());
        assert_eq!(left, b"PAY");
    }
}
