//! The serving core of a worker, usable as a library: [`serve`] accepts on the
//! listening sockets it is given and serves every connection with the app (limits,
//! health paths, trusted proxies, access log, the metrics listener, TLS) until its
//! `shutdown` future resolves; then it drains (stops accepting, lets the requests in
//! flight finish within `graceful_timeout`) or stops at once, and returns how it ended.
//! It installs no signal handler and never exits the process: the worker's entry point
//! (`worker::run`) turns signals into the shutdown and the [`Outcome`] into an exit, and
//! a test or another program can run the core in-process.

use crate::app::App;
use crate::config::Config;
use crate::shared::scoreboard::{monotonic_ms, Board, Scoreboard, Slot, WorkerState};
use crate::worker::accept::{start_accepting, AcceptTasks};
use crate::worker::acceptor::Acceptor;
use crate::worker::http::access_log::AccessLog;
use crate::worker::http::forwarded::TrustedProxies;
use crate::worker::http::health::HealthPaths;
use crate::worker::http::violation::HeadLimits;
pub use crate::worker::state::Listening;
use crate::worker::state::{Shared, Throttled};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// What [`serve`] needs besides the listeners and the app.
///
/// The core reads these keys of the config: `keepalive`, `graceful_timeout`, `timeout`
/// (how often it reports progress), `max_requests` and `max_requests_jitter`, all of
/// `[limits]` and `[health]`, `forwarded_allow_ips`, the access log's `[log]` keys,
/// `tls.handshake_timeout`, and whether `metrics.bind` is set (to record request
/// durations). Binding, processes, users and signals are the caller's.
pub struct Settings {
    config: Arc<Config>,
    scoreboard: Option<(&'static Slot, &'static Board)>,
    tls: Option<Arc<rustls::ServerConfig>>,
    metrics: Option<Listening>,
    report_progress: bool,
    access_log: AccessLogFrom,
}

/// Where the core's access log comes from.
enum AccessLogFrom {
    /// Started by `serve` from the config's `[log]` keys.
    Config,
    /// Started by the caller (who reopens it on USR1); `None` when it is off.
    Started(Option<Arc<AccessLog>>),
}

impl Settings {
    /// Settings from a config; without [`Settings::scoreboard`] the core counts in a
    /// scoreboard of its own (one per process, shared by every core it runs).
    pub fn new(config: Arc<Config>) -> Settings {
        Settings {
            config,
            scoreboard: None,
            tls: None,
            metrics: None,
            report_progress: true,
            access_log: AccessLogFrom::Config,
        }
    }

    /// Counts requests and connections in this slot of `board` (a worker's slot in
    /// the master's scoreboard, or one a test owns: `Scoreboard::new()` then `claim`),
    /// and serves `board` on the metrics listener.
    pub fn scoreboard(mut self, slot: &'static Slot, board: &'static Board) -> Settings {
        self.scoreboard = Some((slot, board));
        self
    }

    /// The TLS server config for listeners marked [`Listening::with_tls`].
    pub fn tls(mut self, tls: Arc<rustls::ServerConfig>) -> Settings {
        self.tls = Some(tls);
        self
    }

    /// Serves `GET /metrics` (the whole scoreboard, Prometheus text) on `listener`.
    pub fn metrics(mut self, listener: Listening) -> Settings {
        self.metrics = Some(listener);
        self
    }

    /// Whether the core's event loop stamps progress into its slot (the master's
    /// `timeout` check reads it); on by default. Off when another loop does it (a
    /// hosted app's).
    pub fn report_progress(mut self, on: bool) -> Settings {
        self.report_progress = on;
        self
    }

    /// An access log the caller started (and reopens), instead of one from the config.
    pub(super) fn access_log(mut self, log: Option<Arc<AccessLog>>) -> Settings {
        self.access_log = AccessLogFrom::Started(log);
        self
    }
}

/// What the `shutdown` future of [`serve`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Stop accepting, let the connections finish (their responses carry
    /// `Connection: close`; HTTP/2 gets GOAWAY; an idle connection is closed once it
    /// has been idle for `keepalive`), for at most `graceful_timeout`.
    Graceful,
    /// Stop at once: stop accepting, end every connection (their tasks are aborted:
    /// sockets closed, the app's futures dropped), write the access log, return.
    Immediate,
}

/// How [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Drained: every connection closed within `graceful_timeout`.
    Drained,
    /// `graceful_timeout` passed with `open` connections still open; their tasks are
    /// aborted (a connection the app took over, such as a WebSocket, is the app's).
    GracefulTimeout { open: usize },
    /// Stopped at once ([`Shutdown::Immediate`]).
    Immediate,
}

