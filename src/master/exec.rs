//! Exec workers, the master's side: each worker is a program of the user's (`-- COMMAND`
//! or `[exec] command`, uvicorn being the reference) started with the listeners by the
//! systemd socket-activation protocol. This module owns everything that differs from a
//! native worker: resolving the command, setting up the child between fork and exec,
//! the per-master `NOTIFY_SOCKET` the workers report to (`READY=1`, `WATCHDOG=1`), the
//! pipes that carry their stdout/stderr into the error log, and seeing from /proc that
//! a worker which never says `READY=1` polls or accepts on its listener.

use crate::config::{BindSpec, Config};
use crate::shared::listeners::Listener;
use crate::shared::scoreboard::Slot;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// How many of a worker's last output lines a boot failure quotes.
const RECENT_LINES: usize = 5;
/// A line of worker output longer than this is logged in pieces.
const MAX_LINE: usize = 16 * 1024;
/// How many notify messages one pass of the master's loop reads at most.
const MAX_NOTIFY_BATCH: usize = 256;

/// The command every exec worker runs, resolved once per config.
#[derive(Debug)]
pub struct ExecProgram {
    /// The command as configured, for logs.
    pub command: Vec<String>,
    path: CString,
    argv: Vec<CString>,
}

impl ExecProgram {
    /// Resolves `exec.command` the way a shell would (a name without `/` is searched in
    /// `PATH`, the `[env]` one if set), so that a missing or non-executable program is a
    /// clear error at start or on HUP instead of a crash loop.
    pub fn resolve(config: &Config) -> Result<ExecProgram, String> {
        let command = config.exec.command.clone();
        let Some(program) = command.first() else {
            return Err("key `exec.command`: the list is empty".to_string());
        };
        let path = if program.contains('/') {
            let path = match crate::shared::privileges::chdir_path(config) {
                Some(dir) if !program.starts_with('/') => dir.join(program),
                _ => PathBuf::from(program),
            };
            check_executable(&path).map_err(|e| format!("key `exec.command`: {e}"))?;
            path
        } else {
            let search: OsString = config
                .env
                .get("PATH")
                .map(OsString::from)
                .or_else(|| std::env::var_os("PATH"))
                .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
            find_in_path(program, &search).ok_or_else(|| {
                format!(
                    "key `exec.command`: {program:?} was not found as an executable in PATH ({})",
                    search.to_string_lossy()
                )
            })?
        };
        let path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| "key `exec.command`: the program path contains a NUL byte".to_string())?;
        let argv = command
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "key `exec.command`: an argument contains a NUL byte".to_string())?;
        Ok(ExecProgram {
            command,
            path,
            argv,
        })
    }
}

fn check_executable(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK)
        .map_err(|e| format!("{} is not executable: {e}", path.display()))
}

/// Only absolute `PATH` entries are searched. An empty entry means the working directory
/// to `execvp(3)`, and a relative one a directory under it: there, whoever can write the
/// working directory would choose the program a root master runs (`./uvicorn`). So
/// those entries are skipped, as hardened `execvp`s and sudo's `secure_path` do.
fn find_in_path(program: &str, search: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(search)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| check_executable(candidate).is_ok())
}

/// The pipe a worker's stdout and stderr go to, read by the master into the error log.
pub struct Output {
    fd: OwnedFd,
    pending: Vec<u8>,
    /// The last lines, for the reason of a failed boot (they are logged at `info`,
    /// which a `warn` log level hides).
    recent: std::collections::VecDeque<String>,
    /// Every write end is closed: nothing more to read (and poll would spin on POLLHUP).
    pub eof: bool,
}

/// Makes the pipe for a new worker: (the master's read end, the child's write end).
pub fn output_pipe() -> Result<(Output, OwnedFd), String> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot create the output pipe: {e}"))?;
    nix::fcntl::fcntl(
        read.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(|e| format!("cannot make the output pipe non-blocking: {e}"))?;
    Ok((
        Output {
            fd: read,
            pending: Vec::new(),
            recent: std::collections::VecDeque::new(),
            eof: false,
        },
        write,
    ))
}

