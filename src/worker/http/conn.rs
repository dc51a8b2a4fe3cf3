//! One client connection in a worker: serves it with hyper (HTTP/1.1, or HTTP/2 with
//! prior knowledge) over the limit-checking IO of `io.rs`, and wraps every request:
//! health paths, the client address behind trusted proxies, request counting, the
//! duration histogram and the access log line. It also owns the keep-alive, header
//! timeout, send timeout and drain policy.
//!
//! Each timeout has one owner: `header_read_timeout` until a request head is in (the
//! watchdog here), `body_read_timeout` while a body is read (`io.rs`, `body.rs`),
//! `keepalive` only while nothing is in flight, and `send_timeout` while a response is
//! being written. A request is in flight from its head until the last byte of its
//! response body has been written to the connection (or the response was abandoned):
//! the body's chunks are handed to hyper as [`SentChunk`]s, which hyper (and h2) advance
//! as they write them to the socket and drop once written, and the request ends when
//! the last of them is gone, not when hyper has taken the last one from the app. Its
//! access log line then says how many body bytes were written and whether that was all
//! of them (`{completion}`). The IO (`io.rs`) fails a write that waits `send_timeout`
//! with nothing moving; the watchdog here closes a connection whose responses have
//! bytes waiting to be sent (not waiting on the app) and none written for
//! `send_timeout`, which is how an HTTP/2 client that never opens its flow-control
//! window is bounded (the socket is writable then, only h2 will not send); on HTTP/2 it
//! also resets each stream stalled that long while others move (`send_watch`).
//!
//! Why forkd times idle connections itself instead of calling hyper's
//! `graceful_shutdown()` on HTTP/1: hyper closes a connection it considers idle at once,
//! and a connection is idle until the next request's headers are parsed, so a request
//! already on the wire would be lost. Here a draining worker instead marks every
//! response `Connection: close` (hyper then closes after writing it) and closes an idle
//! connection only after it has been silent for the keep-alive period, exactly as it
//! would when not draining. HTTP/2 gets GOAWAY, which is race-free by protocol.
//!
//! HTTP/2 rapid reset paced below h2's own limit is caught here: a connection whose
//! client abandoned most of its streams within a second of opening them gets GOAWAY
//! and is closed (`conn_state::RESET_FLOOD_STREAMS`).

use crate::app::body::{Cut, Verdict};
use crate::app::RequestBody;
use crate::app::{respond, Body, ClientAddr, Scheme};
use crate::shared::scoreboard::{monotonic_ms, Incomplete, Rejection, Slot, FLAG_RETIRE};
use crate::worker::http::access_log::{AccessLog, Outcome, Record, Remote};
use crate::worker::http::conn_state::{Closing, ConnState, Peer};
use crate::worker::http::forwarded::Client;
use crate::worker::http::io::GuardedIo;
use crate::worker::http::send_watch::{SendWatch, StreamControl, StreamProgress};
use crate::worker::http::sniff::Alpn;
use crate::worker::http::violation::Violation;
use crate::worker::state::Shared;
use bytes::{Buf, Bytes};
use hyper::body::{Frame, SizeHint};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// An HTTP/2 stream the client resets (or leaves) this soon after opening it, before
/// its response is done, was abandoned early.
const EARLY_RESET_MS: u64 = 1000;
/// How often the loop of an HTTP/2 connection looks for a reset flood.
const H2_WATCH: Duration = Duration::from_millis(100);

/// How long in-flight streams get after that GOAWAY before the connection is closed.
const RESET_FLOOD_GRACE: Duration = Duration::from_secs(1);

/// A connection's request extensions (`Peer::add_extensions`), made on its second
/// request and cloned for that one and every later one: a clone copies the map's table,
/// where inserting hashes each entry into a new one. The first request has them
/// inserted, so a connection that serves one request pays no more than that.
struct ConnExtensions {
    peer: Arc<Peer>,
    made: std::sync::OnceLock<hyper::http::Extensions>,
}

impl ConnExtensions {
    fn add_to(&self, extensions: &mut hyper::http::Extensions, first: bool) {
        if first && self.made.get().is_none() {
            self.peer.add_extensions(extensions);
            return;
        }
        let made = self.made.get_or_init(|| {
            let mut made = hyper::http::Extensions::new();
            self.peer.add_extensions(&mut made);
            made
        });
        extensions.extend(made.clone());
    }
}

