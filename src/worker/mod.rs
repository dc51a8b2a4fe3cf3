//! A worker process, from just after the fork to its exit: post-fork setup (signals,
//! parent-death signal, privileges, title), its own tokio runtime, the app built inside
//! it, accept loops on every inherited listener (with `max_connections`), the metrics
//! listener, progress reporting into the scoreboard, and the graceful drain.

mod balance;
mod conn;
mod health;
mod io;
mod limits;

use crate::access_log::AccessLog;
use crate::app::{App, AppFactory};
use crate::config::Config;
use crate::forwarded::TrustedProxies;
use crate::listeners::{Listener, ListenerKind};
use crate::scoreboard::{monotonic_ms, Board, Rejection, Slot, WorkerState};
use health::HealthPaths;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use limits::HeadLimits;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Exit status of a worker whose app failed to boot (as Gunicorn's WORKER_BOOT_ERROR).
pub const EXIT_BOOT_ERROR: i32 = 3;

/// Everything a worker gets from the master at fork time.
pub struct WorkerContext<'a> {
    pub number: u64,
    pub slot: &'static Slot,
    /// The whole scoreboard: the server-wide header and every slot, for `/metrics`.
    pub board: &'static Board,
    pub master_pid: i32,
    pub config: Arc<Config>,
    pub listeners: &'a [Listener],
    /// The `[metrics]` listener, if metrics are on.
    pub metrics: Option<&'a Listener>,
    pub app: WorkerApp,
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
    health: HealthPaths,
    proxies: TrustedProxies,
    access_log: Option<Arc<AccessLog>>,
    /// Metrics are on: record each request's duration in the slot's histogram.
    record_durations: bool,
    /// Something needs a request's start time (the histogram or the access log).
    timing: bool,
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

/// Tells the master that this worker's scoreboard slot changed.
pub(crate) fn ring_doorbell(master_pid: i32) {
    // SAFETY: kill(2) with a realtime signal number; no memory is involved.
    unsafe { libc::kill(master_pid, crate::master::signals::doorbell()) };
}

/// Runs the worker; never returns.
pub fn run(ctx: WorkerContext<'_>) -> ! {
    let code = match boot_and_serve(ctx) {
        Ok(()) => 0,
        Err(code) => code,
    };
    std::process::exit(code)
}

fn boot_and_serve(ctx: WorkerContext<'_>) -> Result<(), i32> {
    let WorkerContext {
        number,
        slot,
        board,
        master_pid,
        config,
        listeners,
        metrics,
        app,
    } = ctx;
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
    // After any uid change (which clears it): die with the master, then close the race
    // where the master died before prctl.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
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
    };
    match app {
        WorkerApp::Native(factory) => {
            let runtime = new_runtime(&config).map_err(|e| boot_failed(slot, &e))?;
            runtime.block_on(async move {
                let app = build_app(factory)
                    .await
                    .map_err(|reason| boot_failed(slot, &reason))?;
                server.serve(app, true).await
            })
        }
        WorkerApp::Hosted(program) => serve_hosted(server, &program),
    }
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
                    .and_then(|runtime| runtime.block_on(server.serve(app, false)));
                stop();
                served
            })
            .map_err(|e| boot_failed(slot, &format!("cannot start the server thread: {e}")))?;
        if let Err(e) = run() {
            tracing::error!(pid = std::process::id(), "the app's event loop failed: {e}");
            crate::logging::flush();
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
}

