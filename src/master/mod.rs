//! The master: forkd's supervisor loop, in the spirit of Gunicorn's arbiter. One thread,
//! no async runtime (so `fork()` is safe). It binds the listeners, forks workers, and
//! then loops: wait on the signalfd until the nearest deadline, act on signals (each
//! one's handler named after it: [`Master::handle_hup`], `handle_ttin`...), read what
//! workers reported, reap children, kill workers past a deadline, and reconcile the
//! worker set with what is wanted.
//!
//! Reconciling is the one mechanism behind crash replacement, TTIN/TTOU, WINCH, HUP
//! reloads and `max_requests` recycling: workers of the current generation that are not
//! retiring count as *active*; missing active workers are spawned; a *surplus* worker
//! (old generation, or asking to retire) is stopped only when enough active workers are
//! ready to take its place, so capacity never dips below the target. The decision is the
//! pure function [`plan::plan`]; [`spawn`] applies it.
//!
//! The master's state is spelled as types: a [`generation::Generation`] (config, app,
//! TLS, listeners, target: what HUP builds whole and a failed reload restores whole),
//! the [`backoff::Backoff`] that holds spawning off, [`RunState`] and [`Boot`] (in
//! [`state`], with their pure decisions), [`ReloadState`] (a HUP under way and who waits
//! for it), [`UpgradeState`] (either side of a USR2 upgrade), a worker's
//! [`workers::Phase`] and the [`plan::ExitReason`] it exits for ([`exits`]); every timed
//! action is a [`deadlines::Deadline`].
//!
//! The files: `generation` and `reload` (HUP), `backoff`, `exits` (reaping, why a worker
//! exited) and `oom`, `deadlines`, `spawn` (reconcile, fork), `status` (readiness,
//! systemd), `upgrade` (USR2) and `upgrade_handshake` (its `impl Master`), `exec` (exec
//! workers) and `exec_reports` (their reports), `workers` (a worker as tracked here),
//! `zygote`, `zygote_state`, `zygote_child` and `zygote_wire` (`preload_app`: a zygote
//! per generation forks its workers).

mod backoff;
#[allow(unsafe_code)] // close_range, dup of fds for a child
mod child;
mod clock;
pub(crate) mod ctl;
mod deadlines;
pub mod exec;
mod exec_reports;
mod exits;
mod generation;
mod hooks;
mod notify;
mod oom;
mod plan;
pub mod recycle;
mod reload;
#[allow(unsafe_code)] // a signal set with a realtime signal
pub mod signals;
mod spawn;
mod state;
mod status;
pub mod upgrade;
mod upgrade_handshake;
mod watch;
mod workdir;
mod workers;
#[allow(unsafe_code)] // prctl(PR_SET_CHILD_SUBREAPER)
mod zygote;
#[allow(unsafe_code)] // _exit and prctl in the zygote process
mod zygote_child;
mod zygote_state;
mod zygote_wire;

use crate::config::{Config, ConfigError};
use crate::shared::listeners;
use crate::shared::pidfile;
use crate::shared::protocol;
use crate::shared::scoreboard::{monotonic_ms, Scoreboard};
use backoff::Backoff;
use generation::Generation;
pub use generation::Program;
use nix::sys::signal::{kill, Signal};
use notify::SystemdLink;
use plan::ExitReason;
use state::{Boot, RunState, Stop};
use std::sync::Arc;
use std::time::{Duration, Instant};
use upgrade::{Relaunch, Upgrade};
use workers::{Phase, Worker};

