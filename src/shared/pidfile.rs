//! The pidfile: written at start (refusing to start if another master holds it), locked
//! with `flock(LOCK_EX)` for the master's whole life, removed at exit only if it still
//! names this process.
//!
//! The master is often root and the pidfile's directory may be writable by others, so
//! every operation goes through the directory's fd (see [`crate::shared::dirfd`]): the file is
//! written (and locked) as a fresh, randomly named temporary file (`O_EXCL|O_NOFOLLOW`,
//! mode 0644 whatever the umask) renamed over the pidfile, and a pidfile is read only if
//! it is a regular file (a symlink or a FIFO there is an error naming it, and a FIFO
//! never blocks the master), at most [`MAX_PIDFILE_BYTES`] of it.
//!
//! The lock is what `forkd -s` trusts ([`check_master`]): a pidfile is only believed
//! when it is a regular file, some process holds its lock, the lock holder is the pid it
//! names, and that process runs this same executable as a forkd master. A pidfile some
//! other user could write, or a stale one naming a reused pid, is refused. The lock
//! belongs to the file's inode, so it follows the USR2 rename to `PIDFILE.oldbin` (the
//! old master keeps it there) while the new master locks the new `PIDFILE`.

use crate::shared::dirfd::Dir;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
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
    /// The open pidfile, holding its exclusive lock until this master exits (or hands
    /// the pidfile over).
    file: fs::File,
}

/// Whether `pid` is a running forkd master (by its process title). Any process can set
/// its title: this alone proves nothing (see [`check_master`]).
pub fn is_forkd_master(pid: i32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.starts_with(b"forkd: master"))
        .unwrap_or(false)
}

/// `flock` without waiting; `Ok(false)` when another open file holds a conflicting lock.
fn try_lock(file: &fs::File, operation: libc::c_int) -> io::Result<bool> {
    // SAFETY: flock(2) on an open fd.
    if unsafe { libc::flock(file.as_raw_fd(), operation | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        _ => Err(error),
    }
}

/// Whether a `flock` on inode `inode` is held by process `pid`, per /proc/locks
/// (`N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE START END`).
fn lock_held_by(locks: &str, inode: u64, pid: i32) -> bool {
    locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&"FLOCK")
            && fields.get(4).and_then(|p| p.parse::<i32>().ok()) == Some(pid)
            && fields
                .get(5)
                .and_then(|id| id.rsplit(':').next())
                .and_then(|i| i.parse::<u64>().ok())
                == Some(inode)
    })
}

/// Whether `pid` runs the same executable as this process: the same file, or, when that
/// file was replaced on disk since the master started (before a USR2), the same path.
fn same_executable(pid: i32) -> bool {
    let (Ok(theirs), Ok(ours)) = (
        fs::metadata(format!("/proc/{pid}/exe")),
        fs::metadata("/proc/self/exe"),
    ) else {
        return false;
    };
    if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
        return true;
    }
    let (Ok(their_path), Ok(our_path)) = (
        fs::read_link(format!("/proc/{pid}/exe")),
        fs::read_link("/proc/self/exe"),
    ) else {
        return false;
    };
    let their_path = their_path.to_string_lossy();
    their_path.strip_suffix(" (deleted)") == Some(&*our_path.to_string_lossy())
}

/// What `forkd -s` checks before it signals anything: the pid in the pidfile at `path`
/// is a forkd master that holds that pidfile's lock and runs this executable. Returns
/// the pid, or why the pidfile is not believed.
pub fn check_master(path: &Path) -> Result<i32, String> {
    let shown = path.display();
    let cannot = |e: io::Error| format!("cannot read pidfile {shown}: {e}");
    let (dir, name) = Dir::parent_of(path).map_err(cannot)?;
    let file = dir
        .open_regular(&name)
        .map_err(cannot)?
        .ok_or_else(|| format!("cannot read pidfile {shown}: it does not exist"))?;
    let mut text = String::new();
    (&file)
        .take(MAX_PIDFILE_BYTES)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    let pid = parse(&text)
        .ok_or_else(|| format!("pidfile {shown} does not hold a pid: {:?}", text.trim()))?;
    let refuse = |why: &str| {
        Err(format!(
            "process {pid} named by {shown} is not a running forkd master ({why}); refusing to signal it"
        ))
    };
    let unlocked = try_lock(&file, libc::LOCK_SH)
        .map_err(|e| format!("cannot check the lock of pidfile {shown}: {e}"))?;
    if unlocked {
        return refuse("no process holds the pidfile's lock: stale or forged");
    }
    let locks = fs::read_to_string("/proc/locks").unwrap_or_default();
    if !lock_held_by(&locks, file.metadata().map_or(0, |m| m.ino()), pid) {
        return refuse("it does not hold the pidfile's lock");
    }
    if !same_executable(pid) {
        return refuse("it does not run this program");
    }
    if !is_forkd_master(pid) {
        return refuse("its process title is not `forkd: master`");
    }
    Ok(pid)
}

fn read_at(dir: &Dir, name: &OsStr) -> io::Result<Option<String>> {
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
        if let Some(existing) = dir.open_regular(&name).map_err(|e| context(path, e))? {
            if !try_lock(&existing, libc::LOCK_SH)? {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "pidfile {} is locked by a running forkd master",
                        path.display()
                    ),
                ));
            }
        }
        // Written and locked under a temporary name, then renamed into place: readers
        // never see a partial pid, and the file is locked from the moment it appears.
        let file = dir
            .replace_with(&name, PIDFILE_MODE, |file| {
                if !try_lock(file, libc::LOCK_EX)? {
                    return Err(io::Error::other(
                        "the new pidfile is locked by another process",
                    ));
                }
                writeln!(file, "{}", std::process::id())
            })
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot write pidfile {}: {e}", path.display()),
                )
            })?;
        Ok(Pidfile { dir, name, file })
    }

    /// Removes the pidfile if it still names this process.
    pub fn remove(&self) {
        remove_if_ours(&self.dir, &self.name);
    }

    /// The locked file, for a forked native worker to close (it must not keep the lock
    /// alive after its master).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_holder_is_read_from_proc_locks() {
        let locks = "1: FLOCK  ADVISORY  WRITE 4242 00:2d:1234 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 77 00:2d:99 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 5151 00:2d:1234 0 EOF\n";
        assert!(lock_held_by(locks, 1234, 4242));
        assert!(!lock_held_by(locks, 1234, 5151), "a waiter holds nothing");
        assert!(
            !lock_held_by(locks, 99, 77),
            "POSIX locks are not the pidfile's"
        );
        assert!(!lock_held_by(locks, 1235, 4242));
    }

    #[test]
    fn a_created_pidfile_is_locked_and_refused_to_a_second_master() {
        let dir = std::env::temp_dir().join(format!("forkd-pidfile-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("forkd.pid");
        let pidfile = Pidfile::create(&path).expect("create");
        assert!(
            Pidfile::create(&path).is_err(),
            "a second master must not take it"
        );
        let (held, name) = Dir::parent_of(&path).expect("dir");
        let file = held.open_regular(&name).expect("open").expect("exists");
        assert!(!try_lock(&file, libc::LOCK_SH).expect("flock"));
        let locks = fs::read_to_string("/proc/locks").expect("/proc/locks");
        let inode = file.metadata().expect("meta").ino();
        assert!(lock_held_by(&locks, inode, std::process::id() as i32));
        drop(pidfile);
        assert!(
            try_lock(&file, libc::LOCK_SH).expect("flock"),
            "released on drop"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
