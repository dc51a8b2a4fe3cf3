//! `forkd -c FILE -s SIGNAL`: signals the running master named by the config's pidfile,
//! after checking that the pid really is a forkd master (a stale or forged pidfile must
//! not make forkd signal an unrelated process; see `pidfile::check_master`).
//! `-s status` asks that master over its control socket instead (see `master::ctl`).
//!
//! `-s reload` waits for the outcome, so that `ExecReload=` (and scripts) return only
//! once the reload is done. The wire, all realtime-signal values (sigqueue(3)):
//!
//! - the client picks a random 64-bit token T and sends HUP carrying T;
//! - when the reload is finished (or abandoned) the master answers that sender with
//!   `protocol::reload_reply_signal()` carrying T for success, or `!T` (T with every bit flipped)
//!   for failure, and only if the sender has that signal blocked (a process waiting for
//!   the answer: a forged HUP naming another pid cannot make the master kill it);
//! - the client believes an answer only if it carries T or `!T`.
//!
//! The sender pid of a signal can be forged (rt_sigqueueinfo(2)) by anyone allowed to
//! signal the process; the token cannot be guessed. A plain `kill -HUP` carries no
//! token and gets no answer.

use crate::config::Config;
use crate::shared::protocol::{self, reload_reply_signal};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

/// How long `-s reload` waits for the master's answer.
const RELOAD_WAIT: Duration = Duration::from_secs(300);

/// Whether `pid` has `signo` blocked (`SigBlk` in /proc/PID/status).
fn blocks_signal(pid: i32, signo: libc::c_int) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << (signo - 1)) != 0)
}

/// The master's answer to a waiting `-s reload`.
pub fn answer_reload(pid: i32, token: u64, ok: bool) {
    if !blocks_signal(pid, reload_reply_signal()) {
        tracing::warn!(
            pid,
            "not answering a reload request: process {pid} is not waiting for the answer"
        );
        return;
    }
    let _ = protocol::queue(
        pid,
        reload_reply_signal(),
        protocol::reload_reply_value(token, ok),
    );
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
    if name == "status" {
        return status(config);
    }
    let signal = signal_for(name).ok_or_else(|| format!("unknown signal name {name:?}"))?;
    let path = config
        .pidfile
        .as_ref()
        .ok_or("no pidfile is configured (set `pidfile` or -p), so there is no master to signal")?;
    let pid = crate::shared::pidfile::check_master(path)?;
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

/// How long `-s status` waits for the master's answer.
const STATUS_WAIT: Duration = Duration::from_secs(5);

/// `-s status`: asks the master over its control socket and prints the answer.
fn status(config: &Config) -> Result<(), String> {
    use std::io::{Read, Write};
    let path = config.pidfile.as_ref().ok_or(
        "status needs a pidfile: the control socket it asks is beside it (set `pidfile` or -p)",
    )?;
    let pid =
        crate::shared::pidfile::check_master(path).map_err(|e| format!("no master to ask: {e}"))?;
    let socket = crate::master::ctl::path_for(path);
    let shown = socket.display();
    let mut stream = std::os::unix::net::UnixStream::connect(&socket)
        .map_err(|e| format!("cannot reach master {pid} at {shown}: {e}"))?;
    let _ = stream.set_read_timeout(Some(STATUS_WAIT));
    let _ = stream.set_write_timeout(Some(STATUS_WAIT));
    stream
        .write_all(b"status\n")
        .map_err(|e| format!("cannot ask master {pid} at {shown}: {e}"))?;
    let mut answer = String::new();
    stream
        .take(1 << 20)
        .read_to_string(&mut answer)
        .map_err(|e| format!("no answer from master {pid} at {shown}: {e}"))?;
    if let Some(why) = answer.strip_prefix("error: ") {
        return Err(format!(
            "master {pid} refused the request: {}",
            why.trim_end()
        ));
    }
    if answer.is_empty() {
        return Err(format!("master {pid} closed {shown} without an answer"));
    }
    print!("{answer}");
    Ok(())
}

/// The state and start time of `pid` (fields 3 and 22 of `/proc/PID/stat`).
fn process_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, which may hold spaces and parentheses.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

fn process_start(pid: i32) -> Option<u64> {
    process_stat(pid).map(|(_, start)| start)
}

/// Whether the process `pid` (started at `started`) is gone: reaped, a zombie, or the
/// pid now names another process. An exiting process loses its command line before it
/// is done exiting (its memory goes first), so the title alone says too early.
fn has_exited(pid: i32, started: Option<u64>) -> bool {
    match process_stat(pid) {
        None => true,
        Some((state, start)) => matches!(state, 'Z' | 'X') || Some(start) != started,
    }
}

/// What `-s stop` waits beyond `graceful_timeout + shutdown_delay` for the master.
const STOP_MARGIN: Duration = Duration::from_secs(10);

fn wait_for_exit(pid: i32, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let started = process_start(pid);
    while Instant::now() < deadline {
        if has_exited(pid, started) {
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
    let mut raw = *SigSet::empty().as_ref();
    // SAFETY: sigaddset on an initialised sigset_t with a valid (realtime) signal number.
    unsafe { libc::sigaddset(&mut raw, reload_reply_signal()) };
    // SAFETY: raw was initialised above.
    let set = unsafe { SigSet::from_sigset_t_unchecked(raw) };
    accept_answers_from(pid);
    // Blocked before the HUP goes out, so an early answer waits in the signalfd.
    set.thread_block()
        .map_err(|e| format!("cannot block the reply signal: {e}"))?;
    let replies = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("cannot wait for the master's answer: {e}"))?;
    let token = protocol::random_token();
    protocol::queue(pid, libc::SIGHUP, token)
        .map_err(|e| format!("cannot send HUP to {pid}: {e}"))?;
    let deadline = Instant::now() + RELOAD_WAIT;
    while Instant::now() < deadline {
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&replies),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16));
        while let Ok(Some(info)) = replies.read_signal() {
            let outcome = (info.ssi_code == libc::SI_QUEUE && info.ssi_pid as i32 == pid)
                .then(|| protocol::reload_reply_outcome(token, info.ssi_ptr))
                .flatten();
            match outcome {
                Some(true) => return Ok(()),
                Some(false) => {
                    return Err(format!(
                    "the reload of master {pid} failed; it keeps serving as before (its error log says why)"
                ))
                }
                None => eprintln!(
                    "forkd: ignoring a reply signal that does not carry this reload's token (claimed sender {})",
                    info.ssi_pid
                ),
            }
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