impl Server<'_> {
    /// Serves until told to stop, then drains. `report_progress`: stamp progress from
    /// this runtime (a hosted app's own loop stamps it instead).
    async fn serve(self, app: Arc<dyn App>, report_progress: bool) -> Result<(), i32> {
        let Server {
            number,
            slot,
            board,
            master_pid,
            config,
            listeners,
            metrics,
        } = self;
        let access_log = AccessLog::start(
            &config.log.access_log,
            config.log.access_log_format.as_deref(),
            config.log.format == crate::config::LogFormat::Json,
            number,
        )
        .map_err(|e| boot_failed(slot, &e))?
        .map(Arc::new);
        let proxies = TrustedProxies::parse(&config.forwarded_allow_ips)
            .map_err(|e| boot_failed(slot, &format!("key `forwarded_allow_ips`: {e}")))?;
        let shared = Arc::new(new_shared(
            app,
            (slot, board),
            master_pid,
            &config,
            access_log,
            proxies,
        ));
        let mut accepting =
            start_accepting(&shared, listeners).map_err(|e| boot_failed(slot, &e))?;
        if let Some(listener) = metrics {
            accepting.push(
                crate::metrics::serve(listener, board, shared.drain_signal())
                    .map_err(|e| boot_failed(slot, &e))?,
            );
        }
        if report_progress {
            tokio::spawn(self::report_progress(
                slot,
                progress_interval(config.timeout),
            ));
        }
        slot.set_state(WorkerState::Ready);
        ring_doorbell(master_pid);
        tracing::debug!(pid = std::process::id(), worker = number, "worker ready");
        wait_for_stop_signal(&shared).await;
        drain(&shared, accepting, config.graceful_timeout).await;
        Ok(())
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
    http.http2().timer(TokioTimer::new());
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
        health: HealthPaths::from_config(&config.health),
        proxies,
        timing: record_durations || access_log.is_some(),
        access_log,
        record_durations,
    }
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
        // Each worker owns a duplicate of the listening fd: closing it stops this
        // worker's accepting only; the queue lives on in the master and other workers.
        let fd = listener
            .fd
            .try_clone()
            .map_err(|e| format!("dup listener {}: {e}", listener.local))?;
        let raw = fd.into_raw_fd();
        let shared = shared.clone();
        let name = listener.local.clone();
        let task = match &listener.kind {
            ListenerKind::Tcp => {
                // SAFETY: raw is a fresh dup of a listening TCP socket, owned from here.
                let std_listener = unsafe { std::net::TcpListener::from_raw_fd(raw) };
                let _ = std_listener.set_nonblocking(true);
                let l = tokio::net::TcpListener::from_std(std_listener)
                    .map_err(|e| format!("{name}: {e}"))?;
                tokio::spawn(accept_tcp(l, shared))
            }
            ListenerKind::Unix { .. } => {
                // SAFETY: raw is a fresh dup of a listening unix socket, owned from here.
                let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(raw) };
                let _ = std_listener.set_nonblocking(true);
                let l = tokio::net::UnixListener::from_std(std_listener)
                    .map_err(|e| format!("{name}: {e}"))?;
                tokio::spawn(accept_unix(l, shared))
            }
        };
        tasks.push(task);
    }
    Ok(tasks)
}

async fn accept_tcp(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let mut drain = shared.drain_signal();
    loop {
        tokio::select! {
            accepted = async {
                balance::wait_for_less_busy_peers(&shared).await;
                listener.accept().await
            } => match accepted {
                // TCP_NODELAY: inherited from the listener, which the master set.
                Ok((stream, addr)) => {
                    let local = stream.local_addr().ok();
                    spawn_connection(&shared, stream, Some(addr), local)
                }
                Err(e) => accept_error(e).await,
            },
            _ = drain.changed() => return,
        }
    }
}

async fn accept_unix(listener: tokio::net::UnixListener, shared: Arc<Shared>) {
    let mut drain = shared.drain_signal();
    loop {
        tokio::select! {
            accepted = async {
                balance::wait_for_less_busy_peers(&shared).await;
                listener.accept().await
            } => match accepted {
                Ok((stream, _)) => spawn_connection(&shared, stream, None, None),
                Err(e) => accept_error(e).await,
            },
            _ = drain.changed() => return,
        }
    }
}

/// Out of fds or similar: back off briefly instead of spinning.
async fn accept_error(e: std::io::Error) {
    tracing::warn!(pid = std::process::id(), "accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn spawn_connection<T>(
    shared: &Arc<Shared>,
    stream: T,
    addr: Option<std::net::SocketAddr>,
    local: Option<std::net::SocketAddr>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if shared.open_connections.load(Acquire) >= shared.max_connections {
        // Full: answer at once rather than leave the client hanging in the queue.
        shared
            .board
            .header()
            .count_rejection(Rejection::MaxConnections);
        let body = format!(
            "this worker has {} connections open (limits.max_connections)\n",
            shared.max_connections
        );
        if let Some(log) = &shared.access_log {
            io::log_refused(log, &conn::Peer::new(addr, shared), b"", 503, &body);
        }
        let response = io::error_response(503, "Service Unavailable", &body, "retry-after: 1\r\n");
        io::answer_and_close(stream, response);
        return;
    }
    let open = OpenConnection::count(shared);
    let mut peer = conn::Peer::new(addr, shared);
    peer.local = local;
    let shared = shared.clone();
    tokio::spawn(conn::serve(shared, stream, peer, open));
}

/// Counts one connection as open (in the worker and its scoreboard slot) for as long as
/// it lives. Dropping it uncounts it, also when the app panics: the panic unwinds the
/// connection's task only, tokio drops its future, and without this guard the count
/// would stay up and every later drain would wait out `graceful_timeout` for a
/// connection that is long gone.
pub(crate) struct OpenConnection(Arc<Shared>);

impl OpenConnection {
    fn count(shared: &Arc<Shared>) -> OpenConnection {
        shared.open_connections.fetch_add(1, AcqRel);
        shared.slot.connection_opened();
        OpenConnection(shared.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.slot.connection_closed();
        if self.0.open_connections.fetch_sub(1, AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
        if self.0.stepping_back.load(Relaxed) {
            self.0.connection_closed.notify_waiters();
        }
    }
}

/// Waits for TERM (drain); QUIT and INT exit at once; USR1 reopens the logs.
async fn wait_for_stop_signal(shared: &Shared) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut quit), Ok(mut int), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::quit()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
    ) else {
        tracing::error!("worker cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
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