impl Output {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Logs every complete line the worker wrote, each prefixed with its pid; with
    /// `to_end` (the worker has exited) the last partial line too.
    pub fn drain(&mut self, pid: i32, to_end: bool) {
        let mut buf = [0u8; 8192];
        loop {
            match nix::unistd::read(self.fd.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
            if self.pending.len() > 4 * MAX_LINE {
                break;
            }
        }
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.log_line(pid, &line[..line.len() - 1]);
        }
        if self.pending.len() >= MAX_LINE || (to_end && !self.pending.is_empty()) {
            let line = std::mem::take(&mut self.pending);
            self.log_line(pid, &line);
        }
    }

    fn log_line(&mut self, pid: i32, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // The program's bytes, escaped: it must not forge the master's log lines.
        let line = crate::shared::escape::escape_untrusted(line, 4 * MAX_LINE);
        tracing::info!(target: "forkd::worker", "[{pid}] {line}");
        if !line.trim().is_empty() {
            if self.recent.len() == RECENT_LINES {
                self.recent.pop_front();
            }
            self.recent.push_back(line.chars().take(300).collect());
        }
    }

    /// The worker's last few lines of output, joined for a log message.
    pub fn recent(&self) -> Option<String> {
        (!self.recent.is_empty())
            .then(|| self.recent.iter().cloned().collect::<Vec<_>>().join(" | "))
    }
}

/// The datagram socket exec workers send `READY=1` and `WATCHDOG=1` to. Abstract (no
/// file to clean up) and autobound: the kernel picks a free random name, so no other
/// process can take the name first (a predictable one could be bound by any local user
/// to keep exec workers from starting). Senders are identified by the kernel
/// (`SCM_CREDENTIALS`), so a message counts only for the worker whose pid sent it.
pub struct NotifyIntake {
    socket: UnixDatagram,
    /// The `NOTIFY_SOCKET` value given to workers (`@` and the kernel's name).
    pub address: String,
}

impl NotifyIntake {
    #[allow(unsafe_code)] // bind(2) with a family-only address: autobind
    pub fn bind() -> Result<NotifyIntake, String> {
        use std::os::linux::net::SocketAddrExt;
        let socket =
            UnixDatagram::unbound().map_err(|e| format!("cannot create the notify socket: {e}"))?;
        // SAFETY: a zeroed sockaddr_un with only the family set, and the length of the
        // family alone: bind(2) then autobinds to a unique abstract name (unix(7)).
        let bound = unsafe {
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            libc::bind(
                socket.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sa_family_t>() as libc::socklen_t,
            )
        };
        if bound != 0 {
            return Err(format!(
                "cannot bind the workers' notify socket: {}",
                std::io::Error::last_os_error()
            ));
        }
        let local = socket
            .local_addr()
            .map_err(|e| format!("notify socket name: {e}"))?;
        let name = local
            .as_abstract_name()
            .filter(|name| !name.is_empty() && !name.contains(&0))
            .ok_or("the notify socket got no abstract name")?;
        let address = format!("@{}", String::from_utf8_lossy(name));
        socket
            .set_nonblocking(true)
            .map_err(|e| format!("notify socket: {e}"))?;
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::PassCred, &true)
            .map_err(|e| format!("notify socket SO_PASSCRED: {e}"))?;
        // CLOEXEC is set by std; native workers close it after the fork.
        Ok(NotifyIntake { socket, address })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// The messages waiting, up to `MAX_NOTIFY_BATCH` per call: (sender pid, text).
    /// Anyone on the machine can find the socket's name (/proc/net/unix) and send to
    /// it, so a flood must not keep the master in this loop; the rest waits for the
    /// next pass.
    pub fn receive(&self) -> Vec<(i32, String)> {
        let mut messages = Vec::new();
        let mut buf = [0u8; 4096];
        while messages.len() < MAX_NOTIFY_BATCH {
            let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let Ok(msg) = nix::sys::socket::recvmsg::<()>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                nix::sys::socket::MsgFlags::MSG_DONTWAIT,
            ) else {
                break;
            };
            let mut sender = 0;
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let nix::sys::socket::ControlMessageOwned::ScmCredentials(cred) = c {
                        sender = cred.pid();
                    }
                }
            }
            let len = msg.bytes;
            messages.push((sender, String::from_utf8_lossy(&buf[..len]).into_owned()));
        }
        messages
    }
}

