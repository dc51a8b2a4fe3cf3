//! `forkd -c FILE -s SIGNAL`: signals the running master named by the config's pidfile,
//! after checking that the pid really is a forkd master (a stale pidfile must not make
//! forkd signal an unrelated process).
//!
//! `-s reload` waits for the outcome, so that `ExecReload=` (and scripts) return only
//! once the reload is done: it sends HUP with sigqueue(3) carrying `RELOAD_TOKEN`, and
//! the master answers that sender with `reload_reply_signal()` carrying `RELOAD_OK` or
//! `RELOAD_FAILED` when the new workers are all ready (or the reload was abandoned). A
//! plain `kill -HUP` carries no token and gets no answer.

use crate::config::Config;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

/// The value a waiting `-s reload` puts on its HUP ("fork" in ASCII).
pub const RELOAD_TOKEN: i32 = 0x666f_726b;
pub const RELOAD_OK: i32 = 1;
pub const RELOAD_FAILED: i32 = 2;
/// How long `-s reload` waits for the master's answer.
const RELOAD_WAIT: Duration = Duration::from_secs(300);

/// The signal the master answers a waiting `-s reload` with.
pub fn reload_reply_signal() -> libc::c_int {
    libc::SIGRTMIN() + 2
}

/// Whether a received HUP came from a `-s reload` that waits for an answer.
pub fn wants_reload_reply(code: i32, value: i32) -> bool {
    code == libc::SI_QUEUE && value == RELOAD_TOKEN
}

/// The master's answer to a waiting `-s reload`.
pub fn answer_reload(pid: i32, ok: bool) {
    let value = libc::sigval {
        sival_ptr: (if ok { RELOAD_OK } else { RELOAD_FAILED }) as usize as *mut libc::c_void,
    };
    // SAFETY: sigqueue(3) with a valid signal number and a plain integer value.
    unsafe { libc::sigqueue(pid, reload_reply_signal(), value) };
}

/// The signal behind each `-s` name.
pub fn signal_for(name: &str) -> Option<Signal> {
    Some(match name {
        "reload" => Signal::SIGHUP,
        "stop" => Signal::SIGTERM,
        "quit" => Signal::SIGQUIT,
        "reopen" => Signal::SIGUSR1,
        "upgrade" => Signal::SIGUSR2,
        "incr" => Signal::SIGTTIN,
        "decr" => Signal::SIGTTOU,
        _ => return None,
    })
}

pub fn send_signal(config: &Config, name: &str) -> u8 {
    match try_send(config, name) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("forkd: {e}");
            1
        }
    }
}

fn try_send(config: &Config, name: &str) -> Result<(), String> {
    let signal = signal_for(name).ok_or_else(|| format!("unknown signal name {name:?}"))?;
    let path = config
        .pidfile
        .as_ref()
        .ok_or("no pidfile is configured (set `pidfile` or -p), so there is no master to signal")?;
    let text = crate::master::pidfile::read(path)
        .map_err(|e| format!("cannot read pidfile {}: {e}", path.display()))?
        .ok_or_else(|| format!("cannot read pidfile {}: it does not exist", path.display()))?;
    let pid: i32 = crate::master::pidfile::parse(&text).ok_or_else(|| {
        format!(
            "pidfile {} does not hold a pid: {:?}",
            path.display(),
            text.trim()
        )
    })?;
    if !crate::master::pidfile::is_forkd_master(pid) {
        return Err(format!(
            "process {pid} named by {} is not a running forkd master",
            path.display()
        ));
    }
    if signal == Signal::SIGHUP {
        return reload_and_wait(pid);
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
        .map_err(|e| format!("cannot send {signal} to {pid}: {e}"))?;
    if matches!(signal, Signal::SIGTERM | Signal::SIGQUIT) {
        // Wait for the master to be gone, so that `-s stop` can be an ExecStop= (or a
        // deploy script step) that returns once the drain is over.
        let limit = config.graceful_timeout + config.health.shutdown_delay + STOP_MARGIN;
        return wait_for_exit(pid, limit);
    }
    Ok(())
}

/// What `-s stop` waits beyond `graceful_timeout + shutdown_delay` for the master.
const STOP_MARGIN: Duration = Duration::from_secs(10);

fn wait_for_exit(pid: i32, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !crate::master::pidfile::is_forkd_master(pid) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "master {pid} is still running {}s after the stop signal",
        limit.as_secs()
    ))
}

/// A root `-s reload` aimed at a master running as another user takes that user as
/// its real uid (keeping root as effective uid), so that the master is allowed to
/// answer it: kill(2) checks the sender's uid against the receiver's real uid.
fn accept_answers_from(pid: i32) {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let Ok(meta) = std::fs::metadata(format!("/proc/{pid}")) else {
        return;
    };
    if meta.uid() != 0 {
        let uid = nix::unistd::Uid::from_raw(meta.uid());
        let root = nix::unistd::Uid::from_raw(0);
        let _ = nix::unistd::setresuid(uid, root, root);
    }
}

/// Sends a HUP that asks for an answer and waits for it (see the module doc).
fn reload_and_wait(pid: i32) -> Result<(), String> {
    use nix::sys::signal::SigSet;
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    // SAFETY: sigemptyset/sigaddset on a zeroed sigset_t with a valid signal number.
    let mut raw: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut raw);
        libc::sigaddset(&mut raw, reload_reply_signal());
    }
    // SAFETY: raw was initialised above.
    let set = unsafe { SigSet::from_sigset_t_unchecked(raw) };
    accept_answers_from(pid);
    // Blocked before the HUP goes out, so an early answer waits in the signalfd.
    set.thread_block()
        .map_err(|e| format!("cannot block the reply signal: {e}"))?;
    let replies = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("cannot wait for the master's answer: {e}"))?;
    let token = libc::sigval {
        sival_ptr: RELOAD_TOKEN as usize as *mut libc::c_void,
    };
    // SAFETY: sigqueue(3) to the checked master pid with a plain integer value.
    if unsafe { libc::sigqueue(pid, libc::SIGHUP, token) } != 0 {
        return Err(format!(
            "cannot send HUP to {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let deadline = Instant::now() + RELOAD_WAIT;
    while Instant::now() < deadline {
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&replies),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16));
        while let Ok(Some(info)) = replies.read_signal() {
            if info.ssi_pid as i32 != pid {
                continue;
            }
            return match info.ssi_int {
                RELOAD_OK => Ok(()),
                _ => Err(format!(
                    "the reload of master {pid} failed; it keeps serving as before (its error log says why)"
                )),
            };
        }
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
            return Err(format!("master {pid} exited during the reload"));
        }
    }
    Err(format!(
        "master {pid} did not finish the reload within {}s",
        RELOAD_WAIT.as_secs()
    ))
}
