//! The IO under hyper for one client connection: counts the bytes read (for the
//! connection's idle and header timeouts), runs the `[limits]` scanner over them, holds
//! back a request head until it is complete, and turns a broken limit into the right
//! answer: a head that breaks a limit never reaches hyper, which sees the connection
//! end there, and forkd writes the 4xx itself once hyper is done with the connection;
//! a body that breaks a limit (a chunked body past `max_body`, chunked framing the
//! scanner refuses, trailers past the field limits) ends in a read error, and the
//! request's service turns the app's response into the 4xx (see `ConnState::refuse`).
//! A body that sends nothing for `body_read_timeout` while hyper waits for it ends the
//! same way, with 408.
//!
//! Closing a connection that still has unread request bytes makes the kernel send a
//! reset, which can destroy the error response before the client reads it; so an
//! answered connection is shut down for writing and drained for a short while
//! ("lingering close", as nginx does) in a task of its own.
//!
//! It also owns the write side of `limits.send_timeout`: a write (or flush) that waits
//! arms the timer, bytes moving clear it, and one that has waited that long fails, which
//! ends the connection (nginx's `send_timeout`: the longest wait for one write to make
//! progress). Whether the last write waited tells the connection's watchdog that bytes
//! hyper holds are still unwritten, so the connection is not idle (see `ConnState`).
//!
//! On HTTP/2 it also follows the client's frames (`h2_frames.rs`), and ends the
//! connection of a client that floods frames which move no request (PING, SETTINGS,
//! WINDOW_UPDATE, PRIORITY, RST_STREAM, empty DATA...) with GOAWAY `ENHANCE_YOUR_CALM`.

use crate::app::body::StallTimer;
use crate::shared::scoreboard::{Header, Rejection};
use crate::worker::http::access_log::{AccessLog, Outcome, Record};
use crate::worker::http::conn_state::{ConnState, Peer};
use crate::worker::http::error_response::error_response;
use crate::worker::http::h2_frames::{Follow, H2Frames, CALM};
use crate::worker::http::h2_serving::SERVING_H2;
use crate::worker::http::limits::{Scan, Scanner};
use crate::worker::http::violation::{HeadLimits, Violation};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// How long an answered connection is drained before it is closed.
const LINGER: Duration = Duration::from_secs(2);
/// Beyond this many lingering connections per worker, new ones are closed at once.
const MAX_LINGERING: usize = 1024;
static LINGERING: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Open,
    /// A head broke a limit: hyper reads end-of-stream; forkd answers on drop.
    Head(Violation),
    /// A body broke a limit or stalled: one read error, then end-of-stream; the
    /// service answers (see `ConnState::refusal_for`).
    Body {
        reported: bool,
    },
}

/// A flooding HTTP/2 client's connection: hyper reads [`CALM`] after the flood's last
/// frame, so that h2 answers GOAWAY `ENHANCE_YOUR_CALM`, and then the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Calm {
    No,
    /// The bytes of [`CALM`] hyper has read.
    Telling(usize),
    Told,
}

pub(crate) struct GuardedIo<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Taken on drop to answer a violation and linger.
    inner: Option<T>,
    state: Arc<ConnState>,
    scanner: Scanner,
    limits: HeadLimits,
    header: &'static Header,
    /// Bytes read but not yet given to hyper: first `ready` bytes that may go, then an
    /// incomplete head.
    held: Vec<u8>,
    ready: usize,
    end: End,
    /// Where a refused request is logged.
    log: Option<(Arc<AccessLog>, Arc<Peer>)>,
    /// `limits.body_read_timeout` (zero: off), and its timer, armed while hyper waits
    /// for body bytes; `body_progress` says bytes arrived since it was last set.
    body_stall: StallTimer,
    /// `limits.send_timeout` (zero: off), armed while a write waits; see
    /// [`GuardedIo::after_write`].
    send_stall: StallTimer,
    /// The app switched protocols: bytes pass through unscanned from now on.
    switched: bool,
    /// The client's HTTP/2 frames, once the connection turned out to be HTTP/2.
    h2: Option<H2Frames>,
    /// Whether the client flooded frames, and how much of [`CALM`] hyper has read since.
    calm: Calm,
    /// Counts the connection as open for as long as its IO lives, which after a
    /// protocol switch is as long as the app holds it (a WebSocket).
    _open: Option<crate::worker::state::OpenConnection>,
    /// HTTP/2: the streams h2 reset as malformed while this connection was being
    /// served (see `h2_serving::malformed_h2_stream`), and how many of them are counted and logged.
    malformed: Option<Arc<AtomicU32>>,
    malformed_reported: u32,
}

