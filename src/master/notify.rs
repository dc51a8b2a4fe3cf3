//! What the master tells systemd (sd_notify), and when: readiness, reloads, stopping, the
//! hand-over of the main pid on a binary upgrade, a `STATUS=` line that follows the
//! worker set, and watchdog keep-alives. Without `NOTIFY_SOCKET` every call is a no-op.
//!
//! Only the service's main process speaks, so that the unit can say `NotifyAccess=main`
//! (systemd then refuses, and logs, any message from another pid): a new master started
//! by USR2 is silent until the old one has sent `MAINPID=` for it, and the old one is
//! silent from then on (no watchdog keep-alives or status while it drains).

use crate::shared::systemd::{self, Notifier};
use std::time::{Duration, Instant};

/// A `STATUS=` line that only changed in its request count is resent at most this often.
const STATUS_REFRESH: Duration = Duration::from_secs(2);

pub struct SystemdLink {
    notifier: Option<Notifier>,
    /// Whether systemd follows this process: false in a new master until the old one
    /// has moved `MAINPID=` here, and in the old one once it has. Only the main process
    /// notifies.
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
    /// `successor`: this master was started by a USR2 upgrade and is not the main
    /// process yet (see [`SystemdLink::took_over`]).
    pub fn from_env(successor: bool) -> SystemdLink {
        let notifier = Notifier::from_env().unwrap_or_else(|e| {
            tracing::warn!("{e}; not notifying systemd");
            None
        });
        let watchdog = systemd::take_watchdog().filter(|_| notifier.is_some());
        SystemdLink {
            notifier,
            is_main: !successor,
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

    /// The service is up (start, end of a reload).
    pub fn ready(&mut self, status: &str) {
        if !self.is_main {
            return;
        }
        self.status = status.to_string();
        self.status_sent_at = Some(Instant::now());
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// A new master after an upgrade: the old one has made this process the main one.
    pub fn took_over(&mut self, status: &str) {
        self.is_main = true;
        self.ready(status);
    }

    /// A HUP reload starts.
    pub fn reloading(&mut self) {
        if !self.is_main {
            return;
        }
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
    /// With `NotifyAccess=main` systemd refuses this (the main pid is the successor's),
    /// as it would any other message from this process.
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
            .is_none_or(|at| at.elapsed() >= STATUS_REFRESH);
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
        if !self.is_main {
            return;
        }
        let now = Instant::now();
        if now >= self.next_watchdog {
            self.send("WATCHDOG=1");
            self.next_watchdog = now + interval / 2;
        }
    }

    /// When the loop must wake next for the watchdog.
    pub fn deadline(&self) -> Option<Instant> {
        self.watchdog
            .filter(|_| self.is_main)
            .map(|_| self.next_watchdog)
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
