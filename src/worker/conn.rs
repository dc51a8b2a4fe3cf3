//! One client connection in a worker: serves it with hyper (HTTP/1.1, or HTTP/2 with
//! prior knowledge) over the limit-checking IO of `io.rs`, and wraps every request:
//! health paths, the client address behind trusted proxies, request counting, the
//! duration histogram and the access log line. It also owns the keep-alive, header
//! timeout and drain policy.
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
//! and is closed (`RESET_FLOOD_STREAMS`).

use super::io::GuardedIo;
use super::limits::Violation;
use super::protocol::Alpn;
use super::Shared;
use crate::access_log::{AccessLog, Outcome, Record, Remote};
use crate::app::RequestBody;
use crate::app::{respond, Body, ClientAddr, ClientCertSubject, Scheme, ServerAddr, TlsServerName};
use crate::body::{Cut, Verdict};
use crate::forwarded::Client;
use crate::scoreboard::{monotonic_ms, Rejection, Slot, FLAG_RETIRE};
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// An HTTP/2 stream the client resets (or leaves) this soon after opening it, before
/// its response is done, was abandoned early.
const EARLY_RESET_MS: u64 = 1000;
/// How often the loop of an HTTP/2 connection looks for a reset flood.
const H2_WATCH: Duration = Duration::from_millis(100);

/// Once a connection's client has abandoned this many streams early, and they are more
/// than half of the streams it opened, it is flooding resets (CVE-2023-44487 paced to
/// stay under h2's limit of resets waiting to be accepted): GOAWAY, then close.
const RESET_FLOOD_STREAMS: u64 = 100;
/// How long in-flight streams get after that GOAWAY before the connection is closed.
const RESET_FLOOD_GRACE: Duration = Duration::from_secs(1);

/// Who is at the other end of a connection.
pub(super) struct Peer {
    /// None for unix sockets.
    pub addr: Option<SocketAddr>,
    /// The local end (TCP only), for apps that want it (`ServerAddr`).
    pub local: Option<SocketAddr>,
    /// `ClientAddr` when no trusted proxy says otherwise: `IP:PORT`, or `unix`; made
    /// once per connection, shared by its requests.
    pub display: Arc<str>,
    /// The peer is in `forwarded_allow_ips`: its proxy headers are believed.
    pub trusted: bool,
    /// What the TLS handshake negotiated, on a TLS connection.
    pub tls: Option<crate::tls::TlsInfo>,
}

impl Peer {
    pub(super) fn new(addr: Option<SocketAddr>, shared: &Shared) -> Peer {
        let ip = addr.map_or(crate::forwarded::UNIX_PEER, |a| a.ip());
        Peer {
            addr,
            local: None,
            display: addr.map_or_else(|| Arc::from("unix"), |a| Arc::from(a.to_string())),
            trusted: shared.proxies.trusts(ip),
            tls: None,
        }
    }
    /// The TLS version and cipher suite, for the access log.
    pub(super) fn tls_fields(&self) -> Option<(&'static str, &'static str)> {
        self.tls.as_ref().map(|t| (t.version, t.cipher))
    }
    fn ip(&self) -> IpAddr {
        self.addr.map_or(crate::forwarded::UNIX_PEER, |a| a.ip())
    }
    /// The log's `remote_addr` when no trusted proxy names the client.
    pub(super) fn remote(&self) -> Remote {
        self.addr.map_or(Remote::Unix, |a| Remote::Ip(a.ip()))
    }
    /// Inserts the request extensions this connection gives each of its requests
    /// unless a trusted proxy says otherwise (`prepare`).
    fn add_extensions(&self, extensions: &mut hyper::http::Extensions) {
        extensions.insert(ClientAddr(self.display.clone()));
        if let Some(local) = self.local {
            extensions.insert(ServerAddr(local));
        }
        if let Some(tls) = &self.tls {
            extensions.insert(Scheme("https"));
            if let Some(subject) = &tls.client_subject {
                extensions.insert(ClientCertSubject(subject.clone()));
            }
            if let Some(name) = &tls.server_name {
                extensions.insert(TlsServerName(name.clone()));
            }
        }
    }
}

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

