//! The master-side server hooks of a Gunicorn config file (`on_starting`, `when_ready`,
//! `on_reload`, `pre_fork`, `child_exit`, `nworkers_changed`, `on_exit`), run in a
//! long-lived child so that no code of the file runs in the master:
//! `python -m forkd._gunicorn_hooks FILE` (the Python package's interpreter). The master
//! writes one JSON line per call to the runner's stdin, with a non-blocking write of
//! less than `PIPE_BUF` (all of it or nothing), and never reads an answer: a runner that
//! hangs fills the pipe and later calls are dropped with a warning; one that exited is
//! started again at the next HUP. The runner bounds each hook by [`HOOK_TIMEOUT`]. The
//! master stays single-threaded and never waits on it; `reap` collects the runner like
//! any other child it does not know. `[python.hooks]` entries for these hooks run there
//! too.

use crate::config::{Config, LogConfig, LogTarget};
use std::io::Write;
use std::process::{ChildStdin, Command, Stdio};

/// How long one hook may run in the runner before it is interrupted (and logged).
pub const HOOK_TIMEOUT_SECS: u64 = 30;

/// One call to the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HookCall {
    OnStarting,
    WhenReady,
    OnReload,
    /// Before a worker's fork: its number (Gunicorn's `worker.age`).
    PreFork {
        age: u64,
    },
    /// A worker was reaped.
    ChildExit {
        pid: i32,
        age: u64,
    },
    NworkersChanged {
        new: usize,
        old: usize,
    },
    OnExit,
}

impl HookCall {
    /// The JSON line the runner reads.
    pub(super) fn line(self) -> String {
        match self {
            HookCall::OnStarting => "{\"hook\":\"on_starting\"}\n".into(),
            HookCall::WhenReady => "{\"hook\":\"when_ready\"}\n".into(),
            HookCall::OnReload => "{\"hook\":\"on_reload\"}\n".into(),
            HookCall::OnExit => "{\"hook\":\"on_exit\"}\n".into(),
            HookCall::PreFork { age } => format!("{{\"hook\":\"pre_fork\",\"age\":{age}}}\n"),
            HookCall::ChildExit { pid, age } => {
                format!("{{\"hook\":\"child_exit\",\"pid\":{pid},\"age\":{age}}}\n")
            }
            HookCall::NworkersChanged { new, old } => {
                format!("{{\"hook\":\"nworkers_changed\",\"new\":{new},\"old\":{old}}}\n")
            }
        }
    }
}

/// The runner, if the config is a Gunicorn config file read by the Python package.
pub(super) enum HookRunner {
    /// No `.py` config: nothing to run.
    Off,
    Running {
        spec: RunnerSpec,
        pid: u32,
        input: ChildStdin,
    },
    /// It exited or could not start: started again at the next HUP.
    Down,
}

/// What a runner runs: the `.py` config file's hooks and `[python.hooks]`' master-side
/// entries (imported with `python.path` first on `sys.path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RunnerSpec {
    file: Option<std::path::PathBuf>,
    hooks: Vec<(String, String)>,
    /// `python.path`, absolute, joined with `:`.
    path: String,
}

/// The hooks that run in the master's runner (the others run in each worker).
const MASTER_SIDE: &[&str] = &[
    "on_starting",
    "when_ready",
    "on_reload",
    "pre_fork",
    "child_exit",
    "nworkers_changed",
    "on_exit",
];

impl RunnerSpec {
    /// None when there is nothing to run in the master's runner.
    pub(super) fn of(config: &Config) -> Option<RunnerSpec> {
        let file = config
            .config_file
            .clone()
            .filter(|p| crate::config::gunicorn::is_python_config(p));
        let hooks: Vec<(String, String)> = config
            .python
            .hooks
            .iter()
            .filter(|(name, _)| MASTER_SIDE.contains(&name.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if file.is_none() && hooks.is_empty() {
            return None;
        }
        let path = config
            .python
            .path
            .iter()
            .map(|p| {
                std::path::absolute(p)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| p.clone())
            })
            .collect::<Vec<_>>()
            .join(":");
        Some(RunnerSpec { file, hooks, path })
    }

    /// The runner's arguments: FILE (`-` for none), then NAME=module:function.
    fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args = vec![self
            .file
            .as_ref()
            .map_or_else(|| "-".into(), |f| f.as_os_str().to_owned())];
        args.extend(self.hooks.iter().map(|(k, v)| format!("{k}={v}").into()));
        args
    }
}

impl HookRunner {
    /// Starts the runner for `config`: for a `.py` config file, or master-side hooks in
    /// `[python.hooks]`; with the Python package only.
    pub(super) fn start(config: &Config) -> HookRunner {
        let Some(spec) = RunnerSpec::of(config) else {
            return HookRunner::Off;
        };
        match crate::config::gunicorn::interpreter() {
            Some(python) => HookRunner::spawn(python, spec, &config.log),
            None => HookRunner::Off,
        }
    }