/// How long a worker sent SIGABRT (timeout) or QUIT gets before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(1);
/// The loop wakes at least this often to look at the scoreboard.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Says so at start when a worker's fd limit (RLIMIT_NOFILE, inherited from the
/// master) is below what `max_connections` needs: past it accept(2) fails with EMFILE
/// and clients wait in the queue instead of getting 503.
fn warn_if_fds_fall_short(config: &Config) {
    let Ok((soft, _)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    else {
        return;
    };
    // Besides one fd per connection: the listeners, the runtime, logs, the app.
    let needed = config.limits.max_connections as u64 + config.bind.len() as u64 + 64;
    if soft < needed {
        tracing::warn!(
            "limits.max_connections = {} per worker, but a worker may open only {soft} files (RLIMIT_NOFILE): it runs out of fds first (accept fails with EMFILE); raise the limit (LimitNOFILE=, ulimit -n) to at least {needed} or lower max_connections",
            config.limits.max_connections
        );
    }
}

/// Re-reads the configuration for HUP (file + the start-up environment and command line).
pub type Reloader = Box<dyn Fn() -> Result<Config, ConfigError>>;
/// Chooses what workers run for a config (built-in app by name, the embedded app, or
/// an exec command).
pub type AppResolver = Box<dyn Fn(&Config) -> Result<Program, String>>;

/// A HUP reload, between RELOADING=1 and READY=1.
enum ReloadState {
    /// No reload under way.
    Idle,
    /// The new generation's workers are starting; the old ones go as they are ready.
    InProgress {
        /// `forkd -s reload` processes waiting for the outcome, with the token each
        /// sent (its answer carries it back).
        waiters: Vec<(i32, u64)>,
    },
}

/// A USR2 binary upgrade, seen from this master: as the new master (started by an old
/// one) or as the old one (starting a new one). One at a time: USR2 is refused until
/// the current one is over.
enum UpgradeState {
    /// No upgrade under way.
    None,
    /// This master was started by USR2 and its workers are booting: once all are ready
    /// it tells the old master. `token` authenticates the handshake (`None`: an old
    /// master from before tokens, see `upgrade::take_upgrade_from`).
    StartedBy {
        /// The old master's pid.
        old: i32,
        /// The handshake's token.
        token: Option<u64>,
    },
    /// This master told its old master it is ready; once the old one has moved
    /// systemd's MAINPID here, it says so and this one sends READY=1.
    HandingOff {
        /// The old master's pid.
        old: i32,
        /// The handshake's token.
        token: Option<u64>,
    },
    /// USR2: this master started a new one and serves until it is ready.
    Starting {
        /// The new master.
        new: Upgrade,
        /// WINCH arrived meanwhile: the operator drives the upgrade (nginx style), so
        /// this master stays after the new one is ready, for TERM/QUIT or a HUP
        /// rollback.
        manual: bool,
    },
    /// A manual upgrade's new master took over while this one stays; when it exits,
    /// this master takes the pidfile back.
    Superseded {
        /// The new master.
        successor: Upgrade,
    },
    /// The new master took over and this one stops: the pidfile and the unix socket
    /// files are the new master's.
    HandedOver,
}

/// The supervisor's state; [`Master::run`] is the loop.
pub struct Master {
    /// This process's pid.
    pid: i32,
    /// The generation workers are forked from.
    current: Generation,
    /// The generation a HUP replaced, held until the current one is committed (its
    /// first worker ready) so that a reload whose workers cannot boot restores it.
    previous: Option<Generation>,
    /// The host's hooks around `fork()` (the Python package's interpreter), if any.
    fork_hooks: Option<crate::hosted::ForkHooks>,
    /// Re-reads the configuration for HUP.
    reload_config: Reloader,
    /// Chooses what workers run for a configuration.
    resolve_app: AppResolver,
    /// The shared-memory scoreboard: one slot per worker, and the server-wide header.
    scoreboard: Scoreboard,
    /// The signalfd every handled signal is read from.
    signals: signals::SignalIntake,
    /// Rung by workers when their scoreboard state changes.
    doorbell: signals::Doorbell,
    /// Every worker not yet reaped.
    workers: Vec<Worker>,
    /// The next worker's `number`.
    next_number: u64,
    /// Serving or stopping.
    state: RunState,
    /// How far start-up has got: a worker ready yet, "all workers ready" said yet.
    boot: Boot,
    /// Boot failures and quick crashes in a row, and the spawn hold they set.
    backoff: Backoff,
    /// The cgroup's OOM-kill counter as last read, to name a worker the kernel's OOM
    /// killer took (a SIGKILL forkd did not send); None where it cannot be read.
    oom_kills: Option<u64>,
    /// The locked pidfile, while this master owns it.
    pidfile: Option<pidfile::Pidfile>,
    /// How to start this binary again (USR2).
    relaunch: Relaunch,
    /// Where this master is in a USR2 binary upgrade, on either side of it.
    upgrade: UpgradeState,
    /// sd_notify: READY, RELOADING, STOPPING, MAINPID, STATUS, WATCHDOG.
    systemd: SystemdLink,
    /// A HUP reload under way, if any.
    reload: ReloadState,
    /// The socket exec workers send READY=1 / WATCHDOG=1 to (made with the first one).
    notify_intake: Option<exec::NotifyIntake>,
    /// Serving every socket systemd passed, as there is no `bind` setting: a reload
    /// without `bind` keeps them.
    serving_passed_sockets: bool,
    /// When the loop last woke: waking much later than it planned means this master
    /// was frozen (see [`clock`]).
    last_wake: Instant,
    /// The socket files of the listeners closed at the stop, removed at exit.
    closed_socket_files: Vec<crate::shared::listeners::SocketFile>,
    /// The control socket beside the pidfile (`forkd -s status`), while this master
    /// owns the pidfile.
    control: Option<ctl::ControlSocket>,
    /// When this master started.
    started: Instant,
    /// A Gunicorn config file's master-side server hooks, run in a child.
    hooks: hooks::HookRunner,
    /// `preload_app`: when the current generation's zygote may be started again after
    /// failures.
    zygote_retry: zygote_state::Retry,
    /// Exits of children not known when reaped, kept for a zygote's late report.
    early_exits: zygote_state::EarlyExits,
}

impl Master {
    /// Binds everything and prepares the loop; errors here mean forkd does not start.
    pub fn new(
        config: Config,
        tls: Option<Arc<rustls::ServerConfig>>,
        reload_config: Reloader,
        resolve_app: AppResolver,
        relaunch: Relaunch,
        fork_hooks: Option<crate::hosted::ForkHooks>,
    ) -> Result<Master, String> {
        let factory = resolve_app(&config)?;
        // Before `SystemdLink::from_env` takes NOTIFY_SOCKET out of the environment.
        if config.reload {
            watch::refusal(
                matches!(factory, Program::Exec(_)),
                std::env::var_os("NOTIFY_SOCKET").is_some(),
            )?;
        }
        let upgrade_from = upgrade::take_upgrade_from();
        let systemd = SystemdLink::from_env(upgrade_from.is_some());
        let mut passed = crate::shared::systemd::take_listen_fds();
        let passed_metrics = crate::metrics::take_passed(&mut passed);
        let serving_passed_sockets = !config.bind_given && !passed.is_empty();
        crate::shared::privileges::apply_umask_and_chdir(&config)?;
        let workdir = workdir::resolve(&config)?;
        let signals =
            signals::SignalIntake::install().map_err(|e| format!("cannot set up signals: {e}"))?;
        let doorbell =
            signals::Doorbell::new().map_err(|e| format!("cannot set up the doorbell: {e}"))?;
        let listeners = listeners::bind_all(&config, passed)?;
        for listener in &listeners {
            tracing::info!("listening on {}", listener.local);
        }
        let metrics = crate::metrics::listen(&config, passed_metrics)?;
        let scoreboard = Scoreboard::new().map_err(|e| e.to_string())?;
        crate::shared::logging::count_dropped_in(scoreboard.header());
        let pidfile = match &config.pidfile {
            Some(path) => Some(pidfile::Pidfile::create(path).map_err(|e| e.to_string())?),
            None => None,
        };
        // Without it forkd still serves: only `-s status` is lost, and says why.
        let control =
            config
                .pidfile
                .as_deref()
                .and_then(|path| match ctl::ControlSocket::bind(path) {
                    Ok(control) => {
                        tracing::debug!("control socket on {}", control.path().display());
                        Some(control)
                    }
                    Err(e) => {
                        tracing::error!(
                            "cannot make the control socket (`forkd -s status` will not work): {e}"
                        );
                        None
                    }
                });
        if let Program::Native(_) = factory {
            warn_if_fds_fall_short(&config);
        }
        let hooks = hooks::HookRunner::start(&config);
        // Forked before any worker and before the first generation owns the config.
        let here = workdir.clone().or_else(|| std::env::current_dir().ok());
        watch::start(
            &config,
            &factory,
            here.as_deref().unwrap_or(std::path::Path::new("/")),
            std::process::id() as i32,
        )?;
        Ok(Master {
            hooks,
            pid: std::process::id() as i32,
            current: Generation {
                workdir,
                ..Generation::first(config, factory, tls, listeners, metrics)
            },
            previous: None,
            fork_hooks,
            reload_config,
            resolve_app,
            scoreboard,
            signals,
            doorbell,
            workers: Vec::new(),
            next_number: 1,
            state: RunState::Serving,
            boot: Boot::Booting,
            backoff: Backoff::default(),
            oom_kills: oom::kills(),
            pidfile,
            relaunch,
            upgrade: match upgrade_from {
                Some((old, token)) => UpgradeState::StartedBy { old, token },
                None => UpgradeState::None,
            },
            systemd,
            reload: ReloadState::Idle,
            serving_passed_sockets,
            notify_intake: None,
            last_wake: Instant::now(),
            closed_socket_files: Vec::new(),
            control,
            started: Instant::now(),
            zygote_retry: zygote_state::Retry::default(),
            early_exits: zygote_state::EarlyExits::default(),
        })
    }

    /// The supervisor loop. Returns forkd's exit code. Each turn: reconcile the workers
    /// with what is wanted, sleep until an event or the nearest deadline, then act on
    /// signals, on what workers reported or how they exited, and on deadlines.
    pub fn run(mut self) -> u8 {
        crate::shared::proctitle::set(&crate::shared::proctitle::titled(
            "forkd: master",
            self.current.config.proc_name.as_deref(),
        ));
        tracing::info!(
            pid = self.pid,
            workers = self.current.target,
            "master started"
        );
        self.hooks.call(hooks::HookCall::OnStarting);
        loop {
            self.reconcile();
            let planned = self.wait_for_events();
            self.doorbell.drain();
            self.notice_freeze(planned);
            while let Some(received) = self.signals.next() {
                self.dispatch(&received);
            }
            self.serve_control();
            self.read_exec_reports();
            self.read_zygote_reports();
            self.reap();
            self.observe_scoreboard();
            self.check_recycling();
            self.enforce_deadlines();
            self.report_to_systemd();
            if let Some(code) = self.finished() {
                self.hooks.call(hooks::HookCall::OnExit);
                self.cleanup();
                return code;
            }
        }
    }

    // ---- signals ---------------------------------------------------------------------

    /// One signal to its handler.
    fn dispatch(&mut self, received: &signals::Received) {
        if received.signo == protocol::upgrade_ready_signal() {
            return self.handle_upgrade_signal(received);
        }
        let Ok(signal) = Signal::try_from(received.signo) else {
            return;
        };
        match signal {
            Signal::SIGHUP => {
                let waiter = protocol::wants_reload_reply(received.code, received.token)
                    .then_some((received.sender, received.token));
                self.handle_hup(waiter);
            }
            Signal::SIGTERM => self.handle_term(),
            Signal::SIGINT => self.handle_quit("INT"),
            Signal::SIGQUIT => self.handle_quit("QUIT"),
            Signal::SIGUSR1 => self.handle_usr1(),
            Signal::SIGUSR2 => self.handle_usr2(),
            Signal::SIGWINCH => self.handle_winch(),
            Signal::SIGTTIN => self.handle_ttin(),
            Signal::SIGTTOU => self.handle_ttou(),
            _ => {} // SIGCHLD: reaping follows
        }
    }

    /// TERM: readiness answers 503 from now on; the graceful stop begins at once, or
    /// after `shutdown_delay` (during which everything else is served as usual), so
    /// that load balancers deregister this server before it stops accepting.
    fn handle_term(&mut self) {
        self.scoreboard.header().set_server_stopping();
        let delay = self.current.config.health.shutdown_delay;
        match &self.state {
            RunState::Serving if !delay.is_zero() => {
                tracing::info!(
                    "TERM: reporting not ready for {:.1}s (shutdown_delay), then draining",
                    delay.as_secs_f64()
                );
                self.systemd.stopping("stopping: shutdown_delay");
                self.state = RunState::StopDelayed {
                    at: Instant::now() + delay,
                };
            }
            // Already counting down.
            RunState::StopDelayed { .. } if !delay.is_zero() => {}
            _ => self.begin_stop(Stop::Graceful, "TERM"),
        }
    }

    /// INT, QUIT: the quick stop.
    fn handle_quit(&mut self, name: &str) {
        self.scoreboard.header().set_server_stopping();
        self.begin_stop(Stop::Quick, name);
    }

    /// USR1: reopen the log files, here and in the native workers.
    fn handle_usr1(&mut self) {
        tracing::info!("USR1: reopening log files");
        crate::shared::logging::reopen();
        // Exec workers' output comes through the master, whose log was just reopened;
        // USR1's default action would kill them (Python's does).
        for w in self.workers.iter().filter(|w| w.exec.is_none()) {
            let _ = kill(w.pid, Signal::SIGUSR1);
        }
        self.hooks.reopen_logs();
    }

    /// WINCH: no workers wanted; the master stays.
    fn handle_winch(&mut self) {
        tracing::info!(
            "WINCH: stopping all workers gracefully; the master stays (HUP starts them again)"
        );
        self.current.target = 0;
        if let UpgradeState::Starting { manual, .. } = &mut self.upgrade {
            tracing::info!("WINCH during an upgrade: this master stays after the new one is ready (TERM or QUIT it to finish, HUP it to roll back)");
            *manual = true;
        }
    }

    /// TTIN: one worker more.
    fn handle_ttin(&mut self) {
        let old = self.current.target;
        self.current.target =
            (self.current.target + 1).min(crate::shared::scoreboard::CAPACITY / 2);
        tracing::info!(workers = self.current.target, "TTIN: one worker more");
        self.workers_changed(old);
    }

    /// TTOU: one worker fewer (one at least).
    fn handle_ttou(&mut self) {
        let old = self.current.target;
        self.current.target = self.current.target.saturating_sub(1).max(1);
        tracing::info!(workers = self.current.target, "TTOU: one worker fewer");
        self.workers_changed(old);
    }

    /// The `nworkers_changed` server hook, when the target changed.
    fn workers_changed(&mut self, old: usize) {
        let new = self.current.target;
        if new != old {
            self.hooks
                .call(hooks::HookCall::NworkersChanged { new, old });
        }
    }

    /// Stops forkd (TERM, QUIT, INT, an upgrade handed over, no worker could boot).
    fn begin_stop(&mut self, stop: Stop, name: &str) {
        let graceful = stop.graceful();
        let Some((state, tell_workers)) = self.state.stop(stop) else {
            return;
        };
        self.state = state;
        if !tell_workers {
            return;
        }
        self.systemd.stopping(&format!("stopping ({name})"));
        self.finish_reload(false);
        self.stop_zygotes();
        self.close_listeners();
        if graceful {
            tracing::info!(
                "{name}: graceful stop, draining {} workers",
                self.workers.len()
            );
        } else {
            tracing::info!("{name}: quick stop");
        }
        for index in 0..self.workers.len() {
            let w = &self.workers[index];
            if graceful {
                if matches!(w.phase, Phase::Running) {
                    self.stop_worker(index, ExitReason::Stop);
                }
            } else if !matches!(w.phase, Phase::Killed { .. }) {
                // A worker still booting has no QUIT handler yet (QUIT's default action
                // dumps core): it has nothing to lose, so it is killed outright.
                let _ = kill(
                    w.pid,
                    // An exec worker's QUIT would be its program's business (Python
                    // dumps core on it); immediate means SIGKILL there.
                    if w.ready() && w.exec.is_none() {
                        Signal::SIGQUIT
                    } else {
                        Signal::SIGKILL
                    },
                );
                self.workers[index].phase = Phase::Stopping {
                    reason: ExitReason::Stop,
                    kill_at: Instant::now() + KILL_GRACE,
                };
            }
        }
    }

    /// At the stop (not at a reload): this master's fds of every listener are closed,
    /// so that once the draining workers have closed theirs new connections are
    /// refused at once rather than left in the accept queue until the drain is over.
    /// Under socket activation systemd holds the sockets: connections queue there for
    /// the next start. After a USR2 hand-over the new master holds them and serves on.
    fn close_listeners(&mut self) {
        let previous = self.previous.iter_mut();
        for generation in std::iter::once(&mut self.current).chain(previous) {
            let files = generation.close_listeners();
            self.closed_socket_files.extend(files);
        }
    }

    // ---- waiting ---------------------------------------------------------------------

    /// Waits for a signal, a notify message or worker output, at most until the nearest
    /// deadline; returns how long it planned to sleep.
    #[allow(unsafe_code)] // borrowing the logger's stderr fd
    fn wait_for_events(&self) -> Duration {
        let timeout = self
            .next_deadline()
            .saturating_duration_since(Instant::now());
        let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
        let mut fds = vec![
            nix::poll::PollFd::new(self.signals.fd(), nix::poll::PollFlags::POLLIN),
            nix::poll::PollFd::new(self.doorbell.fd(), nix::poll::PollFlags::POLLIN),
        ];
        if let Some(intake) = &self.notify_intake {
            fds.push(nix::poll::PollFd::new(
                intake.fd(),
                nix::poll::PollFlags::POLLIN,
            ));
        }
        if let Some(control) = &self.control {
            fds.push(nix::poll::PollFd::new(
                control.fd(),
                nix::poll::PollFlags::POLLIN,
            ));
            for (fd, interest) in control.client_fds() {
                let events = match interest {
                    ctl::Interest::Read => nix::poll::PollFlags::POLLIN,
                    ctl::Interest::Write => nix::poll::PollFlags::POLLOUT,
                };
                fds.push(nix::poll::PollFd::new(fd, events));
            }
        }
        for fd in self.zygote_fds() {
            fds.push(nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN));
        }
        for exec in self.workers.iter().filter_map(|w| w.exec.as_ref()) {
            if !exec.output.eof {
                fds.push(nix::poll::PollFd::new(
                    exec.output.fd(),
                    nix::poll::PollFlags::POLLIN,
                ));
            }
        }
        // Error-log lines waiting for a stderr that is not being read (never blocked on).
        if let Some(fd) = crate::shared::logging::waiting_for_stderr() {
            // SAFETY: the logger keeps this fd open for the life of the process.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            fds.push(nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLOUT));
        }
        let _ = nix::poll::poll(
            &mut fds,
            nix::poll::PollTimeout::try_from(millis).unwrap_or(nix::poll::PollTimeout::MAX),
        );
        crate::shared::logging::pump();
        timeout
    }

    /// After a freeze of the whole tree (this master's own loop stood still), every
    /// worker's progress clock restarts now, and graceful-stop and exec boot deadlines
    /// move by the gap: the workers were frozen too, so their silence is no evidence of
    /// a hang.
    fn notice_freeze(&mut self, planned: Duration) {
        let now = Instant::now();
        let gap = now.saturating_duration_since(self.last_wake);
        self.last_wake = now;
        if !clock::loop_was_frozen(gap, planned) {
            return;
        }
        tracing::warn!(
            "the master did not run for {:.1}s (the process tree was stopped or frozen); giving every worker a fresh timeout window",
            gap.as_secs_f64()
        );
        let now_ms = monotonic_ms();
        for w in &mut self.workers {
            w.clock_from_ms = now_ms;
            if let Phase::Stopping { kill_at, .. } = &mut w.phase {
                *kill_at += gap;
            }
            // An exec worker still booting gets its boot window back too.
            if let Some(exec) = &mut w.exec {
                exec.spawned_at += gap;
            }
        }
    }

    // ---- exit ------------------------------------------------------------------------

    fn finished(&self) -> Option<u8> {
        self.state.exit_code(self.workers.len())
    }

    fn cleanup(&mut self) {
        if let RunState::Stopping(Stop::Failed { why, .. }) = &self.state {
            tracing::error!("{why}");
        }
        // After a hand-over the new master serves the same socket files.
        if !matches!(
            self.upgrade,
            UpgradeState::HandedOver | UpgradeState::Superseded { .. }
        ) {
            let previous = self.previous.iter().flat_map(|g| g.all_listeners());
            for listener in self.current.all_listeners().chain(previous) {
                listener.cleanup();
            }
            for file in &self.closed_socket_files {
                file.remove();
            }
        }
        if let Some(control) = &self.control {
            control.remove();
        }
        if let Some(pidfile) = &self.pidfile {
            pidfile.remove();
        }
        if let UpgradeState::Superseded { successor } = &self.upgrade {
            successor.remove_oldbin();
        }
        tracing::info!(pid = self.pid, "master exiting");
        crate::shared::logging::flush();
    }
}
