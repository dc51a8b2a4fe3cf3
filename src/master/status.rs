//! What the master learns from the scoreboard and tells others: workers seen ready
//! (which commits a new generation and may complete start-up), "all workers ready" to
//! systemd or to the old master of an upgrade, a reload that is over, `STATUS=` and the
//! watchdog keep-alive; and what `forkd -s status` is answered over the control socket.

use super::ctl::{self, MasterRow, Request, WorkerRow};
use super::state::{Boot, RunState};
use super::workers::Phase;
use super::{Master, Program, ReloadState, UpgradeState};
use crate::shared::protocol;
use crate::shared::scoreboard::WorkerState;
use std::time::Instant;

impl Master {
    /// Notes the workers that became ready since the last look, and says "all workers
    /// ready" once start-up is complete.
    pub(super) fn observe_scoreboard(&mut self) {
        self.probe_exec_readiness();
        let mut current_ready = false;
        for w in &mut self.workers {
            if !w.ready() && self.scoreboard.slot(w.slot).state() == WorkerState::Ready {
                w.ready_at = Some(Instant::now());
                self.boot = self.boot.worker_ready();
                self.backoff.worker_ready();
                current_ready |= w.generation == self.current.number;
                tracing::info!(pid = w.pid.as_raw(), worker = w.number, "worker ready");
            }
        }
        if current_ready {
            self.commit_generation();
        }
        let ready = self.workers.iter().filter(|w| w.ready()).count();
        if self
            .boot
            .announce_now(self.state.supervising(), ready, self.current.target)
        {
            self.boot = Boot::Announced;
            tracing::info!(workers = ready, "all workers ready");
            self.hooks.call(super::hooks::HookCall::WhenReady);
            self.announce_ready();
        }
    }

    /// Start-up is complete: READY=1, or, in a master started by USR2, the old master is
    /// told first (READY=1 waits for its answer: systemd must first hear from it that
    /// this process is the main one).
    fn announce_ready(&mut self) {
        if let UpgradeState::StartedBy { old, token } = self.upgrade {
            tracing::info!(
                old_master = old,
                "upgrade: telling the old master that this one is ready"
            );
            self.upgrade = UpgradeState::HandingOff { old, token };
            let _ = match token {
                Some(token) => protocol::queue(old, protocol::upgrade_ready_signal(), token),
                None => protocol::kill(old, protocol::upgrade_ready_signal()),
            };
        } else {
            let status = self.status_line().1;
            self.systemd.ready(&status);
        }
    }

    /// Once per loop: finish a reload whose new workers all serve, refresh STATUS=, and
    /// send the watchdog keep-alive.
    pub(super) fn report_to_systemd(&mut self) {
        let reloading = matches!(self.reload, ReloadState::InProgress { .. });
        if reloading && self.state.supervising() {
            let old_running = self
                .workers
                .iter()
                .any(|w| matches!(w.phase, Phase::Running) && w.generation < self.current.number);
            if !old_running && self.ready_active() >= self.current.target {
                self.finish_reload(true);
            }
        }
        if self.state.supervising()
            && !matches!(self.reload, ReloadState::InProgress { .. })
            && !matches!(self.upgrade, UpgradeState::HandingOff { .. })
            && self.systemd.wants_status()
        {
            let (counts, full) = self.status_line();
            self.systemd.status(&counts, &full);
        }
        self.systemd.keep_alive();
    }

    /// The `STATUS=` text: the worker part, and the whole line with requests served.
    pub(super) fn status_line(&self) -> (String, String) {
        let running = self
            .workers
            .iter()
            .filter(|w| matches!(w.phase, Phase::Running))
            .count();
        let ready = self.ready_active();
        // Exited workers' requests were folded into the scoreboard's totals.
        let served = self.scoreboard.totals().requests;
        let counts = format!(
            "{ready} of {} workers ready ({running} running, generation {})",
            self.current.target, self.current.number
        );
        let full = match self.current.program {
            Program::Native(_) | Program::Hosted(_) => {
                format!("{counts}, {served} requests served")
            }
            Program::Exec(_) => counts.clone(),
        };
        (counts, full)
    }

    /// Serves the control socket's clients (never blocks).
    pub(super) fn serve_control(&mut self) {
        let Some(mut control) = self.control.take() else {
            return;
        };
        control.serve(|request| match request {
            Request::Status => self.status_answer(),
        });
        self.control = Some(control);
    }

    /// The answer to `status`: the master's state, then one line per worker.
    pub(super) fn status_answer(&self) -> String {
        let state = match (&self.state, &self.reload, &self.upgrade) {
            (RunState::Stopping(_) | RunState::StopDelayed { .. }, _, _) => "stopping",
            (_, ReloadState::InProgress { .. }, _) => "reloading",
            (_, _, UpgradeState::None) => "serving",
            (_, _, UpgradeState::Superseded { .. }) => "superseded",
            _ => "upgrading",
        };
        let master = MasterRow {
            pid: self.pid,
            state,
            generation: self.current.number,
            target: self.current.target,
            uptime: self.started.elapsed(),
        };
        let mut rows: Vec<WorkerRow> = self
            .workers
            .iter()
            .map(|w| {
                let slot = self.scoreboard.slot(w.slot);
                let state = match w.phase {
                    Phase::Running if !w.ready() => "booting",
                    Phase::Running if w.retiring(&self.scoreboard).is_some() => "retiring",
                    Phase::Running if slot.state() == WorkerState::Draining => "draining",
                    Phase::Running => "ready",
                    Phase::Stopping { .. } => "stopping",
                    Phase::Aborting { .. } => "aborting",
                    Phase::Killed { .. } => "killed",
                };
                WorkerRow {
                    pid: w.pid.as_raw(),
                    generation: w.generation,
                    state,
                    age: w.recycle.started().elapsed(),
                    requests: slot.requests(),
                    rss: super::recycle::read_rss(w.pid.as_raw()),
                    pss: crate::shared::memory::read_pss(w.pid.as_raw()),
                }
            })
            .collect();
        // `preload_app`: each generation's zygote, whose pages its workers share.
        let generations = std::iter::once(&self.current).chain(self.previous.as_ref());
        for generation in generations {
            if let Some(zygote) = &generation.zygote {
                rows.push(WorkerRow {
                    pid: zygote.pid.as_raw(),
                    generation: generation.number,
                    state: "zygote",
                    age: zygote.started.elapsed(),
                    requests: 0,
                    rss: super::recycle::read_rss(zygote.pid.as_raw()),
                    pss: crate::shared::memory::read_pss(zygote.pid.as_raw()),
                });
            }
        }
        rows.sort_by_key(|r| (r.generation, r.pid));
        ctl::render(&master, &rows)
    }

    /// The pidfile is this master's again (an upgrade failed, or a manual upgrade's new
    /// master exited): so is the control socket, made anew (the new master's replaced
    /// this one's file).
    pub(super) fn rebind_control(&mut self) {
        let Some(path) = self.current.config.pidfile.clone() else {
            return;
        };
        match ctl::ControlSocket::bind(&path) {
            Ok(control) => self.control = Some(control),
            Err(e) => tracing::error!("cannot make the control socket again: {e}"),
        }
    }
}
