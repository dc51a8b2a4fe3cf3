//! Zero dropped requests: HUP rolling restarts, max_requests recycling and the USR2
//! binary upgrade, each under a keep-alive load client that counts every failure
//! (connect error, reset, short read, non-2xx). The real binary, real sockets, real
//! signals; every wait has a deadline and every process is killed by a guard.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running forkd master; SIGKILLs it and its workers on drop.
struct Server {
    child: Child,
    log: Arc<Mutex<String>>,
    addr: String,
}

impl Server {
    fn start(binary: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(binary)
            .args(args)
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
        let mut server = Server {
            child,
            log,
            addr: String::new(),
        };
        let found = poll_until(Duration::from_secs(10), || {
            server.log_contains("all workers ready")
        });
        assert!(found, "forkd did not become ready:\n{}", server.log());
        let log = server.log();
        let line = log
            .lines()
            .find(|l| l.contains("listening on "))
            .expect("listening line");
        server.addr = line
            .split("listening on ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        server
    }
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
    fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().contains(needle)
    }
    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("kill");
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

fn children_of(parent: i32) -> Vec<i32> {
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

fn workers_of(master: i32) -> Vec<i32> {
    children_of(master)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"forkd: worker"))
        })
        .collect()
}

fn poll_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("forkd-zd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Counts of a load run.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 10 {
            errors.push(what);
        }
    }
}

/// Reads one HTTP/1.1 response with a Content-Length; returns (status, close?).
fn read_response(reader: &mut BufReader<TcpStream>) -> Result<(u16, bool), String> {
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
    Ok((status, close))
}

