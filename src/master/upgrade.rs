//! USR2 binary upgrade, the old master's side: rename the pidfile to `PIDFILE.oldbin`,
//! fork and exec the binary now on disk (the path resolved at start, not
//! /proc/self/exe) with the listeners passed by the systemd protocol, and wait for the
//! new master to say it is ready (`protocol::upgrade_ready_signal`). If it exits or misses the
//! deadline, the pidfile is restored and this master keeps serving.
//!
//! The handshake is authenticated by a random token, not by sender pids (which any
//! process allowed to signal a master can forge): the old master gives it to the new one
//! in `_FORKD_UPGRADE_TOKEN`; the new master's "ready" signal and the old master's
//! answer ("systemd follows you now") both carry it as their sigqueue value.

use crate::shared::listeners::Listener;
use crate::shared::protocol::{UPGRADE_FROM_VAR, UPGRADE_READY_DEADLINE, UPGRADE_TOKEN_VAR};
use crate::shared::single_threaded::fork;
use nix::unistd::{ForkResult, Pid};
use std::ffi::{CString, OsString};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// In a master started by USR2: the old master's pid and the handshake token, taken
/// out of the environment (so that no worker inherits them). The token is `None` when
/// the old master is a forkd from before tokens: the handshake then falls back to plain
/// signals, so that upgrading from such a version still works.
pub fn take_upgrade_from() -> Option<(i32, Option<u64>)> {
    let from = std::env::var(UPGRADE_FROM_VAR).ok();
    let token = std::env::var(UPGRADE_TOKEN_VAR).ok();
    crate::shared::single_threaded::set_env(UPGRADE_FROM_VAR, None);
    crate::shared::single_threaded::set_env(UPGRADE_TOKEN_VAR, None);
    let pid = from?.parse::<i32>().ok()?;
    let token = token.and_then(|t| u64::from_str_radix(&t, 16).ok().filter(|t| *t != 0));
    Some((pid, token))
}

/// How to start this program again: resolved once at start.
#[derive(Debug, Clone)]
pub struct Relaunch {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
    /// The directory forkd was started in: relative paths in `args` are relative to it,
    /// not to `chdir`.
    pub cwd: Option<PathBuf>,
}

/// An upgrade in progress.
pub struct Upgrade {
    pub child: Pid,
    /// The secret the new master's signals must carry.
    pub token: u64,
    pub deadline: Instant,
    pidfile: Option<PathBuf>,
}

