//! What exec workers report, the master's side of `exec`: READY=1 and WATCHDOG=1 on
//! the notify socket, their output into the error log, and the readiness probe of a
//! worker that never says READY=1 (`impl Master`).

use super::exec::{is_serving, listener_inodes};
use super::workers::Phase;
use super::Master;
use crate::config::ReadyMode;
use crate::shared::scoreboard::WorkerState;

impl Master {
    /// Reads what exec workers reported: READY=1 and WATCHDOG=1 on the notify socket
    /// (counted only from the worker's own pid), and their output into the error log.
    pub(super) fn read_exec_reports(&mut self) {
        let messages = self
            .notify_intake
            .as_ref()
            .map(|intake| intake.receive())
            .unwrap_or_default();
        for (sender, text) in messages {
            let Some(w) = self.workers.iter_mut().find(|w| w.pid.as_raw() == sender) else {
                tracing::debug!(
                    sender,
                    "notify message from a process that is no worker: {text:?}"
                );
                continue;
            };
            let slot = self.scoreboard.slot(w.slot);
            for line in text.lines() {
                match line {
                    "READY=1" => slot.set_state(WorkerState::Ready),
                    "WATCHDOG=1" => {
                        slot.report_progress();
                        if let Some(exec) = &mut w.exec {
                            exec.watchdog_seen = true;
                        }
                    }
                    "STOPPING=1" => {}
                    other => {
                        if let Some(status) = other.strip_prefix("STATUS=") {
                            let status =
                                crate::shared::escape::escape_untrusted(status.as_bytes(), 1024);
                            tracing::debug!(pid = sender, "worker status: {status}");
                        }
                    }
                }
            }
        }
        for w in &mut self.workers {
            if let Some(exec) = &mut w.exec {
                if !exec.output.eof {
                    exec.output.drain(w.pid.as_raw(), false);
                }
            }
        }
    }

    /// Marks exec workers ready that are seen serving (`ready = "auto"`) or whose wait
    /// is over (`ready = DURATION`); `"notify"` waits for READY=1 only.
    pub(super) fn probe_exec_readiness(&mut self) {
        let mut inodes = None;
        for w in &self.workers {
            let Some(exec) = &w.exec else { continue };
            let slot = self.scoreboard.slot(w.slot);
            if w.ready() || slot.state() == WorkerState::Ready || !matches!(w.phase, Phase::Running)
            {
                continue;
            }
            let ready = match w.config.exec.ready {
                ReadyMode::Notify => false,
                ReadyMode::After(wait) => exec.spawned_at.elapsed() >= wait,
                ReadyMode::Auto => {
                    let inodes =
                        inodes.get_or_insert_with(|| listener_inodes(&self.current.listeners));
                    is_serving(w.pid.as_raw(), inodes)
                }
            };
            if ready {
                slot.report_progress();
                slot.set_state(WorkerState::Ready);
            }
        }
    }
}
