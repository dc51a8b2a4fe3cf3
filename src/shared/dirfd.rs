//! Files named relative to an open directory. The pidfile and unix socket files may live
//! in a directory other users can write (/tmp, a shared run directory), where the master,
//! running as root, must never follow a symlink someone put there, nor be led into
//! another directory by a parent swapped between two look-ups. So the directory is opened
//! once, and every look-up, read, rename and unlink after that goes through its fd (the
//! `*at` calls) with `AT_SYMLINK_NOFOLLOW` / `O_NOFOLLOW` on the file's own name.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// An open directory (`O_PATH`: it can name files, not list them).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// The path it was opened by, for messages.
    path: PathBuf,
}

impl Dir {
    /// Opens the directory `path` is in; returns it and the file's name in it.
    pub fn parent_of(path: &Path) -> io::Result<(Dir, OsString)> {
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} does not name a file", path.display()),
            )
        })?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let raw = nix::fcntl::open(
            parent,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot open directory {}: {e}", parent.display()),
            )
        })?;
        // SAFETY: a fresh fd from open(2), owned from here.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok((
            Dir {
                fd,
                path: parent.to_path_buf(),
            },
            name.to_os_string(),
        ))
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// `name`'s path, for messages.
    pub fn display(&self, name: &OsStr) -> String {
        self.path.join(name).display().to_string()
    }

    /// `name`'s own metadata (a symlink is reported as one); `None` if it does not exist.
    pub fn stat(&self, name: &OsStr) -> io::Result<Option<FileStat>> {
        match nix::sys::stat::fstatat(Some(self.raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Up to `limit` bytes of `name`, which must be a regular file: anything else (a
    /// symlink, a FIFO that would block the read forever, a device) is an error that
    /// says what it is. `None` if it does not exist. Never blocks on the open.
    pub fn read_regular(&self, name: &OsStr, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let Some(file) = self.open_regular(name)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.take(limit).read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }

    /// `name` opened for reading, if it is a regular file (as [`Dir::read_regular`]).
    pub fn open_regular(&self, name: &OsStr) -> io::Result<Option<std::fs::File>> {
        // Looked at before it is opened, so that not even open(2) touches a device.
        let Some(st) = self.stat(name)? else {
            return Ok(None);
        };
        not_regular(&st).map_or(Ok(()), |what| Err(self.not_regular_error(name, what)))?;
        let raw = match nix::fcntl::openat(
            Some(self.raw_fd()),
            name,
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(raw) => raw,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => return Err(self.not_regular_error(name, "a symbolic link")),
            Err(e) => return Err(e.into()),
        };
        // SAFETY: a fresh fd from openat(2), owned from here.
        let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) });
        // Replaced between the look-up and the open: checked again on what was opened.
        let st = nix::sys::stat::fstat(file.as_raw_fd())?;
        if let Some(what) = not_regular(&st) {
            return Err(self.not_regular_error(name, what));
        }
        Ok(Some(file))
    }

    fn not_regular_error(&self, name: &OsStr, what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {what}, not a regular file; remove it",
                self.display(name)
            ),
        )
    }

    /// Replaces `name` with a new regular file that `fill` writes (and, say, locks), mode
    /// `mode` whatever the umask: made as a fresh, randomly named file in the same
    /// directory (`O_CREAT|O_EXCL|O_NOFOLLOW`, so no existing file or symlink is ever
    /// opened), then renamed over `name` (which replaces a symlink there, never its
    /// target). Returns the file, still open.
    pub fn replace_with(
        &self,
        name: &OsStr,
        mode: u32,
        fill: impl FnOnce(&mut std::fs::File) -> io::Result<()>,
    ) -> io::Result<std::fs::File> {
        let (temp, mut file) = self.create_temp(name, mode)?;
        let written = (|| {
            nix::sys::stat::fchmod(file.as_raw_fd(), Mode::from_bits_truncate(mode))?;
            fill(&mut file)?;
            nix::fcntl::renameat(Some(self.raw_fd()), &*temp, Some(self.raw_fd()), name)?;
            Ok::<(), io::Error>(())
        })();
        if let Err(e) = written {
            let _ = self.unlink(&temp);
            return Err(e);
        }
        Ok(file)
    }

    fn create_temp(&self, name: &OsStr, mode: u32) -> io::Result<(OsString, std::fs::File)> {
        let mut last = Errno::EEXIST;
        for _ in 0..16 {
            let mut temp = OsString::from(".");
            temp.push(name);
            temp.push(format!(
                ".{:016x}.tmp",
                crate::shared::protocol::random_bits(false)
            ));
            match nix::fcntl::openat(
                Some(self.raw_fd()),
                &*temp,
                OFlag::O_RDWR
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_NOCTTY
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(mode),
            ) {
                // SAFETY: a fresh fd from openat(2), owned from here.
                Ok(raw) => return Ok((temp, unsafe { std::fs::File::from_raw_fd(raw) })),
                Err(Errno::EEXIST) => last = Errno::EEXIST,
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.into())
    }

    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        nix::fcntl::renameat(Some(self.raw_fd()), from, Some(self.raw_fd()), to)?;
        Ok(())
    }

    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        nix::unistd::unlinkat(
            Some(self.raw_fd()),
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )?;
        Ok(())
    }

    /// Unlinks `name` only if it is still the socket file `(dev, ino)`.
    pub fn unlink_socket(&self, name: &OsStr, dev: u64, ino: u64) -> io::Result<bool> {
        match self.stat(name)? {
            Some(st) if is_socket(&st) && st.st_dev == dev && st.st_ino == ino => {
                self.unlink(name)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

pub fn is_socket(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK
}

/// What a file is, if it is not a regular file ("a FIFO", "a directory"...).
pub fn not_regular(st: &FileStat) -> Option<&'static str> {
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    Some(match kind {
        SFlag::S_IFREG => return None,
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        _ => "not a regular file",
    })
}