/// The socket inode of each listener: what a worker's epoll set or accept call shows.
pub fn listener_inodes(listeners: &[Listener]) -> Vec<u64> {
    listeners
        .iter()
        .filter_map(|l| nix::sys::stat::fstat(l.fd.as_raw_fd()).ok())
        .map(|st| st.st_ino)
        .collect()
}

/// Whether `pid` is seen serving one of the listeners: one of its epoll sets watches the
/// socket (`tfd: ... ino:HEX` in /proc/PID/fdinfo, whatever fd number it dup'ed it to),
/// or one of its threads is blocked in accept(2) on it.
pub fn is_serving(pid: i32, inodes: &[u64]) -> bool {
    epoll_watches_listener(pid, inodes) || blocked_in_accept(pid, inodes)
}

fn epoll_watches_listener(pid: i32, inodes: &[u64]) -> bool {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return false;
    };
    for entry in entries.flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in info.lines().filter(|l| l.starts_with("tfd:")) {
            let inode = line
                .split_whitespace()
                .find_map(|field| field.strip_prefix("ino:"))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok());
            if inode.is_some_and(|i| inodes.contains(&i)) {
                return true;
            }
        }
    }
    false
}

fn blocked_in_accept(pid: i32, inodes: &[u64]) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    for task in tasks.flatten() {
        let Ok(syscall) = std::fs::read_to_string(task.path().join("syscall")) else {
            continue;
        };
        let mut fields = syscall.split_whitespace();
        let number: Option<i64> = fields.next().and_then(|n| n.parse().ok());
        if !matches!(number, Some(n) if n == libc::SYS_accept || n == libc::SYS_accept4) {
            continue;
        }
        let fd = fields
            .next()
            .and_then(|a| i64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
        let Some(fd) = fd else { continue };
        if let Ok(target) = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) {
            let inode = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok());
            if inode.is_some_and(|i| inodes.contains(&i)) {
                return true;
            }
        }
    }
    false
}

/// What the child needs, built by the master before the fork.
pub struct ChildSetup<'a> {
    pub program: &'a ExecProgram,
    pub config: &'a Config,
    /// Its generation's resolved `chdir` (see [`super::workdir`]).
    pub workdir: Option<&'a std::path::Path>,
    pub listeners: &'a [Listener],
    pub output: OwnedFd,
    pub notify_address: &'a str,
    pub master_pid: i32,
    pub slot: &'static Slot,
}

/// In the forked child: stdout/stderr to the pipe, the listeners on fds 3, 4, ... and
/// no other fd, the user/group and working directory of the config, the environment of
/// the socket-activation protocol, then exec. Never returns: if exec fails, the reason
/// goes to the slot for the master to report, and the child exits `EXIT_BOOT_ERROR`.
/// (The master is single-threaded, so allocating here is safe.)
#[allow(unsafe_code)] // _exit
pub fn exec_child(setup: ChildSetup<'_>) -> ! {
    let reason = match prepare_and_exec(&setup) {
        Ok(never) => match never {},
        Err(reason) => reason,
    };
    setup.slot.set_message(&reason);
    // SAFETY: leaving the forked child without running the master's destructors.
    unsafe { libc::_exit(crate::shared::protocol::EXIT_BOOT_ERROR) }
}

enum Never {}

