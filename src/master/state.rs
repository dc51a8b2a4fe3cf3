//! The master's own life as types, and the pure decisions on them: whether it serves or
//! stops ([`RunState`], and how it stops: [`Stop`]), how far its start-up has got
//! ([`Boot`]), and the exit code once its workers are gone. The loop in `mod.rs` holds
//! the values and acts (signals, logs, systemd); nothing here does, so the rules are
//! unit-tested without processes.

use std::time::Instant;

/// How the master stops.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// TERM: the workers drain.
    Graceful,
    /// QUIT/INT: the workers stop at once.
    Quick,
    /// forkd stops on its own (no worker could boot): a quick stop, then forkd exits
    /// with `code` after logging `why`.
    Failed {
        /// The exit code.
        code: u8,
        /// What the log says last.
        why: String,
    },
}

impl Stop {
    /// The workers drain (TERM) rather than stop at once.
    pub fn graceful(&self) -> bool {
        matches!(self, Stop::Graceful)
    }
}

/// Whether the master serves or stops.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// Supervising workers as wanted.
    Serving,
    /// TERM with `shutdown_delay`: readiness already answers 503, everything else is
    /// served as usual; the graceful stop begins at `at`.
    StopDelayed {
        /// When the graceful stop begins.
        at: Instant,
    },
    /// Stopping the workers; forkd exits when the last one is gone.
    Stopping(Stop),
}

impl RunState {
    /// Supervising as usual: serving, or serving out a `shutdown_delay`.
    pub fn supervising(&self) -> bool {
        matches!(self, RunState::Serving | RunState::StopDelayed { .. })
    }

    /// Asking for the stop `asked` in this state: the state after it, and whether the
    /// workers are to be told (`None`: nothing changes). A quick stop under way has
    /// told every worker already and is not turned back into a drain; a failure under
    /// a quick stop still sets the exit code; the first failure is the one reported.
    pub fn stop(&self, asked: Stop) -> Option<(RunState, bool)> {
        match (self, asked) {
            (RunState::Stopping(Stop::Failed { .. }), _) => None,
            (RunState::Stopping(Stop::Quick), failed @ Stop::Failed { .. }) => {
                Some((RunState::Stopping(failed), false))
            }
            (RunState::Stopping(Stop::Quick), _) => None,
            (_, asked) => Some((RunState::Stopping(asked), true)),
        }
    }

    /// forkd's exit code once no worker is left, or `None` while it goes on.
    pub fn exit_code(&self, workers_left: usize) -> Option<u8> {
        match self {
            RunState::Stopping(stop) if workers_left == 0 => Some(match stop {
                Stop::Failed { code, .. } => *code,
                Stop::Graceful | Stop::Quick => crate::shared::protocol::EXIT_OK,
            }),
            _ => None,
        }
    }
}

/// How far the master's start-up has got; it only moves forward (a reload does not
/// start it again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// No worker has been ready yet: a worker failing to boot stops forkd (exit 3).
    Booting,
    /// Some worker has been ready; boot failures from now on are retried with backoff.
    Booted,
    /// "all workers ready" was said once (to the log, systemd or an old master).
    Announced,
}

impl Boot {
    /// After a worker was seen ready.
    pub fn worker_ready(self) -> Boot {
        match self {
            Boot::Booting => Boot::Booted,
            later => later,
        }
    }

    /// A worker that fails to boot now stops forkd: none has ever booted.
    pub fn boot_failure_is_fatal(self) -> bool {
        self == Boot::Booting
    }