/// The response body, wrapped so that hyper gets the app's data as [`SentChunk`]s
/// (which count the bytes written) and the request can tell waiting on the app from
/// waiting on the client.
pub struct TrackedBody {
    inner: Body,
    request: Arc<RequestGuard>,
    /// HTTP/2: a request body cut after the response started resets the stream.
    cut: Option<Verdict>,
    /// The last poll waited on the app: counted in the connection's `app_busy`.
    busy: bool,
}

impl TrackedBody {
    #[inline]
    fn set_busy(&mut self, busy: bool) {
        if self.busy != busy {
            self.busy = busy;
            self.request.on_app.store(busy, Relaxed);
            self.request.state.app_busy(busy);
        }
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.set_busy(false);
    }
}

impl hyper::body::Body for TrackedBody {
    type Data = SentChunk;
    type Error = crate::app::BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<SentChunk>, Self::Error>>> {
        if self.cut.as_ref().is_some_and(|cut| cut.get().is_some()) {
            self.request.failed.store(true, Relaxed);
            return Poll::Ready(Some(Err("request body cut by [limits]".into())));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let Poll::Ready(polled) = polled else {
            self.set_busy(true);
            return Poll::Pending;
        };
        self.set_busy(false);
        Poll::Ready(match polled {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    self.request.produced.fetch_add(data.len() as u64, Relaxed);
                    Some(Ok(Frame::data(SentChunk {
                        data,
                        request: self.request.clone(),
                    })))
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => Some(Ok(Frame::trailers(trailers))),
                    // A frame kind http-body may add later: nothing to send.
                    Err(_) => return Poll::Ready(Some(Ok(Frame::trailers(Default::default())))),
                },
            },
            Some(Err(e)) => {
                self.request.failed.store(true, Relaxed);
                Some(Err(e))
            }
            None => {
                self.request.ended.store(true, Relaxed);
                None
            }
        })
    }
    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            // hyper asks this before and after each frame and stops once it is true.
            self.request.ended.store(true, Relaxed);
        }
        end
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A chunk of a response body on its way to the client: hyper (HTTP/1, which queues
/// chunks for vectored writes) and h2 advance it as its bytes are written to the
/// connection, and drop it once written or abandoned. It holds its request, which ends
/// (and is logged) when its body is done and its last chunk is gone.
pub struct SentChunk {
    data: Bytes,
    request: Arc<RequestGuard>,
}

impl Buf for SentChunk {
    #[inline]
    fn remaining(&self) -> usize {
        self.data.len()
    }
    #[inline]
    fn chunk(&self) -> &[u8] {
        &self.data
    }
    #[inline]
    fn advance(&mut self, cnt: usize) {
        self.data.advance(cnt);
        self.request.written(cnt);
    }
    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        let taken = self.data.copy_to_bytes(len);
        self.request.written(len);
        taken
    }
}

/// One request from its head to the last byte of its response (or its abandonment):
/// keeps the connection's and the scoreboard's in-flight counts, and on drop records
/// the duration and writes the access log line. A request dropped before the app
/// answered (the client went away, an HTTP/2 stream was reset) is logged with status
/// 499, as nginx does, one whose handler panicked with 500; either no longer counts as
/// in flight. Once answered it is shared by the response body and its chunks.
struct RequestGuard {
    /// The request's number on its connection.
    number: u64,
    state: Arc<ConnState>,
    slot: &'static Slot,
    /// Where responses cut short are counted.
    header: &'static crate::shared::scoreboard::Header,
    began: Option<Instant>,
    record_duration: bool,
    log: Option<(Arc<AccessLog>, Box<Record>)>,
    status: u16,
    /// Response body bytes taken from the app, and of them those written to the
    /// connection.
    produced: AtomicU64,
    sent: AtomicU64,
    /// The app's body reached its end.
    ended: AtomicBool,
    /// The app's body failed, or forkd cut the request body after the response began.
    failed: AtomicBool,
    /// The response has no body to write (HEAD, 1xx, 204, 304): done with its head.
    head_only: bool,
    /// When the request began (ms, monotonic), for HTTP/2 streams only.
    h2_began_ms: Option<u64>,
    /// HTTP/2: the stream's end switch, for `send_timeout` per stream (`send_watch`).
    h2: Option<Arc<StreamControl>>,
    /// The request waits on the app (its answer, or its body's next frame), not on the
    /// client (kept with the connection's `app_busy`).
    on_app: AtomicBool,
}

