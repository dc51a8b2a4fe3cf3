//! When the master may start workers again after things went wrong: boot failures in a
//! row (the boot backoff), workers that crash soon after they became ready (a crash
//! loop), and a fork that failed. One value holds the counts and the one moment before
//! which nothing is spawned; the loop wakes at that moment ([`Backoff::deadline`]).
//! Pure: every method takes the time it acts at.

use super::plan::{self, BACKOFF_FIRST};
use std::time::{Duration, Instant};

/// Boot failures and quick crashes in a row, and the spawn hold they set.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Backoff {
    /// Boot failures in a row.
    boot_failures: u32,
    /// Crashes in a row of workers that had been ready less than `CRASH_LOOP_WINDOW`.
    quick_crashes: u32,
    /// No worker is started before this moment.
    not_before: Option<Instant>,
}

impl Backoff {
    /// Whether spawning is held off at `now`.
    pub fn holding(&self, now: Instant) -> bool {
        self.not_before.is_some_and(|at| now < at)
    }

    /// When the hold ends, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.not_before
    }

    /// The hold is over (or there was none): forget it.
    pub fn release(&mut self) {
        self.not_before = None;
    }

    /// Crash-loop crashes in a row so far.
    pub fn quick_crashes(&self) -> u32 {
        self.quick_crashes
    }

    /// Holds off spawning for at least `delay` from `now` (a pending longer hold stays);
    /// returns the delay that really applies, for the log.
    pub fn hold(&mut self, now: Instant, delay: Duration) -> Duration {
        let at = (now + delay).max(self.not_before.unwrap_or(now));
        self.not_before = Some(at);
        at - now
    }

    /// A worker failed to boot: the next attempt waits twice as long as the last one.
    /// Returns the wait.
    pub fn boot_failed(&mut self, now: Instant) -> Duration {
        self.boot_failures += 1;
        self.hold(now, plan::backoff(self.boot_failures))
    }

    /// A worker booted: the boot backoff starts over.
    pub fn worker_ready(&mut self) {
        self.boot_failures = 0;
    }

    /// A worker that had been ready for `up_for` crashed: the wait before its
    /// replacement, if it is part of a crash loop (see [`plan::after_crash`]).
    pub fn crashed(&mut self, now: Instant, up_for: Option<Duration>) -> Option<Duration> {
        let (quick_crashes, hold_off) = plan::after_crash(up_for, self.quick_crashes);
        self.quick_crashes = quick_crashes;
        hold_off.map(|delay| self.hold(now, delay))
    }

    /// A worker could not be started (fork failed, no slot): try again a little later.
    pub fn spawn_failed(&mut self, now: Instant) {
        self.not_before = Some(now + BACKOFF_FIRST);
    }

    /// A new generation: its boots start with no backoff.
    pub fn new_generation(&mut self) {
        self.boot_failures = 0;
        self.not_before = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_failures_double_the_wait_until_a_worker_is_ready() {
        let now = Instant::now();
        let mut b = Backoff::default();
        assert!(!b.holding(now));
        assert_eq!(b.boot_failed(now), Duration::from_millis(500));
        assert!(b.holding(now));
        assert_eq!(b.deadline(), Some(now + Duration::from_millis(500)));
        let later = now + Duration::from_secs(1);
        assert!(!b.holding(later));
        assert_eq!(b.boot_failed(later), Duration::from_secs(1));
        assert_eq!(b.boot_failed(later), Duration::from_secs(2));
        b.worker_ready();
        assert_eq!(
            b.boot_failed(later + Duration::from_secs(10)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn a_longer_pending_hold_is_kept() {
        let now = Instant::now();
        let mut b = Backoff::default();
        b.hold(now, Duration::from_secs(5));
        assert_eq!(b.hold(now, Duration::from_secs(1)), Duration::from_secs(5));
        assert_eq!(b.hold(now, Duration::from_secs(8)), Duration::from_secs(8));
    }

    #[test]
    fn quick_crashes_hold_off_and_a_long_run_resets_them() {
        let now = Instant::now();
        let mut b = Backoff::default();
        let quick = Some(Duration::from_secs(1));
        assert_eq!(b.crashed(now, quick), Some(Duration::from_millis(500)));
        assert_eq!(b.quick_crashes(), 1);
        let later = now + Duration::from_secs(2);
        assert_eq!(b.crashed(later, quick), Some(Duration::from_secs(1)));
        assert_eq!(b.quick_crashes(), 2);
        assert_eq!(b.crashed(later, Some(Duration::from_secs(60))), None);
        assert_eq!(b.quick_crashes(), 0);
        // Never seen ready: not a crash loop's crash.
        assert_eq!(b.crashed(later, None), None);
    }

    #[test]
    fn a_new_generation_and_a_failed_spawn() {
        let now = Instant::now();
        let mut b = Backoff::default();
        b.boot_failed(now);
        b.boot_failed(now);
        b.new_generation();
        assert!(!b.holding(now));
        assert_eq!(b.boot_failed(now), Duration::from_millis(500));
        b.spawn_failed(now);
        assert_eq!(b.deadline(), Some(now + BACKOFF_FIRST));
        b.release();
        assert_eq!(b.deadline(), None);
    }
}
