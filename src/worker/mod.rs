//! A worker process, from just after the fork to its exit: post-fork setup (the
//! doorbell, parent-death signal, privileges, title), its own tokio runtime, the app
//! built inside it (or a hosted app booted on the main thread), then the serving core
//! (`serve`) with the worker's signals as its shutdown, and the exit: boot failures
//! reported in the scoreboard, QUIT and INT at once, TERM and the master's death after
//! the drain. The core's own modules: `serve` (settings, the core's run, drain), `state`
//! (listeners and the state every task shares),
//! `accept` (accept loops, connection places, 503), `http` (hyper's bounds), `conn`
//! (one connection), `io` and `limits` (the byte-level limits), `health`, `balance`.

mod accept;
pub(crate) mod acceptor;
mod balance;
mod doorbell;
pub(crate) mod http;
pub mod serve;
mod state;

use crate::app::{App, AppFactory};
use crate::config::Config;
use crate::shared::listeners::Listener;
use crate::shared::scoreboard::{Board, Slot};
use crate::worker::http::access_log::AccessLog;
use serve::{Listening, Outcome, Settings, Shutdown};
use std::sync::Arc;

use crate::shared::protocol::EXIT_BOOT_ERROR;

/// Everything a worker gets from the master at fork time.
pub struct WorkerContext<'a> {
    pub number: u64,
    pub slot: &'static Slot,
    /// The whole scoreboard: the server-wide header and every slot, for `/metrics`.
    pub board: &'static Board,
    pub master_pid: i32,
    /// The write end of the master's doorbell pipe (the master's doorbell, see `crate::shared::protocol`).
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
    doorbell::set(doorbell);
    crate::shared::logging::in_worker();
    let pid = std::process::id() as i32;
    slot.set_pid(pid);
    slot.set_number(number);
    crate::shared::proctitle::set(&crate::shared::proctitle::titled(
        &format!("forkd: worker [{number}]"),
        config.proc_name.as_deref(),
    ));
    if let Err(e) = crate::shared::privileges::detach_from_terminal() {
        return Err(boot_failed(slot, &e));
    }
    if let Err(e) = crate::shared::privileges::drop_for_worker(&config) {
        return Err(boot_failed(slot, &e));
    }
    // Forked by a zygote (`preload_app`): the parent is the middle process of its
    // double fork until that exits, at once; the parent-death signal is for the master.
    wait_for_the_master_as_parent(master_pid);
    // After any uid change (which clears it): hear of the master's death, then close
    // the race where the master died before prctl. Its own signal, not TERM: a worker
    // whose master is gone closes its listeners at once (see `stop_signal`).
    // SAFETY: prctl(2) with an integer argument.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            crate::shared::protocol::master_died_signal() as libc::c_ulong,
        )
    };
    if nix::unistd::getppid().as_raw() != master_pid {
        return Err(0);
    }
    let server = Server {
        number,
        slot,
        board,
        config: config.clone(),
        listeners,
        metrics,
        tls,
    };
    match app {
        WorkerApp::Native(factory) => {
            let runtime = new_runtime(config.threads).map_err(|e| boot_failed(slot, &e))?;
            let served = runtime.block_on(async move {
                // First thing in the runtime, so that the master's death during the
                // app's start is heard (and acted on once serving) rather than killing
                // the worker.
                let orphaned = master_death();
                let app = build_app(factory)
                    .await
                    .map_err(|reason| boot_failed(slot, &reason))?;
                server.serve(app, true, orphaned).await
            });
            exit_now_if_told(served)
        }
        WorkerApp::Hosted(program) => serve_hosted(server, &program),
    }
}

/// How long a worker forked by a zygote waits for the master to adopt it.
const ADOPTION_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits (at most [`ADOPTION_WAIT`]) while the parent is neither the master nor
/// whoever adopted this process after its first parent exited: a worker forked by a
/// zygote is first the child of the double fork's middle process, then, once that has
/// exited, the master's (the subreaper of its tree). The caller checks which it is.
fn wait_for_the_master_as_parent(master_pid: i32) {
    let first = nix::unistd::getppid().as_raw();
    if first == master_pid {
        return;
    }
    let deadline = std::time::Instant::now() + ADOPTION_WAIT;
    while nix::unistd::getppid().as_raw() == first && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// The master's death, as the worker hears it (its own parent-death signal).
fn master_death() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(
        crate::shared::protocol::master_died_signal(),
    ))
    .ok()
}

/// A worker's tokio runtime, made after the fork.
fn new_runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
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
        progress_every: serve::progress_interval(server.config.timeout),
    })
    .map_err(|reason| boot_failed(slot, &reason))?;
    let crate::hosted::Booted {
        app,
        run,
        stop,
        interrupted,
        server_threads,
    } = booted;
    std::thread::scope(|scope| {
        let serving = std::thread::Builder::new()
            .name("forkd-server".into())
            .spawn_scoped(scope, move || {
                let threads = server_threads.unwrap_or(server.config.threads);
                let served = new_runtime(threads)
                    .map_err(|e| boot_failed(slot, &e))
                    .and_then(|runtime| {
                        let served = runtime.block_on(async move {
                            let orphaned = master_death();
                            server.serve(app, false, orphaned).await
                        });
                        if let (Ok(Outcome::Immediate), Some(hook)) = (&served, interrupted) {
                            run_bounded(hook, crate::hosted::INTERRUPTED_BOUND);
                        }
                        exit_now_if_told(served)
                    });
                stop();
                served
            })
            .map_err(|e| boot_failed(slot, &format!("cannot start the server thread: {e}")))?;
        if let Err(e) = run() {
            tracing::error!(pid = std::process::id(), "the app's event loop failed: {e}");
            crate::shared::logging::flush();
            // The server thread is still serving inside this scope, which would wait
            // for it: the worker ends here, as at its other exit points.
            #[allow(clippy::disallowed_methods)]
            std::process::exit(1);
        }
        serving.join().unwrap_or(Err(1))
    })
}

