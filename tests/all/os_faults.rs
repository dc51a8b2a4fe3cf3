//! Operating-system faults: a master killed with SIGKILL, low fd limits,
//! workers running as another user, full disks, stalled pipes, crash loops, floods of
//! idle connections. Each test starts the real binary and provokes the fault.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const NOTIFY_WORKER: &str = include_str!("../exec/notify_worker.py");

/// A directory holding the notify worker and a config running it as exec workers,
/// with `chdir` as given.
fn exec_project(name: &str, chdir: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir(name);
    let app = dir.join("app");
    std::fs::create_dir_all(&app).expect("app dir");
    std::fs::write(app.join("notify_worker.py"), NOTIFY_WORKER).expect("worker");
    let config = dir.join("forkd.toml");
    std::fs::write(
        &config,
        format!(
            "bind = [\"127.0.0.1:0\"]\nworkers = 1\nchdir = {chdir:?}\n[env]\nREADY_DELAY = \"0\"\n[exec]\ncommand = [\"python3\", \"notify_worker.py\"]\nready = \"notify\"\n"
        ),
    )
    .expect("config");
    (dir, config)
}

fn limit_fds(command: &mut Command, soft: u64) {
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let (_, hard) =
                nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard)?;
            Ok(())
        });
    }
}

#[test]
fn exec_workers_start_with_a_soft_fd_limit_of_512() {
    let (dir, config) = exec_project("os-exec-nofile", "");
    let app = dir.join("app");
    let config_text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        config_text.replace("chdir = \"\"", &format!("chdir = {:?}", app.display())),
    )
    .unwrap();
    let mut command = Forkd::new().config(&config).command();
    limit_fds(&mut command, 512);
    let server = start_or_exit(&mut command, Duration::from_secs(15))
        .unwrap_or_else(|log| panic!("forkd did not start with ulimit -n 512:\n{log}"));
    assert_eq!(children_of(server.pid()).len(), 1, "{}", server.log());
}

#[test]
fn a_relative_chdir_is_applied_once_for_exec_workers() {
    let (dir, config) = exec_project("os-exec-chdir", "app");
    let mut command = Forkd::new().config(&config).command();
    command.current_dir(&dir);
    let server = start_or_exit(&mut command, Duration::from_secs(15))
        .unwrap_or_else(|log| panic!("exec worker with chdir = \"app\" did not start:\n{log}"));
    let listening = server
        .log()
        .lines()
        .find(|l| l.contains("listening on "))
        .map(|l| l.split("listening on ").nth(1).unwrap().trim().to_string())
        .expect("address");
    let (status, _, _) = get(&listening, "/").expect("served");
    assert_eq!(status, 200);
}

#[test]
fn a_worker_running_as_another_user_is_seen_ready_at_once() {
    if !nix::unistd::geteuid().is_root() {
        harness::cannot_run_here("needs root to start workers as nobody");
        return;
    }
    let began = Instant::now();
    let server = Forkd::new()
        .local()
        .workers(1)
        .args(["-u", "nobody"])
        .app("hello")
        .start();
    let took = began.elapsed();
    // Before the doorbell worked across uids the master saw it on its 1 s tick.
    assert!(
        took < Duration::from_millis(700),
        "ready after {took:?}:\n{}",
        server.log()
    );
    // A TTIN worker, too.
    let before = server.log().matches("worker ready").count();
    let asked = Instant::now();
    server.signal(Signal::SIGTTIN);
    assert!(poll_until(Duration::from_secs(3), || {
        server.log().matches("worker ready").count() > before
    }));
    let took = asked.elapsed();
    assert!(
        took < Duration::from_millis(700),
        "TTIN worker ready after {took:?}:\n{}",
        server.log()
    );
}

