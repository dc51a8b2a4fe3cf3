//! The reconcile decision as a pure function: from a view of the workers and what is
//! wanted, which workers to start and which to stop (and why). The loop in `mod.rs`
//! builds the [`View`], applies the [`Plan`] (fork, SIGTERM), and nothing here forks or
//! signals, so the rules are unit-tested without processes: rolling reloads, TTIN/TTOU,
//! `max_requests` recycling, crash loops and boot backoff.
//!
//! The rules: workers of the current generation that run and are not retiring count as
//! *active*; too many active workers are stopped (not-ready first, then the oldest);
//! missing active workers are spawned (unless backing off after boot failures or a
//! crash loop); a *surplus* worker (old generation, or retiring) is stopped only when
//! enough active workers are ready to take its place, so capacity never dips below the
//! target.

use std::time::Duration;

/// Why a worker exits: what the master asked (or saw), one variant per log reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// Exited or was killed without being asked, after it was ready.
    Crash,
    /// Stopped reporting progress for `timeout`: SIGABRT, then SIGKILL.
    Timeout,
    /// Asked to be recycled (its `max_requests` were served).
    MaxRequests,
    /// Recycled: its RSS passed `max_worker_memory`.
    MaxWorkerMemory,
    /// Recycled: older than `max_worker_lifetime` (with its jitter).
    MaxWorkerLifetime,
    /// An old generation's worker, replaced by a HUP reload.
    Reload,
    /// One too many for the target (TTOU, WINCH, a smaller reload).
    ScaleDown,
    /// Died, or was killed, before it was ready.
    BootFailure,
    /// Part of stopping forkd (TERM, QUIT, INT, a hand-over to a new master).
    Stop,
    /// An exec worker whose program ended by itself with status 0 while ready.
    Exited,
    /// A new worker of a reload that is abandoned because its generation cannot boot.
    ReloadFailed,
}

impl ExitReason {
    /// The reason as the log names it (`reason="..."`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Crash => "crash",
            ExitReason::Timeout => "timeout",
            ExitReason::MaxRequests => "max_requests",
            ExitReason::MaxWorkerMemory => "max_worker_memory",
            ExitReason::MaxWorkerLifetime => "max_worker_lifetime",
            ExitReason::Reload => "reload",
            ExitReason::ScaleDown => "scale down",
            ExitReason::BootFailure => "boot failure",
            ExitReason::Stop => "stop",
            ExitReason::Exited => "exited",
            ExitReason::ReloadFailed => "reload failed",
        }
    }

    /// The `forkd_worker_restarts_total{reason}` counter this exit counts in, if any.
    /// Exhaustive on purpose: a new reason does not compile until it is decided here.
    pub fn restart(self) -> Option<crate::shared::scoreboard::Restart> {
        use crate::shared::scoreboard::Restart;
        match self {
            ExitReason::Crash => Some(Restart::Crash),
            ExitReason::Timeout => Some(Restart::Timeout),
            ExitReason::MaxRequests => Some(Restart::MaxRequests),
            ExitReason::MaxWorkerMemory => Some(Restart::MaxWorkerMemory),
            ExitReason::MaxWorkerLifetime => Some(Restart::MaxWorkerLifetime),
            ExitReason::Reload => Some(Restart::Reload),
            ExitReason::ScaleDown => Some(Restart::Scale),
            ExitReason::BootFailure => Some(Restart::BootFailure),
            // Stopping forkd replaces nobody.
            ExitReason::Stop => None,
            // Replaced like a recycled worker, but not counted (as before).
            ExitReason::Exited => None,
            // The reload's failure is what is reported, not a restart.
            ExitReason::ReloadFailed => None,
        }
    }
}

/// One worker as the decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerView {
    /// Its start order (lower is older).
    pub number: u64,
    /// Still running: not asked to stop, not timed out, not killed.
    pub running: bool,
    /// Has said it is ready to serve.
    pub ready: bool,
    /// Of the current generation (not an older configuration's).
    pub current: bool,
    /// Being recycled, and why (`max_requests`, `max_worker_memory`,
    /// `max_worker_lifetime`); None if not.
    pub retiring: Option<ExitReason>,
}

impl WorkerView {
    /// Counts toward the target: running, current, not retiring.
    pub fn active(&self) -> bool {
        self.running && self.current && self.retiring.is_none()
    }
}

/// What [`plan`] decides from.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// Every worker the master tracks; [`Plan::stop`] indexes into this slice.
    pub workers: &'a [WorkerView],
    /// How many active workers are wanted.
    pub target: usize,
    /// Whether starting workers is held off (boot backoff, crash loop).
    pub backing_off: bool,
}

/// What the loop does this turn.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Workers to stop gracefully, by index into [`View::workers`], with the reason;
    /// in the order to stop them.
    pub stop: Vec<(usize, ExitReason)>,
    /// How many new workers of the current generation to start.
    pub spawn: usize,
}

