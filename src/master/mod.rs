//! The master: forkd's supervisor loop, in the spirit of Gunicorn's arbiter. One thread,
//! no async runtime (so `fork()` is safe). It binds the listeners, forks workers, and
//! then loops: wait on the signalfd until the nearest deadline, act on signals, reap
//! children, kill workers that stopped reporting progress, and reconcile the worker set
//! with what is wanted.
//!
//! Reconciling is the one mechanism behind crash replacement, TTIN/TTOU, WINCH, HUP
//! reloads and `max_requests` recycling: workers of the current generation that are not
//! retiring count as *active*; missing active workers are spawned; a *surplus* worker
//! (old generation, or asking to retire) is stopped only when enough active workers are
//! ready to take its place, so capacity never dips below the target. The decision is the
//! pure function [`plan::plan`]; this loop applies it.
//!
//! The master's state is spelled as types: [`RunState`] (serving, serving out a
//! `shutdown_delay`, stopping, and how: [`Stop`]) and [`Boot`] (how far start-up has
//! got), both in [`state`] with their pure decisions; [`ReloadState`] (a HUP under way
//! and who waits for it), [`UpgradeState`] (either side of a USR2 upgrade), a worker's
//! [`Phase`] and the [`plan::ExitReason`] it exits for; every timed action is a
//! [`Deadline`] listed once by [`Master::deadlines`].

#[allow(unsafe_code)] // close_range, dup of fds for a child
mod child;
mod clock;
#[allow(unsafe_code)] // the exec child: autobind, SIGPIPE, close_range, _exit
pub mod exec;
mod notify;
mod plan;
pub mod recycle;
#[allow(unsafe_code)] // a signal set with a realtime signal
pub mod signals;
mod state;
#[allow(unsafe_code)] // fork and exec of the new master
pub mod upgrade;

use crate::app::AppFactory;
use crate::config::{Config, ConfigError, ReadyMode};
use crate::control;
use crate::listeners::{self, Listener};
use crate::pidfile;
use crate::protocol::{self, EXIT_BOOT_ERROR, EXIT_NO_WORKER};
use crate::scoreboard::{monotonic_ms, Scoreboard, WorkerState, FLAG_RETIRE};
use crate::single_threaded::fork;
use crate::worker::{self, WorkerContext};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use notify::SystemdLink;
use plan::{ExitReason, Plan, View, WorkerView, BACKOFF_FIRST};
use state::{Boot, RunState, Stop};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use upgrade::{Relaunch, Upgrade};

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

/// The kernel's OOM kills in forkd's memory cgroup, to name a worker's SIGKILL that
/// forkd did not send.
mod oom {
    /// `oom_kill` of cgroup v2's `memory.events`, or of v1's `memory.oom_control`.
    pub fn kills() -> Option<u64> {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let file = cgroups.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            if controllers.split(',').any(|c| c == "memory") {
                Some(format!("/sys/fs/cgroup/memory{path}/memory.oom_control"))
            } else if controllers.is_empty() {
                Some(format!("/sys/fs/cgroup{path}/memory.events"))
            } else {
                None
            }
        })?;
        let text = std::fs::read_to_string(file).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    }
}

/// Re-reads the configuration for HUP (file + the start-up environment and command line).
pub type Reloader = Box<dyn Fn() -> Result<Config, ConfigError>>;
/// Chooses what workers run for a config (built-in app by name, the embedded app, or
/// an exec command).
pub type AppResolver = Box<dyn Fn(&Config) -> Result<Program, String>>;

/// What a worker runs.
#[derive(Clone)]
pub enum Program {
    /// A hyper server around an app, in the forked process.
    Native(AppFactory),
    /// A program exec'd after the fork, given the listeners (exec workers).
    Exec(Arc<exec::ExecProgram>),
    /// A hyper server around an app of the host's runtime (a Python ASGI app), whose
    /// event loop owns the worker's main thread.
    Hosted(crate::hosted::HostedProgram),
}

/// How often a booting exec worker is looked at in /proc for `ready = "auto"`.
const EXEC_READY_PROBE: Duration = Duration::from_millis(20);
/// How long an exec worker may take to be ready when `timeout` is 0.
const EXEC_BOOT_LIMIT: Duration = Duration::from_secs(60);

/// What is due at a deadline (see [`Master::deadlines`]); a `usize` is the worker's
/// index in `Master::workers`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Deadline {
    /// `shutdown_delay` is over: the graceful stop begins.
    ShutdownDelay,
    /// The upgrade's new master was not ready in time.
    UpgradeReady,
    /// The boot backoff is over: spawning may resume.
    SpawnBackoff,
    /// systemd's watchdog keep-alive is due.
    Systemd,
    /// A booting exec worker is looked at again for readiness.
    ExecReadyProbe,
    /// An exec worker was not ready in time: SIGKILL.
    ExecBoot(usize),
    /// A worker stopped reporting progress for `timeout`: SIGABRT.
    Progress(usize),
    /// A worker told to stop (or aborted) is still there: SIGKILL.
    Kill(usize),
}

/// Where a worker is in its life, as far as the master asked.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Booting or serving; nothing asked of it.
    Running,
    /// Told to stop (TERM or QUIT); SIGKILL at `kill_at`.
    Stopping {
        /// Why it was asked to stop.
        reason: ExitReason,
        /// When SIGKILL follows.
        kill_at: Instant,
    },
    /// Timed out: SIGABRT sent, SIGKILL at `kill_at`.
    Aborting {
        /// When SIGKILL follows.
        kill_at: Instant,
    },
    /// SIGKILL sent; waiting to reap it.
    Killed {
        /// Why it was killed.
        reason: ExitReason,
    },
}

/// A worker process the master supervises.
struct Worker {
    /// Its process id.
    pid: Pid,
    /// Its scoreboard slot.
    slot: usize,
    /// Its start order (1, 2, ...; lower is older).
    number: u64,
    /// The configuration generation it was forked with (HUP makes a new one).
    generation: u64,
    /// That generation's configuration.
    config: Arc<Config>,
    /// Where it is in its life, as far as the master asked.
    phase: Phase,
    /// The master has seen it ready to serve.
    ready: bool,
    /// When the master saw it ready (for telling a crash loop from a one-off crash).
    ready_at: Option<Instant>,
    /// Set for an exec worker.
    exec: Option<ExecWorker>,
    /// CLOCK_MONOTONIC ms from which this worker's silence is counted at the earliest:
    /// its start, or the end of a freeze of the whole tree (see [`clock`]). Kept here,
    /// not in the worker-writable slot.
    clock_from_ms: u64,
    /// `max_worker_memory` / `max_worker_lifetime`: its age, limit and RSS samples.
    recycle: recycle::Watch,
}

