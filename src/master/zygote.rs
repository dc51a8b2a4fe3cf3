//! `preload_app`: a zygote per generation, as the master sees it. A zygote is a child
//! of the master that imports the generation's Python app once (`gc.freeze()`d) and
//! forks its workers on the master's request, so that they share its memory
//! copy-on-write and start in milliseconds; the master itself runs no app code. The
//! zygote's own side is `zygote_child`; the messages are `zygote_wire`; the zygote as
//! held here and the pure decisions about it are `zygote_state`.
//!
//! The master supervises those workers as its own children: it is the
//! `PR_SET_CHILD_SUBREAPER` of its tree, and a zygote forks twice (the middle process
//! exits at once), so each worker is reparented to the master, which learns its pid
//! from the zygote ([`Report::Spawned`]) and from then on waits for it, times it out,
//! signals and recycles it like any other. A worker can exit before its pid is
//! reported: its exit is kept a while ([`EarlyExits`]) and matched when the report
//! comes.
//!
//! A generation's zygote lives as long as the generation: it is started when the
//! generation needs a worker and has none (at start, after a HUP, after the zygote
//! died), and killed when the generation is retired (its workers were all replaced
//! already, or are being stopped) or at the stop, since it holds the generation's
//! listeners. An import that fails is the generation's boot failure: exit 3 at start, a
//! failed reload after a HUP, a retry with backoff when a zygote that died cannot
//! import again. A zygote that dies once ready is replaced; its generation's workers
//! keep serving meanwhile, and workers asked of it in the meantime wait for the new
//! one.

use super::generation::{Generation, Program};
use super::state::Stop;
use super::workers::{Phase, Worker};
use super::zygote_state::{take_pending, Asked, Pending, Zygote, ZygoteState, RETRY_FIRST};
use super::zygote_wire::{Report, Request, MAX_MESSAGE};
use super::Master;
use crate::shared::protocol::EXIT_NO_WORKER;
use crate::shared::scoreboard::monotonic_ms;
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{self, MsgFlags};
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Pid};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

/// How many reports of one zygote the loop reads in one turn at most.
const REPORTS_PER_TURN: usize = 64;

/// Which generation's zygote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Which {
    Current,
    Previous,
}

impl Generation {
    /// Whether this generation's workers fork from a zygote.
    pub fn preloads(&self) -> bool {
        matches!(&self.program, Program::Hosted(p) if p.preload.is_some())
    }
}

impl Master {
    fn generation_mut(&mut self, which: Which) -> Option<&mut Generation> {
        match which {
            Which::Current => Some(&mut self.current),
            Which::Previous => self.previous.as_mut(),
        }
    }

    fn zygote_of(&self, which: Which) -> Option<&Zygote> {
        match which {
            Which::Current => self.current.zygote.as_ref(),
            Which::Previous => self.previous.as_ref()?.zygote.as_ref(),
        }
    }

    /// The zygotes held, current first.
    pub(super) fn zygotes(&self) -> impl Iterator<Item = &Zygote> {
        let previous = self.previous.as_ref().and_then(|g| g.zygote.as_ref());
        self.current.zygote.iter().chain(previous)
    }

    /// The current generation's zygote, started if it preloads and has none (and is not
    /// held off after failures).
    pub(super) fn ensure_zygote(&mut self) {
        if !self.current.preloads() || self.current.zygote.is_some() {
            return;
        }
        if self.zygote_retry.holding(Instant::now()).is_some() {
            return;
        }
        if let Err(e) = self.start_zygote() {
            let wait = self.zygote_retry.failed(Instant::now());
            tracing::error!(
                generation = self.current.number,
                "cannot start the zygote: {e}; trying again in {:.1}s",
                wait.as_secs_f64()
            );
        }
    }

    /// Forks the current generation's zygote.
    fn start_zygote(&mut self) -> Result<(), String> {
        set_child_subreaper()?;
        let (mine, theirs) = socket::socketpair(
            socket::AddressFamily::Unix,
            socket::SockType::SeqPacket,
            None,
            socket::SockFlag::SOCK_CLOEXEC | socket::SockFlag::SOCK_NONBLOCK,
        )
        .map_err(|e| format!("cannot make its socket pair: {e}"))?;
        match self.fork_child() {
            Ok(ForkResult::Child) => {
                drop(mine);
                self.become_zygote(theirs)
            }
            Ok(ForkResult::Parent { child }) => {
                drop(theirs);
                let spec = match &self.current.program {
                    Program::Hosted(p) => p.spec.as_str(),
                    _ => "",
                };
                tracing::info!(
                    pid = child.as_raw(),
                    generation = self.current.number,
                    "zygote started: importing {spec}"
                );
                self.current.zygote = Some(Zygote {
                    pid: child,
                    channel: mine,
                    state: ZygoteState::Importing,
                    pending: Vec::new(),
                    started: Instant::now(),
                    reaped: false,
                    killed: false,
                });
                Ok(())
            }
            Err(e) => Err(format!("fork failed: {e}")),
        }
    }

