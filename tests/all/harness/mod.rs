//! Shared test harness: starts the real forkd binary (`Forkd`, in builder.rs), reads its
//! error log, finds its workers in /proc, talks HTTP over real sockets, and runs a load
//! client that counts every failure. Every wait is bounded; every process started is
//! killed on drop.
#![allow(dead_code)]

mod builder;

#[allow(unused_imports)] // not every test binary uses every helper
pub use builder::{start_or_exit, write_config, Forkd, Output};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running forkd master; SIGKILLs it and its workers on drop.
pub struct Server {
    pub child: Child,
    log: Arc<Mutex<String>>,
    pub addr: String,
}

impl Server {
    /// Starts `command` (forkd, or something that execs it) and waits for "all workers
    /// ready"; `addr` is the first address it logs listening on.
    pub fn start_command(command: &mut Command) -> Server {
        let mut server = Server::spawn(command);
        server.expect_log("all workers ready", Duration::from_secs(10));
        let log = server.log();
        let line = log
            .lines()
            .find(|l| l.contains("listening on "))
            .expect("listening line");
        // Text or JSON log lines: the address ends at a space or a quote.
        server.addr = line
            .split("listening on ")
            .nth(1)
            .unwrap()
            .split(|c: char| c.is_whitespace() || c == '"')
            .next()
            .unwrap()
            .to_string();
        server
    }
    /// Starts `command` (forkd, or something that execs it) capturing its error log,
    /// without waiting for anything; `addr` is left empty.
    pub fn spawn(command: &mut Command) -> Server {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start forkd");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Server {
            child,
            log,
            addr: String::new(),
        }
    }
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
    /// Waits (up to `limit`) for `needle` in the error log; fails the test with the log.
    pub fn expect_log(&self, needle: &str, limit: Duration) {
        assert!(
            poll_until(limit, || self.log_contains(needle)),
            "forkd did not log {needle:?} within {limit:?}:\n{}",
            self.log()
        );
    }
    pub fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().contains(needle)
    }
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("kill");
    }
    /// Waits up to `limit` for the master to exit; its exit code if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let mut code = None;
        poll_until(limit, || {
            code = self.child.try_wait().ok().flatten().and_then(|s| s.code());
            code.is_some()
        });
        code
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for pid in children_of(self.pid()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn children_of(parent: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        if rest.split(' ').nth(1).and_then(|p| p.parse::<i32>().ok()) == Some(parent) {
            pids.push(pid);
        }
    }
    pids
}

pub fn workers_of(master: i32) -> Vec<i32> {
    children_of(master)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"forkd: worker"))
        })
        .collect()
}

pub fn poll_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// A fresh directory for one test: `name`, the process id and a count, so that tests
/// sharing a process (`cargo test` runs them as threads) never share a directory.
pub fn temp_dir(name: &str) -> PathBuf {
    static MADE: AtomicU64 = AtomicU64::new(0);
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("forkd-zd-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Counts of a load run.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// Of `failed`: connections that could not be made at all (refused, ...).
    pub connect_failed: AtomicU64,
    pub errors: Mutex<Vec<String>>,
}

impl Tally {
    pub fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 10 {
            errors.push(what);
        }
    }
}

/// Reads one HTTP/1.1 response with a Content-Length; returns (status, close?).
pub fn read_response(reader: &mut BufReader<TcpStream>) -> Result<(u16, bool), String> {
    read_response_with_body(reader).map(|(status, close, _)| (status, close))
}

