//! Which HTTP a connection speaks, and hyper's connection for it. TLS connections whose
//! ALPN chose `h2` are served as HTTP/2 at once; the others are told by their first
//! bytes (the HTTP/2 prior-knowledge preface or not), as hyper-util's auto builder
//! does, but with the bytes read handed back to hyper in the same read as what follows
//! them: hyper's read buffer then stays at its initial 8 KiB where the auto builder's
//! short first read made it grow to 16 KiB on every connection.
//!
//! Two openings are refused here, before hyper: a preface that starts as HTTP/2's
//! (`PRI * HTTP/2.0`, which no HTTP/1 request is) but goes on wrong gets GOAWAY
//! `PROTOCOL_ERROR` (RFC 9113, 3.4), and the HTTP/2 preface on a TLS connection whose
//! ALPN chose `http/1.1` gets the 400 HTTP/1.1 would give it: ALPN decided.

use crate::worker::http::send_watch::StreamExecutor;
use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface (RFC 9113, 3.4): a connection is served as HTTP/2
/// (without ALPN) exactly when its first 24 bytes are these. The limits scanner and the
/// frame follower (`limits.rs`, `io.rs`) decide by the same [`sniff`].
pub(crate) const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The error a connection ends with.
pub(crate) type ConnError = Box<dyn std::error::Error + Send + Sync>;

/// hyper's builders for both protocols, set up once per worker (`http.rs`).
pub(crate) struct Builders {
    pub(crate) http1: http1::Builder,
    pub(crate) http2: http2::Builder<StreamExecutor>,
}

/// What the first bytes of a connection say, as far as they have come.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sniff {
    /// The preface so far: more bytes are needed.
    Undecided,
    Http1,
    /// The whole preface, or a wrong one after `PRI * HTTP/2.0` (see [`preface_is_whole`]).
    Http2,
}

/// `PRI * HTTP/2.0`: the start of the preface that no HTTP/1 request line is (hyper's
/// HTTP/1 refuses the version); a client that sends it means HTTP/2.
const H2_REQUEST_LINE: usize = 14;

/// Decides the protocol by the bytes read so far (`eof`: no more will come).
pub(crate) fn sniff(seen: &[u8], eof: bool) -> Sniff {
    let n = seen.len().min(H2_PREFACE.len());
    let same = seen[..n]
        .iter()
        .zip(H2_PREFACE)
        .take_while(|(a, b)| a == b)
        .count();
    if same == H2_PREFACE.len() || (same >= H2_REQUEST_LINE && (same < n || eof)) {
        Sniff::Http2
    } else if same < n || eof {
        Sniff::Http1
    } else {
        Sniff::Undecided
    }
}

/// Whether a connection [`sniff`] called HTTP/2 sent the whole preface (else it gets
/// GOAWAY `PROTOCOL_ERROR`).
pub(crate) fn preface_is_whole(seen: &[u8]) -> bool {
    seen == H2_PREFACE
}

/// An empty SETTINGS frame (the server's preface) and GOAWAY(0, PROTOCOL_ERROR).
const BAD_PREFACE_ANSWER: &[u8] = &[
    0, 0, 0, 0x4, 0, 0, 0, 0, 0, // SETTINGS
    0, 0, 8, 0x7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x1, // GOAWAY
];

/// What ALPN chose for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alpn {
    /// Nothing (a plain port, or TLS without ALPN): the first bytes tell.
    None,
    H2,
    /// `http/1.1`: HTTP/1 whatever the bytes say.
    Http1,
}

/// Bytes read and dropped after a refusal, so that the client reads the answer before
/// the close (which with unread bytes would be a reset).
const DRAIN_AFTER_REFUSAL: usize = 64 * 1024;

