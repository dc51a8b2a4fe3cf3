//! `Forkd`: one way for every test to start forkd (or a program with its command line:
//! an example built on the library, the Python package's `forkd`), instead of argument
//! arrays copied between files. Options go in the order given, the app last; then
//! `start` waits until all workers are ready, `start_or_exit` also takes an exit for an
//! answer, `spawn` waits for nothing, `run_to_exit` runs a forkd that must stop and
//! `output` does too, keeping its stdout as well (`--print-config`, `-s status`).

use super::{forkd, poll_until, run_command, PidGuard, Server};
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A forkd command line being built; see the module comment.
#[derive(Debug, Clone)]
pub struct Forkd {
    program: PathBuf,
    args: Vec<OsString>,
    app: Option<OsString>,
    env: Vec<(OsString, OsString)>,
    dir: Option<PathBuf>,
    stdin_piped: bool,
}

/// How a run that stopped ended: its exit code (`None`: killed by a signal), stdout and
/// stderr.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Exit code 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl Default for Forkd {
    fn default() -> Self {
        Forkd::new()
    }
}

impl Forkd {
    /// The forkd binary under test, with no arguments yet.
    pub fn new() -> Forkd {
        Forkd::program(forkd())
    }

    /// Another program that takes forkd's command line.
    pub fn program(program: impl Into<PathBuf>) -> Forkd {
        Forkd {
            program: program.into(),
            args: Vec::new(),
            app: None,
            env: Vec::new(),
            dir: None,
            stdin_piped: false,
        }
    }

    /// `-b 127.0.0.1:0`: a loopback port the kernel picks (`Server::addr` says which).
    pub fn local(self) -> Forkd {
        self.bind("127.0.0.1:0")
    }

    /// `-b ADDR`.
    pub fn bind(self, addr: impl AsRef<OsStr>) -> Forkd {
        self.arg("-b").arg(addr)
    }

    /// `-w N`.
    pub fn workers(self, workers: usize) -> Forkd {
        self.arg("-w").arg(workers.to_string())
    }

    /// `-c PATH`.
    pub fn config(self, path: impl AsRef<OsStr>) -> Forkd {
        self.arg("-c").arg(path)
    }

    /// Writes `text` to `DIR/forkd.toml` and passes it with `-c`.
    pub fn config_in(self, dir: &Path, text: &str) -> Forkd {
        self.config(write_config(dir, text))
    }

    /// The app to serve (`hello`, `echo`, `module:attr`), placed after every option.
    pub fn app(mut self, app: impl AsRef<OsStr>) -> Forkd {
        self.app = Some(app.as_ref().to_owned());
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Forkd {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<S: AsRef<OsStr>>(self, args: impl IntoIterator<Item = S>) -> Forkd {
        args.into_iter().fold(self, Forkd::arg)
    }

    /// An environment variable for forkd (added to the test's own environment).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Forkd {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        self,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Forkd {
        env.into_iter().fold(self, |forkd, (k, v)| forkd.env(k, v))
    }

    /// Runs it in `dir` (a relative `-c` or program path is read from there).
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Forkd {
        self.dir = Some(dir.into());
        self
    }

    /// Gives it a pipe on stdin that stays open and silent (as a terminal would) instead
    /// of the test's own stdin.
    pub fn stdin_piped(mut self) -> Forkd {
        self.stdin_piped = true;
        self
    }

    /// The command as built, for what the methods here do not cover (`pre_exec`, a
    /// stdout or stderr the test reads or stalls itself).
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .args(&self.app)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        if self.stdin_piped {
            command.stdin(Stdio::piped());
        }
        command
    }

    /// Starts it and waits for "all workers ready"; fails the test (with the log) if
    /// that does not come within 10 s.
    pub fn start(&self) -> Server {
        Server::start_command(&mut self.command())
    }

    /// Starts a forkd whose error log is the file `error_log` and waits until it says
    /// "all workers ready" there (10 s at most); `Server::addr` from its "listening on".
    pub fn start_logging_to(&self, error_log: &std::path::Path) -> Server {
        let mut server = self.spawn();
        let read = || std::fs::read_to_string(error_log).unwrap_or_default();
        assert!(
            super::poll_until(Duration::from_secs(10), || read()
                .contains("all workers ready")),
            "not ready:\n{}\n{}",
            read(),
            server.log()
        );
        server.addr = read()
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("address")
            .to_string();
        server
    }

    /// Starts it and waits for nothing; `Server::addr` is left empty.
    pub fn spawn(&self) -> Server {
        Server::spawn(&mut self.command())
    }

    /// Starts it and waits up to `limit` for "all workers ready" or its exit: the
    /// server, or the log of a forkd that exited (or never got ready).
    pub fn start_or_exit(&self, limit: Duration) -> Result<Server, String> {
        start_or_exit(&mut self.command(), limit)
    }

    /// Runs it to its exit (for runs that must stop), killing it past `limit`:
    /// (exit code, stderr).
    pub fn run_to_exit(&self, limit: Duration) -> (Option<i32>, String) {
        run_command(&mut self.command(), limit)
    }

    /// Runs it to its exit keeping stdout and stderr; fails the test (with its stderr)
    /// if it is still running after `limit` (it and its children are killed).
    pub fn output(&self, limit: Duration) -> Output {
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start forkd");
        let guard = PidGuard(child.id() as i32);
        let read_all = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = pipe.read_to_end(&mut text);
                String::from_utf8_lossy(&text).into_owned()
            })
        };
        let stdout = read_all(Box::new(child.stdout.take().expect("stdout")));
        let stderr = read_all(Box::new(child.stderr.take().expect("stderr")));
        let deadline = Instant::now() + limit;
        let code = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status.code();
            }
            if Instant::now() > deadline {
                drop(guard);
                let _ = child.wait();
                let stderr = stderr.join().unwrap_or_default();
                panic!("{:?} still runs after {limit:?}:\n{stderr}", self.command());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        std::mem::forget(guard);
        Output {
            code,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        }
    }
}

/// Starts `command` and waits up to `limit` for "all workers ready" or its exit: the
/// server, or the log of a forkd that exited (or never got ready).
pub fn start_or_exit(command: &mut Command, limit: Duration) -> Result<Server, String> {
    let mut server = Server::spawn(command);
    let ready = poll_until(limit, || {
        server.log_contains("all workers ready") || matches!(server.child.try_wait(), Ok(Some(_)))
    });
    if ready && server.log_contains("all workers ready") {
        Ok(server)
    } else {
        let _ = server.wait_exit(Duration::from_secs(2));
        Err(server.log())
    }
}

/// Writes `text` to `DIR/forkd.toml`; returns its path.
pub fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("forkd.toml");
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf-8 path").to_string()
}
