//! What the master tells systemd (sd_notify), and when: readiness, reloads, stopping, the
//! hand-over of the main pid on a binary upgrade, a `STATUS=` line that follows the
//! worker set, and watchdog keep-alives. Without `NOTIFY_SOCKET` every call is a no-op.

use crate::systemd::{self, Notifier};
use std::time::{Duration, Instant};

/// A `STATUS=` line that only changed in its request count is resent at most this often.
const STATUS_REFRESH: Duration = Duration::from_secs(2);

pub struct SystemdLink {
    notifier: Option<Notifier>,
    /// False once `MAINPID=` named a new master: systemd no longer follows this one,
    /// so its own stop must not be reported as the service stopping.
    is_main: bool,
    watchdog: Option<Duration>,
    next_watchdog: Instant,
    status: String,
    status_counts: String,
    status_sent_at: Option<Instant>,
}

impl SystemdLink {
    /// Reads (and removes) `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    /// An unusable `NOTIFY_SOCKET` is logged and ignored, as sd_notify(3) would.
    pub fn from_env() -> SystemdLink {
        let notifier = Notifier::from_env().unwrap_or_else(|e| {
            tracing::warn!("{e}; not notifying systemd");
            None
        });
        let watchdog = systemd::take_watchdog().filter(|_| notifier.is_some());
        SystemdLink {
            notifier,
            is_main: true,
            watchdog,
            next_watchdog: Instant::now(),
            status: String::new(),
            status_counts: String::new(),
            status_sent_at: None,
        }
    }

    fn send(&self, message: &str) {
        if let Some(notifier) = &self.notifier {
            notifier.send(message);
        }
    }

    /// The service is up (start, end of a reload, or a new master after an upgrade).
    pub fn ready(&mut self, status: &str) {
        self.status = status.to_string();
        self.status_sent_at = Some(Instant::now());
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// A HUP reload starts.
    pub fn reloading(&mut self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading",
            systemd::monotonic_usec()
        ));
    }

    /// The master begins to stop. Silent when a new master has taken over.
    pub fn stopping(&self, status: &str) {
        if self.is_main {
            self.send(&format!("STOPPING=1\nSTATUS={status}"));
        }
    }

    /// A new master is ready: systemd must follow it before this one exits.
    pub fn hand_over(&mut self, new_master: i32) {
        self.send(&format!("MAINPID={new_master}"));
        self.is_main = false;
    }

    /// A successor went away and this master serves again (manual-upgrade rollback).
    pub fn take_back(&mut self, status: &str) {
        self.send(&format!("MAINPID={}", std::process::id()));
        self.is_main = true;
        self.ready(status);
    }

    /// Whether `STATUS=` goes anywhere (a notify socket, and we are the main pid): the
    /// status line need not be built otherwise.
    pub fn wants_status(&self) -> bool {
        self.notifier.is_some() && self.is_main
    }

    /// Updates `STATUS=`: at once when `counts` (the worker part) changed, otherwise
    /// (only the request count moved) at most every `STATUS_REFRESH`.
    pub fn status(&mut self, counts: &str, full: &str) {
        if !self.wants_status() || full == self.status {
            return;
        }
        let counts_changed = counts != self.status_counts;
        let stale = self
            .status_sent_at
            .map_or(true, |at| at.elapsed() >= STATUS_REFRESH);
        if counts_changed || stale {
            self.send(&format!("STATUS={full}"));
            self.status = full.to_string();
            self.status_counts = counts.to_string();
            self.status_sent_at = Some(Instant::now());
        }
    }

    /// Sends `WATCHDOG=1` when due; called on every pass of the supervisor loop, so the
    /// keep-alive stops exactly when the loop stops turning.
    pub fn keep_alive(&mut self) {
        let Some(interval) = self.watchdog else {
            return;
        };
        let now = Instant::now();
        if now >= self.next_watchdog {
            self.send("WATCHDOG=1");
            self.next_watchdog = now + interval / 2;
        }
    }

    /// When the loop must wake next for the watchdog.
    pub fn deadline(&self) -> Option<Instant> {
        self.watchdog.map(|_| self.next_watchdog)
    }

    /// What a new master started by USR2 needs to reach systemd: `NOTIFY_SOCKET` and
    /// `WATCHDOG_USEC` (without `WATCHDOG_PID`, which then means "the main process").
    pub fn environment_for_successor(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(notifier) = &self.notifier {
            env.push((
                systemd::NOTIFY_SOCKET_VAR.to_string(),
                notifier.address.clone(),
            ));
            if let Some(interval) = self.watchdog {
                env.push((
                    systemd::WATCHDOG_USEC_VAR.to_string(),
                    interval.as_micros().to_string(),
                ));
            }
        }
        env
    }
}