    /// HUP: `on_reload`, in a runner started again if what it runs changed (the old
    /// one is stopped), or if it was down.
    pub(super) fn reload(&mut self, config: &Config) {
        let next = RunnerSpec::of(config);
        let same = match self {
            HookRunner::Running { spec, .. } => next.as_ref() == Some(spec),
            HookRunner::Off => next.is_none(),
            HookRunner::Down => false,
        };
        if !same {
            if let HookRunner::Running { pid, .. } = self {
                // Its stdin does not reach end of input while workers hold the pipe.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            *self = HookRunner::start(config);
        }
        self.call(HookCall::OnReload);
    }

    fn spawn(python: &std::path::Path, spec: RunnerSpec, log: &LogConfig) -> HookRunner {
        let (level, format, error_log) = runner_log_vars(log);
        let spawned = Command::new(python)
            .args(["-m", "forkd._gunicorn_hooks"])
            .args(spec.args())
            .env("FORKD_HOOK_TIMEOUT", HOOK_TIMEOUT_SECS.to_string())
            .env("FORKD_HOOK_PATH", &spec.path)
            // Its records go to forkd's error log as the master's do.
            .envs(crate::hosted::HOOK_RUNNER_LOG_VARS.iter().zip([
                level.into(),
                format.into(),
                error_log,
            ]))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                tracing::error!("cannot start the server hooks' runner: {e}; hooks off");
                return HookRunner::Down;
            }
        };
        let Some(input) = child.stdin.take() else {
            return HookRunner::Down;
        };
        if let Err(e) = set_nonblocking(&input) {
            tracing::error!("server hooks' runner: {e}; hooks off");
            return HookRunner::Down;
        }
        tracing::debug!(pid = child.id(), "server hooks' runner started");
        HookRunner::Running {
            spec,
            pid: child.id(),
            input,
        }
    }

    /// USR1: the runner reopens its error log file too.
    pub(super) fn reopen_logs(&self) {
        if let HookRunner::Running { pid, .. } = self {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGUSR1,
            );
        }
    }

    /// Sends one call, never waiting: dropped (and logged) if the runner is behind or gone.
    pub(super) fn call(&mut self, call: HookCall) {
        let HookRunner::Running { pid, input, .. } = self else {
            return;
        };
        let line = call.line();
        match input.write(line.as_bytes()) {
            Ok(n) if n == line.len() => {}
            Ok(_) => tracing::warn!(pid = *pid, "server hooks' runner: a call was cut"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tracing::warn!(
                    pid = *pid,
                    "server hooks' runner is not keeping up (a hook hangs?): {call:?} dropped"
                );
            }
            Err(e) => {
                tracing::error!(
                    pid = *pid,
                    "server hooks' runner is gone ({e}): hooks off until the next HUP"
                );
                *self = HookRunner::Down;
            }
        }
    }
}

/// `log.level`, `log.format` and `log.error_log` as the runner's `FORKD_*` variables
/// give them (the runner sets up forkd's error log from them).
fn runner_log_vars(log: &LogConfig) -> (String, String, std::ffi::OsString) {
    let level = format!("{:?}", log.level).to_ascii_lowercase();
    let format = format!("{:?}", log.format).to_ascii_lowercase();
    let error_log = match &log.error_log {
        LogTarget::File(path) => path.as_os_str().to_owned(),
        _ => "-".into(),
    };
    (level, format, error_log)
}

fn set_nonblocking(input: &ChildStdin) -> Result<(), String> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::AsRawFd;
    let fd = input.as_raw_fd();
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| format!("F_GETFL: {e}"))?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(|e| format!("F_SETFL: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_one_json_line_each() {
        for call in [
            HookCall::OnStarting,
            HookCall::WhenReady,
            HookCall::OnReload,
            HookCall::OnExit,
            HookCall::PreFork { age: 3 },
            HookCall::ChildExit { pid: 42, age: 3 },
            HookCall::NworkersChanged { new: 3, old: 2 },
        ] {
            let line = call.line();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            assert!(line.len() < 512, "within PIPE_BUF: one atomic write");
            let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert!(parsed["hook"].is_string(), "{line}");
        }
        let parsed: serde_json::Value =
            serde_json::from_str(&HookCall::ChildExit { pid: 42, age: 3 }.line()).unwrap();
        assert_eq!(parsed["pid"], 42);
    }

    #[test]
    fn a_runner_for_a_python_config_or_master_side_hooks_only() {
        let mut config = Config::default();
        assert_eq!(RunnerSpec::of(&config), None);
        config
            .python
            .hooks
            .insert("post_fork".into(), "app.hooks:post_fork".into());
        assert_eq!(
            RunnerSpec::of(&config),
            None,
            "a worker hook runs in the workers"
        );
        config
            .python
            .hooks
            .insert("when_ready".into(), "app.hooks:ready".into());
        let spec = RunnerSpec::of(&config).unwrap();
        assert_eq!(
            spec.args(),
            ["-", "when_ready=app.hooks:ready"].map(std::ffi::OsString::from)
        );
        config.python.hooks.clear();
        config.config_file = Some("/etc/gunicorn.conf.py".into());
        let spec = RunnerSpec::of(&config).unwrap();
        assert_eq!(
            spec.args(),
            ["/etc/gunicorn.conf.py"].map(std::ffi::OsString::from)
        );
    }

    #[test]
    fn no_runner_without_a_python_config() {
        assert!(matches!(
            HookRunner::start(&Config::default()),
            HookRunner::Off
        ));
    }
}