impl RequestGuard {
    fn new(
        shared: &Shared,
        state: Arc<ConnState>,
        began: Option<Instant>,
        log: Option<Box<Record>>,
    ) -> RequestGuard {
        let number = state.request_started();
        shared.slot.request_began();
        RequestGuard {
            number,
            slot: shared.slot,
            header: shared.board.header(),
            began,
            record_duration: shared.record_durations,
            log: shared.access_log.clone().zip(log),
            status: 499,
            produced: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            head_only: false,
            h2_began_ms: state.is_h2.load(Relaxed).then(monotonic_ms),
            on_app: AtomicBool::new(false),
            h2: state
                .is_h2
                .load(Relaxed)
                .then(StreamControl::for_next_stream),
            state,
        }
    }

    #[inline]
    fn written(&self, bytes: usize) {
        self.sent.fetch_add(bytes as u64, Relaxed);
        self.state.body_written.fetch_add(bytes as u64, Relaxed);
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.state.request_finished();
        let ended = *self.ended.get_mut();
        let sent = *self.sent.get_mut();
        if let Some(began) = self.h2_began_ms {
            let early = !ended && monotonic_ms().saturating_sub(began) < EARLY_RESET_MS;
            self.state.stream_ended(early);
        }
        let duration = self.began.map(|at| at.elapsed());
        self.slot.request_ended(
            duration
                .filter(|_| self.record_duration)
                .map(|d| d.as_micros() as u64),
        );
        // Dropped while unwinding: the handler panicked (tokio drops a task's future
        // inside the unwind), a server error rather than a client that left.
        let status = if self.status == 499 && std::thread::panicking() {
            500
        } else {
            self.status
        };
        let answered = self.status != 499;
        let failed = *self.failed.get_mut();
        let completed =
            answered && !failed && (self.head_only || (ended && sent == *self.produced.get_mut()));
        if answered && !completed {
            let reason = if failed {
                Incomplete::Error
            } else if self.h2.as_ref().is_some_and(|h2| h2.timed_out()) {
                Incomplete::SendTimeout
            } else {
                self.state.cut_reason()
            };
            self.header.count_incomplete(reason);
        }
        if let Some((log, record)) = &self.log {
            log.log(
                record,
                &Outcome {
                    status,
                    bytes: sent,
                    duration: duration.unwrap_or_default(),
                    completed,
                },
            );
        }
    }
}

impl StreamProgress for RequestGuard {
    /// Bytes wait on the client unless the app has the turn or all is written.
    fn progress(&self) -> (bool, u64) {
        let sent = self.sent.load(Relaxed);
        let all_written = self.ended.load(Relaxed) && sent == self.produced.load(Relaxed);
        (!self.on_app.load(Relaxed) && !all_written, sent)
    }
    fn control(&self) -> Option<&StreamControl> {
        self.h2.as_deref()
    }
}

/// Who answers a request: forkd itself (a health path, boxed as it is rare), forkd's
/// 413 for an HTTP/2 request that declares too large a body, or the app.
enum Answer {
    Forkd(Option<Box<crate::app::Response>>),
    TooLarge,
    /// HTTP/2 with an invalid `:authority` or `Host`: 400.
    BadHost,
    App(crate::app::BoxFuture<crate::app::Response>),
}

/// One request's future, as hyper holds it: the app's future (called as the request
/// arrives, as hyper polls the service's future at once), then the response wrapped
/// in a [`TrackedBody`]. A plain struct rather than an `async` block, which would hold
/// the request and the health answer next to the app's future and be several times
/// larger, and hyper moves it twice per request.
struct Responding {
    answer: Answer,
    /// Taken into the response body once the answer is there.
    guard: Option<RequestGuard>,
    verdict: Option<Verdict>,
    shared: Arc<Shared>,
    connect: bool,
    /// A HEAD request: its response has no body to write.
    head: bool,
    /// The request was counted (`count_request`), on the first poll.
    counted: bool,
    /// The last poll waited on the app: counted in the connection's `app_busy`.
    busy: bool,
}