#[test]
fn after_sigkill_of_the_master_the_port_is_free_at_once_and_in_flight_requests_finish() {
    let server = Forkd::new()
        .local()
        .workers(2)
        .args(["--graceful-timeout", "20"])
        .app("echo")
        .env("FORKD_METRICS_BIND", "127.0.0.1:0")
        .start();
    let metrics = metrics_addr(&server);
    let _workers: Vec<PidGuard> = workers_of(server.pid()).into_iter().map(PidGuard).collect();
    let addr = server.addr.clone();
    let slow = {
        let addr = addr.clone();
        std::thread::spawn(move || get(&addr, "/?sleep_ms=3000"))
    };
    std::thread::sleep(Duration::from_millis(400));
    let mut server = server;
    server.signal(Signal::SIGKILL);
    let _ = server.child.wait();
    let killed = Instant::now();
    let mut restarted = None;
    let mut last_failure = String::new();
    while killed.elapsed() < Duration::from_secs(8) {
        let forkd = Forkd::new()
            .bind(&addr)
            .workers(1)
            .app("hello")
            // The metrics port too: the workers closed their copy of it as well.
            .env("FORKD_METRICS_BIND", &metrics);
        match forkd.start_or_exit(Duration::from_secs(10)) {
            Ok(server) => {
                restarted = Some((server, killed.elapsed()));
                break;
            }
            Err(log) => {
                // "Address already in use" while a worker of the dead master holds it.
                last_failure = log;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let (new_server, took) =
        restarted.unwrap_or_else(|| panic!("no restart within 8 s:\n{last_failure}"));
    assert!(
        took < Duration::from_millis(1500),
        "the port was busy for {took:?} after the master died"
    );
    let (status, _, body) = get(&addr, "/").expect("new server serves");
    assert!(
        new_server.log_contains(&format!("serving /metrics on {metrics}")),
        "{}",
        new_server.log()
    );
    drop(new_server);
    assert_eq!((status, body.as_slice()), (200, &b"Hello, world!"[..]));
    let (status, _, _) = slow
        .join()
        .unwrap()
        .expect("the in-flight request finished");
    assert_eq!(status, 200);
}

/// The value of one sample line of /metrics (`name{labels}`), 0 if absent.
fn metric(metrics: &str, sample: &str) -> f64 {
    let (status, _, body) = get(metrics, "/metrics").expect("scrape");
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(sample)?;
            // `name` alone matches every label set of it (summed).
            let rest = match rest.strip_prefix('{') {
                Some(labels) if !sample.ends_with('}') => labels.split_once("} ")?.1,
                _ => rest.strip_prefix(' ')?,
            };
            rest.parse::<f64>().ok()
        })
        .sum()
}

/// A TCP connection to `addr` from the local address `from` (127.0.0.x).
fn connect_from(from: [u8; 4], addr: &str) -> TcpStream {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let target: std::net::SocketAddrV4 = addr.parse().expect("v4 address");
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .expect("socket");
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::new(from[0], from[1], from[2], from[3], 0),
    )
    .expect("bind");
    connect(fd.as_raw_fd(), &SockaddrIn::from(target)).expect("connect");
    TcpStream::from(fd)
}

fn exchange(mut stream: TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

#[test]
fn max_connections_per_ip_refuses_one_client_not_the_others_and_idle_ones_count_as_header_timeouts()
{
    let dir = temp_dir("os-per-ip");
    let config = write_config(
        &dir,
        "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nworkers = 1\nkeepalive = 30\n[limits]\nmax_connections_per_ip = 5\nheader_read_timeout = 2\n[metrics]\nbind = \"127.0.0.1:0\"\n",
    );
    let (code, _) = Forkd::new()
        .config(&config)
        .arg("--print-config")
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    let printed = Forkd::new()
        .config(&config)
        .arg("--print-config")
        .output(Duration::from_secs(10));
    assert!(
        printed.stdout.contains("max_connections_per_ip = 5"),
        "{}",
        printed.stdout
    );
    let bad = write_config(
        &temp_dir("os-per-ip-bad"),
        "[limits]\nmax_connections_per_ip = -1\n",
    );
    let (code, err) = Forkd::new()
        .config(&bad)
        .arg("--check-config")
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("max_connections_per_ip"), "{err}");

    let server = Forkd::new().config(&config).start();
    let metrics = metrics_addr(&server);
    let idle: Vec<TcpStream> = (0..5)
        .map(|_| connect_from([127, 0, 0, 1], &server.addr))
        .collect();
    assert!(poll_until(Duration::from_secs(3), || metric(
        &metrics,
        "forkd_worker_connections"
    ) == 5.0));
    let refused = exchange(connect_from([127, 0, 0, 1], &server.addr));
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    assert!(
        refused.contains("limits.max_connections_per_ip"),
        "{refused}"
    );
    let other = exchange(connect_from([127, 0, 0, 2], &server.addr));
    assert!(
        other.starts_with("HTTP/1.1 200"),
        "another client is served: {other}"
    );
    server.expect_log("worker full", Duration::from_secs(3));
    assert_eq!(
        metric(
            &metrics,
            "forkd_requests_rejected_total{limit=\"max_connections_per_ip\"}"
        ),
        1.0
    );
    // The idle ones are closed at header_read_timeout, and counted there.
    assert!(
        poll_until(Duration::from_secs(6), || metric(
            &metrics,
            "forkd_requests_rejected_total{limit=\"header_read_timeout\"}"
        ) >= 5.0),
        "idle connections not counted as header_read_timeout:\n{}",
        server.log()
    );
    drop(idle);
    let again = exchange(connect_from([127, 0, 0, 1], &server.addr));
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
}

