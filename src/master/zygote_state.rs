//! A zygote (`preload_app`, see [`super::zygote`]) as the master holds it, and the pure
//! decisions about it, unit-tested without processes: where it is in its life
//! ([`ZygoteState`], and what each report does to it), the workers asked of it and not
//! reported yet ([`Pending`]), the exits of workers reaped before their report
//! ([`EarlyExits`]), and the backoff of a zygote that cannot import ([`Retry`]).

use super::zygote_wire::Report;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

/// How long a zygote may take to report a worker it was asked for before it is taken
/// for stuck (and killed, then replaced).
pub(super) const SPAWN_LIMIT: Duration = Duration::from_secs(10);
/// How long the exit of a pid nobody knows is kept for a `Spawned` report to claim.
const EARLY_EXIT_KEPT: Duration = Duration::from_secs(30);
/// At most this many such exits are kept.
const EARLY_EXITS_MAX: usize = 64;
/// The first wait before a zygote that cannot import (or keeps dying) is started again;
/// doubled each time, up to [`RETRY_MAX`].
pub(super) const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Where a zygote is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ZygoteState {
    /// Forked; importing the app.
    Importing,
    /// Imported: forks workers on request.
    Ready,
    /// Said it cannot import the app (why); it exits.
    Failed(String),
}

impl ZygoteState {
    /// What a report does: the next state, or why the report is out of place (the
    /// zygote is then killed: it no longer follows the protocol).
    pub fn after(&self, report: &Report) -> Result<ZygoteState, String> {
        match (self, report) {
            (ZygoteState::Importing, Report::Ready) => Ok(ZygoteState::Ready),
            (ZygoteState::Importing, Report::ImportFailed(why)) => {
                Ok(ZygoteState::Failed(why.clone()))
            }
            (ZygoteState::Ready, Report::Spawned { .. } | Report::SpawnFailed { .. }) => {
                Ok(ZygoteState::Ready)
            }
            (state, report) => Err(format!("{report:?} while {state:?}")),
        }
    }
}

/// A worker asked of a zygote, not reported yet: it holds its scoreboard slot and
/// counts as a booting worker of its generation.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Pending {
    pub number: u64,
    pub slot: usize,
    pub asked_at: Instant,
}

/// Takes the pending spawn a report names.
pub(super) fn take_pending(pending: &mut Vec<Pending>, number: u64) -> Option<Pending> {
    let index = pending.iter().position(|p| p.number == number)?;
    Some(pending.remove(index))
}

/// The parent pid in the text of `/proc/PID/stat`: the field after the state, which
/// follows the command name in parentheses (a name the process chose, which may hold
/// spaces and parentheses itself: the last `)` ends it).
pub(super) fn parent_from_stat(stat: &str) -> Option<i32> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_ascii_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

/// Exits of pids the master did not know when it reaped them, kept a while: a worker
/// forked by a zygote may exit before the zygote's report of its pid is read.
#[derive(Debug, Default)]
pub(super) struct EarlyExits {
    exits: VecDeque<(Pid, WaitStatus, Instant)>,
}

impl EarlyExits {
    pub fn remember(&mut self, status: WaitStatus, now: Instant) {
        let Some(pid) = status.pid() else { return };
        if self.exits.len() == EARLY_EXITS_MAX {
            self.exits.pop_front();
        }
        self.exits.push_back((pid, status, now));
    }

    /// The exit of `pid`, if it was kept (and not too long ago).
    pub fn take(&mut self, pid: Pid, now: Instant) -> Option<WaitStatus> {
        self.exits
            .retain(|(_, _, at)| now.saturating_duration_since(*at) < EARLY_EXIT_KEPT);
        let index = self.exits.iter().position(|(p, _, _)| *p == pid)?;
        self.exits.remove(index).map(|(_, status, _)| status)
    }
}

/// When a zygote may be started again after failures in a row.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Retry {
    failures: u32,
    until: Option<Instant>,
}

impl Retry {
    /// One more failure (an import that failed, a zygote that died): the wait before
    /// the next start.
    pub fn failed(&mut self, now: Instant) -> Duration {
        let wait = RETRY_FIRST
            .saturating_mul(1 << self.failures.min(16))
            .min(RETRY_MAX);
        self.failures += 1;
        self.until = Some(now + wait);
        wait
    }