impl<T> GuardedIo<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    pub(crate) fn new(
        inner: T,
        state: Arc<ConnState>,
        limits: HeadLimits,
        body_timeout: Duration,
        header: &'static Header,
        log: Option<(Arc<AccessLog>, Arc<Peer>)>,
        open: Option<crate::worker::state::OpenConnection>,
    ) -> Self {
        GuardedIo {
            inner: Some(inner),
            state,
            scanner: Scanner::new(limits),
            limits,
            header,
            held: Vec::new(),
            ready: 0,
            end: End::Open,
            log,
            body_stall: StallTimer::new(body_timeout),
            send_stall: StallTimer::new(Duration::ZERO),
            switched: false,
            h2: None,
            calm: Calm::No,
            _open: open,
            malformed: None,
            malformed_reported: 0,
        }
    }

    /// Holds every write to `timeout` (`limits.send_timeout`; zero: off).
    pub(crate) fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.send_stall = StallTimer::new(timeout);
        self
    }

    /// Notes how a write or flush went: one that moved bytes clears the send timer and
    /// the connection's blocked flag; one that waits marks the connection blocked and
    /// arms the timer, and fails once it has waited `send_timeout` with nothing moving.
    #[inline]
    fn after_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(Ok(done)) => {
                self.send_stall.progressed();
                self.state.write_moved();
                Poll::Ready(Ok(done))
            }
            Poll::Pending => {
                self.state.write_waits();
                if self.send_stall.stalled(cx) {
                    self.state.send_timed_out();
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client took no response bytes for limits.send_timeout",
                    )));
                }
                Poll::Pending
            }
            failed => failed,
        }
    }

    /// Ends the current request's body with `violation`: hyper gets one read error,
    /// the service answers for it.
    fn refuse_body(&mut self, request: u64, violation: Violation) {
        self.end = End::Body { reported: false };
        self.state.refuse(request, violation);
        self.header.count_rejection(violation.rejection());
    }

    /// Called when the inner read is pending: while hyper waits for a request body,
    /// runs the `body_read_timeout` timer; true when it fired.
    fn body_stalled(&mut self, cx: &mut Context<'_>) -> bool {
        self.scanner.in_body() && self.body_stall.stalled(cx)
    }

    /// Follows bytes on their way to hyper on an HTTP/2 connection; returns how many of
    /// them may go: fewer when the client floods (then hyper reads [`CALM`] next).
    #[inline]
    fn follow_h2(&mut self, data: &[u8]) -> usize {
        if !self.scanner.is_http2() {
            return data.len();
        }
        self.follow_h2_frames(data)
    }

    #[cold]
    fn follow_h2_frames(&mut self, data: &[u8]) -> usize {
        self.report_malformed();
        // What h2 makes of these bytes it logs before the connection's task yields:
        // attributed to this connection until then (`protocol.rs` clears it).
        let counter = self.malformed.get_or_insert_with(Arc::default).clone();
        SERVING_H2.with(|serving| *serving.borrow_mut() = Some(counter));
        let Follow::Cut(n) = self.h2.get_or_insert_with(H2Frames::new).follow(data) else {
            return data.len();
        };
        self.calm = Calm::Telling(0);
        self.header.count_rejection(Rejection::Http2Flood);
        tracing::warn!(
            pid = std::process::id(),
            "HTTP/2 client floods frames that carry no request (PING, SETTINGS, \
             WINDOW_UPDATE, PRIORITY, RST_STREAM, empty DATA) past its budget: GOAWAY \
             ENHANCE_YOUR_CALM"
        );
        n
    }

    /// Counts and logs the streams h2 reset as malformed since the last call: 400, as
    /// nginx logs such a request, with no request line (h2 refused the head before
    /// anything was made of it) and no bytes (the client got RST_STREAM).
    fn report_malformed(&mut self) {
        let Some(counter) = &self.malformed else {
            return;
        };
        let seen = counter.load(Relaxed);
        while self.malformed_reported < seen {
            self.malformed_reported += 1;
            self.header.count_rejection(Rejection::Malformed);
            if let Some((log, peer)) = &self.log {
                log_refused(log, peer, b"", 400, "");
            }
        }
    }

    /// Acts on a scan of `data`; returns how many of its bytes may go to hyper.
    fn apply(&mut self, scan: Scan, data: &[u8]) -> usize {
        if self.scanner.is_http2() {
            self.state.mark_http2();
        }
        match scan {
            Scan::Clean => usize::MAX,
            Scan::PartialHead { start } => start,
            Scan::HeadViolation { start, violation } => {
                self.end = End::Head(violation);
                self.header.count_rejection(violation.rejection());
                if let Some((log, peer)) = &self.log {
                    let (status, _) = violation.status();
                    log_refused(
                        log,
                        peer,
                        &data[start..],
                        status,
                        &violation.explain(&self.limits),
                    );
                }
                start
            }
            Scan::BodyViolation {
                at,
                request,
                violation,
            } => {
                self.refuse_body(request, violation);
                at
            }
        }
    }
}

