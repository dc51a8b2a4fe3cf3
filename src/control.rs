//! `forkd -c FILE -s SIGNAL`: signals the running master named by the config's pidfile,
//! after checking that the pid really is a forkd master (a stale pidfile must not make
//! forkd signal an unrelated process).

use crate::config::Config;
use nix::sys::signal::Signal;
use std::process::ExitCode;

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

pub fn send_signal(config: &Config, name: &str) -> ExitCode {
    match try_send(config, name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("forkd: {e}");
            ExitCode::from(1)
        }
    }
}

fn try_send(config: &Config, name: &str) -> Result<(), String> {
    let signal = signal_for(name).ok_or_else(|| format!("unknown signal name {name:?}"))?;
    let path = config
        .pidfile
        .as_ref()
        .ok_or("no pidfile is configured (set `pidfile` or -p), so there is no master to signal")?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read pidfile {}: {e}", path.display()))?;
    let pid: i32 = text.trim().parse().ok().filter(|p| *p > 0).ok_or_else(|| {
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
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
        .map_err(|e| format!("cannot send {signal} to {pid}: {e}"))
}