/// Marks a request as waiting on the app or not (`Responding::busy`).
fn set_busy(flag: &mut bool, guard: &Option<RequestGuard>, busy: bool) {
    if *flag != busy {
        if let Some(guard) = guard {
            *flag = busy;
            guard.on_app.store(busy, Relaxed);
            guard.state.app_busy(busy);
        }
    }
}

impl Drop for Responding {
    fn drop(&mut self) {
        set_busy(&mut self.busy, &self.guard, false);
    }
}

impl Future for Responding {
    type Output = Result<hyper::Response<TrackedBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let shared = &*this.shared;
        if !this.counted {
            this.counted = true;
            shared.count_request();
        }
        let resp = match &mut this.answer {
            Answer::App(fut) => match fut.as_mut().poll(cx) {
                Poll::Ready(resp) => resp,
                Poll::Pending => {
                    set_busy(&mut this.busy, &this.guard, true);
                    return Poll::Pending;
                }
            },
            Answer::Forkd(resp) => match resp.take() {
                Some(resp) => *resp,
                None => refusal(shared, Violation::Malformed("polled after its answer")),
            },
            Answer::TooLarge => {
                shared.board.header().count_rejection(Rejection::MaxBody);
                refusal(shared, Violation::BodyTooLarge)
            }
            Answer::BadHost => {
                shared.board.header().count_rejection(Rejection::Malformed);
                refusal(shared, Violation::Malformed("invalid :authority or Host"))
            }
        };
        set_busy(&mut this.busy, &this.guard, false);
        let Some(mut guard) = this.guard.take() else {
            // Polled again after it answered: hyper never does.
            return Poll::Pending;
        };
        let verdict = this.verdict.take();
        // A body forkd cut (HTTP/1: the IO refused this request's bytes;
        // HTTP/2: the stream's body passed a limit) replaces the app's answer.
        let cut = match &verdict {
            None => guard.state.refusal_for(guard.number),
            Some(verdict) => verdict.get().map(|cut| match cut {
                Cut::TooLarge => {
                    shared.board.header().count_rejection(Rejection::MaxBody);
                    Violation::BodyTooLarge
                }
                Cut::Stalled => {
                    shared
                        .board
                        .header()
                        .count_rejection(Rejection::BodyReadTimeout);
                    Violation::BodyTimeout
                }
            }),
        };
        // Taken apart once and put together once around the tracked body: each move of
        // a response is a copy of some 150 bytes.
        let (mut parts, inner) = match cut {
            Some(violation) => refusal(shared, violation),
            None => resp,
        }
        .into_parts();
        let status = parts.status;
        if status == hyper::StatusCode::SWITCHING_PROTOCOLS || (this.connect && status.is_success())
        {
            // hyper hands the connection to the upgrade after this response.
            guard.state.switched.store(true, Release);
        }
        guard.status = status.as_u16();
        guard.head_only = this.head
            || status.is_informational()
            || status == hyper::StatusCode::NO_CONTENT
            || status == hyper::StatusCode::NOT_MODIFIED;
        if (cut.is_some() || shared.is_draining()) && !parts.headers.contains_key(CONNECTION) {
            parts
                .headers
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        let request = Arc::new(guard);
        if request.h2.is_some() {
            let stream: Arc<dyn StreamProgress> = request.clone();
            request.state.streams.add(Arc::downgrade(&stream));
        }
        let body = TrackedBody {
            inner,
            request,
            // forkd's own refusal is sent whole; the app's answer is cut.
            cut: verdict.filter(|_| cut.is_none()),
            busy: false,
        };
        Poll::Ready(Ok(hyper::Response::from_parts(parts, body)))
    }
}