    /// "all workers ready" is to be said now: not said before, still supervising, and
    /// `ready` workers reach a target of at least one.
    pub fn announce_now(self, supervising: bool, ready: usize, target: usize) -> bool {
        self != Boot::Announced && supervising && target > 0 && ready >= target
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::protocol::{EXIT_NO_WORKER, EXIT_OK};

    fn failed(why: &str) -> Stop {
        Stop::Failed {
            code: EXIT_NO_WORKER,
            why: why.to_string(),
        }
    }

    #[test]
    fn serving_states_supervise_and_stopping_ones_do_not() {
        assert!(RunState::Serving.supervising());
        assert!(RunState::StopDelayed { at: Instant::now() }.supervising());
        for stop in [Stop::Graceful, Stop::Quick, failed("x")] {
            assert!(!RunState::Stopping(stop).supervising());
        }
    }

    #[test]
    fn any_stop_begins_from_serving_or_a_shutdown_delay() {
        let delayed = RunState::StopDelayed { at: Instant::now() };
        for state in [RunState::Serving, delayed] {
            for asked in [Stop::Graceful, Stop::Quick, failed("x")] {
                assert_eq!(
                    state.stop(asked.clone()),
                    Some((RunState::Stopping(asked), true))
                );
            }
        }
    }

    #[test]
    fn a_drain_can_be_hurried_or_fail_but_a_quick_stop_is_not_turned_back() {
        let draining = RunState::Stopping(Stop::Graceful);
        assert_eq!(
            draining.stop(Stop::Graceful),
            Some((RunState::Stopping(Stop::Graceful), true))
        );
        assert_eq!(
            draining.stop(Stop::Quick),
            Some((RunState::Stopping(Stop::Quick), true))
        );
        let quick = RunState::Stopping(Stop::Quick);
        assert_eq!(quick.stop(Stop::Graceful), None);
        assert_eq!(quick.stop(Stop::Quick), None);
        // The workers were told already; the exit code changes.
        assert_eq!(
            quick.stop(failed("boot")),
            Some((RunState::Stopping(failed("boot")), false))
        );
    }

    #[test]
    fn a_failure_is_final_and_the_first_one_is_reported() {
        let failing = RunState::Stopping(failed("first"));
        for asked in [Stop::Graceful, Stop::Quick, failed("second")] {
            assert_eq!(failing.stop(asked), None);
        }
    }

    #[test]
    fn forkd_exits_when_stopping_and_no_worker_is_left_with_the_failure_s_code() {
        assert_eq!(RunState::Serving.exit_code(0), None);
        assert_eq!(
            RunState::StopDelayed { at: Instant::now() }.exit_code(0),
            None
        );
        assert_eq!(RunState::Stopping(Stop::Graceful).exit_code(1), None);
        assert_eq!(
            RunState::Stopping(Stop::Graceful).exit_code(0),
            Some(EXIT_OK)
        );
        assert_eq!(RunState::Stopping(Stop::Quick).exit_code(0), Some(EXIT_OK));
        assert_eq!(
            RunState::Stopping(failed("x")).exit_code(0),
            Some(EXIT_NO_WORKER)
        );
        assert_eq!(RunState::Stopping(failed("x")).exit_code(2), None);
    }

    #[test]
    fn boot_failures_are_fatal_only_until_a_worker_was_ready() {
        assert!(Boot::Booting.boot_failure_is_fatal());
        assert_eq!(Boot::Booting.worker_ready(), Boot::Booted);
        assert!(!Boot::Booted.boot_failure_is_fatal());
        assert!(!Boot::Announced.boot_failure_is_fatal());
        // Never backwards.
        assert_eq!(Boot::Booted.worker_ready(), Boot::Booted);
        assert_eq!(Boot::Announced.worker_ready(), Boot::Announced);
    }

    #[test]
    fn all_ready_is_announced_once_when_the_target_is_met_while_supervising() {
        assert!(Boot::Booted.announce_now(true, 2, 2));
        assert!(Boot::Booted.announce_now(true, 3, 2));
        assert!(!Boot::Booted.announce_now(true, 1, 2));
        assert!(!Boot::Booted.announce_now(false, 2, 2));
        assert!(!Boot::Booted.announce_now(true, 0, 0));
        assert!(!Boot::Announced.announce_now(true, 2, 2));
    }
}