    /// A zygote imported the app: the next failure waits the shortest again.
    pub fn succeeded(&mut self) {
        *self = Retry::default();
    }

    /// Until when starting one is held off, if it is.
    pub fn holding(&self, now: Instant) -> Option<Instant> {
        self.until.filter(|at| *at > now)
    }
}

/// A generation's zygote, as the master holds it. Dropping it kills the process
/// (it is dropped with its generation, or once reaped).
pub(super) struct Zygote {
    pub pid: Pid,
    /// The master's end of the socket pair (non-blocking).
    pub channel: OwnedFd,
    pub state: ZygoteState,
    /// Workers asked for and not reported yet.
    pub pending: Vec<Pending>,
    pub started: Instant,
    /// Set once reaped: nothing to kill any more.
    pub reaped: bool,
    /// SIGKILL sent (stuck): waiting to reap it.
    pub killed: bool,
}

impl Zygote {
    /// When it is overdue: its import past `timeout` (0: never; a worker's boot is
    /// bounded the same way), a worker asked of it not reported within [`SPAWN_LIMIT`].
    /// None once it was killed for it.
    pub fn deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.killed {
            return None;
        }
        let import = (self.state == ZygoteState::Importing && !timeout.is_zero())
            .then(|| self.started + timeout);
        let spawn = self.pending.iter().map(|p| p.asked_at + SPAWN_LIMIT).min();
        import.into_iter().chain(spawn).min()
    }

    /// Why it is to be killed at `now`, if it is overdue (see [`Zygote::deadline`]).
    pub fn overdue(&self, now: Instant, timeout: Duration) -> Option<String> {
        let due = self.deadline(timeout).filter(|at| *at <= now)?;
        Some(
            if self.state == ZygoteState::Importing && due == self.started + timeout {
                format!(
                    "the import took longer than timeout = {}s; the zygote was killed",
                    timeout.as_secs_f64()
                )
            } else {
                format!(
                    "the zygote did not fork a worker within {}s; it was killed",
                    SPAWN_LIMIT.as_secs()
                )
            },
        )
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
        }
    }
}

/// What [`Master::spawn_from_zygote`] did.
pub(super) enum Asked {
    /// A worker was asked for.
    Asked,
    /// The zygote is not ready (importing, or being started again): wait.
    Waiting,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zygote_imports_then_forks_workers() {
        let importing = ZygoteState::Importing;
        assert_eq!(importing.after(&Report::Ready), Ok(ZygoteState::Ready));
        assert_eq!(
            importing.after(&Report::ImportFailed("boom".into())),
            Ok(ZygoteState::Failed("boom".into()))
        );
        let spawned = Report::Spawned { number: 1, pid: 9 };
        assert!(
            importing.after(&spawned).is_err(),
            "no worker before the import"
        );
        let ready = ZygoteState::Ready;
        assert_eq!(ready.after(&spawned), Ok(ZygoteState::Ready));
        let failed_spawn = Report::SpawnFailed {
            number: 1,
            why: String::new(),
        };
        assert_eq!(ready.after(&failed_spawn), Ok(ZygoteState::Ready));
        assert!(ready.after(&Report::Ready).is_err(), "ready twice");
        assert!(ready.after(&Report::ImportFailed("x".into())).is_err());
        let failed = ZygoteState::Failed("x".into());
        assert!(failed.after(&Report::Ready).is_err());
        assert!(failed.after(&spawned).is_err());
    }

    #[test]
    fn reports_claim_their_own_pending_spawn_once() {
        let now = Instant::now();
        let mut pending = vec![
            Pending {
                number: 4,
                slot: 1,
                asked_at: now,
            },
            Pending {
                number: 5,
                slot: 2,
                asked_at: now,
            },
        ];
        assert_eq!(take_pending(&mut pending, 5).map(|p| p.slot), Some(2));
        assert_eq!(take_pending(&mut pending, 5), None);
        assert_eq!(take_pending(&mut pending, 6), None);
        assert_eq!(take_pending(&mut pending, 4).map(|p| p.slot), Some(1));
        assert!(pending.is_empty());
    }

