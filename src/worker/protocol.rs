//! Which HTTP a connection speaks, and hyper's connection for it. TLS connections whose
//! ALPN chose `h2` are served as HTTP/2 at once; the others are told by their first
//! bytes (the HTTP/2 prior-knowledge preface or not), as hyper-util's auto builder
//! does, but with the bytes read handed back to hyper in the same read as what follows
//! them: hyper's read buffer then stays at its initial 8 KiB where the auto builder's
//! short first read made it grow to 16 KiB on every connection.

use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface (RFC 9113, 3.4): a connection is served as HTTP/2
/// (without ALPN) exactly when its first 24 bytes are these. The limits scanner and the
/// frame follower (`limits.rs`, `io.rs`) decide by the same [`sniff`].
pub(super) const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The error a connection ends with.
pub(super) type ConnError = Box<dyn std::error::Error + Send + Sync>;

/// hyper's builders for both protocols, set up once per worker (`http.rs`).
pub(crate) struct Builders {
    pub(super) http1: http1::Builder,
    pub(super) http2: http2::Builder<TokioExecutor>,
}

/// What the first bytes of a connection say, as far as they have come.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Sniff {
    /// The preface so far: more bytes are needed.
    Undecided,
    Http1,
    Http2,
}

/// Decides the protocol by the bytes read so far (`eof`: no more will come).
pub(super) fn sniff(seen: &[u8], eof: bool) -> Sniff {
    let n = seen.len().min(H2_PREFACE.len());
    if seen[..n] != H2_PREFACE[..n] {
        Sniff::Http1
    } else if n == H2_PREFACE.len() {
        Sniff::Http2
    } else if eof {
        Sniff::Http1
    } else {
        Sniff::Undecided
    }
}

/// A connection's IO with the bytes read to tell its protocol put back in front.
pub(super) struct Sniffed<I> {
    io: I,
    prefix: [u8; 24],
    /// Bytes of `prefix` handed on so far.
    at: u8,
    /// Bytes of `prefix` read.
    len: u8,
}

impl<I: AsyncRead + Unpin> AsyncRead for Sniffed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.len {
            let n = usize::from(this.len - this.at).min(buf.remaining());
            let at = usize::from(this.at);
            buf.put_slice(&this.prefix[at..at + n]);
            this.at += n as u8;
            if this.at < this.len || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // Whatever else has come goes in the same read (a head hyper sees whole
            // does not make it grow its buffer); none is fine too.
            return match Pin::new(&mut this.io).poll_read(cx, buf) {
                Poll::Pending => Poll::Ready(Ok(())),
                ready => ready,
            };
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Sniffed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

type Io<I> = TokioIo<Sniffed<I>>;

/// One connection being served: first told HTTP/1 from HTTP/2, then hyper's.
// HTTP/1 is the large variant and what most connections become: inline, not boxed.
#[allow(clippy::large_enum_variant)]
pub(super) enum Served<'a, I, S>
where
    S: HttpService<Incoming>,
{
    Sniffing {
        io: Option<Sniffed<I>>,
        service: Option<S>,
        builders: &'a Builders,
    },
    Http1(http1::UpgradeableConnection<Io<I>, S>),
    /// Boxed: inline, its 1.4 KB would size every connection's task, most of them
    /// HTTP/1 (600 bytes).
    Http2(Box<http2::Connection<Io<I>, S, TokioExecutor>>),
    /// Shut down before its protocol was known, or failed telling it.
    Done,
}

impl Builders {
    /// Serves `io` with upgrades (an app answering 101 gets the connection's IO through
    /// `hyper::upgrade::on`); `http2`: ALPN chose HTTP/2, otherwise the first bytes tell.
    pub(super) fn serve<I, S, B>(&self, io: I, service: S, http2: bool) -> Served<'_, I, S>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: HttpService<Incoming, ResBody = B>,
        S::Future: Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<ConnError>,
        S::Error: Into<ConnError>,
    {
        let io = Sniffed {
            io,
            prefix: [0; 24],
            at: 0,
            len: 0,
        };
        if http2 {
            Served::Http2(Box::new(
                self.http2.serve_connection(TokioIo::new(io), service),
            ))
        } else {
            Served::Sniffing {
                io: Some(io),
                service: Some(service),
                builders: self,
            }
        }
    }
}

impl<I, S, B> Served<'_, I, S>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = B> + Unpin,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<ConnError>,
    S::Error: Into<ConnError>,
{
    /// hyper's graceful shutdown (HTTP/2: GOAWAY); a connection not yet told ends.
    pub(super) fn graceful_shutdown(self: Pin<&mut Self>) {
        let this = self.get_mut();
        match this {
            Served::Sniffing { .. } | Served::Done => *this = Served::Done,
            Served::Http1(conn) => Pin::new(conn).graceful_shutdown(),
            Served::Http2(conn) => Pin::new(&mut **conn).graceful_shutdown(),
        }
    }
}

impl<I, S, B> Future for Served<'_, I, S>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = B> + Unpin,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<ConnError>,
    S::Error: Into<ConnError>,
{
    type Output = Result<(), ConnError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match this {
                Served::Sniffing {
                    io,
                    service,
                    builders,
                } => {
                    let Some(sniffed) = io.as_mut() else {
                        return Poll::Ready(Ok(()));
                    };
                    let len = usize::from(sniffed.len);
                    let mut buf = ReadBuf::new(&mut sniffed.prefix[len..]);
                    let read = ready!(Pin::new(&mut sniffed.io).poll_read(cx, &mut buf));
                    let n = buf.filled().len();
                    if let Err(e) = read {
                        *this = Served::Done;
                        return Poll::Ready(Err(e.into()));
                    }
                    sniffed.len += n as u8;
                    let seen = &sniffed.prefix[..usize::from(sniffed.len)];
                    let decided = sniff(seen, n == 0);
                    if decided == Sniff::Undecided {
                        continue;
                    }
                    let (Some(sniffed), Some(service)) = (io.take(), service.take()) else {
                        return Poll::Ready(Ok(()));
                    };
                    let io = TokioIo::new(sniffed);
                    *this = match decided {
                        Sniff::Http2 => {
                            Served::Http2(Box::new(builders.http2.serve_connection(io, service)))
                        }
                        _ => Served::Http1(
                            builders.http1.serve_connection(io, service).with_upgrades(),
                        ),
                    };
                }
                Served::Http1(conn) => return Pin::new(conn).poll(cx).map_err(Into::into),
                Served::Http2(conn) => return Pin::new(&mut **conn).poll(cx).map_err(Into::into),
                Served::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_tells_http2_only_by_the_whole_preface() {
        assert_eq!(sniff(b"", false), Sniff::Undecided);
        assert_eq!(sniff(b"", true), Sniff::Http1);
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n", false), Sniff::Http1);
        assert_eq!(sniff(b"PRI * HTTP/2.0", false), Sniff::Undecided);
        assert_eq!(sniff(b"PRI * HTTP/2.0", true), Sniff::Http1);
        assert_eq!(sniff(b"PRI * HTTP/1.1\r\n", false), Sniff::Http1);
        assert_eq!(sniff(H2_PREFACE, false), Sniff::Http2);
    }
}
