//! The master's clock decisions, as pure functions: how long a worker has been silent,
//! and whether a gap in the master's own loop means the whole tree was frozen.
//!
//! The master plans each sleep (at most a second) to its nearest deadline. When it
//! wakes well over a second later than it planned, it was not running: the process tree was stopped (Ctrl-Z,
//! `docker pause`, a cgroup freeze, a stopped VM whose guest clock jumps on). Its workers
//! were frozen with it, so their silence says nothing about them: each gets a fresh
//! `timeout` window from the moment the master runs again. A single stopped worker
//! leaves the master's loop running on time, and is killed at `timeout` as usual.
//!
//! Both the loop and the workers' progress use CLOCK_MONOTONIC, which does not advance
//! while the machine is suspended: a suspended host or VM shows no gap and no silence at
//! all. CLOCK_BOOTTIME would advance and make every worker look hung on resume.

use std::time::Duration;

/// How much later than planned the loop may wake before that counts as a freeze: far
/// above any scheduling delay of a busy machine, and no more than the loop's longest
/// sleep (so that a short `timeout` still benefits).
pub const FREEZE_MARGIN: Duration = Duration::from_secs(1);

/// Whether `gap` between two wake-ups of the loop, which had planned to sleep
/// `planned`, means the master itself was frozen (not just slow for a moment).
pub fn loop_was_frozen(gap: Duration, planned: Duration) -> bool {
    gap.saturating_sub(planned) > FREEZE_MARGIN
}

/// How long a worker has shown no progress at `now_ms`: since its last progress tick,
/// or since its clock was (re)started by the master, whichever is later. A tick in the
/// future (a worker may write anything into its slot) counts as now.
pub fn silent_ms(now_ms: u64, progress_ms: u64, clock_from_ms: u64) -> u64 {
    now_ms.saturating_sub(progress_ms.max(clock_from_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn only_waking_well_past_the_planned_sleep_is_a_freeze() {
        // Woken early by a signal, or on time.
        assert!(!loop_was_frozen(ms(0), ms(1_000)));
        assert!(!loop_was_frozen(ms(1_000), ms(1_000)));
        // A slow pass on a busy machine is not a freeze.
        assert!(!loop_was_frozen(ms(1_900), ms(1_000)));
        assert!(!loop_was_frozen(ms(1_020), ms(20)));
        assert!(!loop_was_frozen(ms(2_000), ms(1_000)));
        assert!(loop_was_frozen(ms(2_001), ms(1_000)));
        // A short planned sleep (a close deadline) makes a shorter freeze visible.
        assert!(loop_was_frozen(ms(1_300), ms(250)));
        assert!(loop_was_frozen(Duration::from_secs(3_600), ms(1_000)));
    }

    #[test]
    fn a_restarted_clock_gives_a_fresh_window() {
        // Silent since its last tick.
        assert_eq!(silent_ms(10_000, 4_000, 1_000), 6_000);
        // Frozen with the master: the clock restarted at 9_500, 500 ms ago.
        assert_eq!(silent_ms(10_000, 4_000, 9_500), 500);
        // A tick after the restart counts from the tick.
        assert_eq!(silent_ms(10_000, 9_800, 9_500), 200);
        // A tick from the future (a corrupt slot) is not negative silence.
        assert_eq!(silent_ms(10_000, u64::MAX, 0), 0);
    }
}
