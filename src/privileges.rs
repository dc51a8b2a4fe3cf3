//! Process setup that follows the config: `umask` and `chdir` (master, at start) and
//! the switch to `user`/`group` (each worker, after the fork and before serving).

use crate::config::Config;
use nix::unistd::{Gid, Group, Uid, User};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The directory forkd was started in, taken before the master applies `chdir`.
static START_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Remembers the start directory; the master calls it before its own `chdir`.
fn start_dir() -> &'static Path {
    START_DIR.get_or_init(|| std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")))
}

/// The config's `chdir` as an absolute path: a relative one is taken from the
/// directory forkd was started in, once, whatever the current directory is by now
/// (the master has changed to it already, and a HUP re-reads it).
pub fn chdir_path(config: &Config) -> Option<PathBuf> {
    config.chdir.as_ref().map(|dir| start_dir().join(dir))
}

/// Applies `umask` and `chdir` to the current process.
pub fn apply_umask_and_chdir(config: &Config) -> Result<(), String> {
    if let Some(mask) = config.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
            mask as libc::mode_t,
        ));
    }
    if let Some(dir) = chdir_path(config) {
        std::env::set_current_dir(&dir).map_err(|e| format!("chdir to {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Switches a worker to the configured `group` and `user` (group first, while still root).
pub fn drop_for_worker(config: &Config) -> Result<(), String> {
    let group = match &config.group {
        Some(name) => Some(lookup_group(name)?),
        None => None,
    };
    let user = match &config.user {
        Some(name) => Some(lookup_user(name)?),
        None => None,
    };
    let gid = group.or(user.as_ref().map(|u| u.gid));
    if let Some(gid) = gid {
        if nix::unistd::getegid() != gid {
            nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups({gid}): {e}"))?;
            nix::unistd::setgid(gid).map_err(|e| format!("setgid({gid}): {e}"))?;
        }
    }
    if let Some(user) = user {
        if nix::unistd::geteuid() != user.uid {
            nix::unistd::setuid(user.uid)
                .map_err(|e| format!("setuid to user {} ({}): {e}", user.name, user.uid))?;
        }
    }
    Ok(())
}

fn lookup_user(name: &str) -> Result<User, String> {
    let found = match name.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(name),
    };
    found
        .map_err(|e| format!("user {name}: {e}"))?
        .ok_or_else(|| format!("user {name} does not exist"))
}

fn lookup_group(name: &str) -> Result<Gid, String> {
    let found = match name.parse::<u32>() {
        Ok(gid) => return Ok(Gid::from_raw(gid)),
        Err(_) => Group::from_name(name),
    };
    found
        .map_err(|e| format!("group {name}: {e}"))?
        .map(|g| g.gid)
        .ok_or_else(|| format!("group {name} does not exist"))
}