impl Upgrade {
    /// Starts the new master. `signal_fd` is closed in the child.
    #[allow(unsafe_code)] // fork and exec of the new master
    pub fn start(
        relaunch: &Relaunch,
        listeners: &[Listener],
        metrics: Option<&Listener>,
        pidfile: Option<&Path>,
        signal_fd: i32,
        extra_env: &[(String, String)],
    ) -> Result<Upgrade, String> {
        if !relaunch.exe.exists() {
            return Err(format!("binary {} does not exist", relaunch.exe.display()));
        }
        if let Some(path) = pidfile {
            crate::shared::pidfile::rename_to_oldbin(path)
                .map_err(|e| format!("cannot rename pidfile {} to .oldbin: {e}", path.display()))?;
        }
        let exe = CString::new(relaunch.exe.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        let cwd = relaunch
            .cwd
            .as_ref()
            .and_then(|d| CString::new(d.as_os_str().as_bytes()).ok());
        let args: Vec<CString> = relaunch
            .args
            .iter()
            .filter_map(|a| CString::new(a.as_bytes()).ok())
            .collect();
        let mut names: Vec<String> = listeners
            .iter()
            .map(|l| crate::shared::systemd::encode_name(&l.spec.to_string()))
            .collect();
        let mut fds: Vec<i32> = listeners.iter().map(|l| l.fd.as_raw_fd()).collect();
        if let Some(metrics) = metrics {
            names.push(crate::shared::systemd::encode_name(
                &crate::metrics::handover_name(metrics),
            ));
            fds.push(metrics.fd.as_raw_fd());
        }
        let old_pid = std::process::id();
        // Build the environment before forking; the child only adds its own `LISTEN_PID`.
        let mut env: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| {
                !matches!(
                    k.to_str(),
                    Some(
                        "LISTEN_FDS"
                            | "LISTEN_PID"
                            | "LISTEN_FDNAMES"
                            | UPGRADE_FROM_VAR
                            | UPGRADE_TOKEN_VAR
                    )
                )
            })
            .filter_map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).ok()
            })
            .collect();
        env.push(CString::new(format!("LISTEN_FDS={}", fds.len())).map_err(|e| e.to_string())?);
        env.push(
            CString::new(format!("LISTEN_FDNAMES={}", names.join(":")))
                .map_err(|e| e.to_string())?,
        );
        env.push(CString::new(format!("{UPGRADE_FROM_VAR}={old_pid}")).map_err(|e| e.to_string())?);
        let token = crate::shared::protocol::random_token();
        env.push(
            CString::new(format!("{UPGRADE_TOKEN_VAR}={token:x}")).map_err(|e| e.to_string())?,
        );
        // None of these is in our environment any more: the master took the systemd
        // variables out of it at start (`Master::new`).
        for (key, value) in extra_env {
            env.push(CString::new(format!("{key}={value}")).map_err(|e| e.to_string())?);
        }
        let pid_slot = env.len();
        env.push(CString::new("LISTEN_PID=0").map_err(|e| e.to_string())?);
        // SAFETY: the master is single-threaded (checked by `fork` in debug builds), so
        // the child's copy of memory holds no lock another thread owned, and it may
        // allocate (`LISTEN_PID`'s value, the fd list, nix's execve arrays) before it
        // execs or `_exit`s. (It is not limited to async-signal-safe calls.)
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                super::signals::restore_in_child();
                let _ = nix::unistd::close(signal_fd);
                let mut env = env;
                if let Ok(pid_var) = CString::new(format!("LISTEN_PID={}", std::process::id())) {
                    env[pid_slot] = pid_var;
                }
                // LISTEN_FDS counts every fd: a child that cannot pass one of them does
                // not exec (the old master sees the new one exit and keeps serving).
                if let Err(e) = super::child::pass_listen_fds(&fds, &names) {
                    // Straight to stderr: the logger's queue would die with this child.
                    let line = format!("forkd: upgrade: {e}\n");
                    let _ = nix::unistd::write(std::io::stderr(), line.as_bytes());
                } else {
                    if let Some(dir) = &cwd {
                        let _ = nix::unistd::chdir(dir.as_c_str());
                    }
                    let _ = nix::unistd::execve(&exe, &args, &env);
                }
                // SAFETY: exec failed; leave without running the parent's destructors.
                unsafe { libc::_exit(crate::shared::protocol::EXIT_EXEC_FAILED) }
            }
            Ok(ForkResult::Parent { child }) => Ok(Upgrade {
                child,
                token,
                deadline: Instant::now() + UPGRADE_READY_DEADLINE,
                pidfile: pidfile.map(Path::to_path_buf),
            }),
            Err(e) => {
                if let Some(path) = pidfile {
                    let _ = crate::shared::pidfile::restore_from_oldbin(path);
                }
                Err(format!("fork failed: {e}"))
            }
        }
    }

    /// The new master failed: give the pidfile back to this master.
    pub fn restore_pidfile(&self) {
        if let Some(path) = &self.pidfile {
            match crate::shared::pidfile::restore_from_oldbin(path) {
                Ok(()) => {}
                Err(e) => tracing::error!("cannot restore pidfile {}: {e}", path.display()),
            }
        }
    }

    /// The new master took over: the `.oldbin` file is ours to remove.
    pub fn remove_oldbin(&self) {
        if let Some(path) = &self.pidfile {
            crate::shared::pidfile::remove_oldbin(path);
        }
    }
}
