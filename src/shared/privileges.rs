//! Process setup that follows the config: `umask` and `chdir` (master, at start) and
//! the switch to `user`/`group` (each worker, after the fork and before serving).

use crate::config::Config;
use nix::unistd::{Gid, Group, Uid, User};
use std::ffi::CString;
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

/// In a new worker, right after the fork: a session of its own and stdin from
/// /dev/null. A worker left in the master's session with fd 0 on its terminal could push
/// input into that (root) terminal with `TIOCSTI`; in its own session it has no
/// controlling terminal. Terminal signals (Ctrl-C to the foreground process group) then
/// reach the master only, which stops its workers itself.
pub fn detach_from_terminal() -> Result<(), String> {
    nix::unistd::setsid().map_err(|e| format!("cannot start a new session (setsid): {e}"))?;
    let null = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("cannot open /dev/null for stdin: {e}"))?;
    let moved = nix::unistd::dup2(null, 0);
    if null != 0 {
        let _ = nix::unistd::close(null);
    }
    moved.map_err(|e| format!("cannot make /dev/null stdin: {e}"))?;
    Ok(())
}

/// Switches a worker to the configured `group` and `user`. As root: the supplementary
/// groups first, always (the user's groups, as `initgroups(3)` and Gunicorn do, or just
/// `group` without a `user`), so that none of the master's own groups stays with the
/// worker, then the gid, then the uid; and then a check that it all took and that root
/// cannot be regained. Not root: only what the process already is can be asked for.
pub fn drop_for_worker(config: &Config) -> Result<(), String> {
    let group = match &config.group {
        Some(name) => Some(lookup_group(name)?),
        None => None,
    };
    let user = match &config.user {
        Some(name) => Some(lookup_user(name)?),
        None => None,
    };
    let Some(gid) = group.or(user.as_ref().map(|u| u.gid)) else {
        return Ok(());
    };
    if !nix::unistd::geteuid().is_root() {
        return become_unprivileged(gid, user.as_ref());
    }
    let groups = match &user {
        Some(user) => {
            let name = CString::new(user.name.as_bytes())
                .map_err(|_| format!("user {}: the name contains a NUL byte", user.name))?;
            nix::unistd::getgrouplist(&name, gid)
                .map_err(|e| format!("groups of user {}: {e}", user.name))?
        }
        None => vec![gid],
    };
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups({groups:?}): {e}"))?;
    nix::unistd::setgid(gid).map_err(|e| format!("setgid({gid}): {e}"))?;
    if let Some(user) = &user {
        nix::unistd::setuid(user.uid)
            .map_err(|e| format!("setuid to user {} ({}): {e}", user.name, user.uid))?;
    }
    verify_dropped(gid, &groups, user.as_ref())
}

/// Not root: `setgid`/`setuid` to anything else fail, with a clear error.
fn become_unprivileged(gid: Gid, user: Option<&User>) -> Result<(), String> {
    if nix::unistd::getegid() != gid {
        nix::unistd::setgid(gid).map_err(|e| format!("setgid({gid}): {e}"))?;
    }
    if let Some(user) = user {
        if nix::unistd::geteuid() != user.uid {
            nix::unistd::setuid(user.uid)
                .map_err(|e| format!("setuid to user {} ({}): {e}", user.name, user.uid))?;
        }
    }
    Ok(())
}

/// After the switch as root: real, effective and saved ids and the group list are the
/// wanted ones, and (for a user other than root) root cannot be had back.
fn verify_dropped(gid: Gid, groups: &[Gid], user: Option<&User>) -> Result<(), String> {
    let ids = nix::unistd::getresgid().map_err(|e| format!("getresgid: {e}"))?;
    if [ids.real, ids.effective, ids.saved] != [gid; 3] {
        return Err(format!("the group is not {gid} after setgid"));
    }
    let mut have = nix::unistd::getgroups().map_err(|e| format!("getgroups: {e}"))?;
    let mut want = groups.to_vec();
    have.sort_unstable_by_key(|g| g.as_raw());
    have.dedup();
    want.sort_unstable_by_key(|g| g.as_raw());
    want.dedup();
    if have != want {
        return Err(format!(
            "the supplementary groups are {have:?} after setgroups({want:?})"
        ));
    }
    let Some(user) = user else { return Ok(()) };
    let ids = nix::unistd::getresuid().map_err(|e| format!("getresuid: {e}"))?;
    if [ids.real, ids.effective, ids.saved] != [user.uid; 3] {
        return Err(format!("the user is not {} after setuid", user.name));
    }
    if !user.uid.is_root() && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(format!(
            "running as user {}, setuid(0) still succeeds",
            user.name
        ));
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
