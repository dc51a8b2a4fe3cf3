//! Children that exited: reaping them, telling why a worker exited ([`classify`], from
//! what the master asked of it and how it ended), naming how it ended ([`describe`]),
//! and what follows: a replacement (by the next reconcile), a crash-loop hold, the boot
//! backoff, a reload rolled back, or forkd's exit when no worker could ever boot.

use super::oom;
use super::plan::ExitReason;
use super::state::Stop;
use super::workers::{Phase, Worker};
use super::{Master, UpgradeState};
use crate::shared::protocol::EXIT_NO_WORKER;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use std::time::Instant;

/// Why a worker exited: what the master asked of it (its `phase`) or, unasked, what it
/// did: die before it was ready, end by itself with 0 (an exec worker recycling, as
/// `uvicorn --limit-max-requests` does), or crash.
pub(super) fn classify(phase: Phase, ready: bool, exec: bool, status: &WaitStatus) -> ExitReason {
    match phase {
        Phase::Stopping { reason, .. } | Phase::Killed { reason } => reason,
        Phase::Aborting { .. } => ExitReason::Timeout,
        Phase::Running if !ready => ExitReason::BootFailure,
        Phase::Running if exec && matches!(status, WaitStatus::Exited(_, 0)) => ExitReason::Exited,
        Phase::Running => ExitReason::Crash,
    }
}

/// How a worker ended, for the log. `unasked`: the master sent it nothing, so a signal
/// is named with its likely cause; `oom_rose`: the cgroup's OOM-kill count rose since
/// the last look.
pub(super) fn describe(status: &WaitStatus, unasked: bool, oom_rose: bool) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit code {code}"),
        WaitStatus::Signaled(_, Signal::SIGKILL, _) if unasked && oom_rose => {
            "killed by SIGKILL from the kernel's OOM killer (out of memory: the cgroup's oom_kill count rose)".to_string()
        }
        WaitStatus::Signaled(_, Signal::SIGKILL, _) if unasked => {
            "killed by SIGKILL, not sent by forkd (out of memory?)".to_string()
        }
        WaitStatus::Signaled(_, Signal::SIGABRT, _) if unasked => {
            "signal SIGABRT: an abort, such as a failed memory allocation or a panic with panic = \"abort\" (the error log has its message)".to_string()
        }
        WaitStatus::Signaled(_, signal, _) => format!("signal {signal}"),
        other => format!("{other:?}"),
    }
}