/// The reconcile decision (see the module doc).
pub fn plan(view: &View<'_>) -> Plan {
    let workers = view.workers;
    let mut plan = Plan::default();
    // Too many active workers: stop the excess, those not yet ready first, then the
    // oldest.
    let mut active: Vec<usize> = (0..workers.len())
        .filter(|&i| workers[i].active())
        .collect();
    if active.len() > view.target {
        active.sort_by_key(|&i| (workers[i].ready, workers[i].number));
        let excess = active.len() - view.target;
        plan.stop.extend(
            active
                .drain(..excess)
                .map(|index| (index, ExitReason::ScaleDown)),
        );
    }
    // Missing workers: spawn them (unless backing off).
    if !view.backing_off {
        plan.spawn = view.target - active.len();
    }
    // Surplus workers (old generation, or retiring): stop one whenever enough active
    // workers are ready to serve without it. New ones are not ready yet.
    let ready_active = active.iter().filter(|&&i| workers[i].ready).count();
    let mut surplus: Vec<usize> = (0..workers.len())
        .filter(|&i| workers[i].running && !workers[i].active())
        .collect();
    surplus.sort_by_key(|&i| workers[i].number);
    let mut remaining = surplus.len();
    for index in surplus {
        if ready_active + remaining - 1 < view.target {
            break;
        }
        let reason = match workers[index].retiring {
            _ if !workers[index].current => ExitReason::Reload,
            Some(reason) => reason,
            None => ExitReason::MaxRequests,
        };
        plan.stop.push((index, reason));
        remaining -= 1;
    }
    plan
}

/// Boot-failure backoff: doubles from the first to the last value.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between boot attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A worker that crashes within this long of becoming ready is in a crash loop: its
/// replacement waits (the boot backoff's doubling delays), rather than 20 restarts a
/// second.
pub const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(10);

/// The `n`th delay (from 1) of a backoff: doubles from `BACKOFF_FIRST` to `BACKOFF_MAX`.
pub fn backoff(n: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1 << n.saturating_sub(1).min(10))
        .min(BACKOFF_MAX)
}