#[test]
fn connections_held_open_to_the_metrics_listener_do_not_exhaust_the_worker() {
    let dir = temp_dir("os-metrics-cap");
    let config = write_config(
        &dir,
        "app = \"hello\"\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n[metrics]\nbind = \"127.0.0.1:0\"\n",
    );
    let mut command = Forkd::new().config(&config).command();
    limit_fds(&mut command, 200);
    let server = start_or_exit(&mut command, Duration::from_secs(10)).expect("started");
    let metrics = metrics_addr(&server);
    let addr = server
        .log()
        .lines()
        .find(|l| l.contains("listening on "))
        .and_then(|l| l.split("listening on ").nth(1))
        .map(|a| a.trim().to_string())
        .expect("address");
    let held: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&metrics).expect("connect to metrics"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // The app is still served: the worker did not run out of fds.
    let mut stream = TcpStream::connect(&addr).expect("connect");
    let answer = {
        stream
            .set_read_timeout(Some(Duration::from_secs(4)))
            .unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    };
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "app not served: {answer:?}\n{}",
        server.log()
    );
    // Past the cap, held connections were closed by the worker.
    let closed = held
        .iter()
        .filter(|s| {
            let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
            matches!((&**s).read(&mut [0u8; 1]), Ok(0))
        })
        .count();
    // 64 per worker (metrics::MAX_CONNECTIONS).
    assert!(closed >= 300 - 64, "only {closed} closed");
}

/// Scrapes /metrics on `stream` (keep-alive); the status, within `limit`.
fn scrape_on(stream: &TcpStream, limit: Duration) -> Result<u16, String> {
    stream.set_read_timeout(Some(limit)).unwrap();
    (&*stream)
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut reader = std::io::BufReader::new(stream);
    read_response_with_body(&mut reader).map(|(status, _, _)| status)
}

#[test]
fn idle_connections_to_the_metrics_listener_do_not_keep_scrapers_out() {
    let dir = temp_dir("os-metrics-flood");
    let config = write_config(
        &dir,
        "app = \"hello\"\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n[metrics]\nbind = \"127.0.0.1:0\"\n",
    );
    let server = Forkd::new().config(&config).start();
    let metrics = metrics_addr(&server);
    // A scraper on 127.0.0.2 with its keep-alive connection, as Prometheus keeps one.
    let kept = connect_from([127, 0, 0, 2], &metrics);
    assert_eq!(scrape_on(&kept, Duration::from_secs(5)), Ok(200));
    // 150 idle connections from 127.0.0.1, more than a worker keeps (64).
    let idle: Vec<TcpStream> = (0..150)
        .map(|_| connect_from([127, 0, 0, 1], &metrics))
        .collect();
    // Accepted: the oldest of them are closed to make room for the newer.
    let closed = |s: &TcpStream| {
        let _ = s.set_read_timeout(Some(Duration::from_millis(1)));
        matches!((&*s).read(&mut [0u8; 1]), Ok(0))
    };
    assert!(
        poll_until(Duration::from_secs(5), || idle
            .iter()
            .filter(|s| closed(s))
            .count()
            >= 150 - 64),
        "the idle connections were not closed past the cap:\n{}",
        server.log()
    );
    // Every scrape is answered within a second: on the scraper's kept connection, on a
    // new one from its address, and on a new one from the flood's own address.
    let quick = Duration::from_secs(1);
    assert_eq!(scrape_on(&kept, quick), Ok(200), "kept-alive scrape");
    let fresh = connect_from([127, 0, 0, 2], &metrics);
    assert_eq!(scrape_on(&fresh, quick), Ok(200), "new connection");
    let same = connect_from([127, 0, 0, 1], &metrics);
    assert_eq!(scrape_on(&same, quick), Ok(200), "from the flood's address");
    // The cap holds: the flood keeps fewer than 64 open.
    let open = idle.iter().filter(|s| !closed(s)).count();
    assert!(open < 64, "{open} idle connections still open");
}

