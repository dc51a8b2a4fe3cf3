//! The pidfile: written at start (refusing to start if it names a live forkd master),
//! removed at exit only if it still names this process.
//!
//! The master is often root and the pidfile's directory may be writable by others, so
//! every operation goes through the directory's fd (see [`crate::dirfd`]): the file is
//! written to a fresh, randomly named temporary file (`O_EXCL|O_NOFOLLOW`, mode 0644
//! whatever the umask) renamed over the pidfile, and a pidfile is read only if it is a
//! regular file (a symlink or a FIFO there is an error naming it, and a FIFO never blocks
//! the master), at most [`MAX_PIDFILE_BYTES`] of it.

use crate::dirfd::Dir;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::Path;

/// A pid and a newline fit in far less; more is not a pidfile.
const MAX_PIDFILE_BYTES: u64 = 64;
/// A pidfile's mode: readable by everyone (`forkd -s` as another user, monitoring).
const PIDFILE_MODE: u32 = 0o644;

pub struct Pidfile {
    /// The directory it was written in, held for its removal at exit (a directory
    /// swapped since is not followed).
    dir: Dir,
    name: OsString,
}

/// Whether `pid` is a running forkd master (by its process title).
pub fn is_forkd_master(pid: i32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.starts_with(b"forkd: master"))
        .unwrap_or(false)
}

/// The text of the pidfile at `path` (`None` if there is none); an error if it is not
/// a regular file.
pub fn read(path: &Path) -> io::Result<Option<String>> {
    let (dir, name) = Dir::parent_of(path)?;
    read_at(&dir, &name)
}

fn read_at(dir: &Dir, name: &std::ffi::OsStr) -> io::Result<Option<String>> {
    Ok(dir
        .read_regular(name, MAX_PIDFILE_BYTES)?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

/// The pid a pidfile's text holds.
pub fn parse(text: &str) -> Option<i32> {
    text.trim().parse::<i32>().ok().filter(|pid| *pid > 0)
}

fn context(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("pidfile {}: {e}", path.display()))
}

/// `PIDFILE.oldbin`'s name, next to the pidfile.
fn oldbin_name(name: &std::ffi::OsStr) -> OsString {
    let mut oldbin = name.to_os_string();
    oldbin.push(".oldbin");
    oldbin
}

impl Pidfile {
    pub fn create(path: &Path) -> io::Result<Pidfile> {
        let (dir, name) = Dir::parent_of(path).map_err(|e| context(path, e))?;
        let existing = read_at(&dir, &name).map_err(|e| context(path, e))?;
        if let Some(pid) = existing.as_deref().and_then(parse) {
            if pid != std::process::id() as i32 && is_forkd_master(pid) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "pidfile {} names running forkd master {pid}",
                        path.display()
                    ),
                ));
            }
        }
        dir.write_atomically(
            &name,
            format!("{}\n", std::process::id()).as_bytes(),
            PIDFILE_MODE,
        )
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot write pidfile {}: {e}", path.display()),
            )
        })?;
        Ok(Pidfile { dir, name })
    }

    /// Removes the pidfile if it still names this process.
    pub fn remove(&self) {
        remove_if_ours(&self.dir, &self.name);
    }

    /// The held directory's fd (closed in workers, which have no use for it).
    pub fn dir_fd(&self) -> std::os::fd::RawFd {
        self.dir.raw_fd()
    }
}

/// Removes `name` from `dir` if it is a regular file naming this process.
fn remove_if_ours(dir: &Dir, name: &std::ffi::OsStr) {
    let ours = read_at(dir, name)
        .ok()
        .flatten()
        .and_then(|t| parse(&t))
        .is_some_and(|pid| pid == std::process::id() as i32);
    if ours {
        let _ = dir.unlink(name);
    }
}

/// USR2: the pidfile becomes `PIDFILE.oldbin` (a rename inside its directory).
pub fn rename_to_oldbin(path: &Path) -> io::Result<()> {
    let (dir, name) = Dir::parent_of(path)?;
    dir.rename(&name, &oldbin_name(&name))
}

/// The new master failed: `PIDFILE.oldbin` becomes the pidfile again, if it is still a
/// regular file naming this process.
pub fn restore_from_oldbin(path: &Path) -> io::Result<()> {
    let (dir, name) = Dir::parent_of(path)?;
    let oldbin = oldbin_name(&name);
    let pid = read_at(&dir, &oldbin)?.as_deref().and_then(parse);
    if pid != Some(std::process::id() as i32) {
        return Err(io::Error::other(format!(
            "{} does not name this master",
            dir.display(&oldbin)
        )));
    }
    dir.rename(&oldbin, &name)
}

/// The new master took over: `PIDFILE.oldbin` is removed if it still names this process.
pub fn remove_oldbin(path: &Path) {
    if let Ok((dir, name)) = Dir::parent_of(path) {
        remove_if_ours(&dir, &oldbin_name(&name));
    }
}
