//! Reconciling the worker set with what is wanted ([`super::plan::plan`] decides, this
//! applies it), stopping workers, and starting them: a fork from the current
//! generation, then in the child a native or hosted worker, or the exec of a program.

use super::plan::{self, ExitReason, Plan, View, WorkerView};
use super::workers::{ExecWorker, Phase, Worker};
use super::zygote_state::Asked;
use super::{exec, recycle, signals, Master, Program};
use crate::shared::protocol::EXIT_BOOT_ERROR;
use crate::shared::scoreboard::{monotonic_ms, Slot};
use crate::shared::single_threaded::fork;
use crate::worker::{self, WorkerContext};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{ForkResult, Pid};
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

/// Why a worker could not be started.
#[derive(Debug)]
pub(super) enum SpawnError {
    /// Every scoreboard slot is taken.
    NoSlot,
    /// The notify socket or the output pipe of an exec worker.
    Exec(String),
    /// fork(2) failed.
    Fork(nix::Error),
    /// The generation's zygote cannot be asked for a worker.
    Zygote(String),
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::NoSlot => write!(f, "every scoreboard slot is in use"),
            SpawnError::Exec(e) => write!(f, "{e}"),
            SpawnError::Fork(e) => write!(f, "fork failed: {e}"),
            SpawnError::Zygote(e) => write!(f, "{e}"),
        }
    }
}

