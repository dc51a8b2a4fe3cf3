//! The pidfile: written at start (refusing to start if it names a live forkd master),
//! removed at exit only if it still names this process.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub struct Pidfile {
    path: PathBuf,
}

/// Whether `pid` is a running forkd master (by its process title).
pub fn is_forkd_master(pid: i32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.starts_with(b"forkd: master"))
        .unwrap_or(false)
}

impl Pidfile {
    pub fn create(path: &Path) -> io::Result<Pidfile> {
        if let Ok(text) = fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse::<i32>() {
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
        }
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, format!("{}\n", std::process::id()))
            .and_then(|_| fs::rename(&tmp, path))
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot write pidfile {}: {e}", path.display()),
                )
            })?;
        Ok(Pidfile {
            path: path.to_path_buf(),
        })
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
