//! Every timed action of the master, listed once ([`Master::deadlines`]): the loop
//! sleeps until the nearest ([`Master::next_deadline`]) and acts on those that came
//! ([`Master::enforce_deadlines`]): the end of `shutdown_delay`, an upgrade's new
//! master that is not ready in time, exec workers that do not boot, workers that
//! stopped reporting progress (SIGABRT), and those past their stop deadline (SIGKILL).
//! The arithmetic is in pure functions below, unit-tested.

use super::clock;
use super::plan::ExitReason;
use super::state::{RunState, Stop};
use super::workers::Phase;
use super::{Master, UpgradeState, KILL_GRACE, MAX_SLEEP};
use crate::config::ReadyMode;
use crate::shared::protocol;
use crate::shared::scoreboard::monotonic_ms;
use nix::sys::signal::{kill, Signal};
use std::time::{Duration, Instant};

/// How often a booting exec worker is looked at in /proc for `ready = "auto"`.
const EXEC_READY_PROBE: Duration = Duration::from_millis(20);

/// What is due at a deadline; a `usize` is the worker's index in `Master::workers`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Deadline {
    /// `shutdown_delay` is over: the graceful stop begins.
    ShutdownDelay,
    /// The upgrade's new master was not ready in time.
    UpgradeReady,
    /// The spawn hold (boot backoff, crash loop) is over: spawning may resume.
    SpawnBackoff,
    /// systemd's watchdog keep-alive is due.
    Systemd,
    /// A booting exec worker is looked at again for readiness.
    ExecReadyProbe,
    /// `preload_app`: a zygote may be started again, or one has not forked a worker
    /// it was asked for in time.
    Zygote,
    /// An exec worker was not ready in time: SIGKILL.
    ExecBoot(usize),
    /// A worker stopped reporting progress for `timeout`: SIGABRT.
    Progress(usize),
    /// A worker told to stop (or aborted) is still there: SIGKILL.
    Kill(usize),
}

impl Deadline {
    /// The worker it is about, if it is a worker's.
    fn worker(self) -> Option<usize> {
        match self {
            Deadline::ExecBoot(i) | Deadline::Progress(i) | Deadline::Kill(i) => Some(i),
            Deadline::ShutdownDelay
            | Deadline::UpgradeReady
            | Deadline::SpawnBackoff
            | Deadline::Systemd
            | Deadline::Zygote
            | Deadline::ExecReadyProbe => None,
        }
    }
}

/// When a booting exec worker is next looked at for readiness: soon for `"auto"`, at
/// its boot deadline for `"notify"` (READY=1 wakes the loop anyway), when the wait is
/// over for `DURATION`.
fn ready_probe_at(
    now: Instant,
    ready: &ReadyMode,
    spawned_at: Instant,
    boot_deadline: Instant,
) -> Instant {
    match ready {
        ReadyMode::Auto => now + EXEC_READY_PROBE,
        ReadyMode::Notify => boot_deadline,
        ReadyMode::After(wait) => spawned_at + *wait,
    }
}

/// When a worker silent since `progress_ms` (counted from `clock_from_ms` at the
/// earliest, see [`clock::silent_ms`]) passes `timeout`, seen at `now` / `now_ms`.
fn progress_due(
    now: Instant,
    now_ms: u64,
    progress_ms: u64,
    clock_from_ms: u64,
    timeout: Duration,
) -> Instant {
    let silent = clock::silent_ms(now_ms, progress_ms, clock_from_ms);
    let timeout = timeout.as_millis() as u64;
    now + Duration::from_millis(timeout.saturating_sub(silent))
}

impl Master {
    /// Every moment the loop must act at without a signal, with what is due then; the
    /// one list behind [`Master::next_deadline`] and [`Master::enforce_deadlines`].
    /// Process-wide deadlines come first, then each worker's in the order they are
    /// enforced (boot, progress, kill).
    pub(super) fn deadlines(&self, now: Instant) -> Vec<(Instant, Deadline)> {
        let mut due = Vec::new();
        if let RunState::StopDelayed { at } = self.state {
            due.push((at, Deadline::ShutdownDelay));
        }
        if let UpgradeState::Starting { new, .. } = &self.upgrade {
            due.push((new.deadline, Deadline::UpgradeReady));
        }
        if let Some(at) = self.backoff.deadline() {
            due.push((at, Deadline::SpawnBackoff));
        }
        if let Some(at) = self.systemd.deadline() {
            due.push((at, Deadline::Systemd));
        }
        if let Some(at) = self.zygote_deadline(now) {
            due.push((at, Deadline::Zygote));
        }
        let now_ms = monotonic_ms();
        for (index, w) in self.workers.iter().enumerate() {
            if let Some(deadline) = w.boot_deadline() {
                due.push((deadline, Deadline::ExecBoot(index)));
                let spawned_at = w.exec.as_ref().map_or(now, |e| e.spawned_at);
                let probe = ready_probe_at(now, &w.config.exec.ready, spawned_at, deadline);
                due.push((probe, Deadline::ExecReadyProbe));
            }
            if matches!(w.phase, Phase::Running | Phase::Stopping { .. }) && w.timed() {
                let progress_ms = self.scoreboard.slot(w.slot).progress_ms();
                let at = progress_due(now, now_ms, progress_ms, w.clock_from_ms, w.config.timeout);
                due.push((at, Deadline::Progress(index)));
            }
            if let Phase::Stopping { kill_at, .. } | Phase::Aborting { kill_at } = w.phase {
                due.push((kill_at, Deadline::Kill(index)));
            }
        }
        due
    }