/// After a crash of a worker that had been ready for `up_for` (None: never seen ready),
/// with `quick_crashes` crash-loop crashes in a row before it: the new count, and how
/// long to hold off its replacement (None: replace it at once).
pub fn after_crash(up_for: Option<Duration>, quick_crashes: u32) -> (u32, Option<Duration>) {
    if up_for.is_some_and(|d| d < CRASH_LOOP_WINDOW) {
        let n = quick_crashes + 1;
        (n, Some(backoff(n)))
    } else {
        (0, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(number: u64, current: bool, ready: bool) -> WorkerView {
        WorkerView {
            number,
            running: true,
            ready,
            current,
            retiring: None,
        }
    }

    fn decide(workers: &[WorkerView], target: usize) -> Plan {
        plan(&View {
            workers,
            target,
            backing_off: false,
        })
    }

    #[test]
    fn a_steady_set_needs_nothing_and_an_empty_one_is_filled() {
        let steady = [worker(1, true, true), worker(2, true, false)];
        assert_eq!(decide(&steady, 2), Plan::default());
        assert_eq!(
            decide(&[], 3),
            Plan {
                stop: vec![],
                spawn: 3
            }
        );
    }

    #[test]
    fn a_rolling_reload_stops_an_old_worker_only_for_a_ready_new_one() {
        // HUP: generation 2 of 3 workers; generation 1's three are old now.
        let mut workers = vec![
            worker(1, false, true),
            worker(2, false, true),
            worker(3, false, true),
        ];
        let first = decide(&workers, 3);
        assert_eq!(first.spawn, 3, "the new generation is started");
        assert!(
            first.stop.is_empty(),
            "no old worker goes before a new one is ready"
        );
        workers.extend([
            worker(4, true, false),
            worker(5, true, false),
            worker(6, true, false),
        ]);
        assert_eq!(
            decide(&workers, 3),
            Plan::default(),
            "waiting for readiness"
        );
        // One new worker is ready: exactly one old one (the oldest) may go.
        workers[3].ready = true;
        let plan = decide(&workers, 3);
        assert_eq!(plan.stop, vec![(0, ExitReason::Reload)]);
        assert_eq!(plan.spawn, 0);
        workers[0].running = false;
        assert_eq!(decide(&workers, 3), Plan::default());
        // The other two become ready: the other two old ones go.
        workers[4].ready = true;
        workers[5].ready = true;
        let plan = decide(&workers, 3);
        assert_eq!(
            plan.stop,
            vec![(1, ExitReason::Reload), (2, ExitReason::Reload)]
        );
    }

    #[test]
    fn ttin_and_ttou_during_a_reload_change_the_new_generation_only() {
        let mut workers = vec![
            worker(1, false, true),
            worker(2, false, true),
            worker(3, true, true),
            worker(4, true, false),
        ];
        // TTIN to 3: one more new worker; with 1 ready new worker of 3 wanted, no old
        // worker may go yet.
        let ttin = decide(&workers, 3);
        assert_eq!(ttin.spawn, 1);
        assert!(ttin.stop.is_empty(), "{ttin:?}");
        // TTOU down to 1: the not-ready new worker goes first, and with one ready new
        // worker for a target of 1, both old workers are surplus.
        let ttou = decide(&workers, 1);
        assert_eq!(ttou.spawn, 0);
        assert_eq!(
            ttou.stop,
            vec![
                (3, ExitReason::ScaleDown),
                (0, ExitReason::Reload),
                (1, ExitReason::Reload)
            ]
        );
        // TTOU with every new worker ready: the oldest new one goes.
        workers[3].ready = true;
        let ttou = decide(&workers, 1);
        assert_eq!(ttou.stop[0], (2, ExitReason::ScaleDown));
    }

    #[test]
    fn a_worker_at_max_requests_is_replaced_before_it_is_stopped() {
        let mut workers = vec![worker(1, true, true), worker(2, true, true)];
        workers[0].retiring = Some(ExitReason::MaxRequests);
        let plan = decide(&workers, 2);
        assert_eq!(plan.spawn, 1, "its replacement starts first");
        assert!(
            plan.stop.is_empty(),
            "capacity stays at 2 until it is ready"
        );
        workers.push(worker(3, true, false));
        assert_eq!(decide(&workers, 2), Plan::default());
        workers[2].ready = true;
        assert_eq!(
            decide(&workers, 2),
            Plan {
                stop: vec![(0, ExitReason::MaxRequests)],
                spawn: 0
            }
        );
    }

    #[test]
    fn backing_off_starts_nobody_but_still_retires_surplus() {
        let workers = [worker(1, false, true), worker(2, true, true)];
        let plan = plan(&View {
            workers: &workers,
            target: 1,
            backing_off: true,
        });
        assert_eq!(plan.spawn, 0);
        assert_eq!(plan.stop, vec![(0, ExitReason::Reload)]);
        let none = super::plan(&View {
            workers: &[],
            target: 2,
            backing_off: true,
        });
        assert_eq!(none, Plan::default());
    }

    #[test]
    fn stopping_workers_are_neither_active_nor_surplus() {
        let mut workers = [worker(1, true, true), worker(2, false, true)];
        workers[0].running = false;
        workers[1].running = false;
        assert_eq!(decide(&workers, 1).spawn, 1);
        assert!(decide(&workers, 1).stop.is_empty());
    }

    #[test]
    fn the_boot_backoff_doubles_up_to_its_cap() {
        let delays: Vec<u64> = (1..=9).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(backoff(0), BACKOFF_FIRST);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn a_crash_loop_backs_off_and_a_late_crash_resets_it() {
        let quick = Some(Duration::from_secs(1));
        let (n, delay) = after_crash(quick, 0);
        assert_eq!((n, delay), (1, Some(BACKOFF_FIRST)));
        let (n, delay) = after_crash(quick, n);
        assert_eq!((n, delay), (2, Some(Duration::from_secs(1))));
        let (n, delay) = after_crash(quick, 6);
        assert_eq!((n, delay), (7, Some(BACKOFF_MAX)));
        assert_eq!(after_crash(Some(CRASH_LOOP_WINDOW), 7), (0, None));
        assert_eq!(
            after_crash(None, 3),
            (0, None),
            "never ready: no crash loop"
        );
    }

    #[test]
    fn every_restart_reason_but_stops_is_counted() {
        use crate::shared::scoreboard::Restart;
        use crate::shared::scoreboard::RESTART_REASONS;
        let label = |r: ExitReason| r.restart().map(|r| RESTART_REASONS[r as usize]);
        assert_eq!(label(ExitReason::Crash), Some("crash"));
        assert_eq!(label(ExitReason::Timeout), Some("timeout"));
        assert_eq!(label(ExitReason::MaxRequests), Some("max_requests"));
        assert_eq!(label(ExitReason::Reload), Some("reload"));
        assert_eq!(label(ExitReason::ScaleDown), Some("scale"));
        assert_eq!(label(ExitReason::BootFailure), Some("boot_failure"));
        assert_eq!(ExitReason::ScaleDown.restart(), Some(Restart::Scale));
        for uncounted in [
            ExitReason::Stop,
            ExitReason::Exited,
            ExitReason::ReloadFailed,
        ] {
            assert_eq!(uncounted.restart(), None, "{uncounted:?}");
        }
    }
}