    #[test]
    fn an_early_exit_is_kept_for_its_report_a_while() {
        let now = Instant::now();
        let mut exits = EarlyExits::default();
        let pid = Pid::from_raw(1234);
        exits.remember(WaitStatus::Exited(pid, 3), now);
        exits.remember(WaitStatus::StillAlive, now); // no pid: ignored
        assert_eq!(exits.take(Pid::from_raw(99), now), None);
        assert_eq!(exits.take(pid, now), Some(WaitStatus::Exited(pid, 3)));
        assert_eq!(exits.take(pid, now), None, "taken once");
        exits.remember(WaitStatus::Exited(pid, 3), now);
        assert_eq!(exits.take(pid, now + EARLY_EXIT_KEPT), None, "too old");
        for raw in 0..(EARLY_EXITS_MAX as i32 + 5) {
            exits.remember(WaitStatus::Exited(Pid::from_raw(1000 + raw), 0), now);
        }
        assert_eq!(exits.exits.len(), EARLY_EXITS_MAX);
        assert_eq!(exits.take(Pid::from_raw(1000), now), None, "oldest dropped");
        assert!(exits.take(Pid::from_raw(1005), now).is_some());
    }

    #[test]
    fn retries_back_off_and_reset_once_imported() {
        let now = Instant::now();
        let mut retry = Retry::default();
        assert_eq!(retry.holding(now), None);
        assert_eq!(retry.failed(now), RETRY_FIRST);
        assert_eq!(retry.holding(now), Some(now + RETRY_FIRST));
        assert_eq!(retry.holding(now + RETRY_FIRST), None);
        assert_eq!(retry.failed(now), RETRY_FIRST * 2);
        for _ in 0..40 {
            retry.failed(now);
        }
        assert_eq!(retry.failed(now), RETRY_MAX);
        retry.succeeded();
        assert_eq!(retry.failed(now), RETRY_FIRST);
    }

    fn zygote(state: ZygoteState, started: Instant) -> Zygote {
        let (fd, _) = nix::unistd::pipe().unwrap();
        Zygote {
            // Never signalled: `reaped` is set below.
            pid: Pid::from_raw(i32::MAX),
            channel: fd,
            state,
            pending: Vec::new(),
            started,
            reaped: true,
            killed: false,
        }
    }

    #[test]
    fn an_import_past_timeout_or_a_spawn_not_reported_is_overdue() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(30);
        let mut z = zygote(ZygoteState::Importing, t0);
        assert_eq!(z.deadline(timeout), Some(t0 + timeout));
        assert_eq!(z.deadline(Duration::ZERO), None, "timeout = 0: no bound");
        assert_eq!(z.overdue(t0 + Duration::from_secs(29), timeout), None);
        let why = z.overdue(t0 + timeout, timeout).unwrap();
        assert!(
            why.contains("import took longer than timeout = 30s"),
            "{why}"
        );
        z.state = ZygoteState::Ready;
        assert_eq!(z.deadline(timeout), None, "ready, nothing asked");
        z.pending.push(Pending {
            number: 1,
            slot: 0,
            asked_at: t0 + Duration::from_secs(100),
        });
        let due = t0 + Duration::from_secs(100) + SPAWN_LIMIT;
        assert_eq!(z.deadline(timeout), Some(due));
        assert!(z
            .overdue(due, timeout)
            .unwrap()
            .contains("did not fork a worker"));
        z.killed = true;
        assert_eq!(z.deadline(timeout), None, "killed once");
    }

    #[test]
    fn the_parent_is_read_past_the_processes_own_name() {
        assert_eq!(
            parent_from_stat("42 (forkd: worker [3]) S 7 42 42 0"),
            Some(7)
        );
        assert_eq!(parent_from_stat("42 (a) b) 1 2) R 99 1"), Some(99));
        for bad in [
            "",
            "42 (x",
            "42 (x) S",
            "42 (x) S -",
            "42 (x) S 99999999999",
        ] {
            assert_eq!(parent_from_stat(bad), None, "{bad:?}");
        }
        let me = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert_eq!(parent_from_stat(&me), Some(nix::unistd::getppid().as_raw()));
    }
}