/// Serves `listeners` with `app` until `shutdown` resolves, then stops as it asks and
/// returns how it ended. An `Err` is a failure to start (the access log cannot be
/// opened, a listener cannot be registered, a TLS listener without a TLS config), said
/// in one line. Call it inside a tokio runtime with the timer and IO enabled.
///
/// ```no_run
/// use forkd::app::{respond, App, Request};
/// use forkd::config::Config;
/// use forkd::serve::{serve, Listening, Outcome, Settings, Shutdown};
/// use std::sync::Arc;
///
/// # async fn example() -> Result<(), String> {
/// let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
/// let app: Arc<dyn App> =
///     Arc::new(|_req: Request| async { respond(200, "text/plain", "hi\n") });
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let server = tokio::spawn(serve(
///     vec![Listening::tcp(listener)],
///     app,
///     Settings::new(Arc::new(Config::default())),
///     async move {
///         let _ = stopped.await;
///         Shutdown::Graceful
///     },
/// ));
/// // ... serve requests, then:
/// let _ = stop.send(());
/// let outcome = server.await.map_err(|e| e.to_string())??;
/// assert_eq!(outcome, Outcome::Drained);
/// # Ok(())
/// # }
/// ```
pub async fn serve<F>(
    listeners: Vec<Listening>,
    app: Arc<dyn App>,
    settings: Settings,
    shutdown: F,
) -> Result<Outcome, String>
where
    F: Future<Output = Shutdown>,
{
    let Settings {
        config,
        scoreboard,
        tls,
        metrics,
        report_progress,
        access_log,
    } = settings;
    let (slot, board) = match scoreboard {
        Some(place) => place,
        None => own_scoreboard()?,
    };
    let access_log = match access_log {
        AccessLogFrom::Started(log) => log,
        AccessLogFrom::Config => start_access_log(&config, slot.number())?,
    };
    let proxies = config.forwarded_allow_ips.clone();
    let mut shared = new_shared(app, (slot, board), &config, access_log, proxies);
    shared.tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let shared = Arc::new(shared);
    let metrics = match metrics {
        Some(Listening { socket, name, .. }) => {
            Some(Acceptor::new(socket, "metrics listener", &name)?)
        }
        None => None,
    };
    let mut accepting = start_accepting(&shared, listeners)?;
    if let Some(acceptor) = metrics {
        accepting.push(crate::metrics::serve(
            acceptor,
            board,
            shared.drain_signal(),
        ));
    }
    let _progress = report_progress.then(|| {
        AbortOnDrop(tokio::spawn(self::report_progress(
            slot,
            progress_interval(config.timeout),
        )))
    });
    slot.set_state(WorkerState::Ready);
    crate::worker::doorbell::ring();
    tracing::debug!(
        pid = std::process::id(),
        worker = slot.number(),
        "worker ready"
    );
    match shutdown.await {
        Shutdown::Graceful => Ok(drain(&shared, accepting, config.graceful_timeout).await),
        Shutdown::Immediate => {
            for task in accepting {
                task.abort();
            }
            shared.connection_tasks.end_all();
            if let Some(log) = &shared.access_log {
                log.finish();
            }
            Ok(Outcome::Immediate)
        }
    }
}

/// The access log the config asks for, if any.
pub(super) fn start_access_log(
    config: &Config,
    number: u64,
) -> Result<Option<Arc<AccessLog>>, String> {
    Ok(AccessLog::start(
        &config.log.access_log,
        config.log.access_log_format.as_ref(),
        config.log.format == crate::config::LogFormat::Json,
        number,
    )?
    .map(Arc::new))
}

/// The scoreboard slot of a core run without one: a process-wide one-slot board.
fn own_scoreboard() -> Result<(&'static Slot, &'static Board), String> {
    static OWN: OnceLock<Result<(&'static Slot, &'static Board), String>> = OnceLock::new();
    OWN.get_or_init(|| {
        let mut scoreboard =
            Scoreboard::new().map_err(|e| format!("cannot make a scoreboard: {e}"))?;
        let index = scoreboard
            .claim()
            .ok_or_else(|| "cannot make a scoreboard: no free slot".to_string())?;
        // The mapping is never unmapped; the slot stays claimed for the process's life.
        Ok((scoreboard.slot(index), scoreboard.board()))
    })
    .clone()
}

/// Aborts a background task when the core returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) fn new_shared(
    app: Arc<dyn App>,
    (slot, board): (&'static Slot, &'static Board),
    config: &Config,
    access_log: Option<Arc<AccessLog>>,
    proxies: TrustedProxies,
) -> Shared {
    let limits = HeadLimits::from_config(&config.limits);
    let http = crate::worker::http::server::builder(config, &limits);
    let (drain_tx, _) = watch::channel(false);
    let record_durations = config.metrics.bind.is_some();
    Shared {
        app,
        slot,
        board,
        http,
        keepalive: config.keepalive,
        header_read_timeout: config.limits.header_read_timeout,
        body_read_timeout: config.limits.body_read_timeout,
        send_timeout: config.limits.send_timeout,
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
        connection_tasks: Default::default(),
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

/// How often progress is stamped into the slot: often enough for `timeout` to see a
/// blocked loop in time.
pub(super) fn progress_interval(timeout: Duration) -> Duration {
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

/// Graceful drain: stop accepting, let connections finish (responses carry
/// `Connection: close`), bounded by `graceful_timeout` (the master SIGKILLs after it too).
async fn drain(
    shared: &Arc<Shared>,
    accepting: AcceptTasks,
    graceful_timeout: Duration,
) -> Outcome {
    let deadline = tokio::time::Instant::now() + graceful_timeout;
    shared.start_drain();
    // The accept loops end at once; the metrics listener's task waits for the scrapes
    // it has accepted, which must not push the connections' deadline back.
    for mut task in accepting {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            task.abort();
        }
    }
    // Connections the app took over (WebSockets) are asked to close a little before
    // the deadline, so that they can say goodbye before the master's SIGKILL.
    let closing_at = deadline - (graceful_timeout / 10).min(Duration::from_secs(1));
    let mut told_app = false;
    let outcome = loop {
        let closed = shared.all_closed.notified();
        if shared.open_connections.load(Acquire) == 0 {
            break Outcome::Drained;
        }
        let until = if told_app { deadline } else { closing_at };
        if tokio::time::timeout_at(until, closed).await.is_err() {
            if !told_app {
                told_app = true;
                shared.app.closing();
                continue;
            }
            let open = shared.open_connections.load(Acquire);
            tracing::warn!(
                pid = std::process::id(),
                open,
                "graceful_timeout reached with connections open; exiting"
            );
            shared.connection_tasks.end_all();
            break Outcome::GracefulTimeout { open };
        }
    };
    if let Some(log) = &shared.access_log {
        log.finish();
    }
    outcome
}

#[cfg(test)]
mod tests;