    /// Asks the current generation's zygote for a worker (see `spawn::spawn_worker`).
    pub(super) fn spawn_from_zygote(&mut self) -> Result<Asked, super::spawn::SpawnError> {
        use super::spawn::SpawnError;
        let ready = self
            .current
            .zygote
            .as_ref()
            .is_some_and(|z| z.state == ZygoteState::Ready);
        if !ready {
            return Ok(Asked::Waiting);
        }
        let slot = self.scoreboard.claim().ok_or(SpawnError::NoSlot)?;
        self.scoreboard
            .slot(slot)
            .set_generation(self.current.number);
        let number = self.next_number;
        self.next_number += 1;
        self.hooks
            .call(super::hooks::HookCall::PreFork { age: number });
        let request = Request::Spawn { slot, number }.encode();
        let Some(zygote) = self.current.zygote.as_mut() else {
            self.scoreboard.release(slot);
            return Ok(Asked::Waiting);
        };
        if let Err(e) = socket::send(zygote.channel.as_raw_fd(), &request, MsgFlags::empty()) {
            self.scoreboard.release(slot);
            // A zygote that cannot be talked to is of no use: a new one replaces it.
            let _ = kill(zygote.pid, Signal::SIGKILL);
            return Err(SpawnError::Zygote(format!(
                "cannot ask the zygote (pid {}) for a worker: {e}",
                zygote.pid
            )));
        }
        zygote.pending.push(Pending {
            number,
            slot,
            asked_at: Instant::now(),
        });
        Ok(Asked::Asked)
    }

    /// Workers asked of a zygote and not reported yet, with whether their generation is
    /// the current one (they count as booting workers of it).
    pub(super) fn pending_spawns(&self) -> Vec<(u64, bool)> {
        let current = self.current.zygote.iter().flat_map(|z| &z.pending);
        let previous = self
            .previous
            .iter()
            .flat_map(|g| g.zygote.iter())
            .flat_map(|z| &z.pending);
        current
            .map(|p| (p.number, true))
            .chain(previous.map(|p| (p.number, false)))
            .collect()
    }