/// What the connection's watchdog needs to know, updated from the IO and the service.
pub(super) struct ConnState {
    in_flight: AtomicU64,
    bytes_read: AtomicU64,
    /// `bytes_read` when the connection last became idle.
    bytes_read_at_idle: AtomicU64,
    idle_since_ms: AtomicU64,
    is_h2: AtomicBool,
    /// Requests the service has started (HTTP/1: their number on the connection,
    /// which is the scanner's count of heads).
    requests: AtomicU64,
    /// The number of the HTTP/1 request whose body the IO refused (0: none), and why:
    /// that request's response becomes the refusal (413, 400, 431, 408), not another's.
    refused_request: AtomicU64,
    refused: Mutex<Option<Violation>>,
    /// The app switched protocols (101, or 2xx to `CONNECT`): the IO stops scanning.
    switched: AtomicBool,
    /// Until the first request, a silent connection gets `header_read_timeout`, not
    /// the (shorter, possibly zero) keep-alive period.
    served_any: AtomicBool,
    /// HTTP/2 streams ended, and of them those the client abandoned early.
    streams_ended: AtomicU64,
    streams_abandoned: AtomicU64,
    /// The client turned out to be flooding resets: the connection's loop, which looks
    /// at least every [`H2_WATCH`] on HTTP/2, closes it (a flag rather than a `Notify`,
    /// which would be polled on every wake-up of every connection).
    flooding: AtomicBool,
}

impl ConnState {
    pub(super) fn new() -> ConnState {
        ConnState {
            in_flight: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_read_at_idle: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(monotonic_ms()),
            is_h2: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            refused_request: AtomicU64::new(0),
            refused: Mutex::new(None),
            switched: AtomicBool::new(false),
            served_any: AtomicBool::new(false),
            streams_ended: AtomicU64::new(0),
            streams_abandoned: AtomicU64::new(0),
            flooding: AtomicBool::new(false),
        }
    }

    pub(super) fn add_bytes_read(&self, n: usize) {
        self.bytes_read.fetch_add(n as u64, Release);
    }
    pub(super) fn mark_http2(&self) {
        self.is_h2.store(true, Relaxed);
    }
    /// The IO refused request `request`'s body.
    pub(super) fn refuse(&self, request: u64, violation: Violation) {
        if let Ok(mut refused) = self.refused.lock() {
            *refused = Some(violation);
        }
        self.refused_request.store(request, Release);
    }
    /// Why request `request`'s body was refused, if it was.
    #[inline]
    fn refusal_for(&self, request: u64) -> Option<Violation> {
        if self.refused_request.load(Acquire) != request {
            return None;
        }
        self.refused.lock().ok().and_then(|refused| *refused)
    }
    pub(super) fn switched_protocols(&self) -> bool {
        self.switched.load(Acquire)
    }

    /// How long until this connection should be closed for being idle (keep-alive) or
    /// for not finishing its headers; `Err` says which, and means close now.
    fn time_left(
        &self,
        keepalive: Duration,
        header_timeout: Duration,
    ) -> Result<Duration, Closing> {
        if self.in_flight.load(Acquire) > 0 {
            // Re-check after a while; a request in progress is never cut here.
            return Ok(keepalive.max(Duration::from_millis(100)));
        }
        let idle_for = monotonic_ms().saturating_sub(self.idle_since_ms.load(Acquire));
        let partial = self.bytes_read.load(Acquire) != self.bytes_read_at_idle.load(Acquire);
        let waiting_for_first = !self.served_any.load(Acquire);
        let limit = if partial || waiting_for_first {
            header_timeout
        } else {
            keepalive
        };
        let limit_ms = limit.as_millis() as u64;
        if idle_for >= limit_ms {
            // A connection that never sent a whole request (not a byte, or part of a
            // head) holds a slot until `header_read_timeout`: counted as such.
            Err(if partial || waiting_for_first {
                Closing::HeaderTimeout
            } else {
                Closing::Idle
            })
        } else {
            Ok(Duration::from_millis(limit_ms - idle_for))
        }
    }

