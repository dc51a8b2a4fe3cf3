//! The old master's side of the USR2 upgrade handshake (`impl Master`): starting the new
//! master, its ready signal, the handoff, and a failed or exited successor. The
//! process work itself (`Upgrade`, `Relaunch`) is `upgrade`'s.

use super::state::{RunState, Stop};
use super::upgrade::Upgrade;
use super::{signals, Master, UpgradeState};
use nix::unistd::Pid;
use std::os::fd::AsRawFd;

impl Master {
    /// USR2: start a new master from the binary on disk, handing it the listeners.
    pub(super) fn handle_usr2(&mut self) {
        if self.state != RunState::Serving || self.upgrade_under_way() {
            return;
        }
        let generation = &self.current;
        match Upgrade::start(
            &self.relaunch,
            &generation.listeners,
            generation.metrics.as_ref(),
            generation.config.pidfile.as_deref(),
            self.signals.fd().as_raw_fd(),
            &self.systemd.environment_for_successor(),
        ) {
            Ok(upgrade) => {
                self.scoreboard.header().count_upgrade();
                tracing::info!(
                    new_master = upgrade.child.as_raw(),
                    binary = %self.relaunch.exe.display(),
                    "USR2: binary upgrade started; serving until the new master is ready"
                );
                self.upgrade = UpgradeState::Starting {
                    new: upgrade,
                    manual: false,
                };
            }
            Err(e) => tracing::error!("USR2: binary upgrade failed, keeping this master: {e}"),
        }
    }

    /// Whether an upgrade is under way (then USR2 is ignored, and says why).
    fn upgrade_under_way(&self) -> bool {
        match &self.upgrade {
            UpgradeState::None => false,
            UpgradeState::Starting { new, .. } | UpgradeState::Superseded { successor: new } => {
                tracing::warn!(
                    new_master = new.child.as_raw(),
                    "USR2: an upgrade is already in progress; ignoring"
                );
                true
            }
            UpgradeState::StartedBy { old, .. } | UpgradeState::HandingOff { old, .. } => {
                tracing::warn!(
                    old_master = old,
                    "USR2: this master's own upgrade is not finished; ignoring"
                );
                true
            }
            UpgradeState::HandedOver => true,
        }
    }

    /// The upgrade handshake's signal: the new master is ready (to the old master), or
    /// the old one handed over (to the new master). Believed only with the token.
    pub(super) fn handle_upgrade_signal(&mut self, received: &signals::Received) {
        match &self.upgrade {
            &UpgradeState::HandingOff { old, token } => {
                // An old master from before tokens answers with a plain signal.
                let authentic = token.map_or(received.sender == old, |t| received.is_from(old, t));
                if authentic {
                    return self.handoff_acknowledged();
                }
            }
            UpgradeState::Starting { new, .. } => {
                if received.is_from(new.child.as_raw(), new.token) {
                    return self.upgrade_ready();
                }
            }
            UpgradeState::None
            | UpgradeState::StartedBy { .. }
            | UpgradeState::Superseded { .. }
            | UpgradeState::HandedOver => {}
        }
        tracing::warn!(
            claimed_sender = received.sender,
            "ignoring an upgrade signal that does not carry the upgrade's token"
        );
    }

    /// The new master says its workers are ready: hand over and stop gracefully.
    fn upgrade_ready(&mut self) {
        let Some((upgrade, manual)) = self.take_starting_upgrade() else {
            return;
        };
        let sender = upgrade.child.as_raw();
        // systemd follows the new master before this one may leave; then the new one
        // hears back and sends READY=1 as the main process.
        self.systemd.hand_over(sender);
        let _ = crate::shared::protocol::queue(
            sender,
            crate::shared::protocol::upgrade_ready_signal(),
            upgrade.token,
        );
        if manual {
            tracing::info!(
                new_master = sender,
                "upgrade: the new master is ready; staying for the operator (manual upgrade)"
            );
            self.upgrade = UpgradeState::Superseded { successor: upgrade };
            return;
        }
        tracing::info!(
            new_master = sender,
            "upgrade: the new master is ready; this master stops gracefully"
        );
        upgrade.remove_oldbin();
        // The pidfile and the socket files now belong to the new master: leave them
        // alone on exit.
        self.pidfile = None;
        self.control = None;
        self.upgrade = UpgradeState::HandedOver;
        self.begin_stop(Stop::Graceful, "upgrade");
    }

    /// Ends the `Starting` phase (to `None`): the new master and whether the upgrade is
    /// manual. Any other phase stays as it is.
    fn take_starting_upgrade(&mut self) -> Option<(Upgrade, bool)> {
        if !matches!(self.upgrade, UpgradeState::Starting { .. }) {
            return None;
        }
        match std::mem::replace(&mut self.upgrade, UpgradeState::None) {
            UpgradeState::Starting { new, manual } => Some((new, manual)),
            other => {
                self.upgrade = other;
                None
            }
        }
    }

    /// The new master's side: the old master has moved MAINPID here.
    fn handoff_acknowledged(&mut self) {
        self.upgrade = UpgradeState::None;
        tracing::info!("upgrade: the old master handed over; this master is the main one now");
        let status = self.status_line().1;
        self.systemd.took_over(&status);
    }

    /// The new master exited or was not ready in time: this master keeps serving.
    pub(super) fn upgrade_failed(&mut self, why: &str) {
        if let Some((upgrade, _)) = self.take_starting_upgrade() {
            tracing::error!(
                "upgrade failed: {why}; this master keeps serving and the pidfile is restored"
            );
            upgrade.restore_pidfile();
            self.rebind_control();
        }
    }

    /// A manual upgrade's new master exited: this master is the master again.
    pub(super) fn successor_exited(&mut self, pid: Pid) {
        let UpgradeState::Superseded { successor } =
            std::mem::replace(&mut self.upgrade, UpgradeState::None)
        else {
            return;
        };
        tracing::info!(
            new_master = pid.as_raw(),
            "the new master exited; this master is the master again"
        );
        successor.restore_pidfile();
        self.rebind_control();
        let status = self.status_line().1;
        self.systemd.take_back(&status);
    }
}
