//! A worker process, from just after the fork to its exit: post-fork setup (signals,
//! parent-death signal, privileges, title), its own tokio runtime, the app built inside
//! it, accept loops on every inherited listener (with `max_connections`), the metrics
//! listener, progress reporting into the scoreboard, and the graceful drain.
//! Every HTTP/2 connection gets explicit bounds against floods (`configure_http2`).

mod balance;
mod conn;
#[cfg(test)]
mod differential;
mod health;
#[allow(unsafe_code)] // Vec::set_len after a read into spare capacity
mod io;
mod limits;

use crate::acceptor::{Accepted, Acceptor};
use crate::access_log::AccessLog;
use crate::app::{App, AppFactory};
use crate::config::Config;
use crate::forwarded::TrustedProxies;
use crate::listeners::Listener;
use crate::scoreboard::{monotonic_ms, Board, Handshake, Rejection, Slot, WorkerState};
use health::HealthPaths;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use limits::HeadLimits;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

use crate::protocol::EXIT_BOOT_ERROR;

/// Everything a worker gets from the master at fork time.
pub struct WorkerContext<'a> {
    pub number: u64,
    pub slot: &'static Slot,
    /// The whole scoreboard: the server-wide header and every slot, for `/metrics`.
    pub board: &'static Board,
    pub master_pid: i32,
    /// The write end of the master's doorbell pipe (the master's doorbell, see `crate::protocol`).
    pub doorbell: std::os::fd::RawFd,
    pub config: Arc<Config>,
    pub listeners: &'a [Listener],
    /// The `[metrics]` listener, if metrics are on.
    pub metrics: Option<&'a Listener>,
    pub app: WorkerApp,
    /// The `[tls]` of this worker's generation, loaded by the master before the fork.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// What a worker serves.
pub enum WorkerApp {
    /// A Rust app built in the worker's runtime.
    Native(AppFactory),
    /// An app of the host's runtime (Python): booted on the main thread, which then runs
    /// the host's event loop, while the server runs on a second thread.
    Hosted(crate::hosted::HostedProgram),
}

/// State shared by every task of the worker.
pub(crate) struct Shared {
    app: Arc<dyn App>,
    slot: &'static Slot,
    board: &'static Board,
    master_pid: i32,
    http: auto::Builder<TokioExecutor>,
    keepalive: Duration,
    header_read_timeout: Duration,
    /// `limits.body_read_timeout`; zero = off.
    body_read_timeout: Duration,
    /// This worker's own `max_requests` (with its jitter drawn); 0 = unlimited.
    request_limit: u64,
    draining: AtomicBool,
    drain_tx: watch::Sender<bool>,
    open_connections: AtomicUsize,
    all_closed: Notify,
    /// Rung when a connection closes while the accept loop is stepping back (accept
    /// balancing waits on it); `stepping_back` says whether anyone is waiting, so that
    /// a closing connection costs no lock otherwise.
    connection_closed: Notify,
    stepping_back: AtomicBool,
    limits: HeadLimits,
    max_connections: usize,
    /// `limits.max_connections_per_ip`; 0 = off.
    max_connections_per_ip: usize,
    /// Open connections per client IP, kept only when `max_connections_per_ip` is on.
    per_ip: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// "This worker is full" error-log lines, at most one per period.
    full_warning: Throttled,
    /// accept(2) failures (EMFILE...) in the error log, at most one line per period.
    accept_warning: Throttled,
    health: HealthPaths,
    proxies: TrustedProxies,
    access_log: Option<Arc<AccessLog>>,
    /// Metrics are on: record each request's duration in the slot's histogram.
    record_durations: bool,
    /// Something needs a request's start time (the histogram or the access log).
    timing: bool,
    /// Wraps connections accepted on `tls://` listeners.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// `tls.handshake_timeout`.
    handshake_timeout: Duration,
}

impl Shared {
    fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }
    fn drain_signal(&self) -> watch::Receiver<bool> {
        self.drain_tx.subscribe()
    }
    fn start_drain(&self) {
        if !self.draining.swap(true, AcqRel) {
            self.slot.set_state(WorkerState::Draining);
            let _ = self.drain_tx.send(true);
        }
    }
}

