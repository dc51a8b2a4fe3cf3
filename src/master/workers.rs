//! A worker process as the master tracks it: its slot, generation and configuration,
//! where it is in its life ([`Phase`]), when it was seen ready, and what the master
//! keeps for an exec worker.

use super::exec;
use super::plan::ExitReason;
use super::recycle;
use crate::config::{Config, ReadyMode};
use crate::shared::scoreboard::{Scoreboard, FLAG_RETIRE};
use nix::unistd::Pid;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a worker is in its life, as far as the master asked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Phase {
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
pub(super) struct Worker {
    /// Its process id.
    pub pid: Pid,
    /// Its scoreboard slot.
    pub slot: usize,
    /// Its start order (1, 2, ...; lower is older).
    pub number: u64,
    /// The number of the generation it was forked from.
    pub generation: u64,
    /// That generation's configuration.
    pub config: Arc<Config>,
    /// Where it is in its life, as far as the master asked.
    pub phase: Phase,
    /// When the master saw it ready to serve (None: not yet); how long it has been up
    /// tells a crash loop from a one-off crash.
    pub ready_at: Option<Instant>,
    /// Set for an exec worker.
    pub exec: Option<ExecWorker>,
    /// CLOCK_MONOTONIC ms from which this worker's silence is counted at the earliest:
    /// its start, or the end of a freeze of the whole tree (see [`super::clock`]). Kept
    /// here, not in the worker-writable slot.
    pub clock_from_ms: u64,
    /// `max_worker_memory` / `max_worker_lifetime`: its age, limit and RSS samples.
    pub recycle: recycle::Watch,
}

/// What the master tracks for an exec worker beyond the scoreboard.
pub(super) struct ExecWorker {
    pub output: exec::Output,
    pub spawned_at: Instant,
    /// A worker that never sent WATCHDOG=1 is not subject to `timeout` (nothing would
    /// tell a busy one from a hung one); its first keep-alive opts it in.
    pub watchdog_seen: bool,
}

impl Worker {
    /// Whether the master has seen it ready to serve.
    pub fn ready(&self) -> bool {
        self.ready_at.is_some()
    }

    /// Whether it asked to be recycled (its `max_requests` were served), in its slot.
    pub fn asked_to_retire(&self, scoreboard: &Scoreboard) -> bool {
        scoreboard.slot(self.slot).flags() & FLAG_RETIRE != 0
    }

    /// Whether it is being recycled, and why: asked in its slot (`max_requests`), or
    /// past `max_worker_memory` / `max_worker_lifetime`.
    pub fn retiring(&self, scoreboard: &Scoreboard) -> Option<ExitReason> {
        if self.asked_to_retire(scoreboard) {
            Some(ExitReason::MaxRequests)
        } else {
            self.recycle.exit_reason()
        }
    }

    /// Whether `timeout` is enforced on this worker.
    pub fn timed(&self) -> bool {
        !self.config.timeout.is_zero() && self.exec.as_ref().is_none_or(|e| e.watchdog_seen)
    }

    /// When an exec worker that is not ready yet is given up on.
    pub fn boot_deadline(&self) -> Option<Instant> {
        let exec = self.exec.as_ref().filter(|_| !self.ready())?;
        Some(exec.spawned_at + exec_boot_limit(self.config.timeout, &self.config.exec.ready))
    }
}

/// How long an exec worker may take to be ready when `timeout` is 0.
const EXEC_BOOT_LIMIT: Duration = Duration::from_secs(60);

/// How long an exec worker may take to be ready: `timeout` (or `EXEC_BOOT_LIMIT` when
/// it is 0), and for `ready = DURATION` at least a second past that wait.
fn exec_boot_limit(timeout: Duration, ready: &ReadyMode) -> Duration {
    let limit = if timeout.is_zero() {
        EXEC_BOOT_LIMIT
    } else {
        timeout
    };
    match ready {
        ReadyMode::After(wait) => limit.max(*wait + Duration::from_secs(1)),
        _ => limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exec_worker_gets_timeout_or_a_minute_and_a_second_past_its_wait() {
        let s = Duration::from_secs;
        assert_eq!(exec_boot_limit(s(0), &ReadyMode::Auto), EXEC_BOOT_LIMIT);
        assert_eq!(exec_boot_limit(s(5), &ReadyMode::Notify), s(5));
        assert_eq!(exec_boot_limit(s(5), &ReadyMode::After(s(10))), s(11));
        assert_eq!(exec_boot_limit(s(30), &ReadyMode::After(s(10))), s(30));
        assert_eq!(exec_boot_limit(s(0), &ReadyMode::After(s(90))), s(91));
    }
}