impl Master {
    /// Active workers (see [`Master::is_active`]) that are ready to serve.
    pub(super) fn ready_active(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| w.ready() && self.is_active(w))
            .count()
    }

    /// Running, of the current generation, and not retiring: counts toward the target.
    fn is_active(&self, w: &Worker) -> bool {
        matches!(w.phase, Phase::Running)
            && w.generation == self.current.number
            && w.retiring(&self.scoreboard).is_none()
    }

    /// `max_worker_memory` and `max_worker_lifetime`: marks a ready worker of the current
    /// generation past either as retiring, the way `max_requests` does (see [`recycle`]).
    pub(super) fn check_recycling(&mut self) {
        let now = Instant::now();
        for w in &mut self.workers {
            let asked = w.asked_to_retire(&self.scoreboard);
            if !w.ready()
                || asked
                || w.generation != self.current.number
                || w.phase != Phase::Running
            {
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

    /// The workers as [`plan::plan`] sees them, in `self.workers`' order, then the
    /// workers asked of a zygote and not reported yet (booting, as far as the plan
    /// goes).
    fn worker_views(&self) -> Vec<WorkerView> {
        let asked = self
            .pending_spawns()
            .into_iter()
            .map(|(number, current)| WorkerView {
                number,
                running: true,
                ready: false,
                current,
                retiring: None,
            });
        self.workers
            .iter()
            .map(|w| WorkerView {
                number: w.number,
                running: matches!(w.phase, Phase::Running),
                ready: w.ready(),
                current: w.generation == self.current.number,
                retiring: w.retiring(&self.scoreboard),
            })
            .chain(asked)
            .collect()
    }

    /// Decides what to start and whom to stop ([`plan::plan`]) and does it.
    pub(super) fn reconcile(&mut self) {
        if !self.state.supervising() {
            return;
        }
        self.ensure_zygote();
        let backing_off = self.backoff.holding(Instant::now());
        let workers = self.worker_views();
        let Plan { stop, spawn } = plan::plan(&View {
            workers: &workers,
            target: self.current.target,
            backing_off,
        });
        // Indexes are into the worker list as it was viewed: stop before any spawn. (A
        // worker still being forked by a zygote is stopped once it is known.)
        let known = self.workers.len();
        for (index, reason) in stop.into_iter().filter(|(i, _)| *i < known) {
            self.stop_worker(index, reason);
        }
        if !backing_off {
            self.backoff.release();
            for _ in 0..spawn {
                match self.spawn_worker() {
                    Ok(Asked::Asked) => {}
                    Ok(Asked::Waiting) => break,
                    Err(e) => {
                        tracing::error!("cannot start a worker: {e}");
                        self.backoff.spawn_failed(Instant::now());
                        break;
                    }
                }
            }
        }
    }

    /// SIGTERM: the worker drains; SIGKILL follows after `graceful_timeout`.
    pub(super) fn stop_worker(&mut self, index: usize, reason: ExitReason) {
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

    /// Starts one worker of the current generation (forked here, or asked of its
    /// zygote with `preload_app`).
    fn spawn_worker(&mut self) -> Result<Asked, SpawnError> {
        if self.current.preloads() {
            return self.spawn_from_zygote();
        }
        let slot = self.scoreboard.claim().ok_or(SpawnError::NoSlot)?;
        // Before the fork, so that the worker's own metrics show it from the start.
        self.scoreboard
            .slot(slot)
            .set_generation(self.current.number);
        let number = self.next_number;
        self.next_number += 1;
        let output = match self.exec_output() {
            Ok(output) => output,
            Err(e) => {
                self.scoreboard.release(slot);
                return Err(SpawnError::Exec(e));
            }
        };
        self.hooks
            .call(super::hooks::HookCall::PreFork { age: number });
        match self.fork_child() {
            Ok(ForkResult::Child) => self.become_worker(number, slot, output),
            Ok(ForkResult::Parent { child }) => {
                self.track_worker(child, number, slot, output);
                Ok(Asked::Asked)
            }
            Err(e) => {
                self.scoreboard.release(slot);
                Err(SpawnError::Fork(e))
            }
        }
    }

    /// For an exec worker: the notify socket (made with the first one) and the pipe its
    /// output comes through (the master's end, the child's end).
    fn exec_output(&mut self) -> Result<Option<(exec::Output, OwnedFd)>, String> {
        if !matches!(self.current.program, Program::Exec(_)) {
            return Ok(None);
        }
        if self.notify_intake.is_none() {
            self.notify_intake = Some(exec::NotifyIntake::bind()?);
        }
        exec::output_pipe().map(Some)
    }

    /// fork(2), with the host's hooks around it.
    #[allow(unsafe_code)] // fork
    pub(super) fn fork_child(&self) -> nix::Result<ForkResult> {
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
        forked
    }

    /// In the forked child: runs the current generation's program; never returns.
    #[allow(unsafe_code)] // _exit
    fn become_worker(
        &self,
        number: u64,
        slot_index: usize,
        output: Option<(exec::Output, OwnedFd)>,
    ) -> ! {
        signals::restore_in_child();
        let slot = self.scoreboard.slot(slot_index);
        match &self.current.program {
            Program::Exec(program) => {
                let Some((_, write_end)) = output else {
                    // Made for every exec worker (see `exec_output`); never reached.
                    // SAFETY: leaving the forked child at once.
                    unsafe { libc::_exit(EXIT_BOOT_ERROR) }
                };
                exec::exec_child(exec::ChildSetup {
                    program,
                    config: &self.current.config,
                    workdir: self.current.workdir.as_deref(),
                    listeners: &self.current.listeners,
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

    /// In the parent: the new worker joins the supervised set.
    fn track_worker(
        &mut self,
        child: Pid,
        number: u64,
        slot: usize,
        output: Option<(exec::Output, OwnedFd)>,
    ) {
        self.scoreboard.slot(slot).set_pid(child.as_raw());
        // The child's write end closes here, so the pipe ends when the worker does.
        let exec = output.map(|(output, _write_end)| ExecWorker {
            output,
            spawned_at: Instant::now(),
            watchdog_seen: false,
        });
        let (pid, generation) = (child.as_raw(), self.current.number);
        match &self.current.program {
            Program::Exec(program) => tracing::info!(
                pid,
                worker = number,
                generation,
                "worker started: {}",
                program.command.join(" ")
            ),
            Program::Native(_) => {
                tracing::info!(pid, worker = number, generation, "worker started")
            }
            Program::Hosted(program) => tracing::info!(
                pid,
                worker = number,
                generation,
                "worker started: {}",
                program.spec
            ),
        }
        self.workers.push(Worker {
            pid: child,
            slot,
            number,
            generation,
            config: self.current.config.clone(),
            phase: Phase::Running,
            ready_at: None,
            exec,
            clock_from_ms: monotonic_ms(),
            recycle: recycle::Watch::new(
                self.current.config.max_worker_lifetime,
                crate::shared::protocol::random_token(),
            ),
        });
    }

    /// In a forked child: becomes a worker serving `app`; never returns.
    #[allow(unsafe_code)] // _exit
    fn run_worker(&self, number: u64, slot: &'static Slot, app: worker::WorkerApp) -> ! {
        if let Err(e) = self.prepare_child() {
            slot.set_message(&e);
            // SAFETY: leaving the forked child without running the master's destructors.
            unsafe { libc::_exit(EXIT_BOOT_ERROR) }
        }
        self.enter_worker(number, slot, app)
    }

    /// In a forked child (a worker, or a zygote): the master's fds closed, the
    /// generation's directory and `[env]`.
    pub(super) fn prepare_child(&self) -> Result<(), String> {
        self.close_master_fds_in_child();
        // Its generation's directory, also for a worker recycled long after the HUP:
        // the app (and a relative `python.path`) is imported from there.
        super::workdir::enter(self.current.workdir.as_deref())?;
        for (key, value) in &self.current.config.env {
            crate::shared::single_threaded::set_env(key, Some(value.as_ref()));
        }
        Ok(())
    }

    /// In a child made ready by [`Master::prepare_child`] (here, or in its zygote):
    /// becomes a worker serving `app`; never returns.
    pub(super) fn enter_worker(
        &self,
        number: u64,
        slot: &'static Slot,
        app: worker::WorkerApp,
    ) -> ! {
        let generation = &self.current;
        worker::run(WorkerContext {
            number,
            slot,
            board: self.scoreboard.board(),
            master_pid: self.pid,
            doorbell: self.doorbell.write.as_raw_fd(),
            config: generation.config.clone(),
            listeners: &generation.listeners,
            metrics: generation.metrics.as_ref(),
            app,
            tls: generation.tls.clone(),
        })
    }

    /// In a native worker: the master's own fds (signalfd, notify socket, exec workers'
    /// output pipes, the directories of unix socket files, the locked pidfile and its
    /// directory, the sockets of a previous generation still held) are not the
    /// worker's business.
    fn close_master_fds_in_child(&self) {
        let close = |fd: i32| {
            let _ = nix::unistd::close(fd);
        };
        close(self.signals.fd().as_raw_fd());
        if let Some(pidfile) = &self.pidfile {
            close(pidfile.fd().as_raw_fd());
        }
        close(self.doorbell.fd().as_raw_fd());
        if let Some(intake) = &self.notify_intake {
            close(intake.fd().as_raw_fd());
        }
        for exec in self.workers.iter().filter_map(|w| w.exec.as_ref()) {
            close(exec.output.fd().as_raw_fd());
        }
        let previous = || self.previous.iter().flat_map(|g| g.all_listeners());
        for listener in previous() {
            close(listener.fd.as_raw_fd());
        }
        let socket_files = self.current.all_listeners().chain(previous());
        for file in socket_files.filter_map(|l| l.socket_file.as_ref()) {
            close(file.dir_fd());
        }
        if let Some(pidfile) = &self.pidfile {
            close(pidfile.dir_fd());
        }
        if let Some(control) = &self.control {
            control.fds().into_iter().for_each(close);
        }
        for zygote in self.zygotes() {
            close(zygote.channel.as_raw_fd());
        }
    }
}