/// This worker's end of the master's doorbell pipe, set once at boot.
static DOORBELL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Tells the master that this worker's scoreboard slot changed: one byte into the
/// doorbell pipe (non-blocking: a full pipe has rung already). Works whatever uid the
/// worker switched to, which a signal to a root master would not.
#[allow(unsafe_code)] // write(2) to an inherited raw fd
pub(crate) fn ring_doorbell(_master_pid: i32) {
    let fd = DOORBELL.load(Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) of one byte from a valid buffer to the inherited pipe.
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}

/// Runs the worker; never returns.
#[allow(clippy::disallowed_methods)] // process::exit: the worker's exit point
pub fn run(ctx: WorkerContext<'_>) -> ! {
    let code = match boot_and_serve(ctx) {
        Ok(()) => 0,
        Err(code) => code,
    };
    std::process::exit(code)
}

#[allow(unsafe_code)] // prctl(PR_SET_PDEATHSIG) with a realtime signal
fn boot_and_serve(ctx: WorkerContext<'_>) -> Result<(), i32> {
    let WorkerContext {
        number,
        slot,
        board,
        master_pid,
        doorbell,
        config,
        listeners,
        metrics,
        app,
        tls,
    } = ctx;
    DOORBELL.store(doorbell, Relaxed);
    crate::logging::in_worker();
    let pid = std::process::id() as i32;
    slot.set_pid(pid);
    slot.set_number(number);
    crate::proctitle::set(&format!("forkd: worker [{number}]"));
    if let Err(e) = crate::privileges::detach_from_terminal() {
        return Err(boot_failed(slot, &e));
    }
    if let Err(e) = crate::privileges::drop_for_worker(&config) {
        return Err(boot_failed(slot, &e));
    }
    // After any uid change (which clears it): hear of the master's death, then close
    // the race where the master died before prctl. Its own signal, not TERM: a worker
    // whose master is gone closes its listeners at once (see `wait_for_stop_signal`).
    // SAFETY: prctl(2) with an integer argument.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            crate::protocol::master_died_signal() as libc::c_ulong,
        )
    };
    if nix::unistd::getppid().as_raw() != master_pid {
        return Err(0);
    }
    let server = Server {
        number,
        slot,
        board,
        master_pid,
        config: config.clone(),
        listeners,
        metrics,
        tls,
    };
    match app {
        WorkerApp::Native(factory) => {
            let runtime = new_runtime(&config).map_err(|e| boot_failed(slot, &e))?;
            runtime.block_on(async move {
                // First thing in the runtime, so that the master's death during the
                // app's start is heard (and acted on once serving) rather than killing
                // the worker.
                let orphaned = master_death();
                let app = build_app(factory)
                    .await
                    .map_err(|reason| boot_failed(slot, &reason))?;
                server.serve(app, true, orphaned).await
            })
        }
        WorkerApp::Hosted(program) => serve_hosted(server, &program),
    }
}

/// The master's death, as the worker hears it (its own parent-death signal).
fn master_death() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(
        crate::protocol::master_died_signal(),
    ))
    .ok()
}

/// A worker's tokio runtime, made after the fork.
fn new_runtime(config: &Config) -> Result<tokio::runtime::Runtime, String> {
    if config.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("cannot start runtime: {e}"))
}

/// A hosted app: boot it on the main thread (import, startup), serve on a second
/// thread, and give the main thread to the host's event loop until the drain is over.
fn serve_hosted(server: Server<'_>, program: &crate::hosted::HostedProgram) -> Result<(), i32> {
    let slot = server.slot;
    let booted = (program.loader)(&crate::hosted::HostedBoot {
        spec: &program.spec,
        config: &server.config,
        slot,
        progress_every: progress_interval(server.config.timeout),
    })
    .map_err(|reason| boot_failed(slot, &reason))?;
    let crate::hosted::Booted { app, run, stop } = booted;
    std::thread::scope(|scope| {
        let serving = std::thread::Builder::new()
            .name("forkd-server".into())
            .spawn_scoped(scope, move || {
                let served = new_runtime(&server.config)
                    .map_err(|e| boot_failed(slot, &e))
                    .and_then(|runtime| {
                        runtime.block_on(async move {
                            let orphaned = master_death();
                            server.serve(app, false, orphaned).await
                        })
                    });
                stop();
                served
            })
            .map_err(|e| boot_failed(slot, &format!("cannot start the server thread: {e}")))?;
        if let Err(e) = run() {
            tracing::error!(pid = std::process::id(), "the app's event loop failed: {e}");
            crate::logging::flush();
            // The server thread is still serving inside this scope, which would wait
            // for it: the worker ends here, as at its other exit points.
            #[allow(clippy::disallowed_methods)]
            std::process::exit(1);
        }
        serving.join().unwrap_or(Err(1))
    })
}