/// Reads one response: (status, whether the server said `Connection: close`, body).
pub fn read_response_with_body(reader: &mut impl BufRead) -> Result<(u16, bool, Vec<u8>), String> {
    let mut line = String::new();
    if reader
        .read_line(&mut line)
        .map_err(|e| format!("read status: {e}"))?
        == 0
    {
        return Err("connection closed before the response".into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("bad status line {line:?}"))?;
    let (mut length, mut close) = (0usize, false);
    loop {
        line.clear();
        if reader
            .read_line(&mut line)
            .map_err(|e| format!("read header: {e}"))?
            == 0
        {
            return Err("connection closed in the headers".into());
        }
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(v) = header.strip_prefix("content-length:") {
            length = v
                .trim()
                .parse()
                .map_err(|_| "bad content-length".to_string())?;
        }
        if header == "connection: close" {
            close = true;
        }
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("short body: {e}"))?;
    Ok((status, close, body))
}

/// `connections` threads sending keep-alive requests until `stop`, reconnecting only
/// when the server says `Connection: close`. Any other end of a connection is a failure.
pub fn load(
    addr: &str,
    connections: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<Tally>, Vec<std::thread::JoinHandle<()>>) {
    load_with(addr, connections, stop, true)
}

/// As `load`; with `keep_alive` false every request has its own connection
/// (`Connection: close`), as a client behind a non-pooling proxy sends them.
pub fn load_with(
    addr: &str,
    connections: usize,
    stop: Arc<AtomicBool>,
    keep_alive: bool,
) -> (Arc<Tally>, Vec<std::thread::JoinHandle<()>>) {
    let request: &'static [u8] = if keep_alive {
        b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    } else {
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    };
    let addr = addr.to_string();
    let connect = move || {
        let stream = TcpStream::connect(&addr).map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        Ok(stream)
    };
    load_over(connections, stop, request, keep_alive, connect)
}

/// The load client of `load_with` over any stream `connect` makes (each with a read
/// timeout): `connections` threads sending `request` until `stop`, reconnecting when the
/// server says `Connection: close` (or after every request without `keep_alive`). A
/// failed connect, any other end of a connection and any non-2xx is a failure.
pub fn load_over<S, C>(
    connections: usize,
    stop: Arc<AtomicBool>,
    request: &'static [u8],
    keep_alive: bool,
    connect: C,
) -> (Arc<Tally>, Vec<std::thread::JoinHandle<()>>)
where
    S: Read + Write,
    C: Fn() -> Result<S, String> + Clone + Send + 'static,
{
    let tally = Arc::new(Tally::default());
    let handles = (0..connections)
        .map(|_| {
            let (connect, stop, tally) = (connect.clone(), stop.clone(), tally.clone());
            std::thread::spawn(move || {
                let mut conn: Option<BufReader<S>> = None;
                while !stop.load(Ordering::Relaxed) {
                    if conn.is_none() {
                        match connect() {
                            Ok(s) => conn = Some(BufReader::new(s)),
                            Err(e) => {
                                tally.connect_failed.fetch_add(1, Ordering::Relaxed);
                                tally.fail(e);
                                std::thread::sleep(Duration::from_millis(10));
                                continue;
                            }
                        }
                    }
                    let reader = conn.as_mut().unwrap();
                    let sent = reader.get_mut().write_all(request);
                    let result = sent
                        .map_err(|e| format!("write: {e}"))
                        .and_then(|_| read_response_with_body(reader));
                    match result {
                        Ok((status, close, _)) if (200..300).contains(&status) => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                            if close || !keep_alive {
                                conn = None;
                            }
                        }
                        Ok((status, _, _)) => {
                            tally.fail(format!("status {status}"));
                            conn = None;
                        }
                        Err(e) => {
                            tally.fail(e);
                            conn = None;
                        }
                    }
                }
            })
        })
        .collect();
    (tally, handles)
}