/// What the master tracks for an exec worker beyond the scoreboard.
struct ExecWorker {
    output: exec::Output,
    spawned_at: Instant,
    /// A worker that never sent WATCHDOG=1 is not subject to `timeout` (nothing would
    /// tell a busy one from a hung one); its first keep-alive opts it in.
    watchdog_seen: bool,
}

impl Worker {
    /// Whether `timeout` is enforced on this worker.
    fn timed(&self) -> bool {
        !self.config.timeout.is_zero() && self.exec.as_ref().is_none_or(|e| e.watchdog_seen)
    }

    /// When an exec worker that is not ready yet is given up on.
    fn boot_deadline(&self) -> Option<Instant> {
        let exec = self.exec.as_ref().filter(|_| !self.ready)?;
        let limit = if self.config.timeout.is_zero() {
            EXEC_BOOT_LIMIT
        } else {
            self.config.timeout
        };
        let limit = match self.config.exec.ready {
            ReadyMode::After(wait) => limit.max(wait + Duration::from_secs(1)),
            _ => limit,
        };
        Some(exec.spawned_at + limit)
    }
}

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
    /// The current generation's configuration.
    config: Arc<Config>,
    /// The current configuration generation (1, then +1 per HUP that succeeds).
    generation: u64,
    /// What the current generation's workers run.
    factory: Program,
    /// The host's hooks around `fork()` (the Python package's interpreter), if any.
    fork_hooks: Option<crate::hosted::ForkHooks>,
    /// Re-reads the configuration for HUP.
    reload_config: Reloader,
    /// Chooses what workers run for a configuration.
    resolve_app: AppResolver,
    /// The bound listeners, inherited by every worker forked from now on.
    listeners: Vec<Listener>,
    /// The shared-memory scoreboard: one slot per worker, and the server-wide header.
    scoreboard: Scoreboard,
    /// The signalfd every handled signal is read from.
    signals: signals::SignalIntake,
    /// Rung by workers when their scoreboard state changes.
    doorbell: signals::Doorbell,
    /// Every worker not yet reaped.
    workers: Vec<Worker>,
    /// How many active workers are wanted (config, TTIN/TTOU, WINCH).
    target: usize,
    /// The next worker's `number`.
    next_number: u64,
    /// Serving or stopping.
    state: RunState,
    /// How far start-up has got: a worker ready yet, "all workers ready" said yet.
    boot: Boot,
    /// Boot failures in a row, for the boot backoff.
    boot_failures: u32,
    /// Crashes in a row of workers that had been ready less than `CRASH_LOOP_WINDOW`.
    quick_crashes: u32,
    /// No worker is started before this moment (boot backoff, crash loop).
    spawn_not_before: Option<Instant>,
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
    /// The `[metrics]` listener, served by the workers.
    metrics: Option<Listener>,
    /// When the loop last woke: waking much later than it planned means this master
    /// was frozen (see [`clock`]).
    last_wake: Instant,
    /// The current generation's `[tls]`, loaded and checked here and inherited by the
    /// workers forked with it (older workers keep the one they were forked with).
    tls: Option<Arc<rustls::ServerConfig>>,
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
        let upgrade_from = upgrade::take_upgrade_from();
        let systemd = SystemdLink::from_env(upgrade_from.is_some());
        let mut passed = crate::systemd::take_listen_fds();
        let passed_metrics = crate::metrics::take_passed(&mut passed);
        let serving_passed_sockets = !config.bind_given && !passed.is_empty();
        crate::privileges::apply_umask_and_chdir(&config)?;
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
        crate::logging::count_dropped_in(scoreboard.header());
        let pidfile = match &config.pidfile {
            Some(path) => Some(pidfile::Pidfile::create(path).map_err(|e| e.to_string())?),
            None => None,
        };
        let target = config.worker_count();
        if let Program::Native(_) = factory {
            warn_if_fds_fall_short(&config);
        }
        Ok(Master {
            pid: std::process::id() as i32,
            config: Arc::new(config),
            generation: 1,
            factory,
            fork_hooks,
            reload_config,
            resolve_app,
            listeners,
            scoreboard,
            signals,
            doorbell,
            workers: Vec::new(),
            target,
            next_number: 1,
            state: RunState::Serving,
            boot: Boot::Booting,
            boot_failures: 0,
            quick_crashes: 0,
            spawn_not_before: None,
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
            metrics,
            notify_intake: None,
            last_wake: Instant::now(),
            tls,
        })
    }

    /// The supervisor loop. Returns forkd's exit code.
    pub fn run(mut self) -> u8 {
        crate::proctitle::set("forkd: master");
        tracing::info!(pid = self.pid, workers = self.target, "master started");
        loop {
            self.reconcile();
            let planned = self.wait_for_events();
            self.doorbell.drain();
            self.notice_freeze(planned);
            while let Some(received) = self.signals.next() {
                if received.signo == protocol::upgrade_ready_signal() {
                    self.upgrade_signal(&received);
                } else if received.signo == libc::SIGHUP {
                    let waiter = protocol::wants_reload_reply(received.code, received.token)
                        .then_some((received.sender, received.token));
                    self.reload(waiter);
                } else {
                    self.handle_signal(received.signo);
                }
            }
            self.read_exec_reports();
            self.reap();
            self.observe_scoreboard();
            self.check_recycling();
            self.enforce_deadlines();
            self.report_to_systemd();
            if let Some(code) = self.finished() {
                self.cleanup();
                return code;
            }
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
        for exec in self.workers.iter().filter_map(|w| w.exec.as_ref()) {
            if !exec.output.eof {
                fds.push(nix::poll::PollFd::new(
                    exec.output.fd(),
                    nix::poll::PollFlags::POLLIN,
                ));
            }
        }
        // Error-log lines waiting for a stderr that is not being read (never blocked on).
        if let Some(fd) = crate::logging::waiting_for_stderr() {
            // SAFETY: the logger keeps this fd open for the life of the process.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            fds.push(nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLOUT));
        }
        let _ = nix::poll::poll(
            &mut fds,
            nix::poll::PollTimeout::try_from(millis).unwrap_or(nix::poll::PollTimeout::MAX),
        );
        crate::logging::pump();
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

    /// Every moment the loop must act at without a signal, with what is due then; the
    /// one list behind [`Master::next_deadline`] and [`Master::enforce_deadlines`].
    /// Process-wide deadlines come first, then each worker's in the order they are
    /// enforced (boot, progress, kill).
    fn deadlines(&self, now: Instant) -> Vec<(Instant, Deadline)> {
        let mut due = Vec::new();
        if let RunState::StopDelayed { at } = self.state {
            due.push((at, Deadline::ShutdownDelay));
        }
        if let UpgradeState::Starting { new, .. } = &self.upgrade {
            due.push((new.deadline, Deadline::UpgradeReady));
        }
        if let Some(at) = self.spawn_not_before {
            due.push((at, Deadline::SpawnBackoff));
        }
        if let Some(at) = self.systemd.deadline() {
            due.push((at, Deadline::Systemd));
        }
        let now_ms = monotonic_ms();
        for (index, w) in self.workers.iter().enumerate() {
            if let Some(deadline) = w.boot_deadline() {
                due.push((deadline, Deadline::ExecBoot(index)));
                let probe = match w.config.exec.ready {
                    ReadyMode::Auto => now + EXEC_READY_PROBE,
                    ReadyMode::Notify => deadline,
                    ReadyMode::After(wait) => w.exec.as_ref().map_or(now, |e| e.spawned_at + wait),
                };
                due.push((probe, Deadline::ExecReadyProbe));
            }
            if matches!(w.phase, Phase::Running | Phase::Stopping { .. }) && w.timed() {
                let progress_ms = self.scoreboard.slot(w.slot).progress_ms();
                let silent = clock::silent_ms(now_ms, progress_ms, w.clock_from_ms);
                let timeout = w.config.timeout.as_millis() as u64;
                let left = Duration::from_millis(timeout.saturating_sub(silent));
                due.push((now + left, Deadline::Progress(index)));
            }
            if let Phase::Stopping { kill_at, .. } | Phase::Aborting { kill_at } = w.phase {
                due.push((kill_at, Deadline::Kill(index)));
            }
        }
        due
    }

    /// The nearest moment the loop must act without a signal (at most `MAX_SLEEP` away).
    fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        self.deadlines(now)
            .into_iter()
            .map(|(at, _)| at)
            .fold(now + MAX_SLEEP, Instant::min)
    }

    // ---- signals ---------------------------------------------------------------------

    fn handle_signal(&mut self, signo: i32) {
        let Ok(signal) = Signal::try_from(signo) else {
            return;
        };
        match signal {
            Signal::SIGHUP => self.reload(None),
            Signal::SIGTERM => self.term(),
            Signal::SIGINT | Signal::SIGQUIT => {
                self.scoreboard.header().set_server_stopping();
                let name = if signal == Signal::SIGINT {
                    "INT"
                } else {
                    "QUIT"
                };
                self.begin_stop(Stop::Quick, name);
            }
            Signal::SIGUSR1 => {
                tracing::info!("USR1: reopening log files");
                crate::logging::reopen();
                // Exec workers' output comes through the master, whose log was just
                // reopened; USR1's default action would kill them (Python's does).
                for w in self.workers.iter().filter(|w| w.exec.is_none()) {
                    let _ = kill(w.pid, Signal::SIGUSR1);
                }
            }
            Signal::SIGUSR2 => self.start_upgrade(),
            Signal::SIGWINCH => {
                tracing::info!("WINCH: stopping all workers gracefully; the master stays (HUP starts them again)");
                self.target = 0;
                if let UpgradeState::Starting { manual, .. } = &mut self.upgrade {
                    tracing::info!("WINCH during an upgrade: this master stays after the new one is ready (TERM or QUIT it to finish, HUP it to roll back)");
                    *manual = true;
                }
            }
            Signal::SIGTTIN => {
                self.target = (self.target + 1).min(crate::scoreboard::CAPACITY / 2);
                tracing::info!(workers = self.target, "TTIN: one worker more");
            }
            Signal::SIGTTOU => {
                self.target = self.target.saturating_sub(1).max(1);
                tracing::info!(workers = self.target, "TTOU: one worker fewer");
            }
            _ => {} // SIGCHLD: reaping follows
        }
    }

    /// TERM: readiness answers 503 from now on; the graceful stop begins at once, or
    /// after `shutdown_delay` (during which everything else is served as usual), so
    /// that load balancers deregister this server before it stops accepting.
    fn term(&mut self) {
        self.scoreboard.header().set_server_stopping();
        let delay = self.config.health.shutdown_delay;
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

    /// HUP: re-read the config; on success roll the workers over to a new generation.
    /// `waiter`: a `forkd -s reload` to answer when it is over.
    fn reload(&mut self, waiter: Option<(i32, u64)>) {
        if self.state != RunState::Serving {
            self.finish_reload(false);
            if let Some((pid, token)) = waiter {
                control::answer_reload(pid, token, false);
            }
            return;
        }
        self.systemd.reloading();
        match &mut self.reload {
            ReloadState::InProgress { waiters } => waiters.extend(waiter),
            ReloadState::Idle => {
                self.reload = ReloadState::InProgress {
                    waiters: waiter.into_iter().collect(),
                }
            }
        }
        let (config, factory, tls) = match self.prepare_reload() {
            Ok(prepared) => prepared,
            Err(e) => {
                tracing::error!("HUP: reload failed, keeping the current workers and config: {e}");
                self.finish_reload(false);
                return;
            }
        };
        self.scoreboard.header().count_reload();
        if let Err(e) = crate::logging::reconfigure(&config.log) {
            tracing::error!("HUP: {e}; keeping the previous error log");
        }
        self.generation += 1;
        self.target = config.worker_count();
        self.config = Arc::new(config);
        self.factory = factory;
        self.tls = tls;
        self.boot_failures = 0;
        self.spawn_not_before = None;
        tracing::info!(
            generation = self.generation,
            workers = self.target,
            "HUP: reloading, starting new workers"
        );
    }

    /// HUP's fallible part: reads the config, resolves the app, loads the TLS files
    /// (a file that is missing, unparsable or does not match fails the reload, before
    /// any new worker) and binds the listeners the new config names.
    fn prepare_reload(
        &mut self,
    ) -> Result<(Config, Program, Option<Arc<rustls::ServerConfig>>), String> {
        let config = (self.reload_config)().map_err(|e| e.to_string())?;
        let factory = (self.resolve_app)(&config)?;
        let tls = crate::tls::load(&config)
            .map_err(|e| e.to_string())?
            .map(|loaded| {
                for warning in &loaded.warnings {
                    tracing::warn!("HUP: {warning}");
                }
                loaded.server
            });
        self.rebind(&config)?;
        crate::metrics::rebind(&mut self.metrics, &config)?;
        Ok((config, factory, tls))
    }

    /// Binds addresses new in `config` and closes the ones it no longer has (running
    /// workers keep their own copies until they exit).
    fn rebind(&mut self, config: &Config) -> Result<(), String> {
        if self.serving_passed_sockets && !config.bind_given {
            return Ok(());
        }
        let mut next = Vec::new();
        for spec in &config.bind {
            // The same socket, also when it changes between plain and TLS: workers of
            // the new generation serve it as the entry now says, old ones as before.
            if let Some(pos) = self
                .listeners
                .iter()
                .position(|l| l.spec.plain() == spec.plain())
            {
                let mut listener = self.listeners.remove(pos);
                listener.spec = spec.clone();
                next.push(listener);
                continue;
            }
            match listeners::bind(spec, config.backlog) {
                Ok(listener) => {
                    tracing::info!("listening on {}", listener.local);
                    next.push(listener);
                }
                Err(e) => {
                    self.listeners.extend(next);
                    return Err(e.to_string());
                }
            }
        }
        for old in self.listeners.drain(..) {
            tracing::info!("no longer listening on {}", old.local);
            old.cleanup();
        }
        self.listeners = next;
        Ok(())
    }

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
                    if w.ready && w.exec.is_none() {
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

    // ---- children --------------------------------------------------------------------

    fn reap(&mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => status,
            };
            let Some(pid) = status.pid() else { continue };
            if matches!(&self.upgrade, UpgradeState::Starting { new, .. } if new.child == pid) {
                self.upgrade_failed(&format!("the new master exited ({status:?})"));
                continue;
            }
            if matches!(&self.upgrade, UpgradeState::Superseded { successor } if successor.child == pid)
            {
                let UpgradeState::Superseded { successor } =
                    std::mem::replace(&mut self.upgrade, UpgradeState::None)
                else {
                    continue;
                };
                tracing::info!(
                    new_master = pid.as_raw(),
                    "the new master exited; this master is the master again"
                );
                successor.restore_pidfile();
                let status = self.status_line().1;
                self.systemd.take_back(&status);
                continue;
            }
            let Some(index) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let mut worker = self.workers.remove(index);
            if let Some(exec) = &mut worker.exec {
                exec.output.drain(pid.as_raw(), true);
            }
            self.worker_exited(worker, status);
        }
    }

    fn worker_exited(&mut self, worker: Worker, status: WaitStatus) {
        let slot = self.scoreboard.slot(worker.slot);
        let message = slot.message();
        // Exec workers do not count their requests in the scoreboard.
        let served = worker.exec.is_none().then(|| slot.requests());
        self.scoreboard.release(worker.slot);
        // Signals forkd sends show up in the phase; any other is named with its likely
        // cause.
        let unasked = matches!(worker.phase, Phase::Running);
        let how = match status {
            WaitStatus::Exited(_, code) => format!("exit code {code}"),
            WaitStatus::Signaled(_, Signal::SIGKILL, _) if unasked => {
                let before = self.oom_kills;
                self.oom_kills = oom::kills();
                match (before, self.oom_kills) {
                    (Some(before), Some(after)) if after > before => {
                        "killed by SIGKILL from the kernel's OOM killer (out of memory: the cgroup's oom_kill count rose)".to_string()
                    }
                    _ => "killed by SIGKILL, not sent by forkd (out of memory?)".to_string(),
                }
            }
            WaitStatus::Signaled(_, Signal::SIGABRT, _) if unasked => {
                "signal SIGABRT: an abort, such as a failed memory allocation or a panic with panic = \"abort\" (the error log has its message)".to_string()
            }
            WaitStatus::Signaled(_, signal, _) => format!("signal {signal}"),
            other => format!("{other:?}"),
        };
        let (pid, number) = (worker.pid.as_raw(), worker.number);
        let reason = match worker.phase {
            Phase::Stopping { reason, .. } | Phase::Killed { reason } => reason,
            Phase::Aborting { .. } => ExitReason::Timeout,
            Phase::Running if !worker.ready => ExitReason::BootFailure,
            // A program that ends by itself with 0 (uvicorn --limit-max-requests) is
            // recycling, not crashing; it is replaced the same way.
            Phase::Running
                if worker.exec.is_some() && matches!(status, WaitStatus::Exited(_, 0)) =>
            {
                ExitReason::Exited
            }
            Phase::Running => ExitReason::Crash,
        };
        if let Some(restart) = reason.restart() {
            self.scoreboard.header().count_restart(restart);
        }
        match reason {
            ExitReason::Crash => {
                let up_for = worker.ready_at.map(|at| at.elapsed());
                let (quick_crashes, hold_off) = plan::after_crash(up_for, self.quick_crashes);
                self.quick_crashes = quick_crashes;
                if let Some(delay) = hold_off {
                    let delay = self.delay_spawning(delay);
                    tracing::error!(
                        pid,
                        worker = number,
                        requests = served,
                        "worker exited unexpectedly ({how}) {:.1}s after it became ready ({} such crashes in a row); replacing it in {:.1}s",
                        up_for.unwrap_or_default().as_secs_f64(),
                        self.quick_crashes,
                        delay.as_secs_f64()
                    );
                } else {
                    tracing::error!(
                        pid,
                        worker = number,
                        requests = served,
                        "worker exited unexpectedly ({how}); replacing it"
                    );
                }
            }
            ExitReason::BootFailure => {
                let mut why =
                    message.unwrap_or_else(|| format!("it exited before it was ready ({how})"));
                if let Some(output) = worker.exec.as_ref().and_then(|e| e.output.recent()) {
                    why = format!("{why}; its last output: {output}");
                }
                tracing::error!(pid, worker = number, "worker failed to boot: {why}");
                self.boot_failed(
                    &worker,
                    why,
                    matches!(status, WaitStatus::Exited(_, EXIT_BOOT_ERROR)),
                );
            }
            ExitReason::Timeout
            | ExitReason::MaxRequests
            | ExitReason::MaxWorkerMemory
            | ExitReason::MaxWorkerLifetime
            | ExitReason::Reload
            | ExitReason::ScaleDown
            | ExitReason::Stop
            | ExitReason::Exited
            | ExitReason::ReloadFailed => tracing::info!(
                pid,
                worker = number,
                reason = reason.as_str(),
                requests = served,
                "worker exited ({how})"
            ),
        }
    }

    /// A worker died before it was ready: exit 3 if none ever booted, abandon a reload
    /// whose new workers cannot boot, or retry with backoff.
    fn boot_failed(&mut self, worker: &Worker, why: String, _boot_error: bool) {
        if self.boot.boot_failure_is_fatal() {
            let failed = Stop::Failed {
                code: EXIT_NO_WORKER,
                why: format!("no worker could boot: {why}"),
            };
            self.begin_stop(failed, "no worker could boot");
            return;
        }
        let old = self
            .workers
            .iter()
            .find(|w| w.generation < worker.generation && matches!(w.phase, Phase::Running));
        if worker.generation == self.generation {
            if let Some(old) = old {
                let (generation, config) = (old.generation, old.config.clone());
                tracing::error!("reload failed: new workers cannot boot; keeping the workers of the previous configuration");
                match (self.resolve_app)(&config) {
                    Ok(factory) => self.factory = factory,
                    Err(e) => tracing::error!("cannot restore the previous app: {e}"),
                }
                self.target = config.worker_count();
                self.generation = generation;
                self.config = config;
                for index in 0..self.workers.len() {
                    if self.workers[index].generation > generation && !self.workers[index].ready {
                        self.stop_worker(index, ExitReason::ReloadFailed);
                    }
                }
                self.finish_reload(false);
                return;
            }
        }
        self.boot_failures += 1;
        let delay = self.delay_spawning(plan::backoff(self.boot_failures));
        tracing::warn!("retrying worker boot in {:.1}s", delay.as_secs_f64());
    }

    /// Holds off spawning for at least `delay` (a pending longer hold stays); returns
    /// the delay that really applies, for the log.
    fn delay_spawning(&mut self, delay: Duration) -> Duration {
        let now = Instant::now();
        let at = (now + delay).max(self.spawn_not_before.unwrap_or(now));
        self.spawn_not_before = Some(at);
        at - now
    }

    #[allow(unsafe_code)] // kill(2) with a realtime signal
    fn observe_scoreboard(&mut self) {
        self.probe_exec_readiness();
        for w in &mut self.workers {
            if !w.ready && self.scoreboard.slot(w.slot).state() == WorkerState::Ready {
                w.ready = true;
                w.ready_at = Some(Instant::now());
                self.boot = self.boot.worker_ready();
                self.boot_failures = 0;
                tracing::info!(pid = w.pid.as_raw(), worker = w.number, "worker ready");
            }
        }
        let ready = self.workers.iter().filter(|w| w.ready).count();
        if self
            .boot
            .announce_now(self.state.supervising(), ready, self.target)
        {
            self.boot = Boot::Announced;
            tracing::info!(workers = ready, "all workers ready");
            if let UpgradeState::StartedBy { old, token } = self.upgrade {
                tracing::info!(
                    old_master = old,
                    "upgrade: telling the old master that this one is ready"
                );
                // READY=1 waits for the old master's answer: systemd must first
                // hear from it that this process is the main one.
                self.upgrade = UpgradeState::HandingOff { old, token };
                let _ = match token {
                    Some(token) => protocol::queue(old, protocol::upgrade_ready_signal(), token),
                    None => protocol::kill(old, protocol::upgrade_ready_signal()),
                };
            } else {
                let status = self.status_line().1;
                self.systemd.ready(&status);
            }
        }
    }

    /// Acts on every deadline that has come ([`Master::deadlines`]): the end of
    /// `shutdown_delay`, an upgrade's new master that is not ready in time, exec workers
    /// that do not boot, workers that stopped reporting progress, and those past their
    /// stop deadline.
    fn enforce_deadlines(&mut self) {
        let now = Instant::now();
        // Process-wide first: the graceful stop one may begin changes the workers'.
        for (at, deadline) in self.deadlines(now) {
            if at > now {
                continue;
            }
            match deadline {
                Deadline::ShutdownDelay => {
                    self.begin_stop(Stop::Graceful, "TERM (after shutdown_delay)");
                }
                Deadline::UpgradeReady => {
                    if let UpgradeState::Starting { new, .. } = &self.upgrade {
                        let child = new.child;
                        self.upgrade_failed(&format!(
                            "the new master {child} was not ready within {}s",
                            protocol::UPGRADE_READY_DEADLINE.as_secs()
                        ));
                        let _ = kill(child, Signal::SIGTERM);
                    }
                }
                // reconcile() and report_to_systemd() act on these, and exec readiness
                // is probed in observe_scoreboard(); waking up is all they need here.
                Deadline::SpawnBackoff | Deadline::Systemd | Deadline::ExecReadyProbe => {}
                // The workers' own: below.
                Deadline::ExecBoot(_) | Deadline::Progress(_) | Deadline::Kill(_) => {}
            }
        }
        // Then each worker: the first deadline acted on ends its turn.
        let mut acted = vec![false; self.workers.len()];
        for (at, deadline) in self.deadlines(now) {
            if at > now {
                continue;
            }
            let index = match deadline {
                Deadline::ExecBoot(i) | Deadline::Progress(i) | Deadline::Kill(i) => i,
                Deadline::ShutdownDelay
                | Deadline::UpgradeReady
                | Deadline::SpawnBackoff
                | Deadline::Systemd
                | Deadline::ExecReadyProbe => continue,
            };
            if acted[index] {
                continue;
            }
            let w = &mut self.workers[index];
            acted[index] = match deadline {
                Deadline::ExecBoot(_) if matches!(w.phase, Phase::Running) => {
                    let waited = now.duration_since(w.exec.as_ref().map_or(now, |e| e.spawned_at));
                    let why = format!(
                        "not ready within {:.1}s (ready = {}); killed",
                        waited.as_secs_f64(),
                        crate::config::ready_mode_text(&w.config.exec.ready)
                    );
                    self.scoreboard.slot(w.slot).set_message(&why);
                    let _ = kill(w.pid, Signal::SIGKILL);
                    w.phase = Phase::Killed {
                        reason: ExitReason::BootFailure,
                    };
                    true
                }
                Deadline::Progress(_) => {
                    let progress_ms = self.scoreboard.slot(w.slot).progress_ms();
                    let silent_ms = clock::silent_ms(monotonic_ms(), progress_ms, w.clock_from_ms);
                    tracing::error!(
                        pid = w.pid.as_raw(),
                        worker = w.number,
                        "worker timeout: no progress from its event loop for {:.1}s (timeout = {}s); sending SIGABRT",
                        silent_ms as f64 / 1000.0,
                        w.config.timeout.as_secs_f64()
                    );
                    let _ = kill(w.pid, Signal::SIGABRT);
                    w.phase = Phase::Aborting {
                        kill_at: now + KILL_GRACE,
                    };
                    true
                }
                Deadline::Kill(_) => {
                    let reason = match w.phase {
                        Phase::Stopping { reason, .. } => {
                            tracing::warn!(
                                pid = w.pid.as_raw(),
                                worker = w.number,
                                "worker did not stop in time; sending SIGKILL"
                            );
                            reason
                        }
                        _ => {
                            tracing::warn!(
                                pid = w.pid.as_raw(),
                                worker = w.number,
                                "worker still alive after SIGABRT; sending SIGKILL"
                            );
                            ExitReason::Timeout
                        }
                    };
                    let _ = kill(w.pid, Signal::SIGKILL);
                    w.phase = Phase::Killed { reason };
                    true
                }
                _ => false,
            };
        }
    }

    // ---- binary upgrade --------------------------------------------------------------

    /// USR2: start a new master from the binary on disk, handing it the listeners.
    fn start_upgrade(&mut self) {
        if self.state != RunState::Serving {
            return;
        }
        match &self.upgrade {
            UpgradeState::None => {}
            UpgradeState::Starting { new, .. } | UpgradeState::Superseded { successor: new } => {
                tracing::warn!(
                    new_master = new.child.as_raw(),
                    "USR2: an upgrade is already in progress; ignoring"
                );
                return;
            }
            UpgradeState::StartedBy { old, .. } | UpgradeState::HandingOff { old, .. } => {
                tracing::warn!(
                    old_master = old,
                    "USR2: this master's own upgrade is not finished; ignoring"
                );
                return;
            }
            UpgradeState::HandedOver => return,
        }
        let pidfile = self.config.pidfile.as_deref();
        match Upgrade::start(
            &self.relaunch,
            &self.listeners,
            self.metrics.as_ref(),
            pidfile,
            self.signals.fd().as_raw_fd(),
            &self.systemd.environment_for_successor(),
        ) {
            Ok(upgrade) => {
                self.scoreboard.header().count_upgrade();
                tracing::info!(
                    new_master = upgrade.child.as_raw(),
                    binary = %self.relaunch.exe.display(),
                    "USR2: binary upgrade started; serving until the new master is ready"
                );
                self.upgrade = UpgradeState::Starting {
                    new: upgrade,
                    manual: false,
                };
            }
            Err(e) => tracing::error!("USR2: binary upgrade failed, keeping this master: {e}"),
        }
    }

    /// The upgrade handshake's signal: the new master is ready (to the old master), or
    /// the old one handed over (to the new master). Believed only with the token.
    fn upgrade_signal(&mut self, received: &signals::Received) {
        match &self.upgrade {
            &UpgradeState::HandingOff { old, token } => {
                // An old master from before tokens answers with a plain signal.
                let authentic = token.map_or(received.sender == old, |t| received.is_from(old, t));
                if authentic {
                    return self.handoff_acknowledged();
                }
            }
            UpgradeState::Starting { new, .. } => {
                if received.is_from(new.child.as_raw(), new.token) {
                    return self.upgrade_ready();
                }
            }
            UpgradeState::None
            | UpgradeState::StartedBy { .. }
            | UpgradeState::Superseded { .. }
            | UpgradeState::HandedOver => {}
        }
        tracing::warn!(
            claimed_sender = received.sender,
            "ignoring an upgrade signal that does not carry the upgrade's token"
        );
    }

    /// The new master says its workers are ready: hand over and stop gracefully.
    fn upgrade_ready(&mut self) {
        let Some((upgrade, manual)) = self.take_starting_upgrade() else {
            return;
        };
        let sender = upgrade.child.as_raw();
        // systemd follows the new master before this one may leave; then the new one
        // hears back and sends READY=1 as the main process.
        self.systemd.hand_over(sender);
        let _ = protocol::queue(sender, protocol::upgrade_ready_signal(), upgrade.token);
        if manual {
            tracing::info!(
                new_master = sender,
                "upgrade: the new master is ready; staying for the operator (manual upgrade)"
            );
            self.upgrade = UpgradeState::Superseded { successor: upgrade };
            return;
        }
        tracing::info!(
            new_master = sender,
            "upgrade: the new master is ready; this master stops gracefully"
        );
        upgrade.remove_oldbin();
        // The pidfile and the socket files now belong to the new master: leave them
        // alone on exit.
        self.pidfile = None;
        self.upgrade = UpgradeState::HandedOver;
        self.begin_stop(Stop::Graceful, "upgrade");
    }

    /// Ends the `Starting` phase (to `None`): the new master and whether the upgrade is
    /// manual. Any other phase stays as it is.
    fn take_starting_upgrade(&mut self) -> Option<(Upgrade, bool)> {
        if !matches!(self.upgrade, UpgradeState::Starting { .. }) {
            return None;
        }
        match std::mem::replace(&mut self.upgrade, UpgradeState::None) {
            UpgradeState::Starting { new, manual } => Some((new, manual)),
            other => {
                self.upgrade = other;
                None
            }
        }
    }

    /// The new master's side: the old master has moved MAINPID here.
    fn handoff_acknowledged(&mut self) {
        self.upgrade = UpgradeState::None;
        tracing::info!("upgrade: the old master handed over; this master is the main one now");
        let status = self.status_line().1;
        self.systemd.took_over(&status);
    }

    fn upgrade_failed(&mut self, why: &str) {
        if let Some((upgrade, _)) = self.take_starting_upgrade() {
            tracing::error!(
                "upgrade failed: {why}; this master keeps serving and the pidfile is restored"
            );
            upgrade.restore_pidfile();
        }
    }

    // ---- systemd -----------------------------------------------------------------------

    /// Ends a HUP reload: READY=1 to systemd, and the answer to `forkd -s reload`.
    fn finish_reload(&mut self, ok: bool) {
        let ReloadState::InProgress { waiters } =
            std::mem::replace(&mut self.reload, ReloadState::Idle)
        else {
            return;
        };
        if ok {
            tracing::info!(generation = self.generation, "HUP: reload finished");
        }
        let status = self.status_line().1;
        self.systemd.ready(&status);
        for (waiter, token) in waiters {
            control::answer_reload(waiter, token, ok);
        }
    }

    /// Once per loop: finish a reload whose new workers all serve, refresh STATUS=, and
    /// send the watchdog keep-alive.
    fn report_to_systemd(&mut self) {
        let reloading = matches!(self.reload, ReloadState::InProgress { .. });
        if reloading && self.state.supervising() {
            let old_running = self
                .workers
                .iter()
                .any(|w| matches!(w.phase, Phase::Running) && w.generation < self.generation);
            if !old_running && self.ready_active() >= self.target {
                self.finish_reload(true);
            }
        }
        if self.state.supervising()
            && !matches!(self.reload, ReloadState::InProgress { .. })
            && !matches!(self.upgrade, UpgradeState::HandingOff { .. })
            && self.systemd.wants_status()
        {
            let (counts, full) = self.status_line();
            self.systemd.status(&counts, &full);
        }
        self.systemd.keep_alive();
    }

    /// The `STATUS=` text: the worker part, and the whole line with requests served.
    fn status_line(&self) -> (String, String) {
        let running = self
            .workers
            .iter()
            .filter(|w| matches!(w.phase, Phase::Running))
            .count();
        let ready = self.ready_active();
        // Exited workers' requests were folded into the scoreboard's totals.
        let served = self.scoreboard.totals().requests;
        let counts = format!(
            "{ready} of {} workers ready ({running} running, generation {})",
            self.target, self.generation
        );
        let full = match self.factory {
            Program::Native(_) | Program::Hosted(_) => {
                format!("{counts}, {served} requests served")
            }
            Program::Exec(_) => counts.clone(),
        };
        (counts, full)
    }

    // ---- exec workers ----------------------------------------------------------------

    /// Reads what exec workers reported: READY=1 and WATCHDOG=1 on the notify socket
    /// (counted only from the worker's own pid), and their output into the error log.
    fn read_exec_reports(&mut self) {
        let messages = self
            .notify_intake
            .as_ref()
            .map(|intake| intake.receive())
            .unwrap_or_default();
        for (sender, text) in messages {
            let Some(w) = self.workers.iter_mut().find(|w| w.pid.as_raw() == sender) else {
                tracing::debug!(
                    sender,
                    "notify message from a process that is no worker: {text:?}"
                );
                continue;
            };
            let slot = self.scoreboard.slot(w.slot);
            for line in text.lines() {
                match line {
                    "READY=1" => slot.set_state(WorkerState::Ready),
                    "WATCHDOG=1" => {
                        slot.report_progress();
                        if let Some(exec) = &mut w.exec {
                            exec.watchdog_seen = true;
                        }
                    }
                    "STOPPING=1" => {}
                    other => {
                        if let Some(status) = other.strip_prefix("STATUS=") {
                            let status = crate::logging::escape_untrusted(status.as_bytes(), 1024);
                            tracing::debug!(pid = sender, "worker status: {status}");
                        }
                    }
                }
            }
        }
        for w in &mut self.workers {
            if let Some(exec) = &mut w.exec {
                if !exec.output.eof {
                    exec.output.drain(w.pid.as_raw(), false);
                }
            }
        }
    }

    /// Marks exec workers ready that are seen serving (`ready = "auto"`) or whose wait
    /// is over (`ready = DURATION`); `"notify"` waits for READY=1 only.
    fn probe_exec_readiness(&mut self) {
        let mut inodes = None;
        for w in &self.workers {
            let Some(exec) = &w.exec else { continue };
            let slot = self.scoreboard.slot(w.slot);
            if w.ready || slot.state() == WorkerState::Ready || !matches!(w.phase, Phase::Running) {
                continue;
            }
            let ready = match w.config.exec.ready {
                ReadyMode::Notify => false,
                ReadyMode::After(wait) => exec.spawned_at.elapsed() >= wait,
                ReadyMode::Auto => {
                    let inodes =
                        inodes.get_or_insert_with(|| exec::listener_inodes(&self.listeners));
                    exec::is_serving(w.pid.as_raw(), inodes)
                }
            };
            if ready {
                slot.report_progress();
                slot.set_state(WorkerState::Ready);
            }
        }
    }

    /// In a native worker: the master's own fds (signalfd, notify socket, exec workers'
    /// output pipes, the directories of unix socket files, the locked pidfile and its
    /// directory) are not the worker's business.
    fn close_master_fds_in_child(&self) {
        let _ = nix::unistd::close(self.signals.fd().as_raw_fd());
        if let Some(pidfile) = &self.pidfile {
            let _ = nix::unistd::close(pidfile.fd().as_raw_fd());
        }
        let _ = nix::unistd::close(self.doorbell.fd().as_raw_fd());
        if let Some(intake) = &self.notify_intake {
            let _ = nix::unistd::close(intake.fd().as_raw_fd());
        }
        for exec in self.workers.iter().filter_map(|w| w.exec.as_ref()) {
            let _ = nix::unistd::close(exec.output.fd().as_raw_fd());
        }
        let socket_files = self.listeners.iter().chain(self.metrics.iter());
        for file in socket_files.filter_map(|l| l.socket_file.as_ref()) {
            let _ = nix::unistd::close(file.dir_fd());
        }
        if let Some(pidfile) = &self.pidfile {
            let _ = nix::unistd::close(pidfile.dir_fd());
        }
    }

    // ---- reconciling -----------------------------------------------------------------

    /// Active workers (see [`Master::is_active`]) that are ready to serve.
    fn ready_active(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| w.ready && self.is_active(w))
            .count()
    }

    fn is_active(&self, w: &Worker) -> bool {
        matches!(w.phase, Phase::Running)
            && w.generation == self.generation
            && self.scoreboard.slot(w.slot).flags() & FLAG_RETIRE == 0
            && w.recycle.reason().is_none()
    }

    /// `max_worker_memory` and `max_worker_lifetime`: marks a ready worker of the current
    /// generation past either as retiring, the way `max_requests` does (see [`recycle`]).
    fn check_recycling(&mut self) {
        let now = Instant::now();
        for w in &mut self.workers {
            let asked = self.scoreboard.slot(w.slot).flags() & FLAG_RETIRE != 0;
            if !w.ready || asked || w.generation != self.generation || w.phase != Phase::Running {
                continue;
            }
            let pid = w.pid.as_raw();
            let limit = w.config.max_worker_memory;
            if let Some(why) = w.recycle.check(now, limit, || recycle::read_rss(pid)) {
                tracing::info!(
                    pid,
                    worker = w.number,
                    reason = why.reason(),
                    "recycling worker: {why}"
                );
            }
        }
    }

    /// The workers as [`plan::plan`] sees them, in `self.workers`' order.
    fn worker_views(&self) -> Vec<WorkerView> {
        self.workers
            .iter()
            .map(|w| WorkerView {
                number: w.number,
                running: matches!(w.phase, Phase::Running),
                ready: w.ready,
                current: w.generation == self.generation,
                retiring: if self.scoreboard.slot(w.slot).flags() & FLAG_RETIRE != 0 {
                    Some(ExitReason::MaxRequests)
                } else {
                    w.recycle.exit_reason()
                },
            })
            .collect()
    }

    /// Decides what to start and whom to stop ([`plan::plan`]) and does it.
    fn reconcile(&mut self) {
        if !self.state.supervising() {
            return;
        }
        let backing_off = self.spawn_not_before.is_some_and(|at| Instant::now() < at);
        let workers = self.worker_views();
        let Plan { stop, spawn } = plan::plan(&View {
            workers: &workers,
            target: self.target,
            backing_off,
        });
        // Indexes are into the worker list as it was viewed: stop before any spawn.
        for (index, reason) in stop {
            self.stop_worker(index, reason);
        }
        if !backing_off {
            self.spawn_not_before = None;
            for _ in 0..spawn {
                if let Err(e) = self.spawn_worker() {
                    tracing::error!("cannot start a worker: {e}");
                    self.spawn_not_before = Some(Instant::now() + BACKOFF_FIRST);
                    break;
                }
            }
        }
    }

    fn stop_worker(&mut self, index: usize, reason: ExitReason) {
        let w = &mut self.workers[index];
        tracing::info!(
            pid = w.pid.as_raw(),
            worker = w.number,
            reason = reason.as_str(),
            "stopping worker gracefully"
        );
        let _ = kill(w.pid, Signal::SIGTERM);
        w.phase = Phase::Stopping {
            reason,
            kill_at: Instant::now() + w.config.graceful_timeout,
        };
    }

    /// In a forked child: becomes a worker serving `app`; never returns.
    fn run_worker(
        &self,
        number: u64,
        slot: &'static crate::scoreboard::Slot,
        app: worker::WorkerApp,
    ) -> ! {
        self.close_master_fds_in_child();
        for (key, value) in &self.config.env {
            crate::single_threaded::set_env(key, Some(value.as_ref()));
        }
        worker::run(WorkerContext {
            number,
            slot,
            board: self.scoreboard.board(),
            master_pid: self.pid,
            doorbell: self.doorbell.write.as_raw_fd(),
            config: self.config.clone(),
            listeners: &self.listeners,
            metrics: self.metrics.as_ref(),
            app,
            tls: self.tls.clone(),
        })
    }

    #[allow(unsafe_code)] // fork, _exit
    fn spawn_worker(&mut self) -> Result<(), String> {
        let slot_index = self
            .scoreboard
            .claim()
            .ok_or("every scoreboard slot is in use")?;
        let number = self.next_number;
        self.next_number += 1;
        let mut output = None;
        if let Program::Exec(_) = &self.factory {
            if self.notify_intake.is_none() {
                self.notify_intake = Some(exec::NotifyIntake::bind().inspect_err(|_| {
                    self.scoreboard.release(slot_index);
                })?);
            }
            output = Some(exec::output_pipe().inspect_err(|_| {
                self.scoreboard.release(slot_index);
            })?);
        }
        if let Some(hooks) = &self.fork_hooks {
            (hooks.before)();
        }
        // SAFETY: the master is single-threaded (no runtime, no helper threads; checked
        // by `fork` in debug builds), so the child's copy of memory holds no lock another
        // thread owned.
        let forked = unsafe { fork() };
        if let Some(hooks) = &self.fork_hooks {
            match forked {
                Ok(ForkResult::Child) => (hooks.child)(),
                _ => (hooks.parent)(),
            }
        }
        match forked {
            Ok(ForkResult::Child) => {
                signals::restore_in_child();
                let slot = self.scoreboard.slot(slot_index);
                match &self.factory {
                    Program::Exec(program) => {
                        let Some((_, write_end)) = output else {
                            // Made above for every exec worker; never reached.
                            // SAFETY: leaving the forked child at once.
                            unsafe { libc::_exit(EXIT_BOOT_ERROR) }
                        };
                        exec::exec_child(exec::ChildSetup {
                            program,
                            config: &self.config,
                            listeners: &self.listeners,
                            output: write_end,
                            notify_address: self
                                .notify_intake
                                .as_ref()
                                .map_or("", |n| n.address.as_str()),
                            master_pid: self.pid,
                            slot,
                        })
                    }
                    Program::Native(factory) => {
                        self.run_worker(number, slot, worker::WorkerApp::Native(factory.clone()))
                    }
                    Program::Hosted(program) => {
                        self.run_worker(number, slot, worker::WorkerApp::Hosted(program.clone()))
                    }
                }
            }
            Ok(ForkResult::Parent { child }) => {
                self.scoreboard.slot(slot_index).set_pid(child.as_raw());
                // The child's write end closes here, so the pipe ends when the worker does.
                let exec = output.map(|(output, _write_end)| ExecWorker {
                    output,
                    spawned_at: Instant::now(),
                    watchdog_seen: false,
                });
                match &self.factory {
                    Program::Exec(program) => tracing::info!(
                        pid = child.as_raw(),
                        worker = number,
                        generation = self.generation,
                        "worker started: {}",
                        program.command.join(" ")
                    ),
                    Program::Native(_) => tracing::info!(
                        pid = child.as_raw(),
                        worker = number,
                        generation = self.generation,
                        "worker started"
                    ),
                    Program::Hosted(program) => tracing::info!(
                        pid = child.as_raw(),
                        worker = number,
                        generation = self.generation,
                        "worker started: {}",
                        program.spec
                    ),
                }
                self.workers.push(Worker {
                    pid: child,
                    slot: slot_index,
                    number,
                    generation: self.generation,
                    config: self.config.clone(),
                    phase: Phase::Running,
                    ready: false,
                    ready_at: None,
                    exec,
                    clock_from_ms: monotonic_ms(),
                    recycle: recycle::Watch::new(
                        self.config.max_worker_lifetime,
                        crate::protocol::random_token(),
                    ),
                });
                Ok(())
            }
            Err(e) => {
                self.scoreboard.release(slot_index);
                Err(format!("fork failed: {e}"))
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
            for listener in self.listeners.iter().chain(self.metrics.iter()) {
                listener.cleanup();
            }
        }
        if let Some(pidfile) = &self.pidfile {
            pidfile.remove();
        }
        if let UpgradeState::Superseded { successor } = &self.upgrade {
            successor.remove_oldbin();
        }
        tracing::info!(pid = self.pid, "master exiting");
        crate::logging::flush();
    }
}