/// Serves one accepted connection until it ends, is idle too long, or the drain ends it.
pub async fn serve<T>(
    shared: Arc<Shared>,
    stream: T,
    peer: Peer,
    open: crate::worker::state::OpenConnection,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::new());
    let alpn = match &peer.tls {
        Some(tls) if tls.h2 => Alpn::H2,
        Some(tls) if tls.http1 => Alpn::Http1,
        _ => Alpn::None,
    };
    if alpn == Alpn::H2 {
        // ALPN chose HTTP/2: the drain sends GOAWAY even before the scanner has seen
        // the preface.
        state.mark_http2();
    }
    let peer = Arc::new(peer);
    let peer_name = peer.clone();
    let extensions = ConnExtensions {
        peer: peer.clone(),
        made: std::sync::OnceLock::new(),
    };
    let io = GuardedIo::new(
        stream,
        state.clone(),
        shared.limits,
        shared.body_read_timeout,
        shared.board.header(),
        shared.access_log.clone().map(|log| (log, peer.clone())),
        Some(open),
    )
    .with_send_timeout(shared.send_timeout);
    let service = {
        let shared = shared.clone();
        let state = state.clone();
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let began = shared.timing.then(Instant::now);
            // The request is taken apart and put together once, as the app's: each
            // move of it is a copy of some 200 bytes.
            let (mut parts, incoming) = req.into_parts();
            crate::worker::http::head::absolute_form_host(&mut parts);
            let (body, verdict) = limit_body(&shared, parts.version, incoming);
            let first = state.requests.load(Relaxed) == 0;
            let record = prepare(&shared, &peer, &extensions, first, &mut parts);
            // Made before the future: if hyper drops the future unpolled or half-way
            // (stream reset, panic), the guard still ends the request.
            let guard = RequestGuard::new(&shared, state.clone(), began, record);
            let connect = parts.method == hyper::Method::CONNECT;
            let head = parts.method == hyper::Method::HEAD;
            let answer = match shared
                .health
                .answer(parts.uri.path(), shared.board.header())
            {
                Some(resp) => Answer::Forkd(Some(Box::new(resp))),
                None if !crate::worker::http::head::h2_hosts_valid(&parts) => Answer::BadHost,
                None if declares_too_large_h2_body(&parts, shared.limits.max_body) => {
                    Answer::TooLarge
                }
                None => Answer::App(shared.app.call(hyper::Request::from_parts(parts, body))),
            };
            Responding {
                answer,
                guard: Some(guard),
                verdict,
                shared: shared.clone(),
                connect,
                head,
                counted: false,
                busy: false,
            }
        })
    };
    // With upgrades: an app answering 101 (a WebSocket) gets the connection's IO
    // (`hyper::upgrade::on`), which the limits IO then passes through unscanned.
    let conn = shared.http.serve(io, service, alpn);
    tokio::pin!(conn);
    let mut drain = shared.drain_signal();
    let mut drain_seen = *drain.borrow();
    let mut goaway_sent = false;
    // Set when the client floods resets: the connection ends then, whatever is open.
    let mut close_at: Option<Instant> = None;
    let keepalive = shared.keepalive;
    let header_timeout = shared.header_read_timeout;
    let send_timeout = shared.send_timeout;
    // While a request is in flight the loop looks at the connection this often: it
    // samples the send watchdog (the IO times blocked writes to the millisecond).
    let busy_recheck = keepalive
        .min(send_timeout / 4)
        .max(Duration::from_millis(100));
    let mut send_watch = SendWatch::default();
    let mut watch = WatchWake::default();
    loop {
        if drain_seen && !goaway_sent && state.is_h2.load(Relaxed) {
            conn.as_mut().graceful_shutdown();
            goaway_sent = true;
        }
        if send_watch.stalled(
            state.waits_to_send(),
            state.body_written.load(Relaxed),
            monotonic_ms(),
            send_timeout.as_millis() as u64,
        ) {
            // Response bytes have waited send_timeout with none written: the client does
            // not read (or, on HTTP/2, keeps its flow-control window shut).
            state.close_for(Incomplete::SendTimeout);
            break;
        }
        if state.is_h2.load(Relaxed) {
            // A stream whose client keeps its window shut while others move: reset.
            state
                .streams
                .stop_stalled(monotonic_ms(), send_timeout.as_millis() as u64);
        }
        let wait = match state.time_left(keepalive, header_timeout, busy_recheck) {
            Ok(wait) => match close_at {
                Some(at) => match at.checked_duration_since(Instant::now()) {
                    Some(left) => wait.min(left),
                    None => {
                        state.close_for(Incomplete::ServerClosed);
                        break;
                    }
                },
                None => wait,
            },
            Err(Closing::Idle) => break,
            Err(Closing::HeaderTimeout) => {
                shared
                    .board
                    .header()
                    .count_rejection(Rejection::HeaderReadTimeout);
                break;
            }
        };
        if close_at.is_none() && state.flooding.load(Relaxed) {
            tracing::warn!(
                pid = std::process::id(),
                peer = %peer_name.display,
                streams = state.streams_ended.load(Relaxed),
                abandoned = state.streams_abandoned.load(Relaxed),
                "HTTP/2 client abandons most of its streams as it opens them \
                 (rapid reset): closing the connection"
            );
            if !goaway_sent {
                conn.as_mut().graceful_shutdown();
                goaway_sent = true;
            }
            close_at = Some(Instant::now() + RESET_FLOOD_GRACE);
            continue;
        }
        let wait = if state.is_h2.load(Relaxed) {
            wait.min(H2_WATCH)
        } else {
            wait
        };
        // A connection not yet known to be HTTP/2 waits long (its first head, or
        // keep-alive): should it turn out to be HTTP/2, the loop must look again within
        // `H2_WATCH` (its streams' send watchdog and reset-flood check).
        let h2_later = (!state.is_h2.load(Relaxed) && wait > H2_WATCH).then_some(&state.is_h2);
        let woke = {
            let sleep = std::pin::pin!(tokio::time::sleep(wait));
            let changed = std::pin::pin!(drain.changed());
            Woke::wait(
                conn.as_mut(),
                sleep,
                (!drain_seen).then_some(changed),
                h2_later,
                &mut watch,
            )
            .await
        };
        match woke {
            Woke::Ended { hyper_refused } => {
                if hyper_refused {
                    // Never expected: the scanner refuses first every head hyper would
                    // (`head.rs`); if hyper answered 400 itself, it still leaves a trace.
                    shared.board.header().count_rejection(Rejection::Malformed);
                    if let Some(log) = &shared.access_log {
                        crate::worker::http::io::log_refused(log, &peer_name, b"", 400, "");
                    }
                }
                break;
            }
            Woke::Timer => {}
            Woke::Drain { closed } => drain_seen = closed || *drain.borrow(),
        }
    }
}