/// Runs `hook` on a thread of its own and waits for it at most `bound` (a hook stuck
/// behind the host's lock must not keep a worker told to stop at once).
fn run_bounded(hook: Box<dyn FnOnce() + Send>, bound: std::time::Duration) {
    let (done, finished) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("forkd-interrupted".into())
        .spawn(move || {
            hook();
            let _ = done.send(());
        });
    match spawned {
        Ok(_) => {
            if finished.recv_timeout(bound).is_err() {
                tracing::warn!(
                    pid = std::process::id(),
                    "the app's interrupt hook did not finish within {} ms: exiting without it",
                    bound.as_millis()
                );
            }
        }
        Err(e) => tracing::warn!(
            pid = std::process::id(),
            "cannot run the app's interrupt hook: {e}"
        ),
    }
}

/// What the serving half of a worker needs.
struct Server<'a> {
    number: u64,
    slot: &'static Slot,
    board: &'static Board,
    config: Arc<Config>,
    listeners: &'a [Listener],
    metrics: Option<&'a Listener>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Server<'_> {
    /// Serves with the core until a stop signal, and says how it ended. The worker's
    /// own copies of the listeners are made (and the inherited fds closed) first.
    /// `report_progress`: stamp progress from this runtime (a hosted app's own loop
    /// stamps it instead).
    async fn serve(
        self,
        app: Arc<dyn App>,
        report_progress: bool,
        orphaned: Option<tokio::signal::unix::Signal>,
    ) -> Result<Outcome, i32> {
        let Server {
            number,
            slot,
            board,
            config,
            listeners,
            metrics,
            tls,
        } = self;
        let boot = |e: String| boot_failed(slot, &e);
        let access_log = serve::start_access_log(&config, number).map_err(boot)?;
        let own = listeners
            .iter()
            .map(|l| Listening::copy_of(l, "listener"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(boot)?;
        let mut settings = Settings::new(config.clone())
            .scoreboard(slot, board)
            .report_progress(report_progress)
            .access_log(access_log.clone());
        if let Some(tls) = tls {
            settings = settings.tls(tls);
        }
        if let Some(listener) = metrics {
            settings =
                settings.metrics(Listening::copy_of(listener, "metrics listener").map_err(boot)?);
        }
        close_inherited_listeners(listeners, metrics);
        let outcome = serve::serve(own, app, settings, stop_signal(access_log, orphaned))
            .await
            .map_err(boot)?;
        if outcome != Outcome::Immediate {
            crate::shared::logging::flush();
        }
        Ok(outcome)
    }
}

/// Turns the worker's signals into the core's shutdown: TERM or the master's death
/// drain, QUIT and INT stop at once; USR1 reopens the logs meanwhile.
async fn stop_signal(
    access_log: Option<Arc<AccessLog>>,
    orphaned: Option<tokio::signal::unix::Signal>,
) -> Shutdown {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut quit), Ok(mut int), Ok(mut usr1), Some(mut orphaned)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::quit()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
        orphaned,
    ) else {
        tracing::error!("worker cannot install signal handlers");
        return Shutdown::Graceful;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return Shutdown::Graceful,
            _ = orphaned.recv() => {
                tracing::warn!(
                    pid = std::process::id(),
                    "the master died: closing the listeners, finishing the requests in flight"
                );
                return Shutdown::Graceful;
            }
            _ = quit.recv() => return Shutdown::Immediate,
            _ = int.recv() => return Shutdown::Immediate,
            _ = usr1.recv() => {
                crate::shared::logging::reopen();
                if let Some(log) = &access_log {
                    log.reopen();
                }
            }
        }
    }
}

/// QUIT or INT: exit at once (the core has written the access log), while the runtime
/// and its connections still stand: dropping it would wait for them. Otherwise the
/// drain is over and the worker exits once the runtime is dropped.
#[allow(clippy::disallowed_methods)] // process::exit: the worker's exit point
fn exit_now_if_told(served: Result<Outcome, i32>) -> Result<(), i32> {
    match served? {
        Outcome::Immediate => std::process::exit(0),
        Outcome::Drained | Outcome::GracefulTimeout { .. } => Ok(()),
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
    let shown = crate::shared::escape::escape_untrusted(reason.as_bytes(), 4096);
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

#[cfg(test)]
mod tests {
    use super::run_bounded;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn a_quick_hook_runs_to_its_end() {
        let ran = Arc::new(AtomicBool::new(false));
        let seen = ran.clone();
        run_bounded(
            Box::new(move || seen.store(true, Ordering::SeqCst)),
            Duration::from_secs(5),
        );
        assert!(ran.load(Ordering::SeqCst));
    }

    #[test]
    fn a_hung_hook_is_left_behind_at_the_bound() {
        let start = Instant::now();
        run_bounded(
            Box::new(|| std::thread::sleep(Duration::from_secs(30))),
            Duration::from_millis(200),
        );
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(10),
            "{waited:?}"
        );
    }
}