/// A connection's IO with the bytes read to tell its protocol put back in front.
pub(crate) struct Sniffed<I> {
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
pub(crate) enum Served<'a, I, S>
where
    S: HttpService<Incoming>,
{
    Sniffing {
        io: Option<Sniffed<I>>,
        service: Option<S>,
        builders: &'a Builders,
        /// ALPN chose `http/1.1`.
        http1_only: bool,
    },
    Http1(http1::UpgradeableConnection<Io<I>, S>),
    /// Boxed: inline, its 1.4 KB would size every connection's task, most of them
    /// HTTP/1 (600 bytes).
    Http2(Box<http2::Connection<Io<I>, S, StreamExecutor>>),
    /// Refused as it opened (see the module doc): `answer` is written, the connection
    /// shut down for writing and drained a while.
    Refusing {
        io: Sniffed<I>,
        answer: Vec<u8>,
        written: usize,
        shut: bool,
        drained: usize,
    },
    /// Shut down before its protocol was known, or failed telling it.
    Done,
}

impl Builders {
    /// Serves `io` with upgrades (an app answering 101 gets the connection's IO through
    /// `hyper::upgrade::on`), in the protocol `alpn` chose, or else its first bytes tell.
    pub(crate) fn serve<I, S, B>(&self, io: I, service: S, alpn: Alpn) -> Served<'_, I, S>
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
        if alpn == Alpn::H2 {
            Served::Http2(Box::new(
                self.http2.serve_connection(TokioIo::new(io), service),
            ))
        } else {
            Served::Sniffing {
                io: Some(io),
                service: Some(service),
                builders: self,
                http1_only: alpn == Alpn::Http1,
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
    pub(crate) fn graceful_shutdown(self: Pin<&mut Self>) {
        let this = self.get_mut();
        match this {
            Served::Sniffing { .. } | Served::Refusing { .. } | Served::Done => {
                *this = Served::Done
            }
            Served::Http1(conn) => Pin::new(conn).graceful_shutdown(),
            Served::Http2(conn) => Pin::new(&mut **conn).graceful_shutdown(),
        }
    }

    fn poll_served(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        let this = self.get_mut();
        loop {
            match this {
                Served::Sniffing {
                    io,
                    service,
                    builders,
                    http1_only,
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
                    let seen = &sniffed.prefix[..usize::from(sniffed.len)];
                    let refusal = match decided {
                        Sniff::Http2 if *http1_only => {
                            Some(crate::worker::http::error_response::error_response(
                                400,
                                "Bad Request",
                                "ALPN chose HTTP/1.1, not HTTP/2\n",
                                "",
                            ))
                        }
                        Sniff::Http2 if !preface_is_whole(seen) => {
                            Some(BAD_PREFACE_ANSWER.to_vec())
                        }
                        _ => None,
                    };
                    if let Some(answer) = refusal {
                        *this = Served::Refusing {
                            io: sniffed,
                            answer,
                            written: 0,
                            shut: false,
                            drained: 0,
                        };
                        continue;
                    }
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
                Served::Refusing {
                    io,
                    answer,
                    written,
                    shut,
                    drained,
                } => {
                    let out = &mut io.io;
                    let step = (|| {
                        while *written < answer.len() {
                            let n =
                                ready!(Pin::new(&mut *out).poll_write(cx, &answer[*written..]))?;
                            if n == 0 {
                                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                            }
                            *written += n;
                        }
                        if !*shut {
                            ready!(Pin::new(&mut *out).poll_shutdown(cx))?;
                            *shut = true;
                        }
                        let mut sink = [0u8; 4096];
                        while *drained < DRAIN_AFTER_REFUSAL {
                            let mut buf = ReadBuf::new(&mut sink);
                            ready!(Pin::new(&mut *out).poll_read(cx, &mut buf))?;
                            if buf.filled().is_empty() {
                                break;
                            }
                            *drained += buf.filled().len();
                        }
                        Poll::Ready(Ok::<(), io::Error>(()))
                    })();
                    let Poll::Ready(result) = step else {
                        return Poll::Pending;
                    };
                    *this = Served::Done;
                    return Poll::Ready(result.map_err(Into::into));
                }
                Served::Done => return Poll::Ready(Ok(())),
            }
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
        let polled = self.poll_served(cx);
        crate::worker::http::h2_serving::left_connection();
        polled
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
        assert_eq!(sniff(b"PRI * HTTP/1.1\r\n", false), Sniff::Http1);
        assert_eq!(sniff(b"PRI * HTTP/2.1\r\n", false), Sniff::Http1);
        assert_eq!(sniff(b"PRI * HTTP/2.", true), Sniff::Http1);
        assert_eq!(sniff(H2_PREFACE, false), Sniff::Http2);
        assert_eq!(sniff(H2_PREFACE, true), Sniff::Http2);
        assert!(preface_is_whole(H2_PREFACE));
    }

    #[test]
    fn a_wrong_preface_after_the_request_line_is_http2_to_refuse() {
        // h2spec 3.5/2: the request line of the preface, then something else.
        for seen in [
            &b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r",
            b"PRI * HTTP/2.0\n",
        ] {
            assert_eq!(sniff(seen, false), Sniff::Http2, "{seen:?}");
            assert!(!preface_is_whole(seen));
        }
        // Cut short by the end of the connection.
        assert_eq!(sniff(b"PRI * HTTP/2.0", true), Sniff::Http2);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n\r\nS", true), Sniff::Http2);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n\r\nS", false), Sniff::Undecided);
        assert_eq!(BAD_PREFACE_ANSWER.len(), 9 + 17);
    }

    #[test]
    fn sniff_never_panics_and_agrees_however_the_bytes_come() {
        // Every prefix of a few openings, byte by byte: once decided, more bytes never
        // change the decision.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            let mut bytes = H2_PREFACE.to_vec();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (x % 26) as usize;
            if at < bytes.len() {
                bytes[at] = (x >> 32) as u8;
            }
            bytes.truncate(((x >> 40) % 25) as usize);
            let mut decided = None;
            for end in 0..=bytes.len() {
                let now = sniff(&bytes[..end], false);
                if let Some(before) = &decided {
                    assert_eq!(&now, before, "{bytes:?} at {end}");
                } else if now != Sniff::Undecided {
                    decided = Some(now);
                }
            }
            assert_ne!(sniff(&bytes, true), Sniff::Undecided);
        }
    }
}