/// Whether a connection ended in hyper's own refusal of a request head (a parse
/// error, which hyper answers 400, 414 or 431 itself).
fn refused_by_hyper(error: &crate::worker::http::sniff::ConnError) -> bool {
    error
        .downcast_ref::<hyper::Error>()
        .is_some_and(|e| e.is_parse() || e.is_parse_too_large() || e.is_parse_status())
}

/// What ended one wait of a connection's loop.
enum Woke {
    /// The connection is done; `hyper_refused`: hyper refused a request head itself.
    Ended { hyper_refused: bool },
    /// The watchdog's timer.
    Timer,
    /// The drain signal changed (or its sender is gone).
    Drain { closed: bool },
}

impl Woke {
    /// Waits for the connection to end, the timer, or the drain signal (None: not
    /// watched), or (`h2_later`) for the connection to turn out to be HTTP/2. The connection is polled on every wake-up of the task; the timer and
    /// the drain signal only after one of them woke it (or after a new wait began),
    /// which on a busy connection is almost never: `tokio::select!` would poll all
    /// three on each of its wake-ups, once or more per request.
    async fn wait<C, E>(
        mut conn: Pin<&mut C>,
        mut sleep: Pin<&mut tokio::time::Sleep>,
        mut drain: Option<Pin<&mut E>>,
        h2_later: Option<&AtomicBool>,
        watch: &mut WatchWake,
    ) -> Woke
    where
        C: Future<Output = Result<(), crate::worker::http::sniff::ConnError>>,
        E: Future<Output = Result<(), tokio::sync::watch::error::RecvError>>,
    {
        watch.rearm();
        std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                return Poll::Ready(Woke::Ended {
                    hyper_refused: result.as_ref().is_err_and(refused_by_hyper),
                });
            }
            if h2_later.is_some_and(|h2| h2.load(Relaxed)) {
                // The connection turned out to be HTTP/2: time it as such.
                return Poll::Ready(Woke::Timer);
            }
            let Some(waker) = watch.poll_with(cx) else {
                return Poll::Pending;
            };
            let mut watch_cx = Context::from_waker(waker);
            if sleep.as_mut().poll(&mut watch_cx).is_ready() {
                return Poll::Ready(Woke::Timer);
            }
            if let Some(drain) = drain.as_mut() {
                if let Poll::Ready(changed) = drain.as_mut().poll(&mut watch_cx) {
                    return Poll::Ready(Woke::Drain {
                        closed: changed.is_err(),
                    });
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// The waker a connection's timer and drain signal are polled with: it notes that one
/// of them fired, then wakes the connection's task.
struct WatchWaker {
    fired: AtomicBool,
    task: Waker,
}

impl Wake for WatchWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Release);
        self.task.wake_by_ref();
    }
}