/// What the serving half of a worker needs.
struct Server<'a> {
    number: u64,
    slot: &'static Slot,
    board: &'static Board,
    master_pid: i32,
    config: Arc<Config>,
    listeners: &'a [Listener],
    metrics: Option<&'a Listener>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Server<'_> {
    /// Serves until told to stop, then drains. `report_progress`: stamp progress from
    /// this runtime (a hosted app's own loop stamps it instead).
    async fn serve(
        self,
        app: Arc<dyn App>,
        report_progress: bool,
        orphaned: Option<tokio::signal::unix::Signal>,
    ) -> Result<(), i32> {
        let Server {
            number,
            slot,
            board,
            master_pid,
            config,
            listeners,
            metrics,
            tls,
        } = self;
        let access_log = AccessLog::start(
            &config.log.access_log,
            config.log.access_log_format.as_ref(),
            config.log.format == crate::config::LogFormat::Json,
            number,
        )
        .map_err(|e| boot_failed(slot, &e))?
        .map(Arc::new);
        let proxies = config.forwarded_allow_ips.clone();
        let mut shared = new_shared(app, (slot, board), master_pid, &config, access_log, proxies);
        shared.tls = tls.map(tokio_rustls::TlsAcceptor::from);
        let shared = Arc::new(shared);
        let mut accepting =
            start_accepting(&shared, listeners).map_err(|e| boot_failed(slot, &e))?;
        if let Some(listener) = metrics {
            accepting.push(
                crate::metrics::serve(listener, board, shared.drain_signal())
                    .map_err(|e| boot_failed(slot, &e))?,
            );
        }
        close_inherited_listeners(listeners, metrics);
        if report_progress {
            tokio::spawn(self::report_progress(
                slot,
                progress_interval(config.timeout),
            ));
        }
        slot.set_state(WorkerState::Ready);
        ring_doorbell(master_pid);
        tracing::debug!(pid = std::process::id(), worker = number, "worker ready");
        wait_for_stop_signal(&shared, orphaned).await;
        drain(&shared, accepting, config.graceful_timeout).await;
        Ok(())
    }
}

/// Closes the worker's copies of the master's listening fds, inherited by the fork:
/// the accept tasks serve their own duplicates, which the drain closes. Otherwise a
/// worker left behind by a master killed with SIGKILL would keep the port bound (the
/// kernel accepting connections nobody serves, a restarted master failing with
/// "Address already in use") until its last request ends.
fn close_inherited_listeners(listeners: &[Listener], metrics: Option<&Listener>) {
    use std::os::fd::AsRawFd;
    for listener in listeners.iter().chain(metrics) {
        // The `Listener`s are the master's, never dropped in this process (it leaves
        // with `exit`), so nothing closes these numbers a second time.
        let _ = nix::unistd::close(listener.fd.as_raw_fd());
    }
}

/// Records a boot failure in the slot (the master reports it) and returns the exit code.
fn boot_failed(slot: &Slot, reason: &str) -> i32 {
    let shown = crate::logging::escape_untrusted(reason.as_bytes(), 4096);
    tracing::error!(pid = std::process::id(), "worker failed to boot: {shown}");
    slot.set_message(reason);
    EXIT_BOOT_ERROR
}

/// Builds the app in a task so that a panicking constructor is caught and reported.
async fn build_app(factory: AppFactory) -> Result<Arc<dyn App>, String> {
    match tokio::spawn(factory()).await {
        Ok(Ok(app)) => Ok(app),
        Ok(Err(e)) => Err(format!("app failed to start: {e}")),
        Err(join) if join.is_panic() => {
            let payload = join.into_panic();
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(format!("app panicked at start: {text}"))
        }
        Err(e) => Err(format!("app failed to start: {e}")),
    }
}

/// hyper's own default for `max_headers`; above it hyper must be told (and then
/// allocates the header array per request, so it is set only when needed).
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