    /// Counts a request in; returns its number on the connection (1-based).
    fn request_started(&self) -> u64 {
        self.served_any.store(true, Release);
        self.in_flight.fetch_add(1, AcqRel);
        self.requests.fetch_add(1, Relaxed) + 1
    }

    fn request_finished(&self) {
        self.bytes_read_at_idle
            .store(self.bytes_read.load(Acquire), Release);
        self.idle_since_ms.store(monotonic_ms(), Release);
        self.in_flight.fetch_sub(1, AcqRel);
    }

    /// Counts an ended HTTP/2 stream; sets `flooding` when the abandoned ones
    /// first pass the bound.
    fn stream_ended(&self, abandoned_early: bool) {
        let ended = self.streams_ended.fetch_add(1, Relaxed) + 1;
        if abandoned_early {
            let abandoned = self.streams_abandoned.fetch_add(1, Relaxed) + 1;
            if abandoned >= RESET_FLOOD_STREAMS && abandoned * 2 > ended {
                self.flooding.store(true, Relaxed);
            }
        }
    }
}

/// Why the watchdog closes a connection.
enum Closing {
    Idle,
    /// No whole request head within `header_read_timeout`: part of one arrived, or
    /// nothing at all since the connection opened.
    HeaderTimeout,
}

/// The response body, wrapped so that the request counts as finished only when hyper
/// has written (and dropped) the whole body; counts the bytes sent.
pub struct TrackedBody {
    inner: Body,
    request: RequestGuard,
    /// HTTP/2: a request body cut after the response started resets the stream.
    cut: Option<Verdict>,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = crate::app::BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.cut.as_ref().is_some_and(|cut| cut.get().is_some()) {
            return Poll::Ready(Some(Err("request body cut by [limits]".into())));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.request.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.request.complete.store(true, Relaxed),
            _ => {}
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            // hyper asks this before and after each frame and stops once it is true.
            self.request.complete.store(true, Relaxed);
        }
        end
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One request from its head to the end of its response (or its abandonment): keeps
/// the connection's and the scoreboard's in-flight counts, and on drop records the
/// duration and writes the access log line. A request dropped before the app answered
/// (the client went away, an HTTP/2 stream was reset) is logged with status 499, as
/// nginx does, one whose handler panicked with 500; either no longer counts as in flight.
struct RequestGuard {
    /// The request's number on its connection.
    number: u64,
    state: Arc<ConnState>,
    slot: &'static Slot,
    began: Option<Instant>,
    record_duration: bool,
    log: Option<(Arc<AccessLog>, Box<Record>)>,
    status: u16,
    bytes: u64,
    /// The whole response was handed to hyper.
    complete: AtomicBool,
    /// When the request began (ms, monotonic), for HTTP/2 streams only.
    h2_began_ms: Option<u64>,
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
            began,
            record_duration: shared.record_durations,
            log: shared.access_log.clone().zip(log),
            status: 499,
            bytes: 0,
            complete: AtomicBool::new(false),
            h2_began_ms: state.is_h2.load(Relaxed).then(monotonic_ms),
            state,
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.state.request_finished();
        if let Some(began) = self.h2_began_ms {
            let early = !self.complete.load(Relaxed)
                && monotonic_ms().saturating_sub(began) < EARLY_RESET_MS;
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
        if let Some((log, record)) = &self.log {
            log.log(
                record,
                &Outcome {
                    status,
                    bytes: self.bytes,
                    duration: duration.unwrap_or_default(),
                },
            );
        }
    }
}

/// Who answers a request: forkd itself (a health path, boxed as it is rare), forkd's
/// 413 for an HTTP/2 request that declares too large a body, or the app.
enum Answer {
    Forkd(Option<Box<crate::app::Response>>),
    TooLarge,
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
    /// The request was counted (`count_request`), on the first poll.
    counted: bool,
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
            Answer::App(fut) => std::task::ready!(fut.as_mut().poll(cx)),
            Answer::Forkd(resp) => match resp.take() {
                Some(resp) => *resp,
                None => refusal(shared, Violation::Malformed("polled after its answer")),
            },
            Answer::TooLarge => {
                shared.board.header().count_rejection(Rejection::MaxBody);
                refusal(shared, Violation::BodyTooLarge)
            }
        };
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
        if (cut.is_some() || shared.is_draining()) && !parts.headers.contains_key(CONNECTION) {
            parts
                .headers
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        let body = TrackedBody {
            inner,
            request: guard,
            // forkd's own refusal is sent whole; the app's answer is cut.
            cut: verdict.filter(|_| cut.is_none()),
        };
        Poll::Ready(Ok(hyper::Response::from_parts(parts, body)))
    }
}