    /// Reads what the zygotes said (they are in the loop's poll).
    pub(super) fn read_zygote_reports(&mut self) {
        for which in [Which::Current, Which::Previous] {
            // At most this many a turn: a zygote that floods the socket (it runs the
            // app's code) does not hold the loop; the rest waits for the next turn.
            for _ in 0..REPORTS_PER_TURN {
                let Some(zygote) = self.zygote_of(which) else {
                    break;
                };
                let mut buf = [0u8; MAX_MESSAGE + 1];
                let read = socket::recv(zygote.channel.as_raw_fd(), &mut buf, MsgFlags::empty());
                match read {
                    // The zygote's end closed: it exited (reaping says how).
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let report = Report::parse(&buf[..n]);
                        self.zygote_reported(which, report);
                    }
                }
            }
        }
    }

    fn zygote_reported(&mut self, which: Which, report: Result<Report, String>) {
        let Some(generation) = self.generation_mut(which) else {
            return;
        };
        let number = generation.number;
        let Some(zygote) = generation.zygote.as_mut() else {
            return;
        };
        let pid = zygote.pid.as_raw();
        let next = report.and_then(|r| Ok((zygote.state.after(&r)?, r)));
        let report = match next {
            Ok((next, report)) => {
                zygote.state = next;
                report
            }
            Err(e) => {
                tracing::error!(
                    pid,
                    generation = number,
                    "the zygote broke the protocol ({e}); killing it"
                );
                let _ = kill(zygote.pid, Signal::SIGKILL);
                return;
            }
        };
        let took = zygote.started.elapsed();
        let claimed = match &report {
            Report::Spawned { number, .. } | Report::SpawnFailed { number, .. } => {
                take_pending(&mut zygote.pending, *number)
            }
            Report::Ready | Report::ImportFailed(_) => None,
        };
        match report {
            Report::Ready => {
                tracing::info!(
                    pid,
                    generation = number,
                    "zygote ready: the app is imported ({:.0} ms); forking workers from it",
                    took.as_secs_f64() * 1000.0
                );
                if which == Which::Current {
                    self.zygote_retry.succeeded();
                }
            }
            Report::ImportFailed(why) => {
                let shown = crate::shared::escape::escape_untrusted(why.as_bytes(), 4096);
                tracing::error!(
                    pid,
                    generation = number,
                    "the zygote cannot import the app: {shown}"
                );
            }
            Report::Spawned { number, pid } => match claimed {
                Some(pending) => self.adopt_worker(which, Pid::from_raw(pid), &pending),
                None => tracing::warn!(
                    worker = number,
                    pid,
                    "the zygote reported a worker it was not asked for"
                ),
            },
            Report::SpawnFailed { number, why } => {
                if let Some(pending) = claimed {
                    self.scoreboard.release(pending.slot);
                }
                let shown = crate::shared::escape::escape_untrusted(why.as_bytes(), 4096);
                tracing::error!(worker = number, "the zygote cannot fork a worker: {shown}");
                self.backoff.spawn_failed(Instant::now());
            }
        }
    }

    /// A worker a zygote forked joins the supervised set, as one the master forked.
    fn adopt_worker(&mut self, which: Which, pid: Pid, pending: &Pending) {
        // The zygote runs the app's code: a pid it reports is supervised (signalled)
        // only if it is this master's child, as a worker forked twice is by now (or
        // was: its exit was kept when reaped).
        let early_exit = self.early_exits.take(pid, Instant::now());
        let ours = early_exit.is_some() || parent_of(pid) == Some(self.pid);
        if !ours {
            tracing::error!(
                worker = pending.number,
                pid = pid.as_raw(),
                "the zygote reported a pid that is not a child of the master; killing the zygote"
            );
            self.scoreboard.release(pending.slot);
            if let Some(zygote) = self.zygote_of(which) {
                let _ = kill(zygote.pid, Signal::SIGKILL);
            }
            return;
        }
        let Some(generation) = self.generation_mut(which) else {
            return;
        };
        let (number, generation_number) = (pending.number, generation.number);
        let config = generation.config.clone();
        let spec = match &generation.program {
            Program::Hosted(p) => p.spec.clone(),
            _ => String::new(),
        };
        self.scoreboard.slot(pending.slot).set_pid(pid.as_raw());
        tracing::info!(
            pid = pid.as_raw(),
            worker = number,
            generation = generation_number,
            "worker started: {spec} (forked from the zygote in {:.1} ms)",
            pending.asked_at.elapsed().as_secs_f64() * 1000.0
        );
        self.workers.push(Worker {
            pid,
            slot: pending.slot,
            number,
            generation: generation_number,
            recycle: super::recycle::Watch::new(
                config.max_worker_lifetime,
                crate::shared::protocol::random_token(),
            ),
            config,
            phase: Phase::Running,
            ready_at: None,
            exec: None,
            clock_from_ms: monotonic_ms(),
        });
        // It may be gone already: its exit was kept when reaped.
        if let Some(status) = early_exit {
            if let Some(index) = self.workers.iter().position(|w| w.pid == pid) {
                let worker = self.workers.remove(index);
                self.worker_exited(worker, status);
            }
        }
    }

    /// A child the master reaped: whether it was a zygote (then handled here).
    pub(super) fn zygote_reaped(&mut self, status: WaitStatus) -> bool {
        let Some(pid) = status.pid() else {
            return false;
        };
        if !self.zygotes().any(|z| z.pid == pid) {
            return false;
        }
        // What it said last (an import failure, a worker it forked) first.
        self.read_zygote_reports();
        let which = [Which::Current, Which::Previous]
            .into_iter()
            .find(|w| self.zygote_of(*w).is_some_and(|z| z.pid == pid));
        let Some(which) = which else {
            return true;
        };
        let Some(generation) = self.generation_mut(which) else {
            return false;
        };
        let number = generation.number;
        let Some(mut zygote) = generation.zygote.take() else {
            return false;
        };
        zygote.reaped = true;
        let how = super::exits::describe(&status, false, false);
        self.release_pending(&mut zygote);
        let why = match &zygote.state {
            ZygoteState::Ready => {
                tracing::error!(
                    pid = pid.as_raw(),
                    generation = number,
                    "the zygote exited ({how}); its workers keep serving, a new zygote imports the app for the next ones"
                );
                if which == Which::Current {
                    // A zygote that keeps dying is not started in a tight loop.
                    let wait = self.zygote_retry.failed(Instant::now());
                    if wait > RETRY_FIRST {
                        tracing::warn!("starting the new zygote in {:.1}s", wait.as_secs_f64());
                    }
                }
                return true;
            }
            ZygoteState::Failed(why) => why.clone(),
            ZygoteState::Importing => format!("the zygote exited while importing the app ({how})"),
        };
        if which == Which::Current {
            self.import_failed(why);
        }
        true
    }

    /// The current generation's app cannot be imported: exit 3 if no worker ever
    /// booted, a failed reload after a HUP, else a retry with backoff.
    fn import_failed(&mut self, why: String) {
        if self.boot.boot_failure_is_fatal() {
            let failed = Stop::Failed {
                code: EXIT_NO_WORKER,
                why: format!("no worker could boot: {why}"),
            };
            self.begin_stop(failed, "no worker could boot");
            return;
        }
        if self.previous.is_some() {
            self.roll_back();
            return;
        }
        let wait = self.zygote_retry.failed(Instant::now());
        tracing::warn!(
            generation = self.current.number,
            "trying the zygote's import again in {:.1}s",
            wait.as_secs_f64()
        );
    }

    /// When the loop must wake for the zygotes: a retry's hold ending, a spawn overdue.
    pub(super) fn zygote_deadline(&self, now: Instant) -> Option<Instant> {
        let retry = self
            .zygote_retry
            .holding(now)
            .filter(|_| self.current.preloads() && self.current.zygote.is_none());
        let overdue = std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .filter_map(|g| g.zygote.as_ref()?.deadline(g.config.timeout))
            .min();
        retry.into_iter().chain(overdue).min()
    }

    /// A zygote whose import takes longer than `timeout`, or that has not reported a
    /// worker within `SPAWN_LIMIT`, is stuck: it is killed (an import failure, or a
    /// zygote to replace: see [`Master::zygote_reaped`]).
    pub(super) fn kill_stuck_zygotes(&mut self, now: Instant) {
        let generations = std::iter::once(&mut self.current).chain(self.previous.as_mut());
        for generation in generations {
            let timeout = generation.config.timeout;
            let Some(zygote) = generation.zygote.as_mut() else {
                continue;
            };
            let Some(why) = zygote.overdue(now, timeout) else {
                continue;
            };
            tracing::error!(pid = zygote.pid.as_raw(), "{why}");
            zygote.killed = true;
            if zygote.state == ZygoteState::Importing {
                zygote.state = ZygoteState::Failed(why);
            }
            let _ = kill(zygote.pid, Signal::SIGKILL);
        }
    }

    /// At the stop: the zygotes go (they hold the listeners, which must close).
    pub(super) fn stop_zygotes(&mut self) {
        let mut zygotes: Vec<Zygote> = std::iter::once(&mut self.current)
            .chain(self.previous.as_mut())
            .filter_map(|g| g.zygote.take())
            .collect();
        for zygote in &mut zygotes {
            self.release_pending(zygote);
        }
        // Dropping them kills them; each is reaped as a child nobody knows.
    }

    /// A generation being retired (it goes with its zygote, killed when dropped): the
    /// slots of the workers asked of it and not reported are free again.
    pub(super) fn let_zygote_go(&mut self, generation: &mut Generation) {
        if let Some(mut zygote) = generation.zygote.take() {
            self.release_pending(&mut zygote);
        }
    }

    /// Frees the slots of the workers asked of `zygote` and never reported (one forked
    /// in that very instant runs unsupervised, and exits with the master).
    fn release_pending(&mut self, zygote: &mut Zygote) {
        for pending in zygote.pending.drain(..) {
            tracing::warn!(
                worker = pending.number,
                pid = zygote.pid.as_raw(),
                "the zygote went before reporting this worker"
            );
            self.scoreboard.release(pending.slot);
        }
    }

    /// The zygotes' sockets, for the loop's poll.
    pub(super) fn zygote_fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        self.zygotes().map(|z| z.channel.as_fd()).collect()
    }

    /// A worker's exit kept for its report when a zygote may still report it.
    pub(super) fn keep_unknown_exit(&mut self, status: WaitStatus) {
        if self.zygotes().any(|z| !z.pending.is_empty()) {
            self.early_exits.remember(status, Instant::now());
        }
    }
}

/// A process's parent, from `/proc/PID/stat`.
fn parent_of(pid: Pid) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    super::zygote_state::parent_from_stat(&stat)
}

/// Makes the master the reaper of its orphaned descendants (the workers a zygote
/// forks, once the middle process of the double fork has exited).
#[allow(unsafe_code)] // prctl
fn set_child_subreaper() -> Result<(), String> {
    // SAFETY: prctl(2) with integer arguments only.
    let done = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if done == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot become the subreaper of the workers: {}",
            std::io::Error::last_os_error()
        ))
    }
}