/// A tmpfs of `size` mounted on `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn on_a_full_disk_access_log_lines_stay_whole_and_drops_are_counted() {
    let dir = temp_dir("os-full-disk");
    let Some(disk) = Tmpfs::mount(&dir.join("logs"), "64k") else {
        harness::cannot_run_here("cannot mount a tmpfs (needs root)");
        return;
    };
    // Nearly full: a few KiB left.
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![b'.'; 56 * 1024]).expect("filler");
    let access = disk.0.join("access.log");
    let config = write_config(
        &dir,
        &format!(
            "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nworkers = 2\n[log]\naccess_log = {access:?}\nerror_log = {:?}\n[metrics]\nbind = \"127.0.0.1:0\"\n",
            dir.join("error.log")
        ),
    );
    let error_log = dir.join("error.log");
    let server = Forkd::new().config(&config).start_logging_to(&error_log);
    let read_error_log = || std::fs::read_to_string(&error_log).unwrap_or_default();
    let line = read_error_log();
    let metrics = line
        .split("serving /metrics on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("metrics address")
        .to_string();
    let agent = "x".repeat(300);
    let send = |n: usize| {
        for _ in 0..n {
            let raw = format!(
                "GET /a HTTP/1.1\r\nHost: t\r\nUser-Agent: {agent}\r\nConnection: close\r\n\r\n"
            );
            let (status, _, _) = request(&server.addr, &raw).expect("request");
            assert_eq!(status, 200);
        }
        // The access log writer appends every 200 ms.
        std::thread::sleep(Duration::from_millis(400));
    };
    for _ in 0..6 {
        send(7);
    }
    let check_whole = |text: &str| {
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "torn last line: {:?}",
            text.lines().last()
        );
        for line in text.lines() {
            assert!(
                line.starts_with("127.0.0.1 - - [") && line.matches("127.0.0.1 - - [").count() == 1,
                "not a whole line: {line:?}"
            );
            let pid = line.rsplit(' ').next().unwrap_or("");
            assert!(pid.parse::<u32>().is_ok(), "not a whole line: {line:?}");
        }
    };
    let text = std::fs::read_to_string(&access).expect("access log");
    check_whole(&text);
    assert!(text.lines().count() < 42, "the disk was not full");
    assert!(
        poll_until(Duration::from_secs(5), || read_error_log()
            .contains("access log write failed")),
        "no report of the dropped lines:\n{}",
        read_error_log()
    );
    assert!(metric(&metrics, "forkd_log_lines_dropped_total") > 0.0);
    // Room again: new lines are whole, none glued to an old fragment.
    std::fs::remove_file(&filler).expect("free space");
    send(5);
    let text = std::fs::read_to_string(&access).expect("access log");
    check_whole(&text);
    drop(server);
    drop(disk);
}

