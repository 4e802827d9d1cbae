//! The public HTTPS listener's front: TLS with rtcbox's own certificate, then one of two
//! services on the same port, chosen by the first bytes the client sends inside TLS
//! ([`framing::opening`]): a STUN message goes to the TURN server as a TLS client (the path
//! the TURN-TLS listener's connections take), anything else to the public web application.
//!
//! A client that negotiated `acme-tls/1` is an ACME CA validating TLS-ALPN-01: the handshake
//! (with the challenge certificate, see [`crate::tls`]) was all it came for, so the connection is
//! closed at once and reaches neither service.
//!
//! A client that negotiated `stun.turn` by ALPN is TURN without looking. A negotiated
//! `http/1.1` is not trusted to mean HTTP: coturn's client offers `http/1.1` before `stun.turn`. The bytes looked at are
//! not lost: the chosen service reads them first ([`Rewound`]). Limits: the TLS handshake and
//! the first bytes each have [`HEADER_READ_TIMEOUT`]-like deadlines, and every connection holds
//! one of the listener's connection permits, TURN ones included.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;

use crate::http::HEADER_READ_TIMEOUT;
use crate::tls::TlsCertificates;
use crate::turn::driver::{TlsStreams, tls_handshake};
use crate::turn::framing::{self, OPENING_LEN, Opening};

/// What the HTTPS listener needs besides the web application.
#[derive(Clone)]
pub struct HttpsFront {
    acceptor: tokio_rustls::TlsAcceptor,
    /// Where TURN clients go; `None` for a listener that serves only HTTP (the admin panel).
    turn: Option<TlsStreams>,
}

/// A connection's byte stream, whichever transport carries it.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

impl HttpsFront {
    /// Serves `certificates` (followed when they are swapped) and hands TURN clients to `turn`.
    pub fn new(certificates: &TlsCertificates, turn: TlsStreams) -> Self {
        HttpsFront {
            acceptor: tokio_rustls::TlsAcceptor::from(crate::tls::https_server_config(
                certificates,
            )),
            turn: Some(turn),
        }
    }

    /// TLS with `certificates` (followed when swapped) in front of HTTP only: the admin panel
    /// with `RTCBOX_ADMIN_TLS`.
    pub fn http_only(certificates: &TlsCertificates) -> Self {
        let mut config = (*certificates.server_config()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        HttpsFront {
            acceptor: tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
            turn: None,
        }
    }

    /// Completes the handshake and sorts the connection: `Some` is an HTTP stream for the web
    /// application; a TURN client is served here until it ends, and then, like a failed
    /// handshake or a client that says nothing, gives `None`.
    pub async fn open(&self, stream: TcpStream, peer: SocketAddr) -> Option<Box<dyn Io>> {
        let mut tls = tls_handshake(&self.acceptor, stream, peer).await?;
        let (kind, stream) = match tls.get_ref().1.alpn_protocol() {
            Some(crate::tls::ACME_TLS_ALPN) => {
                let _ = tokio::time::timeout(HEADER_READ_TIMEOUT, tls.shutdown()).await;
                return None;
            }
            Some(b"stun.turn") => (Opening::Turn, Rewound::new(Vec::new(), tls)),
            _ if self.turn.is_none() => return Some(Box::new(tls)),
            _ => sort(tls).await?,
        };
        match kind {
            Opening::Turn => {
                let turn = self.turn.as_ref()?;
                let _ = stream.inner.get_ref().0.set_nodelay(true);
                turn.serve(stream, peer).await;
                None
            }
            Opening::Other | Opening::Undecided => Some(Box::new(stream)),
        }
    }
}

/// Reads until [`framing::opening`] decides (within [`HEADER_READ_TIMEOUT`]); `None` when the
/// client closes or stays silent first.
async fn sort<S: AsyncRead + Unpin>(mut stream: S) -> Option<(Opening, Rewound<S>)> {
    let mut first = Vec::with_capacity(OPENING_LEN);
    let deadline = tokio::time::Instant::now() + HEADER_READ_TIMEOUT;
    loop {
        match framing::opening(&first) {
            Opening::Undecided => {}
            kind => return Some((kind, Rewound::new(first, stream))),
        }
        let mut chunk = [0u8; OPENING_LEN];
        let want = OPENING_LEN - first.len();
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk[..want])).await;
        match read {
            Ok(Ok(n)) if n > 0 => first.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            _ => return None,
        }
    }
}

/// A stream whose first bytes were already read: they are read again first.
pub struct Rewound<S> {
    first: Vec<u8>,
    offset: usize,
    inner: S,
}

impl<S> Rewound<S> {
    pub fn new(first: Vec<u8>, inner: S) -> Self {
        Rewound {
            first,
            offset: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let rest = this.first.get(this.offset..).unwrap_or_default();
        if !rest.is_empty() {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(rest.get(..n).unwrap_or_default());
            this.offset += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
