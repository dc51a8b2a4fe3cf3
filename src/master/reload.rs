//! HUP: a rolling reload to a new [`Generation`]. The next generation is built whole
//! first (config read, app resolved, TLS files loaded, sockets bound): any failure
//! leaves everything as it was. Then it becomes current and reconciling replaces the
//! old workers one by one as new ones are ready. The previous generation is held,
//! listeners and all, until the new one is committed (its first worker is ready); if
//! its workers cannot boot before that, the previous one is put back whole.

use super::generation::{Generation, ReloadError};
use super::plan::ExitReason;
use super::state::RunState;
use super::{Master, ReloadState};
use crate::config::Config;
use crate::control;

impl Master {
    /// HUP: re-read the config; on success roll the workers over to a new generation.
    /// `waiter`: a `forkd -s reload` to answer when it is over.
    pub(super) fn handle_hup(&mut self, waiter: Option<(i32, u64)>) {
        if self.state != RunState::Serving {
            self.finish_reload(false);
            if let Some((pid, token)) = waiter {
                control::answer_reload(pid, token, false);
            }
            return;
        }
        self.systemd.reloading();
        match &mut self.reload {
            ReloadState::InProgress { waiters } => waiters.extend(waiter),
            ReloadState::Idle => {
                self.reload = ReloadState::InProgress {
                    waiters: waiter.into_iter().collect(),
                }
            }
        }
        let next = match self.prepare_generation() {
            Ok(next) => next,
            Err(e) => {
                tracing::error!("HUP: reload failed, keeping the current workers and config: {e}");
                self.finish_reload(false);
                return;
            }
        };
        self.scoreboard.header().count_reload();
        self.hooks.reload(&next.config);
        if let Err(e) = crate::shared::logging::reconfigure(&next.config.log) {
            tracing::error!("HUP: {e}; keeping the previous error log");
        }
        let replaced = std::mem::replace(&mut self.current, next);
        match &self.previous {
            // A reload still under way: the generation it started is dropped, the one
            // before it is still the one to roll back to.
            Some(_) => {
                let mut replaced = replaced;
                self.let_zygote_go(&mut replaced);
                replaced.retire(&mut self.current)
            }
            None => self.previous = Some(replaced),
        }
        self.backoff.new_generation();
        tracing::info!(
            generation = self.current.number,
            workers = self.current.target,
            "HUP: reloading, starting new workers"
        );
    }

    /// HUP's fallible part: reads the config, resolves the app, loads the TLS files
    /// (a file that is missing, unparsable or does not match fails the reload, before
    /// any new worker) and binds the listeners the new config names.
    fn prepare_generation(&self) -> Result<Generation, ReloadError> {
        let config: Config = (self.reload_config)().map_err(ReloadError::Config)?;
        let program = (self.resolve_app)(&config).map_err(ReloadError::App)?;
        // Anew at every HUP: a release symlink switched since is followed now.
        let workdir = super::workdir::resolve(&config).map_err(ReloadError::Chdir)?;
        let tls = crate::tls::load(&config)
            .map_err(ReloadError::Tls)?
            .map(|loaded| {
                for warning in &loaded.warnings {
                    tracing::warn!("HUP: {warning}");
                }
                loaded.server
            });
        let mut next = self
            .current
            .next(config, program, tls, self.serving_passed_sockets)?;
        if next.workdir != workdir {
            if let Some(dir) = &workdir {
                tracing::info!(
                    "HUP: the workers of the new generation run in {}",
                    dir.display()
                );
            }
        }
        next.workdir = workdir;
        Ok(next)
    }

    /// The current generation's first worker is ready: the previous generation is let
    /// go (the sockets only it had are closed; its workers keep their own copies until
    /// they exit).
    pub(super) fn commit_generation(&mut self) {
        if let Some(mut previous) = self.previous.take() {
            self.let_zygote_go(&mut previous);
            previous.retire(&mut self.current);
        }
    }

    /// The new generation's workers cannot boot: the previous generation is current
    /// again, whole (config, app, TLS, listeners, metrics listener, target, log
    /// config), and the new workers not ready yet are stopped.
    pub(super) fn roll_back(&mut self) {
        let Some(previous) = self.previous.take() else {
            return;
        };
        tracing::error!("reload failed: new workers cannot boot; keeping the workers of the previous configuration");
        let failed = std::mem::replace(&mut self.current, previous);
        if failed.config.log != self.current.config.log {
            if let Err(e) = crate::shared::logging::reconfigure(&self.current.config.log) {
                tracing::error!("cannot restore the previous error log: {e}");
            }
        }
        let mut failed = failed;
        self.let_zygote_go(&mut failed);
        failed.retire(&mut self.current);
        let generation = self.current.number;
        for index in 0..self.workers.len() {
            let w = &self.workers[index];
            if w.generation > generation && !w.ready() {
                self.stop_worker(index, ExitReason::ReloadFailed);
            }
        }
        self.finish_reload(false);
    }

    /// Ends a HUP reload: READY=1 to systemd, and the answer to `forkd -s reload`.
    pub(super) fn finish_reload(&mut self, ok: bool) {
        let ReloadState::InProgress { waiters } =
            std::mem::replace(&mut self.reload, ReloadState::Idle)
        else {
            return;
        };
        if ok {
            tracing::info!(generation = self.current.number, "HUP: reload finished");
        }
        let status = self.status_line().1;
        self.systemd.ready(&status);
        for (waiter, token) in waiters {
            control::answer_reload(waiter, token, ok);
        }
    }
}