/// Serves one accepted connection until it ends, is idle too long, or the drain ends it.
pub async fn serve<T>(shared: Arc<Shared>, stream: T, peer: Peer, open: super::OpenConnection)
where
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
    );
    let service = {
        let shared = shared.clone();
        let state = state.clone();
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let began = shared.timing.then(Instant::now);
            // The request is taken apart and put together once, as the app's: each
            // move of it is a copy of some 200 bytes.
            let (mut parts, incoming) = req.into_parts();
            let (body, verdict) = limit_body(&shared, parts.version, incoming);
            let first = state.requests.load(Relaxed) == 0;
            let record = prepare(&shared, &peer, &extensions, first, &mut parts);
            // Made before the future: if hyper drops the future unpolled or half-way
            // (stream reset, panic), the guard still ends the request.
            let guard = RequestGuard::new(&shared, state.clone(), began, record);
            let connect = parts.method == hyper::Method::CONNECT;
            let answer = match shared
                .health
                .answer(parts.uri.path(), shared.board.header())
            {
                Some(resp) => Answer::Forkd(Some(Box::new(resp))),
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
                counted: false,
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
    let mut watch = WatchWake::default();
    loop {
        if drain_seen && !goaway_sent && state.is_h2.load(Relaxed) {
            conn.as_mut().graceful_shutdown();
            goaway_sent = true;
        }
        let wait = match state.time_left(keepalive, header_timeout) {
            Ok(wait) => match close_at {
                Some(at) => match at.checked_duration_since(Instant::now()) {
                    Some(left) => wait.min(left),
                    None => break,
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
        let woke = {
            let sleep = std::pin::pin!(tokio::time::sleep(wait));
            let changed = std::pin::pin!(drain.changed());
            Woke::wait(
                conn.as_mut(),
                sleep,
                (!drain_seen).then_some(changed),
                &mut watch,
            )
            .await
        };
        match woke {
            Woke::Ended => break,
            Woke::Timer => {}
            Woke::Drain { closed } => drain_seen = closed || *drain.borrow(),
        }
    }
}

/// What ended one wait of a connection's loop.
enum Woke {
    /// The connection is done.
    Ended,
    /// The watchdog's timer.
    Timer,
    /// The drain signal changed (or its sender is gone).
    Drain { closed: bool },
}

impl Woke {
    /// Waits for the connection to end, the timer, or the drain signal (None: not
    /// watched). The connection is polled on every wake-up of the task; the timer and
    /// the drain signal only after one of them woke it (or after a new wait began),
    /// which on a busy connection is almost never: `tokio::select!` would poll all
    /// three on each of its wake-ups, once or more per request.
    async fn wait<C, E>(
        mut conn: Pin<&mut C>,
        mut sleep: Pin<&mut tokio::time::Sleep>,
        mut drain: Option<Pin<&mut E>>,
        watch: &mut WatchWake,
    ) -> Woke
    where
        C: Future,
        E: Future<Output = Result<(), tokio::sync::watch::error::RecvError>>,
    {
        watch.rearm();
        std::future::poll_fn(|cx| {
            if conn.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Woke::Ended);
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
        crate::forwarded::resolve(&shared.proxies, peer.ip(), &req.headers)
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
            super::doorbell::ring();
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
