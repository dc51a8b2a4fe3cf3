//! Recycling by memory and age (`max_worker_memory`, `max_worker_lifetime`): the
//! master's decision, kept pure so that it can be tested without processes.
//!
//! A worker past either limit is retired exactly as one at `max_requests`: the master
//! counts it as surplus, starts its replacement, and stops it gracefully once the
//! replacement is ready. Each worker's lifetime limit is spread by up to 10% (drawn once
//! per worker when it is started), so workers started together do not all retire
//! together. RSS is read from `/proc/PID/statm` at most once per [`SAMPLE_EVERY`] per
//! worker, and never when `max_worker_memory` is off.

use std::time::{Duration, Instant};

/// How often a worker's RSS is read at most.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Why a worker is recycled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recycle {
    /// Its RSS (bytes) passed `max_worker_memory` (bytes).
    Memory { rss: u64, limit: u64 },
    /// It is older than its lifetime limit (`max_worker_lifetime` plus its jitter).
    Lifetime { age: Duration, limit: Duration },
}

impl Recycle {
    /// The reason as the master logs it and `forkd_worker_restarts_total` labels it.
    pub fn reason(&self) -> &'static str {
        match self {
            Recycle::Memory { .. } => "max_worker_memory",
            Recycle::Lifetime { .. } => "max_worker_lifetime",
        }
    }
}

impl std::fmt::Display for Recycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recycle::Memory { rss, limit } => write!(
                f,
                "RSS {:.1} MiB passed max_worker_memory = {:.1} MiB",
                *rss as f64 / 1048576.0,
                *limit as f64 / 1048576.0
            ),
            Recycle::Lifetime { age, limit } => write!(
                f,
                "age {:.1}s reached its max_worker_lifetime of {:.1}s (with jitter)",
                age.as_secs_f64(),
                limit.as_secs_f64()
            ),
        }
    }
}

/// The decision: `rss` is None when it was not read this time (not due, or unreadable);
/// `lifetime` is the worker's own limit (zero = off), `max_memory` zero = off. Memory
/// first: it is the more urgent of the two.
pub fn decide(
    rss: Option<u64>,
    max_memory: u64,
    age: Duration,
    lifetime: Duration,
) -> Option<Recycle> {
    if let Some(rss) = rss.filter(|&rss| max_memory > 0 && rss > max_memory) {
        return Some(Recycle::Memory {
            rss,
            limit: max_memory,
        });
    }
    if !lifetime.is_zero() && age >= lifetime {
        return Some(Recycle::Lifetime {
            age,
            limit: lifetime,
        });
    }
    None
}

/// One worker's lifetime limit: `max_lifetime` plus up to 10% of it, chosen by `random`
/// (uniform over 0..=1000 thousandths of those 10%). Zero stays zero (off).
pub fn lifetime_with_jitter(max_lifetime: Duration, random: u64) -> Duration {
    let thousandths = (random % 1001) as u32;
    max_lifetime + max_lifetime / 10 * thousandths / 1000
}

pub use crate::shared::memory::read_rss;

/// What the master keeps per worker for this: when it started, its own lifetime limit,
/// when its RSS was last read, and the decision once made (it does not change after).
#[derive(Debug, Clone)]
pub struct Watch {
    started: Instant,
    lifetime: Duration,
    sampled: Option<Instant>,
    decided: Option<Recycle>,
}

impl Watch {
    /// For a worker started now, with `max_lifetime` spread by `random`.
    pub fn new(max_lifetime: Duration, random: u64) -> Watch {
        Watch {
            started: Instant::now(),
            lifetime: lifetime_with_jitter(max_lifetime, random),
            sampled: None,
            decided: None,
        }
    }

    /// When the worker started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Looks at the worker (reading its RSS with `read` when `max_memory` is on and a
    /// sample is due); returns the decision the first time one is made.
    pub fn check(
        &mut self,
        now: Instant,
        max_memory: u64,
        read: impl FnOnce() -> Option<u64>,
    ) -> Option<Recycle> {
        if self.decided.is_some() {
            return None;
        }
        let due = max_memory > 0
            && self
                .sampled
                .is_none_or(|at| now.saturating_duration_since(at) >= SAMPLE_EVERY);
        let rss = if due {
            self.sampled = Some(now);
            read()
        } else {
            None
        };
        let age = now.saturating_duration_since(self.started);
        self.decided = decide(rss, max_memory, age, self.lifetime);
        self.decided
    }