/// A thread that GETs `path` every 50 ms until `stop`, counting each answer in `tally`
/// (a status other than 200 is a failure): the growing-memory side of recycling tests.
pub fn leak_requests(
    addr: &str,
    path: &'static str,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> std::thread::JoinHandle<()> {
    let addr = addr.to_string();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match get(&addr, path) {
                Ok((200, _, _)) => {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok((status, _, _)) => tally.fail(format!("leak request: status {status}")),
                Err(e) => tally.fail(format!("leak request: {e}")),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

pub fn finish(stop: Arc<AtomicBool>, handles: Vec<std::thread::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
}

/// `rounds` HUPs under keep-alive load on `connections` connections, each once the
/// previous one's generation has started; then waits for `workers` workers to remain
/// (every old one stopped for the reload) and asserts that no request failed.
pub fn hups_under_load(server: &Server, rounds: usize, connections: usize, workers: usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load(&server.addr, connections, stop.clone());
    for round in 1..=rounds {
        server.signal(nix::sys::signal::Signal::SIGHUP);
        let generation = format!("generation={}", round + 1);
        // Wait for the new generation to be started before the next HUP.
        server.expect_log(&generation, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(100));
    }
    let settled = poll_until(Duration::from_secs(10), || {
        workers_of(server.pid()).len() == workers
            && server.log().matches("reason=\"reload\"").count() >= rounds * workers
    });
    finish(stop, handles);
    assert!(
        settled,
        "workers did not settle at {workers}: {:?}\n{}",
        workers_of(server.pid()),
        server.log()
    );
    assert_no_failures(&tally, server, &format!("{rounds} HUPs"));
}

pub fn assert_no_failures(tally: &Tally, server: &Server, what: &str) {
    let (ok, failed) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    eprintln!("{what}: {ok} ok, {failed} failed");
    assert!(ok > 100, "{what}: too little traffic got through ({ok})");
    assert_eq!(
        failed,
        0,
        "{what}: failures {:?}\nlog:\n{}",
        tally.errors.lock().unwrap(),
        server.log()
    );
}

pub fn forkd() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_forkd"))
}

/// One request on a fresh connection (`Connection: close`): (status, headers, body).
pub fn request(addr: &str, raw: &str) -> Result<(u16, String, Vec<u8>), String> {
    let mut stream: Box<dyn ReadWrite> = match addr.strip_prefix("unix:") {
        Some(path) => Box::new(
            std::os::unix::net::UnixStream::connect(path).map_err(|e| format!("connect: {e}"))?,
        ),
        None => Box::new(TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?),
    };
    stream.set_timeout(Duration::from_secs(20));
    stream
        .write_all(raw.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut data = Vec::new();
    stream
        .read_to_end(&mut data)
        .map_err(|e| format!("read: {e}"))?;
    let split = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no header end")?;
    let head = String::from_utf8_lossy(&data[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status")?;
    Ok((status, head, data[split + 4..].to_vec()))
}

/// GET `path` on a fresh connection.
pub fn get(addr: &str, path: &str) -> Result<(u16, String, Vec<u8>), String> {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    )
}

pub trait ReadWrite: Read + Write {
    fn set_timeout(&self, timeout: Duration);
}
impl ReadWrite for TcpStream {
    fn set_timeout(&self, timeout: Duration) {
        let _ = self.set_read_timeout(Some(timeout));
    }
}
impl ReadWrite for std::os::unix::net::UnixStream {
    fn set_timeout(&self, timeout: Duration) {
        let _ = self.set_read_timeout(Some(timeout));
    }
}

/// The embedded example app, built once per test process.
pub fn counter_example() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build_example("counter")).clone()
}

/// The axum example (examples/axum.rs), built once per test process.
pub fn axum_example() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build_example("axum")).clone()
}

/// Builds `examples/NAME.rs` (debug, as the tests are) and returns its binary.
fn build_example(name: &str) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--example", name, "--quiet"])
        .status()
        .unwrap_or_else(|e| panic!("cargo build --example {name}: {e}"));
    assert!(status.success(), "building the {name} example failed");
    let bin = forkd();
    bin.parent()
        .expect("target dir")
        .join("examples")
        .join(name)
}

/// Starts `binary` with `-p` pointing at a pidfile in a fresh temp dir named `name`,
/// plus `args`; returns the server and the pidfile path.
pub fn start_with_pidfile(name: &str, binary: &Path, args: &[&str]) -> (Server, PathBuf) {
    let pidfile = temp_dir(name).join("forkd.pid");
    let pid_arg = pidfile.to_str().expect("utf-8 temp path").to_string();
    let mut all: Vec<&str> = vec!["-p", &pid_arg];
    all.extend_from_slice(args);
    (Forkd::program(binary).args(all).start(), pidfile)
}