fn new_shared(
    app: Arc<dyn App>,
    (slot, board): (&'static Slot, &'static Board),
    master_pid: i32,
    config: &Config,
    access_log: Option<Arc<AccessLog>>,
    proxies: TrustedProxies,
) -> Shared {
    let limits = HeadLimits::from_config(&config.limits);
    let mut http = auto::Builder::new(TokioExecutor::new());
    let mut http1 = http.http1();
    // forkd times header reads itself (`header_read_timeout`, conn.rs) and the limits
    // scanner hands hyper only whole heads, so hyper's buffer must fit the largest
    // head the limits allow.
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        // A client may end its side after its request (and the limits IO ends the read
        // side before a refused request): the response still goes out.
        .half_close(true)
        .keep_alive(!config.keepalive.is_zero())
        .max_buf_size((limits.max_head_bytes() + 64 * 1024).max(400 * 1024));
    if config.limits.request_fields > HYPER_DEFAULT_MAX_HEADERS {
        http1.max_headers(config.limits.request_fields);
    }
    configure_http2(&mut http, config);
    let (drain_tx, _) = watch::channel(false);
    let record_durations = config.metrics.bind.is_some();
    Shared {
        app,
        slot,
        board,
        master_pid,
        http,
        keepalive: config.keepalive,
        header_read_timeout: config.limits.header_read_timeout,
        body_read_timeout: config.limits.body_read_timeout,
        request_limit: request_limit(config.max_requests, config.max_requests_jitter),
        draining: AtomicBool::new(false),
        drain_tx,
        open_connections: AtomicUsize::new(0),
        all_closed: Notify::new(),
        connection_closed: Notify::new(),
        stepping_back: AtomicBool::new(false),
        limits,
        max_connections: config.limits.max_connections,
        max_connections_per_ip: config.limits.max_connections_per_ip,
        per_ip: Default::default(),
        full_warning: Throttled::new(Duration::from_secs(10)),
        accept_warning: Throttled::new(Duration::from_secs(5)),
        health: HealthPaths::from_config(&config.health),
        proxies,
        timing: record_durations || access_log.is_some(),
        access_log,
        record_durations,
        tls: None,
        handshake_timeout: config.tls.handshake_timeout,
    }
}

/// Streams one HTTP/2 connection may have open at once (nginx's
/// `http2_max_concurrent_streams` is 128; hyper's default is 200). More are refused.
pub(crate) const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Streams the client reset before hyper accepted them, at one time, before the
/// connection gets GOAWAY ENHANCE_YOUR_CALM (rapid reset; h2's default).
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams forkd had to reset for the client's protocol errors (including refusals past
/// `H2_MAX_CONCURRENT_STREAMS`) over a connection's life before GOAWAY
/// ENHANCE_YOUR_CALM (h2's default is 1024).
const H2_MAX_LOCAL_ERROR_RESETS: usize = 2 * H2_MAX_CONCURRENT_STREAMS as usize;
/// Ceiling on the HTTP/2 header list size: a head is held per open stream, so this
/// times `H2_MAX_CONCURRENT_STREAMS` (8 MiB) is what heads can cost a connection.
const H2_MAX_HEADER_LIST: usize = 64 * 1024;
/// Response bytes buffered per stream (hyper's default is 400 KB); with the streams
/// limit, 8 MiB a connection.
const H2_MAX_SEND_BUF: usize = 64 * 1024;
/// Request body bytes a connection may have in flight unread (the connection window,
/// hyper's default); a stream's own window is at most this, and no more than `max_body`.
const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;