#[test]
fn a_master_whose_stderr_is_never_read_still_supervises() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let dir = temp_dir("os-stalled-stderr");
    let socket = dir.join("s.sock");
    let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
    // A raw command: its stderr is a pipe this test holds and never reads, which
    // `Server` (it always reads stderr) cannot give.
    let mut command = Forkd::new()
        .bind(format!("unix:{}", socket.display()))
        .workers(2)
        .args(["--log-level", "debug"])
        .app("hello")
        .command();
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(
            write_end.try_clone().expect("dup"),
        ));
    let mut child = command.spawn().expect("start forkd");
    let _guard = PidGuard(child.id() as i32);
    let master = child.id() as i32;
    let addr = format!("unix:{}", socket.display());
    assert!(
        poll_until(Duration::from_secs(10), || get(&addr, "/")
            .is_ok_and(|r| r.0 == 200)),
        "forkd does not serve"
    );
    // Fill the pipe through an own non-blocking handle (forkd's stays as it is).
    let raw = nix::fcntl::open(
        format!("/proc/self/fd/{}", write_end.as_raw_fd()).as_str(),
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_NONBLOCK,
        nix::sys::stat::Mode::empty(),
    )
    .expect("reopen pipe");
    // SAFETY: just opened.
    let filler = unsafe { OwnedFd::from_raw_fd(raw) };
    while nix::unistd::write(&filler, &[b'#'; 4096]).is_ok() {}
    while nix::unistd::write(&filler, b"#").is_ok() {}
    drop(filler);
    drop(write_end);
    // A worker killed now must be replaced (the master logs that, into a full pipe).
    let workers = workers_of(master);
    assert_eq!(workers.len(), 2);
    for round in 0..3 {
        let victim = workers_of(master)[0];
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL).unwrap();
        assert!(
            poll_until(Duration::from_secs(5), || {
                let now = workers_of(master);
                now.len() == 2 && !now.contains(&victim)
            }),
            "round {round}: the killed worker was not replaced"
        );
    }
    assert!(get(&addr, "/").is_ok_and(|r| r.0 == 200));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(master), Signal::SIGTERM).unwrap();
    assert!(
        poll_until(Duration::from_secs(10), || matches!(
            child.try_wait(),
            Ok(Some(_))
        )),
        "TERM did not stop a master whose stderr is full"
    );
    drop(read_end);
}

#[test]
fn a_worker_that_crashes_right_after_ready_is_restarted_with_backoff() {
    let server = Forkd::new().local().workers(1).app("hello").start();
    let began = Instant::now();
    let mut killed = std::collections::HashSet::new();
    while began.elapsed() < Duration::from_secs(4) {
        for pid in workers_of(server.pid()) {
            if !killed.contains(&pid) && server.log_contains(&format!("pid={pid} worker=")) {
                let ready = server
                    .log()
                    .lines()
                    .any(|l| l.contains("worker ready") && l.contains(&format!("pid={pid} ")));
                if ready {
                    let _ =
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                    killed.insert(pid);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = server.log();
    // 0.5 + 1 + 2 s of backoff fit in 4 s: at most 4 or 5 crashes, not dozens.
    assert!(
        killed.len() <= 5,
        "{} restarts in 4 s:\n{log}",
        killed.len()
    );
    assert!(killed.len() >= 2, "{log}");
    assert!(log.contains("replacing it in 0.5s"), "{log}");
    assert!(log.contains("replacing it in 1.0s"), "{log}");
}

#[test]
fn panics_reach_a_file_error_log_and_are_access_logged_as_500() {
    let dir = temp_dir("os-panic");
    let error_log = dir.join("error.log");
    let access_log = dir.join("access.log");
    let example = counter_example();
    let server = Forkd::program(example)
        .local()
        .workers(1)
        .arg("--error-log")
        .arg(&error_log)
        .arg("--access-log")
        .arg(&access_log)
        .start_logging_to(&error_log);
    assert!(get(&server.addr, "/panic").is_err());
    assert!(
        poll_until(Duration::from_secs(3), || std::fs::read_to_string(
            &error_log
        )
        .unwrap_or_default()
        .contains("counter: /panic requested")),
        "the panic is not in the error log file:\n{}",
        std::fs::read_to_string(&error_log).unwrap_or_default()
    );
    assert!(
        poll_until(Duration::from_secs(3), || std::fs::read_to_string(
            &access_log
        )
        .unwrap_or_default()
        .contains("\"GET /panic HTTP/1.1\" 500 ")),
        "{}",
        std::fs::read_to_string(&access_log).unwrap_or_default()
    );
}

#[test]
fn accept_failures_are_rate_limited_and_a_short_fd_limit_is_warned_about() {
    let mut command = Forkd::new().local().workers(1).app("hello").command();
    limit_fds(&mut command, 100);
    let server = start_or_exit(&mut command, Duration::from_secs(10)).expect("started");
    assert!(server.log_contains("RLIMIT_NOFILE"), "{}", server.log());
    let addr = server
        .log()
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("address")
        .to_string();
    let held: Vec<TcpStream> = (0..150)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let lines = server.log().matches("accept failed").count();
    assert!(lines >= 1, "{}", server.log());
    assert!(
        lines <= 2,
        "{lines} accept lines in 1.5 s:\n{}",
        server.log()
    );
    drop(held);
}

/// A cgroup v1 memory group below this process's own, removed on drop.
struct MemoryCgroup(PathBuf);

impl MemoryCgroup {
    fn new(name: &str, limit: &str) -> Option<MemoryCgroup> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let path = own
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))?;
        let dir = PathBuf::from(format!("/sys/fs/cgroup/memory{path}/{name}"));
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::write(dir.join("memory.limit_in_bytes"), limit).ok()?;
        let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), limit);
        Some(MemoryCgroup(dir))
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.0.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|p| p.parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = poll_until(Duration::from_secs(3), || {
            std::fs::remove_dir(&self.0).is_ok()
        });
    }
}