/// The pid a pidfile names, if it exists and holds one.
pub fn read_pid(pidfile: &Path) -> Option<i32> {
    std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
}

/// Kills a process that is not our child (a new master started by USR2) and its
/// children on drop.
/// Sends `signal` to `pid`, ignoring an error (the process may be gone already): for
/// processes that are not our children, such as a master started by USR2.
pub fn signal_pid(pid: i32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

pub struct PidGuard(pub i32);

impl Drop for PidGuard {
    fn drop(&mut self) {
        if self.0 <= 0 {
            return;
        }
        for pid in children_of(self.0).into_iter().chain([self.0]) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Runs a command to completion within `limit` (it and its children are killed past
/// it): (exit code, stderr).
pub fn run_command(command: &mut Command, limit: Duration) -> (Option<i32>, String) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start command");
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if Instant::now() > deadline {
            drop(PidGuard(child.id() as i32));
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (code, reader.join().unwrap_or_default())
}

/// Waits up to `limit` for the pidfile to name a master other than `old` (a USR2
/// upgrade); returns its pid, or 0.
pub fn new_master(pidfile: &Path, old: i32, limit: Duration) -> i32 {
    let mut new = 0;
    poll_until(limit, || {
        new = read_pid(pidfile).filter(|p| *p != old).unwrap_or(0);
        new > 0
    });
    new
}

/// Writes `text` to `forkd.toml` in a fresh temp dir named `name`; returns its path.
pub fn temp_config(name: &str, text: &str) -> String {
    write_config(&temp_dir(name), text)
}

/// The address of the metrics listener, from the log line saying where it serves.
pub fn metrics_addr(server: &Server) -> String {
    server.expect_log("serving /metrics on ", Duration::from_secs(5));
    server
        .log()
        .split("serving /metrics on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("metrics address")
        .to_string()
}

/// A loopback port that was free a moment ago (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("probe port")
        .port()
}

/// A single-threaded tokio runtime for the async clients (hyper's HTTP/2 client).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// An HTTP/2 client (prior knowledge, over TCP) to `addr`, its connection driven by a
/// spawned task: call inside a tokio runtime.
pub async fn h2_client<B>(addr: &str) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

/// A response body as JSON; fails the test showing the body's start if it is not.
pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {:?}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        )
    })
}

/// Writes `raw` (a write error is fine: the server may close early) and reads until
/// the server closes or `limit` passes; returns everything read.
pub fn converse(addr: &str, raw: &[u8], limit: Duration) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let _ = stream.write_all(raw);
    let mut data = Vec::new();
    let _ = stream.read_to_end(&mut data);
    String::from_utf8_lossy(&data).to_string()
}

/// GET /echo from the `echo` app with `extra_headers` (each ending in CRLF): the JSON
/// it answers with (the worker's pid, the client address and scheme it saw, ...).
pub fn echo_json(addr: &str, extra_headers: &str) -> serde_json::Value {
    let (status, _, body) = request(
        addr,
        &format!("GET /echo HTTP/1.1\r\nHost: t\r\n{extra_headers}Connection: close\r\n\r\n"),
    )
    .expect("echo request");
    assert_eq!(status, 200);
    serde_json::from_slice(&body).expect("echo json")
}

/// The pid of the worker of the `echo` app that answers a request.
pub fn worker_pid(addr: &str) -> u64 {
    echo_json(addr, "")["pid"].as_u64().expect("pid")
}

/// For a test that needs what this machine lacks (root, a cgroup memory controller, a
/// tool that `scripts/test-deps.sh` installs): fails, so that a run which tested less than
/// it says cannot pass; with `ALLOW_TEST_SKIPS=1` in the environment it says "skipped"
/// instead and the test returns. CI runs as root after test-deps.sh: nothing skips there.
pub fn cannot_run_here(why: &str) {
    if std::env::var_os("ALLOW_TEST_SKIPS").is_some_and(|v| v == "1") {
        eprintln!("skipped: {why}");
        return;
    }
    panic!("this test cannot run here: {why} (ALLOW_TEST_SKIPS=1 skips it instead)");
}