impl Master {
    /// Reaps every child that exited: the upgrade's new master, or a worker.
    pub(super) fn reap(&mut self) {
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
                self.successor_exited(pid);
                continue;
            }
            if self.zygote_reaped(status) {
                continue;
            }
            let Some(index) = self.workers.iter().position(|w| w.pid == pid) else {
                // A worker a zygote forked may exit before its pid is reported.
                self.keep_unknown_exit(status);
                continue;
            };
            let mut worker = self.workers.remove(index);
            if let Some(exec) = &mut worker.exec {
                exec.output.drain(pid.as_raw(), true);
            }
            self.worker_exited(worker, status);
        }
    }

    /// Whether the cgroup's OOM-kill count rose since the last look (and looks again).
    fn oom_kills_rose(&mut self) -> bool {
        let before = self.oom_kills;
        self.oom_kills = oom::kills();
        matches!((before, self.oom_kills), (Some(before), Some(after)) if after > before)
    }

    pub(super) fn worker_exited(&mut self, worker: Worker, status: WaitStatus) {
        let slot = self.scoreboard.slot(worker.slot);
        let message = slot.message();
        // Exec workers do not count their requests in the scoreboard.
        let served = worker.exec.is_none().then(|| slot.requests());
        self.scoreboard.release(worker.slot);
        // Signals forkd sends show up in the phase; any other is named with its likely
        // cause.
        let unasked = matches!(worker.phase, Phase::Running);
        let oom_rose = unasked
            && matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _))
            && self.oom_kills_rose();
        let how = describe(&status, unasked, oom_rose);
        let (pid, number) = (worker.pid.as_raw(), worker.number);
        self.hooks
            .call(super::hooks::HookCall::ChildExit { pid, age: number });
        let reason = classify(worker.phase, worker.ready(), worker.exec.is_some(), &status);
        if let Some(restart) = reason.restart() {
            self.scoreboard.header().count_restart(restart);
        }
        match reason {
            ExitReason::Crash => self.worker_crashed(&worker, &how, served),
            ExitReason::BootFailure => {
                let mut why =
                    message.unwrap_or_else(|| format!("it exited before it was ready ({how})"));
                if let Some(output) = worker.exec.as_ref().and_then(|e| e.output.recent()) {
                    why = format!("{why}; its last output: {output}");
                }
                tracing::error!(pid, worker = number, "worker failed to boot: {why}");
                self.boot_failed(&worker, why);
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

    /// A ready worker exited unasked: replaced at once, or after a hold if it is part of
    /// a crash loop.
    fn worker_crashed(&mut self, worker: &Worker, how: &str, served: Option<u64>) {
        let (pid, number) = (worker.pid.as_raw(), worker.number);
        let up_for = worker.ready_at.map(|at| at.elapsed());
        match self.backoff.crashed(Instant::now(), up_for) {
            Some(delay) => tracing::error!(
                pid,
                worker = number,
                requests = served,
                "worker exited unexpectedly ({how}) {:.1}s after it became ready ({} such crashes in a row); replacing it in {:.1}s",
                up_for.unwrap_or_default().as_secs_f64(),
                self.backoff.quick_crashes(),
                delay.as_secs_f64()
            ),
            None => tracing::error!(
                pid,
                worker = number,
                requests = served,
                "worker exited unexpectedly ({how}); replacing it"
            ),
        }
    }

    /// A worker died before it was ready: exit 3 if none ever booted, roll back a
    /// reload whose new workers cannot boot, or retry with backoff.
    fn boot_failed(&mut self, worker: &Worker, why: String) {
        if self.boot.boot_failure_is_fatal() {
            let failed = Stop::Failed {
                code: EXIT_NO_WORKER,
                why: format!("no worker could boot: {why}"),
            };
            self.begin_stop(failed, "no worker could boot");
            return;
        }
        let old_running = self
            .workers
            .iter()
            .any(|w| w.generation < worker.generation && matches!(w.phase, Phase::Running));
        if worker.generation == self.current.number && old_running && self.previous.is_some() {
            self.roll_back();
            return;
        }
        let delay = self.backoff.boot_failed(Instant::now());
        tracing::warn!("retrying worker boot in {:.1}s", delay.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::Pid;
    use std::time::Instant;

    fn pid() -> Pid {
        Pid::from_raw(42)
    }

    #[test]
    fn what_the_master_asked_decides_first() {
        let killed = WaitStatus::Signaled(pid(), Signal::SIGKILL, false);
        let stopping = Phase::Stopping {
            reason: ExitReason::Reload,
            kill_at: Instant::now(),
        };
        assert_eq!(classify(stopping, true, false, &killed), ExitReason::Reload);
        let killed_phase = Phase::Killed {
            reason: ExitReason::BootFailure,
        };
        assert_eq!(
            classify(killed_phase, false, true, &killed),
            ExitReason::BootFailure
        );
        let aborting = Phase::Aborting {
            kill_at: Instant::now(),
        };
        assert_eq!(
            classify(aborting, true, false, &killed),
            ExitReason::Timeout
        );
    }

    #[test]
    fn unasked_exits_are_boot_failures_recycling_or_crashes() {
        let ok = WaitStatus::Exited(pid(), 0);
        let failed = WaitStatus::Exited(pid(), 1);
        let run = Phase::Running;
        assert_eq!(classify(run, false, false, &ok), ExitReason::BootFailure);
        assert_eq!(classify(run, false, true, &ok), ExitReason::BootFailure);
        // An exec worker that ends by itself with 0 once ready recycles itself.
        assert_eq!(classify(run, true, true, &ok), ExitReason::Exited);
        assert_eq!(classify(run, true, true, &failed), ExitReason::Crash);
        // A native worker never exits by itself with 0 while serving.
        assert_eq!(classify(run, true, false, &ok), ExitReason::Crash);
    }

    #[test]
    fn a_signal_forkd_did_not_send_is_named_with_its_likely_cause() {
        let kill = WaitStatus::Signaled(pid(), Signal::SIGKILL, false);
        let abort = WaitStatus::Signaled(pid(), Signal::SIGABRT, true);
        assert_eq!(
            describe(&WaitStatus::Exited(pid(), 3), true, false),
            "exit code 3"
        );
        assert!(describe(&kill, true, true).contains("OOM killer"));
        assert!(describe(&kill, true, false).contains("not sent by forkd"));
        assert_eq!(describe(&kill, false, false), "signal SIGKILL");
        assert!(describe(&abort, true, false).contains("an abort"));
        assert_eq!(describe(&abort, false, false), "signal SIGABRT");
    }
}