/// A connection's [`WatchWaker`], made again if the task's waker changes.
#[derive(Default)]
struct WatchWake {
    waker: Option<(Arc<WatchWaker>, Waker)>,
    /// New futures to poll: poll them whatever `fired` says.
    force: bool,
}

impl WatchWake {
    fn rearm(&mut self) {
        self.force = true;
    }

    /// The waker to poll the timer and the drain signal with, if they need a poll.
    fn poll_with(&mut self, cx: &Context<'_>) -> Option<&Waker> {
        let current = self
            .waker
            .as_ref()
            .is_some_and(|(watch, _)| watch.task.will_wake(cx.waker()));
        if !current {
            let watch = Arc::new(WatchWaker {
                fired: AtomicBool::new(false),
                task: cx.waker().clone(),
            });
            self.waker = Some((watch.clone(), Waker::from(watch)));
            // Registered with an old waker: poll again with the new one.
            self.force = true;
        }
        let (watch, waker) = self.waker.as_ref()?;
        let fired = watch.fired.swap(false, AcqRel);
        if std::mem::take(&mut self.force) || fired {
            Some(waker)
        } else {
            None
        }
    }
}

/// The client address (and scheme) the app sees, and the access log record.
/// `extensions` are the connection's; `first`: this is its first request.
fn prepare(
    shared: &Shared,
    peer: &Peer,
    extensions: &ConnExtensions,
    first: bool,
    req: &mut hyper::http::request::Parts,
) -> Option<Box<Record>> {
    let forwarded = if peer.trusted {
        crate::worker::http::forwarded::resolve(&shared.proxies, peer.ip(), &req.headers)
    } else {
        None
    };
    let forwarded_scheme = forwarded.as_ref().and_then(|f| f.scheme);
    let scheme = forwarded_scheme.or(peer.tls.as_ref().map(|_| "https"));
    // The app sees the peer's `IP:PORT` unless a proxy names another address.
    let (remote, client) = match forwarded.map(|f| f.client) {
        Some(Client::Ip(ip)) if Some(ip) != peer.addr.map(|a| a.ip()) => {
            (Remote::Ip(ip), Some(Arc::from(ip.to_string())))
        }
        Some(Client::Unknown) => (Remote::Unknown, Some(Arc::from("unknown"))),
        _ => (peer.remote(), None),
    };
    let record = shared.access_log.as_ref().map(|log| {
        Box::new(log.capture(
            req,
            remote,
            peer.addr,
            scheme.unwrap_or("http"),
            peer.tls_fields(),
        ))
    });
    // The connection's extensions (`ClientAddr`, `ServerAddr`, and on TLS `Scheme`,
    // `ClientCertSubject`, `TlsServerName`), then what a trusted proxy says instead.
    let ours = &mut req.extensions;
    extensions.add_to(ours, first);
    if let Some(client) = client {
        ours.insert(ClientAddr(client));
    }
    if let Some(scheme) = forwarded_scheme {
        ours.insert(Scheme(scheme));
    }
    record
}

/// HTTP/1 bodies are limited by the scanner; an HTTP/2 request's declared length is
/// checked here.
fn declares_too_large_h2_body(req: &hyper::http::request::Parts, max_body: u64) -> bool {
    req.version == hyper::Version::HTTP_2
        && req
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|length| length > max_body)
}

/// forkd's own answer for a request it refused.
fn refusal(shared: &Shared, violation: Violation) -> crate::app::Response {
    let (status, _) = violation.status();
    respond(
        status,
        "text/plain; charset=utf-8",
        violation.explain(&shared.limits),
    )
}