/// HTTP/2 bounds, so that floods cost a bounded amount (README, Limits):
/// - concurrency: `H2_MAX_CONCURRENT_STREAMS`; a client that keeps opening more gets
///   GOAWAY after `H2_MAX_LOCAL_ERROR_RESETS` refusals;
/// - rapid reset (CVE-2023-44487): h2's pending-accept reset limit; a slower one is
///   caught per connection in `conn.rs`;
/// - heads (and CONTINUATION floods, which h2 counts against this since 0.4.4): the
///   header list is `[limits]`' largest HTTP/1 head, up to `H2_MAX_HEADER_LIST`;
/// - SETTINGS and PING floods: h2 queues one acknowledgement of each and stops
///   reading until it is written, so a client that does not read stalls itself; one
///   that does is held to a budget of such frames in `io.rs`;
/// - a client that stops answering: after `header_read_timeout` without a frame that
///   moves a stream, it gets a PING, and is closed if it has not answered within
///   another `header_read_timeout` (forkd's own watchdog covers connections with
///   nothing in flight).
fn configure_http2(http: &mut auto::Builder<TokioExecutor>, config: &Config) {
    let limits = &config.limits;
    let head = limits.request_line.saturating_add(
        limits
            .request_fields
            .saturating_mul(limits.request_field_size.saturating_add(32)),
    );
    let header_list = head.min(H2_MAX_HEADER_LIST) as u32;
    let stream_window = limits
        .max_body
        .clamp(64 * 1024, u64::from(H2_CONNECTION_WINDOW)) as u32;
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        .max_header_list_size(header_list)
        .max_send_buf_size(H2_MAX_SEND_BUF)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .initial_stream_window_size(stream_window)
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
}