    /// The decision as the reconcile plan names it.
    pub fn exit_reason(&self) -> Option<super::plan::ExitReason> {
        self.decided.as_ref().map(|decided| match decided {
            Recycle::Memory { .. } => super::plan::ExitReason::MaxWorkerMemory,
            Recycle::Lifetime { .. } => super::plan::ExitReason::MaxWorkerLifetime,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::memory::rss_from_statm;

    const MIB: u64 = 1 << 20;

    #[test]
    fn off_when_both_limits_are_zero() {
        assert_eq!(
            decide(Some(u64::MAX), 0, Duration::MAX, Duration::ZERO),
            None
        );
    }

    #[test]
    fn memory_only_past_the_limit() {
        assert_eq!(
            decide(Some(512 * MIB), 512 * MIB, Duration::ZERO, Duration::ZERO),
            None
        );
        assert_eq!(
            decide(
                Some(512 * MIB + 1),
                512 * MIB,
                Duration::ZERO,
                Duration::ZERO
            ),
            Some(Recycle::Memory {
                rss: 512 * MIB + 1,
                limit: 512 * MIB
            })
        );
        // Not read this time: no decision on memory.
        assert_eq!(
            decide(None, 512 * MIB, Duration::ZERO, Duration::ZERO),
            None
        );
    }

    #[test]
    fn lifetime_at_the_limit_and_memory_first() {
        let hour = Duration::from_secs(3600);
        assert_eq!(decide(None, 0, hour - Duration::from_millis(1), hour), None);
        let at = decide(None, 0, hour, hour);
        assert_eq!(
            at,
            Some(Recycle::Lifetime {
                age: hour,
                limit: hour
            })
        );
        assert_eq!(at.map(|r| r.reason()), Some("max_worker_lifetime"));
        let both = decide(Some(2 * MIB), MIB, hour, hour);
        assert_eq!(both.map(|r| r.reason()), Some("max_worker_memory"));
    }

    #[test]
    fn lifetime_jitter_stays_within_ten_percent() {
        let base = Duration::from_secs(6 * 3600);
        assert_eq!(lifetime_with_jitter(base, 0), base);
        assert_eq!(lifetime_with_jitter(base, 1000), base + base / 10);
        assert_eq!(lifetime_with_jitter(base, 1001), base);
        for random in [1u64, 7, 500, 999, u64::MAX, 0x9E37_79B9_7F4A_7C15] {
            let limit = lifetime_with_jitter(base, random);
            assert!(limit >= base && limit <= base + base / 10, "{limit:?}");
        }
        assert_eq!(lifetime_with_jitter(Duration::ZERO, 12345), Duration::ZERO);
    }

    #[test]
    fn statm_parsing() {
        assert_eq!(
            rss_from_statm("1000 250 100 10 0 300 0\n", 4096),
            Some(250 * 4096)
        );
        assert_eq!(rss_from_statm("1000", 4096), None);
        assert_eq!(rss_from_statm("", 4096), None);
        assert_eq!(rss_from_statm("1 x 2", 4096), None);
    }

    #[test]
    fn reads_its_own_rss() {
        let rss = read_rss(std::process::id() as i32);
        assert!(rss.is_some_and(|r| r > 0), "{rss:?}");
    }

    #[test]
    fn watch_samples_at_most_once_a_second_and_decides_once() {
        let mut watch = Watch::new(Duration::ZERO, 0);
        let start = watch.started;
        let mut reads = 0;
        let mut read = |rss| {
            reads += 1;
            Some(rss)
        };
        assert_eq!(watch.check(start, MIB, || read(MIB)), None);
        // Within the second: not read again, even past the limit.
        assert_eq!(
            watch.check(start + Duration::from_millis(500), MIB, || read(2 * MIB)),
            None
        );
        let later = start + SAMPLE_EVERY;
        let decided = watch.check(later, MIB, || read(2 * MIB));
        assert_eq!(decided.map(|r| r.reason()), Some("max_worker_memory"));
        assert_eq!(
            watch.exit_reason(),
            Some(super::super::plan::ExitReason::MaxWorkerMemory)
        );
        // Decided: never again, and no more reads.
        assert_eq!(
            watch.check(later + SAMPLE_EVERY, MIB, || read(3 * MIB)),
            None
        );
        assert_eq!(reads, 2);
    }

    #[test]
    fn watch_never_reads_with_memory_off() {
        let mut watch = Watch::new(Duration::from_secs(2), 0);
        let start = watch.started;
        let never = || -> Option<u64> { panic!("read with max_worker_memory off") };
        assert_eq!(watch.check(start + Duration::from_secs(1), 0, never), None);
        let decided = watch.check(start + Duration::from_secs(2), 0, never);
        assert_eq!(decided.map(|r| r.reason()), Some("max_worker_lifetime"));
    }
}