#[allow(unsafe_code)] // SIGPIPE back to its default action
fn prepare_and_exec(setup: &ChildSetup<'_>) -> Result<Never, String> {
    let ChildSetup {
        program,
        config,
        listeners,
        output,
        notify_address,
        master_pid,
        workdir,
        ..
    } = setup;
    // Rust ignores SIGPIPE for itself; an exec'd program expects the default.
    // SAFETY: resetting a signal disposition to its default.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    crate::shared::privileges::detach_from_terminal()?;
    for target in [1, 2] {
        nix::unistd::dup2(output.as_raw_fd(), target)
            .map_err(|e| format!("cannot redirect output: {e}"))?;
    }
    let fds: Vec<RawFd> = listeners.iter().map(|l| l.fd.as_raw_fd()).collect();
    let names: Vec<String> = listeners.iter().map(|l| l.local.to_string()).collect();
    let first_free = super::child::pass_listen_fds(&fds, &names)?;
    super::child::close_fds_from(first_free);
    crate::shared::privileges::drop_for_worker(config)?;
    // After the uid change (which clears it); it survives exec for a normal binary.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    if nix::unistd::getppid().as_raw() != *master_pid {
        return Err("the master exited during the worker's start".to_string());
    }
    // Its generation's directory, resolved when the generation was built (a release
    // symlink moved since does not move this worker).
    super::workdir::enter(*workdir)?;
    let path = super::workdir::program_path(
        *workdir,
        program.command.first().map_or("", String::as_str),
        Path::new(OsStr::from_bytes(program.path.as_bytes())),
    );
    let path = CString::new(path.into_os_string().into_vec())
        .map_err(|_| "the program path contains a NUL byte".to_string())?;
    let env = child_environment(config, listeners, notify_address)?;
    let error = match nix::unistd::execve(&path, &program.argv, &env) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    Err(format!(
        "cannot execute {:?} ({}): {error}",
        program.command.join(" "),
        program.path.to_string_lossy()
    ))
}

/// forkd's environment (less what `[env]` sets), plus `[env]`, plus the
/// socket-activation and notification variables for this child.
fn child_environment(
    config: &Config,
    listeners: &[Listener],
    notify_address: &str,
) -> Result<Vec<CString>, String> {
    // The systemd and upgrade variables meant for the master are not in it any more:
    // the master took them out of its environment at start (`Master::new`).
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !config.env.contains_key(&*k.to_string_lossy()))
        .collect();
    for (k, v) in &config.env {
        vars.push((k.into(), v.into()));
    }
    let names: Vec<String> = listeners
        .iter()
        .map(|l| match &l.spec {
            BindSpec::Named(name) => name.clone(),
            spec => crate::shared::systemd::encode_name(&spec.to_string()),
        })
        .collect();
    vars.push(("LISTEN_FDS".into(), listeners.len().to_string().into()));
    vars.push(("LISTEN_PID".into(), std::process::id().to_string().into()));
    vars.push(("LISTEN_FDNAMES".into(), names.join(":").into()));
    vars.push(("NOTIFY_SOCKET".into(), notify_address.into()));
    if !config.timeout.is_zero() {
        // As systemd does for a service: how often to send WATCHDOG=1.
        vars.push((
            "WATCHDOG_USEC".into(),
            config.timeout.as_micros().to_string().into(),
        ));
        vars.push(("WATCHDOG_PID".into(), std::process::id().to_string().into()));
    }
    vars.into_iter()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).map_err(|_| "an environment variable contains a NUL byte".to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::find_in_path;
    use std::ffi::OsStr;

    #[test]
    fn only_absolute_path_entries_are_searched() {
        let found = find_in_path("sh", OsStr::new("/nonexistent:/bin")).expect("sh");
        assert_eq!(found, std::path::Path::new("/bin/sh"));
        // Relative: /bin from any working directory, and still not searched.
        let up = "../".repeat(64) + "bin";
        assert_eq!(find_in_path("sh", OsStr::new(&up)), None);
        assert_eq!(find_in_path("sh", OsStr::new(&format!(":{up}:"))), None);
    }
}