/// `connections` threads sending keep-alive requests until `stop`, reconnecting only
/// when the server says `Connection: close`. Any other end of a connection is a failure.
fn load(
    addr: &str,
    connections: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<Tally>, Vec<std::thread::JoinHandle<()>>) {
    let tally = Arc::new(Tally::default());
    let handles = (0..connections)
        .map(|_| {
            let (addr, stop, tally) = (addr.to_string(), stop.clone(), tally.clone());
            std::thread::spawn(move || {
                let mut conn: Option<BufReader<TcpStream>> = None;
                while !stop.load(Ordering::Relaxed) {
                    if conn.is_none() {
                        match TcpStream::connect(&addr) {
                            Ok(s) => {
                                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                                conn = Some(BufReader::new(s));
                            }
                            Err(e) => {
                                tally.fail(format!("connect: {e}"));
                                std::thread::sleep(Duration::from_millis(10));
                                continue;
                            }
                        }
                    }
                    let reader = conn.as_mut().unwrap();
                    let sent = reader
                        .get_mut()
                        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
                    let result = sent
                        .map_err(|e| format!("write: {e}"))
                        .and_then(|_| read_response(reader));
                    match result {
                        Ok((status, close)) if (200..300).contains(&status) => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                            if close {
                                conn = None;
                            }
                        }
                        Ok((status, _)) => {
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

fn finish(stop: Arc<AtomicBool>, handles: Vec<std::thread::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
}

fn assert_no_failures(tally: &Tally, server: &Server, what: &str) {
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

fn forkd() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_forkd"))
}

#[test]
fn twenty_hups_under_keepalive_load_drop_nothing() {
    let server = Server::start(&forkd(), &["-b", "127.0.0.1:0", "-w", "2", "hello"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load(&server.addr, 64, stop.clone());
    for round in 1..=20 {
        server.signal(nix::sys::signal::Signal::SIGHUP);
        let generation = format!("generation={}", round + 1);
        // Wait for the new generation to be started before the next HUP.
        assert!(
            poll_until(Duration::from_secs(10), || server.log_contains(&generation)),
            "no {generation}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let settled = poll_until(Duration::from_secs(10), || {
        workers_of(server.pid()).len() == 2
            && server.log().matches("reason=\"reload\"").count() >= 40
    });
    finish(stop, handles);
    assert!(
        settled,
        "workers did not settle at 2: {:?}\n{}",
        workers_of(server.pid()),
        server.log()
    );
    assert_no_failures(&tally, &server, "20 HUPs");
}

#[test]
fn max_requests_recycling_under_keepalive_load_drops_nothing() {
    let server = Server::start(
        &forkd(),
        &[
            "-b",
            "127.0.0.1:0",
            "-w",
            "2",
            "--max-requests",
            "1000",
            "--max-requests-jitter",
            "200",
            "hello",
        ],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load(&server.addr, 64, stop.clone());
    let recycled = poll_until(Duration::from_secs(20), || {
        server.log().matches("reason=\"max_requests\"").count() >= 10
    });
    finish(stop, handles);
    assert!(recycled, "workers were not recycled:\n{}", server.log());
    assert_no_failures(&tally, &server, "max_requests recycling");
}

#[test]
fn usr2_upgrade_under_load_drops_nothing_and_moves_the_pidfile() {
    let dir = temp_dir("usr2");
    // Upgrade to a copy of the binary, as a deploy would replace it on disk.
    let binary = dir.join("forkd");
    std::fs::copy(forkd(), &binary).expect("copy binary");
    let pidfile = dir.join("forkd.pid");
    let server = Server::start(
        &binary,
        &[
            "-b",
            "127.0.0.1:0",
            "-w",
            "2",
            "-p",
            pidfile.to_str().unwrap(),
            "hello",
        ],
    );
    let old = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load(&server.addr, 64, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    // Replace the binary on disk (rename over it), then upgrade.
    let fresh = dir.join("forkd.new");
    std::fs::copy(forkd(), &fresh).expect("copy binary");
    std::fs::rename(&fresh, &binary).expect("replace binary");
    server.signal(nix::sys::signal::Signal::SIGUSR2);
    let read_pid = || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
    };
    let moved = poll_until(Duration::from_secs(15), || {
        read_pid().is_some_and(|p| p != old)
    });
    let new_pid = read_pid().unwrap_or(0);
    let mut server = server;
    let old_gone = poll_until(Duration::from_secs(15), || {
        matches!(server.child.try_wait(), Ok(Some(_)))
    });
    std::thread::sleep(Duration::from_millis(300));
    finish(stop, handles);
    // The new master is no longer our child: stop it by pid.
    let new_workers = workers_of(new_pid);
    if new_pid > 0 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(new_pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    for w in new_workers {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(w),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        moved,
        "pidfile did not move to a new master:\n{}",
        server.log()
    );
    assert!(old_gone, "old master did not exit:\n{}", server.log());
    assert!(
        !Path::new(&format!("{}.oldbin", pidfile.display())).exists(),
        ".oldbin left behind"
    );
    assert_no_failures(&tally, &server, "USR2 upgrade");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn usr2_to_a_binary_that_exits_keeps_the_old_master_and_restores_the_pidfile() {
    let dir = temp_dir("usr2-bad");
    let binary = dir.join("forkd");
    std::fs::copy(forkd(), &binary).expect("copy binary");
    let pidfile = dir.join("forkd.pid");
    let server = Server::start(
        &binary,
        &[
            "-b",
            "127.0.0.1:0",
            "-w",
            "1",
            "-p",
            pidfile.to_str().unwrap(),
            "hello",
        ],
    );
    let broken = dir.join("broken");
    std::fs::write(&broken, "#!/bin/sh\nexit 1\n").expect("write script");
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::rename(&broken, &binary).expect("replace binary");
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load(&server.addr, 8, stop.clone());
    server.signal(nix::sys::signal::Signal::SIGUSR2);
    let failed = poll_until(Duration::from_secs(10), || {
        server.log_contains("upgrade failed")
    });
    std::thread::sleep(Duration::from_millis(300));
    finish(stop, handles);
    assert!(failed, "no upgrade failure logged:\n{}", server.log());
    let pid = std::fs::read_to_string(&pidfile).expect("pidfile restored");
    assert_eq!(pid.trim(), server.pid().to_string());
    assert_no_failures(&tally, &server, "failed USR2");
    let _ = std::fs::remove_dir_all(dir);
}