impl<T> AsyncRead for GuardedIo<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.switched && this.end == End::Open && this.state.switched_protocols() {
            // hyper hands what follows to the upgrade: release what was held, unscanned.
            this.switched = true;
            this.scanner.stop_following();
            this.ready = this.held.len();
        }
        loop {
            match this.calm {
                Calm::No => {}
                Calm::Telling(at) => {
                    let n = (CALM.len() - at).min(buf.remaining());
                    buf.put_slice(&CALM[at..at + n]);
                    this.calm = if at + n == CALM.len() {
                        Calm::Told
                    } else {
                        Calm::Telling(at + n)
                    };
                    return Poll::Ready(Ok(()));
                }
                // h2 has its GOAWAY to send; then the end.
                Calm::Told => return Poll::Ready(Ok(())),
            }
            if this.ready > 0 {
                let n = this.ready.min(buf.remaining());
                let held = std::mem::take(&mut this.held);
                let pass = this.follow_h2(&held[..n]);
                this.held = held;
                if pass < n {
                    buf.put_slice(&this.held[..pass]);
                    this.held = Vec::new();
                    this.ready = 0;
                    if pass == 0 {
                        continue;
                    }
                    return Poll::Ready(Ok(()));
                }
                buf.put_slice(&this.held[..n]);
                this.held.drain(..n);
                if this.held.is_empty() {
                    // Its capacity (16 KiB and more) would otherwise stay with the
                    // connection for its life: every connection's first head passes
                    // through here, as `protocol.rs` first reads only the 24 bytes that
                    // tell HTTP/2 from HTTP/1.
                    this.held = Vec::new();
                }
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            match this.end {
                End::Open => {}
                End::Head(_) | End::Body { reported: true } => return Poll::Ready(Ok(())),
                End::Body { reported: false } => {
                    this.end = End::Body { reported: true };
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "request body refused by [limits]",
                    )));
                }
            }
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            if this.held.is_empty() {
                // The common case: read straight into hyper's buffer; copy nothing unless
                // a head is cut by the end of the read.
                let before = buf.filled().len();
                if Pin::new(inner).poll_read(cx, buf)?.is_pending() {
                    if this.body_stalled(cx) {
                        let request = this.scanner.current_request();
                        this.refuse_body(request, Violation::BodyTimeout);
                        continue;
                    }
                    return Poll::Pending;
                }
                let read = buf.filled().len() - before;
                if read == 0 {
                    return Poll::Ready(Ok(()));
                }
                this.body_stall.progressed();
                this.state.add_bytes_read(read);
                let scan = this.scanner.scan(&buf.filled()[before..]);
                let keep = this.apply(scan, &buf.filled()[before..]).min(read);
                if keep < read && matches!(scan, Scan::PartialHead { .. }) {
                    this.held.extend_from_slice(&buf.filled()[before + keep..]);
                }
                let keep = if keep > 0 {
                    this.follow_h2(&buf.filled()[before..before + keep])
                } else {
                    keep
                };
                buf.set_filled(before + keep);
                if this.calm != Calm::No {
                    // The flood's last frame ended in this read: [`CALM`] follows (now,
                    // if none of this read goes: an empty read would be the end).
                    if keep == 0 {
                        continue;
                    }
                    return Poll::Ready(Ok(()));
                }
                if keep > 0 {
                    return Poll::Ready(Ok(()));
                }
                // Nothing for hyper yet: read again (or report the end).
                continue;
            }
            // A head is being collected in `held`.
            let start = this.held.len();
            this.held.reserve(16 * 1024);
            let mut spare = ReadBuf::uninit(this.held.spare_capacity_mut());
            // A head is being collected: no body is awaited, so no body timer here.
            ready!(Pin::new(inner).poll_read(cx, &mut spare))?;
            let read = spare.filled().len();
            // SAFETY: the reader initialised the first `read` bytes of the spare capacity.
            unsafe { this.held.set_len(start + read) };
            if read == 0 {
                // The client left in the middle of a head: hyper sees a clean end.
                this.held.clear();
                return Poll::Ready(Ok(()));
            }
            this.state.add_bytes_read(read);
            let scan = this.scanner.scan(&this.held);
            let held = std::mem::take(&mut this.held);
            let keep = this.apply(scan, &held).min(held.len());
            this.held = held;
            if !matches!(scan, Scan::PartialHead { .. } | Scan::Clean) {
                this.held.truncate(keep);
            }
            this.ready = keep;
        }
    }
}