    /// The nearest moment the loop must act without a signal (at most `MAX_SLEEP` away).
    pub(super) fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        self.deadlines(now)
            .into_iter()
            .map(|(at, _)| at)
            .chain(self.control.as_ref().and_then(|c| c.next_deadline()))
            .fold(now + MAX_SLEEP, Instant::min)
    }

    /// Acts on every deadline that has come: the process-wide ones first (the graceful
    /// stop one may begin changes the workers'), then each worker's, where the first
    /// deadline acted on ends its turn.
    pub(super) fn enforce_deadlines(&mut self) {
        let now = Instant::now();
        for (at, deadline) in self.deadlines(now) {
            if at <= now && deadline.worker().is_none() {
                self.process_deadline(deadline);
            }
        }
        let mut acted = vec![false; self.workers.len()];
        for (at, deadline) in self.deadlines(now) {
            let Some(index) = deadline.worker().filter(|_| at <= now) else {
                continue;
            };
            if !acted[index] {
                acted[index] = self.worker_deadline(index, deadline, now);
            }
        }
    }

    /// A process-wide deadline that has come.
    fn process_deadline(&mut self, deadline: Deadline) {
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
            // reconcile() and report_to_systemd() act on these, and exec readiness is
            // probed in observe_scoreboard(); waking up is all they need here.
            Deadline::SpawnBackoff | Deadline::Systemd | Deadline::ExecReadyProbe => {}
            // reconcile() starts a zygote once its hold is over.
            Deadline::Zygote => self.kill_stuck_zygotes(Instant::now()),
            Deadline::ExecBoot(_) | Deadline::Progress(_) | Deadline::Kill(_) => {}
        }
    }

    /// A worker's deadline that has come; whether it was acted on.
    fn worker_deadline(&mut self, index: usize, deadline: Deadline, now: Instant) -> bool {
        match deadline {
            Deadline::ExecBoot(_) if matches!(self.workers[index].phase, Phase::Running) => {
                self.kill_unready_exec_worker(index, now);
                true
            }
            Deadline::Progress(_) => {
                self.abort_silent_worker(index, now);
                true
            }
            Deadline::Kill(_) => {
                self.kill_overdue_worker(index);
                true
            }
            _ => false,
        }
    }

    /// An exec worker not ready in time: SIGKILL, counted as a boot failure.
    fn kill_unready_exec_worker(&mut self, index: usize, now: Instant) {
        let w = &mut self.workers[index];
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
    }

    /// A worker silent for `timeout`: SIGABRT (its panic hook or the default action
    /// leaves a trace), SIGKILL after `KILL_GRACE`.
    fn abort_silent_worker(&mut self, index: usize, now: Instant) {
        let w = &mut self.workers[index];
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
    }

    /// A worker still there past its stop (or abort) deadline: SIGKILL.
    fn kill_overdue_worker(&mut self, index: usize) {
        let w = &mut self.workers[index];
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_is_probed_by_mode() {
        let now = Instant::now();
        let spawned = now - Duration::from_secs(1);
        let boot = now + Duration::from_secs(30);
        assert_eq!(
            ready_probe_at(now, &ReadyMode::Auto, spawned, boot),
            now + EXEC_READY_PROBE
        );
        assert_eq!(ready_probe_at(now, &ReadyMode::Notify, spawned, boot), boot);
        let after = ReadyMode::After(Duration::from_secs(3));
        assert_eq!(
            ready_probe_at(now, &after, spawned, boot),
            spawned + Duration::from_secs(3)
        );
    }

    #[test]
    fn progress_is_due_when_the_silence_reaches_timeout() {
        let now = Instant::now();
        let timeout = Duration::from_secs(10);
        // Silent for 4 s: 6 s left.
        assert_eq!(
            progress_due(now, 20_000, 16_000, 0, timeout),
            now + Duration::from_secs(6)
        );
        // Silent for longer than timeout: due now, not in the past.
        assert_eq!(progress_due(now, 50_000, 16_000, 0, timeout), now);
        // The silence counts from clock_from_ms at the earliest (a freeze ended then).
        assert_eq!(
            progress_due(now, 50_000, 16_000, 49_000, timeout),
            now + Duration::from_secs(9)
        );
    }
}
