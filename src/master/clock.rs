//! The master's clock decisions, as pure functions: how long a worker has been silent,
//! and whether a gap in the master's own loop means the whole tree was frozen.
//!
//! The master wakes at least every `MAX_SLEEP`. When it finds that much more time went
//! by between two wake-ups, it was not running: the process tree was stopped (Ctrl-Z,
//! `docker pause`, a cgroup freeze, a stopped VM whose guest clock jumps on). Its workers
//! were frozen with it, so their silence says nothing about them: each gets a fresh
//! `timeout` window from the moment the master runs again. A single stopped worker
//! leaves the master's loop running on time, and is killed at `timeout` as usual.
//!
//! Both the loop and the workers' progress use CLOCK_MONOTONIC, which does not advance
//! while the machine is suspended: a suspended host or VM shows no gap and no silence at
//! all. CLOCK_BOOTTIME would advance and make every worker look hung on resume.

use std::time::Duration;

/// Whether a gap of `gap` between two wake-ups of a loop that sleeps at most
/// `max_sleep` means the master itself was frozen (not just slow for a moment).
pub fn loop_was_frozen(gap: Duration, max_sleep: Duration) -> bool {
    gap > max_sleep * 2
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

    const SLEEP: Duration = Duration::from_secs(1);

    #[test]
    fn only_a_gap_well_past_the_longest_sleep_is_a_freeze() {
        assert!(!loop_was_frozen(Duration::from_millis(0), SLEEP));
        assert!(!loop_was_frozen(Duration::from_millis(1_000), SLEEP));
        // A slow pass on a busy machine is not a freeze.
        assert!(!loop_was_frozen(Duration::from_millis(1_900), SLEEP));
        assert!(!loop_was_frozen(Duration::from_millis(2_000), SLEEP));
        assert!(loop_was_frozen(Duration::from_millis(2_001), SLEEP));
        assert!(loop_was_frozen(Duration::from_secs(3_600), SLEEP));
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