/// `max_requests + random(0..=jitter)`, so that workers do not all recycle at once.
fn request_limit(max_requests: u64, jitter: u64) -> u64 {
    if max_requests == 0 {
        return 0;
    }
    let seed = monotonic_ms() ^ ((std::process::id() as u64) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    // xorshift64*: good enough to spread limits; not used for anything secret.
    let mut x = seed | 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    let random = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
    max_requests
        + if jitter == 0 {
            0
        } else {
            random % (jitter + 1)
        }
}

fn progress_interval(timeout: Duration) -> Duration {
    if timeout.is_zero() {
        Duration::from_secs(1)
    } else {
        (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

/// Reports progress from the event loop itself: if the loop is blocked, this stops,
/// which is exactly what the master's `timeout` check looks for.
async fn report_progress(slot: &'static Slot, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        slot.report_progress();
    }
}

type AcceptTasks = Vec<tokio::task::JoinHandle<()>>;

fn start_accepting(shared: &Arc<Shared>, listeners: &[Listener]) -> Result<AcceptTasks, String> {
    let mut tasks = Vec::new();
    for listener in listeners {
        let tls = listener.spec.is_tls();
        if tls && shared.tls.is_none() {
            return Err(format!(
                "{}: a tls:// listener without [tls]",
                listener.local
            ));
        }
        let acceptor = Acceptor::new(listener, "listener")?;
        tasks.push(tokio::spawn(accept(acceptor, shared.clone(), tls)));
    }
    Ok(tasks)
}

/// Accepts on one listener until the drain begins.
async fn accept(acceptor: Acceptor, shared: Arc<Shared>, tls: bool) {
    let mut drain = shared.drain_signal();
    loop {
        tokio::select! {
            accepted = async {
                balance::wait_for_less_busy_peers(&shared).await;
                acceptor.accept().await
            } => match accepted {
                Ok(Accepted::Tcp(stream, peer)) => {
                    let local = stream.local_addr().ok();
                    spawn_connection(&shared, stream, Some(peer), local, tls)
                }
                Ok(Accepted::Unix(stream)) => spawn_connection(&shared, stream, None, None, tls),
                Err(e) => accept_error(&shared, e).await,
            },
            _ = drain.changed() => return,
        }
    }
}

/// Out of fds or similar: back off briefly instead of spinning, and say so in the
/// error log at most once per period (with how many failed since), not every 50 ms.
async fn accept_error(shared: &Shared, e: std::io::Error) {
    if let Some(count) = shared.accept_warning.hit() {
        tracing::warn!(
            pid = std::process::id(),
            failures = count,
            "accept failed: {e} ({count} time(s) since the last such line)"
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// At most one log line per `period` for a condition that may recur in a burst;
/// [`Throttled::hit`] counts every occurrence and says when to log, with the count.
pub(crate) struct Throttled {
    period_ms: u64,
    /// When the last line was logged (monotonic ms; 0 = never).
    last_ms: std::sync::atomic::AtomicU64,
    count: std::sync::atomic::AtomicU64,
}

impl Throttled {
    pub(crate) fn new(period: Duration) -> Throttled {
        Throttled {
            period_ms: period.as_millis() as u64,
            last_ms: Default::default(),
            count: Default::default(),
        }
    }

    /// Counts one occurrence; `Some(occurrences since the last line)` when a line is due.
    pub(crate) fn hit(&self) -> Option<u64> {
        self.count.fetch_add(1, Relaxed);
        let now = monotonic_ms().max(1);
        let last = self.last_ms.load(Relaxed);
        if last != 0 && now.saturating_sub(last) < self.period_ms {
            return None;
        }
        if self
            .last_ms
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_err()
        {
            return None;
        }
        Some(self.count.swap(0, Relaxed))
    }
}

fn spawn_connection<T>(
    shared: &Arc<Shared>,
    stream: T,
    addr: Option<std::net::SocketAddr>,
    local: Option<std::net::SocketAddr>,
    tls: bool,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Claimed before anything else: with `threads` > 1 accept loops run in parallel,
    // and a check followed by an increment could let both past the last place.
    let Some(mut open) = OpenConnection::claim(shared) else {
        let why = format!(
            "this worker has {} connections open (limits.max_connections)\n",
            shared.max_connections
        );
        refuse(shared, stream, addr, tls, Rejection::MaxConnections, &why);
        return;
    };
    let ip = addr
        .map(|a| a.ip())
        .filter(|_| shared.max_connections_per_ip > 0);
    if let Some(ip) = ip {
        if !shared.claim_ip(ip) {
            drop(open);
            let why = format!(
                "this worker has {} connections open from {ip} (limits.max_connections_per_ip)\n",
                shared.max_connections_per_ip
            );
            refuse(
                shared,
                stream,
                addr,
                tls,
                Rejection::MaxConnectionsPerIp,
                &why,
            );
            return;
        }
        open.1 = Some(ip);
    }
    let mut peer = conn::Peer::new(addr, shared);
    peer.local = local;
    let shared = shared.clone();
    if !tls {
        // A task of its own type: one future with a TLS stream inside (rustls's
        // connection state) would make every plain connection's task as large.
        tokio::spawn(conn::serve(shared, stream, peer, open));
        return;
    }
    tokio::spawn(async move {
        // In the connection's own task: a slow handshake holds up nobody else.
        if let Some((stream, info)) = handshake(&shared, stream).await {
            let mut peer = peer;
            peer.tls = Some(info);
            conn::serve(shared, stream, peer, open).await;
        }
    });
}

/// The TLS handshake of an accepted connection, bounded by `tls.handshake_timeout`,
/// counted in the scoreboard for `forkd_tls_handshakes_total`.
async fn handshake<T>(
    shared: &Shared,
    stream: T,
) -> Option<(tokio_rustls::server::TlsStream<T>, crate::tls::TlsInfo)>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let acceptor = shared.tls.as_ref()?;
    let began = std::time::Instant::now();
    let outcome = tokio::time::timeout(shared.handshake_timeout, acceptor.accept(stream)).await;
    let header = shared.board.header();
    match outcome {
        Ok(Ok(stream)) => {
            header.count_handshake(Handshake::Ok, began.elapsed());
            let info = crate::tls::TlsInfo::of(stream.get_ref().1);
            Some((stream, info))
        }
        Ok(Err(e)) => {
            header.count_handshake(Handshake::Failed, began.elapsed());
            tracing::debug!(pid = std::process::id(), "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            header.count_handshake(Handshake::Timeout, began.elapsed());
            None
        }
    }
}

/// A full worker answers a new connection at once (503, `Retry-After: 1`) rather than
/// leave the client hanging in the queue, counts it, and says so in the error log at
/// most once per period. On a TLS port it is closed instead: no clear-text answer there,
/// and no handshake for a full worker.
fn refuse<T>(
    shared: &Shared,
    stream: T,
    addr: Option<std::net::SocketAddr>,
    tls: bool,
    rejection: Rejection,
    why: &str,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    shared.board.header().count_rejection(rejection);
    if let Some(refused) = shared.full_warning.hit() {
        tracing::error!(
            pid = std::process::id(),
            refused,
            "worker full, refusing connections with 503: {} ({refused} refused since the last such line)",
            why.trim_end()
        );
    }
    if tls {
        return;
    }
    if let Some(log) = &shared.access_log {
        io::log_refused(log, &conn::Peer::new(addr, shared), b"", 503, why);
    }
    let response = io::error_response(503, "Service Unavailable", why, "retry-after: 1\r\n");
    io::answer_and_close(stream, response);
}

impl Shared {
    /// Counts a connection from `ip` if it stays within `max_connections_per_ip`.
    fn claim_ip(&self, ip: std::net::IpAddr) -> bool {
        let Ok(mut per_ip) = self.per_ip.lock() else {
            return true;
        };
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max_connections_per_ip {
            return false;
        }
        *count += 1;
        true
    }

    fn release_ip(&self, ip: std::net::IpAddr) {
        if let Ok(mut per_ip) = self.per_ip.lock() {
            if let std::collections::hash_map::Entry::Occupied(mut entry) = per_ip.entry(ip) {
                *entry.get_mut() -= 1;
                if *entry.get() == 0 {
                    entry.remove();
                }
            }
        }
    }
}

/// Counts one connection as open (in the worker and its scoreboard slot) for as long as
/// it lives. Dropping it uncounts it, also when the app panics: the panic unwinds the
/// connection's task only, tokio drops its future, and without this guard the count
/// would stay up and every later drain would wait out `graceful_timeout` for a
/// connection that is long gone.
/// It also holds the connection's place under `max_connections_per_ip` (`Some(ip)`).
pub(crate) struct OpenConnection(Arc<Shared>, Option<std::net::IpAddr>);

impl OpenConnection {
    /// Takes one of the worker's `max_connections` places, or None when all are taken:
    /// the check and the count are one atomic step, so the limit cannot be overshot.
    fn claim(shared: &Arc<Shared>) -> Option<OpenConnection> {
        shared
            .open_connections
            .fetch_update(AcqRel, Acquire, |open| {
                (open < shared.max_connections).then_some(open + 1)
            })
            .ok()?;
        shared.slot.connection_opened();
        Some(OpenConnection(shared.clone(), None))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(ip) = self.1 {
            self.0.release_ip(ip);
        }
        self.0.slot.connection_closed();
        if self.0.open_connections.fetch_sub(1, AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
        if self.0.stepping_back.load(Relaxed) {
            self.0.connection_closed.notify_waiters();
        }
    }
}

/// Waits for TERM or the master's death (drain); QUIT and INT exit at once; USR1 reopens
/// the logs.
async fn wait_for_stop_signal(shared: &Shared, orphaned: Option<tokio::signal::unix::Signal>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut quit), Ok(mut int), Ok(mut usr1), Some(mut orphaned)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::quit()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
        orphaned,
    ) else {
        tracing::error!("worker cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = orphaned.recv() => {
                tracing::warn!(
                    pid = std::process::id(),
                    "the master died: closing the listeners, finishing the requests in flight"
                );
                return;
            }
            _ = quit.recv() => exit_now(shared),
            _ = int.recv() => exit_now(shared),
            _ = usr1.recv() => {
                crate::logging::reopen();
                if let Some(log) = &shared.access_log {
                    log.reopen();
                }
            }
        }
    }
}

/// QUIT or INT: exit at once, but with the access log lines written.
#[allow(clippy::disallowed_methods)] // process::exit: the worker's exit point
fn exit_now(shared: &Shared) -> ! {
    if let Some(log) = &shared.access_log {
        log.finish();
    }
    std::process::exit(0)
}

/// Graceful drain: stop accepting, let connections finish (responses carry
/// `Connection: close`), bounded by `graceful_timeout` (the master SIGKILLs after it too).
async fn drain(shared: &Arc<Shared>, accepting: AcceptTasks, graceful_timeout: Duration) {
    shared.start_drain();
    for task in accepting {
        let _ = task.await;
    }
    let deadline = tokio::time::Instant::now() + graceful_timeout;
    // Connections the app took over (WebSockets) are asked to close a little before
    // the deadline, so that they can say goodbye before the master's SIGKILL.
    let closing_at = deadline - (graceful_timeout / 10).min(Duration::from_secs(1));
    let mut told_app = false;
    loop {
        let closed = shared.all_closed.notified();
        if shared.open_connections.load(Acquire) == 0 {
            break;
        }
        let until = if told_app { deadline } else { closing_at };
        if tokio::time::timeout_at(until, closed).await.is_err() {
            if !told_app {
                told_app = true;
                shared.app.closing();
                continue;
            }
            tracing::warn!(
                pid = std::process::id(),
                open = shared.open_connections.load(Acquire),
                "graceful_timeout reached with connections open; exiting"
            );
            break;
        }
    }
    if let Some(log) = &shared.access_log {
        log.finish();
    }
    crate::logging::flush();
}