impl<T> AsyncWrite for GuardedIo<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = match this.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_write(cx, buf),
            None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        };
        this.after_write(cx, polled)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = match this.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_write_vectored(cx, bufs),
            None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        };
        this.after_write(cx, polled)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.is_write_vectored())
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = match this.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_flush(cx),
            None => return Poll::Ready(Ok(())),
        };
        this.after_write(cx, polled)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.end != End::Open {
            // The drop answers and lingers; a FIN now would come before the answer.
            return Poll::Ready(Ok(()));
        }
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl<T> Drop for GuardedIo<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn drop(&mut self) {
        self.report_malformed();
        let response = match self.end {
            End::Open => return,
            End::Head(violation) => {
                let (status, reason) = violation.status();
                error_response(status, reason, &violation.explain(&self.limits), "")
            }
            // hyper has written the app's (413) answer already.
            End::Body { .. } => Vec::new(),
        };
        if let Some(stream) = self.inner.take() {
            answer_and_close(stream, response);
        }
    }
}

/// Logs a request forkd answered itself before hyper parsed it.
pub(crate) fn log_refused(log: &AccessLog, peer: &Peer, head: &[u8], status: u16, body: &str) {
    let mut record = Record::refused(peer.remote(), peer.addr, head);
    record.set_tls(peer.tls_fields());
    log.log(
        &record,
        &Outcome {
            status,
            bytes: body.len() as u64,
            duration: Duration::ZERO,
            completed: true,
        },
    );
}

/// Writes `response` (may be empty), shuts the connection down for writing and reads
/// what the client still sends for up to [`LINGER`], in a task of its own.
pub(crate) fn answer_and_close<T>(mut stream: T, response: Vec<u8>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let linger = LINGERING.fetch_add(1, Relaxed) < MAX_LINGERING;
    runtime.spawn(async move {
        let _ = tokio::time::timeout(LINGER, async {
            stream.write_all(&response).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            while linger && stream.read(&mut sink).await? > 0 {}
            Ok::<_, io::Error>(())
        })
        .await;
        LINGERING.fetch_sub(1, Relaxed);
    });
}