/// The body the app reads: HTTP/1 bodies are held to the limits by the IO already;
/// an HTTP/2 stream's body is held to them here (with its verdict for the answer).
#[inline]
fn limit_body(
    shared: &Shared,
    version: hyper::Version,
    incoming: hyper::body::Incoming,
) -> (RequestBody, Option<Verdict>) {
    if version == hyper::Version::HTTP_2 {
        let (body, verdict) =
            RequestBody::limited(incoming, shared.limits.max_body, shared.body_read_timeout);
        (body, Some(verdict))
    } else {
        (RequestBody::plain(incoming), None)
    }
}

impl Shared {
    fn count_request(&self) {
        let served = self.slot.count_request();
        if self.request_limit != 0 && served == self.request_limit {
            tracing::info!(
                pid = std::process::id(),
                requests = served,
                "worker reached max_requests, asking to be replaced"
            );
            self.slot.set_flag(FLAG_RETIRE);
            crate::worker::doorbell::ring();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the task's wake-ups.
    struct Task(AtomicUsize);
    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    /// hyper's own refusal of a head is recognised; an ordinary end or an IO error is not.
    #[test]
    fn hyper_refusals_are_recognised() {
        let serve = |input: &'static [u8]| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (mut client, server) = tokio::io::duplex(4096);
                use tokio::io::AsyncWriteExt;
                client.write_all(input).await.unwrap();
                client.shutdown().await.unwrap();
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(http_body_util::Empty::<Bytes>::new()))
                });
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(server), service)
                    .await
                    .map_err(|e| -> super::super::sniff::ConnError { Box::new(e) })
            })
        };
        let refused = serve(b"GET / HTTP/9.9\r\n\r\n").unwrap_err();
        assert!(refused_by_hyper(&refused));
        // (An early end of the client's side is an error too, but not a refusal.)
        assert!(!serve(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .as_ref()
            .is_err_and(refused_by_hyper));
        let io: super::super::sniff::ConnError = Box::new(std::io::Error::other("reset"));
        assert!(!refused_by_hyper(&io));
    }

    #[test]
    fn the_send_watch_fires_only_after_a_whole_timeout_without_progress() {
        let mut watch = SendWatch::default();
        // Nothing waits to be sent: never stalled, however long.
        assert!(!watch.stalled(false, 0, 0, 1000));
        assert!(!watch.stalled(false, 0, 10_000, 1000));
        // Bytes wait from t=10 s: the clock starts there.
        assert!(!watch.stalled(true, 0, 10_000, 1000));
        assert!(!watch.stalled(true, 0, 10_999, 1000));
        // Progress restarts it.
        assert!(!watch.stalled(true, 5, 10_999, 1000));
        assert!(!watch.stalled(true, 5, 11_500, 1000));
        assert!(watch.stalled(true, 5, 11_999, 1000));
        // Waiting on the app in between (nothing to send) resets it too.
        assert!(!watch.stalled(false, 5, 12_000, 1000));
        assert!(!watch.stalled(true, 5, 12_100, 1000));
        assert!(!watch.stalled(true, 5, 13_000, 1000));
        assert!(watch.stalled(true, 5, 13_100, 1000));
    }

    #[test]
    fn the_watchdog_is_polled_only_when_new_or_woken() {
        let task = Arc::new(Task(AtomicUsize::new(0)));
        let waker = Waker::from(task.clone());
        let cx = Context::from_waker(&waker);
        let mut watch = WatchWake::default();
        // The first poll registers the timer and the drain signal.
        let registered = watch.poll_with(&cx).cloned();
        assert!(registered.is_some());
        // Woken by the socket only: the connection is polled, the watchdog is not.
        assert!(watch.poll_with(&cx).is_none());
        // The timer fires: the task wakes and the next poll polls the watchdog, once.
        registered.as_ref().map(Waker::wake_by_ref);
        assert_eq!(task.0.load(SeqCst), 1);
        assert!(watch.poll_with(&cx).is_some());
        assert!(watch.poll_with(&cx).is_none());
        // A new wait (a new timer) is polled whatever fired.
        watch.rearm();
        assert!(watch.poll_with(&cx).is_some());
        // Another task waker (the task moved): the watchdog is polled with a new one.
        let other = Waker::from(Arc::new(Task(AtomicUsize::new(0))));
        assert!(watch.poll_with(&Context::from_waker(&other)).is_some());
    }
}
