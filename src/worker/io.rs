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
//! On HTTP/2 it also follows the client's frames, and ends the connection of a client
//! that sends PING or SETTINGS frames (each of which the server must answer) faster
//! than `H2_CONTROL_PER_SEC` beyond a burst of `H2_CONTROL_BURST`.

use super::conn::{ConnState, Peer};
use super::limits::{HeadLimits, Scan, Scanner, Violation};
use crate::access_log::{AccessLog, Outcome, Record};
use crate::body::StallTimer;
use crate::scoreboard::{monotonic_ms, Header};
use crate::timefmt::Utc;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// PING and SETTINGS frames an HTTP/2 client may send at once, and per second after
/// that, before its connection is closed. Clients send a handful (hyper's and gRPC's
/// window-sizing PINGs are one per round trip at most, hyper's 100 ms apart); a flood
/// sends hundreds of thousands a second, each costing the worker as much as the client.
const H2_CONTROL_BURST: u32 = 1000;
const H2_CONTROL_PER_SEC: u64 = 1000;

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

pub(super) struct GuardedIo<T>
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
    /// The client flooded PING or SETTINGS frames: hyper got an error, then sees the end.
    h2_flood: bool,
    /// Counts the connection as open for as long as its IO lives, which after a
    /// protocol switch is as long as the app holds it (a WebSocket).
    _open: Option<super::OpenConnection>,
}

/// Follows the frame boundaries of an HTTP/2 connection's incoming bytes to count the
/// frames that make the server answer although they carry no request (PING and
/// SETTINGS without ACK), against a budget refilled over time.
struct H2Frames {
    /// Bytes left of the connection preface or of the current frame's payload.
    skip: usize,
    head: [u8; 9],
    have: usize,
    credit: u32,
    refilled_ms: u64,
}

impl H2Frames {
    fn new() -> H2Frames {
        H2Frames {
            skip: super::protocol::H2_PREFACE.len(),
            head: [0; 9],
            have: 0,
            credit: H2_CONTROL_BURST,
            refilled_ms: monotonic_ms(),
        }
    }

    /// Follows `data`, the next bytes for hyper; false once the client is flooding.
    fn follow(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (self.head.len() - self.have).min(data.len());
            self.head[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < self.head.len() {
                break;
            }
            self.have = 0;
            let [l0, l1, l2, kind, flags, ..] = self.head;
            self.skip = u32::from_be_bytes([0, l0, l1, l2]) as usize;
            // SETTINGS (0x4) or PING (0x6) without the ACK flag (0x1).
            if matches!(kind, 0x4 | 0x6) && flags & 0x1 == 0 && !self.spend() {
                return false;
            }
        }
        true
    }

    fn spend(&mut self) -> bool {
        if self.credit == 0 {
            let now = monotonic_ms();
            let earned = now.saturating_sub(self.refilled_ms) * H2_CONTROL_PER_SEC / 1000;
            if earned == 0 {
                return false;
            }
            self.credit = earned.min(u64::from(H2_CONTROL_BURST)) as u32;
            self.refilled_ms = now;
        }
        self.credit -= 1;
        true
    }
}

impl<T> GuardedIo<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    pub(super) fn new(
        inner: T,
        state: Arc<ConnState>,
        limits: HeadLimits,
        body_timeout: Duration,
        header: &'static Header,
        log: Option<(Arc<AccessLog>, Arc<Peer>)>,
        open: Option<super::OpenConnection>,
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
            h2_flood: false,
            _open: open,
        }
    }

    /// Holds every write to `timeout` (`limits.send_timeout`; zero: off).
    pub(super) fn with_send_timeout(mut self, timeout: Duration) -> Self {
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

    /// Follows bytes on their way to hyper on an HTTP/2 connection; false (and logged)
    /// when the client floods PING or SETTINGS frames.
    #[inline]
    fn follow_h2(&mut self, data: &[u8]) -> bool {
        if !self.scanner.is_http2() {
            return true;
        }
        self.follow_h2_frames(data)
    }

    #[cold]
    fn follow_h2_frames(&mut self, data: &[u8]) -> bool {
        if self.h2.get_or_insert_with(H2Frames::new).follow(data) {
            return true;
        }
        self.h2_flood = true;
        tracing::warn!(
            pid = std::process::id(),
            "HTTP/2 client sends PING or SETTINGS frames faster than {H2_CONTROL_PER_SEC} a \
             second: closing the connection"
        );
        false
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
            if this.h2_flood {
                return Poll::Ready(Ok(()));
            }
            if this.ready > 0 {
                let n = this.ready.min(buf.remaining());
                let held = std::mem::take(&mut this.held);
                let fine = this.follow_h2(&held[..n]);
                this.held = held;
                if !fine {
                    return Poll::Ready(Err(h2_flood_error()));
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
                if keep > 0 && !this.follow_h2(&buf.filled()[before..before + keep]) {
                    buf.set_filled(before);
                    return Poll::Ready(Err(h2_flood_error()));
                }
                buf.set_filled(before + keep);
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

fn h2_flood_error() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "HTTP/2 PING or SETTINGS flood")
}

/// Logs a request forkd answered itself before hyper parsed it.
pub(super) fn log_refused(log: &AccessLog, peer: &Peer, head: &[u8], status: u16, body: &str) {
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

/// A complete `Connection: close` response with a plain-text body.
pub(super) fn error_response(
    status: u16,
    reason: &str,
    body: &str,
    extra_headers: &str,
) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\ndate: {}\r\n{extra_headers}\r\n{body}",
        body.len(),
        Utc::from_system(SystemTime::now()).http_date()
    )
    .into_bytes()
}

/// Writes `response` (may be empty), shuts the connection down for writing and reads
/// what the client still sends for up to [`LINGER`], in a task of its own.
pub(super) fn answer_and_close<T>(mut stream: T, response: Vec<u8>)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags, 0, 0, 0, 0]);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn h2_frames_count_pings_and_settings_across_reads() {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0x4, 0, &[0, 4, 0, 0, 0xff, 0xff]));
        // A DATA frame whose payload looks like PING frames counts for nothing.
        let fake: Vec<u8> = (0..50).flat_map(|_| frame(0x6, 0, b"12345678")).collect();
        bytes.extend(frame(0x0, 0, &fake));
        // Acknowledgements count for nothing either.
        for _ in 0..2000 {
            bytes.extend(frame(0x6, 0x1, b"12345678"));
        }
        for _ in 0..H2_CONTROL_BURST - 1 {
            bytes.extend(frame(0x6, 0, b"12345678"));
        }
        let mut frames = H2Frames::new();
        // Fed in uneven pieces, cutting frame heads.
        for piece in bytes.chunks(7) {
            assert!(frames.follow(piece));
        }
        // The SETTINGS frame and the PINGs spent the burst.
        assert_eq!(frames.credit, 0);
        let one = frame(0x6, 0, b"12345678");
        // One more with no time passed is one too many...
        frames.refilled_ms = monotonic_ms() + 60_000;
        assert!(!frames.follow(&one));
        // ...but time pays for more: 2 s earn 2000, of which a burst is kept.
        let mut later = H2Frames::new();
        later.skip = 0;
        later.credit = 0;
        later.refilled_ms = monotonic_ms() - 2000;
        assert!(later.follow(&one));
        assert_eq!(later.credit, H2_CONTROL_BURST - 1);
    }
}

#[cfg(test)]
#[path = "io_fuzz.rs"]
mod fuzz;
