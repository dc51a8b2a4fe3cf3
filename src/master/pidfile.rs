//! The pidfile: written at start (refusing to start if another master holds it), locked
//! with `flock(LOCK_EX)` for the master's whole life, removed at exit only if it still
//! names this process.
//!
//! The lock is what `forkd -s` trusts ([`check_master`]): a pidfile is only believed
//! when it is a regular file, some process holds its lock, the lock holder is the pid it
//! names, and that process runs this same executable as a forkd master. A pidfile some
//! other user could write, or a stale one naming a reused pid, is refused. The lock
//! belongs to the file's inode, so it follows the USR2 rename to `PIDFILE.oldbin` (the
//! old master keeps it there) while the new master locks the new `PIDFILE`.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub struct Pidfile {
    path: PathBuf,
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

fn open_no_follow(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
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
    let meta =
        fs::symlink_metadata(path).map_err(|e| format!("cannot read pidfile {shown}: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!(
            "pidfile {shown} is not a regular file; refusing to use it"
        ));
    }
    let file = open_no_follow(path).map_err(|e| format!("cannot read pidfile {shown}: {e}"))?;
    let text =
        io::read_to_string(&file).map_err(|e| format!("cannot read pidfile {shown}: {e}"))?;
    let pid: i32 = text
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
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

impl Pidfile {
    pub fn create(path: &Path) -> io::Result<Pidfile> {
        let shown = path.display();
        if let Ok(existing) = open_no_follow(path) {
            if !try_lock(&existing, libc::LOCK_SH)? {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("pidfile {shown} is locked by a running forkd master"),
                ));
            }
        }
        // Written and locked under a temporary name, then renamed into place: readers
        // never see a partial pid, and the file is locked from the moment it appears.
        let tmp = path.with_extension("tmp");
        let _ = fs::remove_file(&tmp);
        let create = || -> io::Result<fs::File> {
            let mut file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)?;
            if !try_lock(&file, libc::LOCK_EX)? {
                return Err(io::Error::other(
                    "the new pidfile is locked by another process",
                ));
            }
            writeln!(file, "{}", std::process::id())?;
            fs::rename(&tmp, path)?;
            Ok(file)
        };
        let file = create().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io::Error::new(e.kind(), format!("cannot write pidfile {shown}: {e}"))
        })?;
        Ok(Pidfile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The locked file, for a forked native worker to close (it must not keep the lock
    /// alive after its master).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    pub fn remove(&self) {
        let ours = fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .is_some_and(|pid| pid == std::process::id());
        if ours {
            let _ = fs::remove_file(&self.path);
        }
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
        let file = open_no_follow(&path).expect("open");
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