#[test]
fn a_worker_taken_by_the_oom_killer_is_logged_as_such() {
    let name = format!("forkd-oom-{}", std::process::id());
    let Some(cgroup) = MemoryCgroup::new(&name, "48M") else {
        harness::cannot_run_here("no writable cgroup v1 memory controller");
        return;
    };
    let procs = cgroup.0.join("cgroup.procs");
    let mut command = Forkd::new().local().workers(1).app("echo").command();
    // SAFETY: only open/write/close between fork and exec.
    unsafe {
        command.pre_exec(move || std::fs::write(&procs, "0"));
    }
    let server = start_or_exit(&mut command, Duration::from_secs(10)).expect("started");
    let addr = server
        .log()
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("address")
        .to_string();
    // 64 MiB of body in a 48 MiB group.
    let _ = get(&addr, &format!("/?bytes={}", 64 * 1024 * 1024));
    server.expect_log("worker exited unexpectedly", Duration::from_secs(10));
    assert!(
        server.log_contains("OOM killer"),
        "the OOM kill is not named:\n{}",
        server.log()
    );
    drop(server);
    drop(cgroup);
}

#[test]
fn a_failed_allocation_is_in_a_file_error_log_and_named() {
    let dir = temp_dir("os-alloc");
    let error_log = dir.join("error.log");
    let server = Forkd::new()
        .local()
        .workers(1)
        .arg("--error-log")
        .arg(&error_log)
        .app("echo")
        .start_logging_to(&error_log);
    let worker = workers_of(server.pid())[0];
    // Room for 16 MiB more address space in the worker: echo's 64 MiB body fails.
    let status = std::fs::read_to_string(format!("/proc/{worker}/status")).expect("status");
    let vm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmSize");
    let limit = vm_kib * 1024 + 16 * 1024 * 1024;
    let ok = Command::new("prlimit")
        .args(["--pid", &worker.to_string(), &format!("--as={limit}")])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        harness::cannot_run_here("prlimit(1) is not available");
        return;
    }
    let _ = get(&server.addr, &format!("/?bytes={}", 64 * 1024 * 1024));
    let read = || std::fs::read_to_string(&error_log).unwrap_or_default();
    assert!(
        poll_until(Duration::from_secs(5), || read()
            .contains("worker exited unexpectedly")),
        "{}",
        read()
    );
    let log = read();
    assert!(
        log.contains("memory allocation of 67108864 bytes failed"),
        "the runtime's message is not in the error log file:\n{log}"
    );
    assert!(log.contains("SIGABRT: an abort"), "{log}");
}
