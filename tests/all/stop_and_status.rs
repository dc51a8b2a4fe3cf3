//! Stopping as clients expect and seeing the master's state: after TERM (and
//! `shutdown_delay`) new connections are refused at once while requests in flight
//! finish; `forkd -s status` asks the master over its control socket.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use nix::sys::signal::Signal;
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn after_term_and_shutdown_delay_new_connections_are_refused_while_in_flight_requests_finish() {
    let path = temp_config(
        "stop-refuses",
        "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nworkers = 2\ngraceful_timeout = 20\n\
         [health]\nshutdown_delay = \"300ms\"\n",
    );
    let mut server = Forkd::new().config(&path).start();
    let addr = server.addr.clone();
    let slow_addr = addr.clone();
    let slow = std::thread::spawn(move || get(&slow_addr, "/?sleep_ms=4000"));
    // The slow request is in a worker before the stop begins.
    std::thread::sleep(Duration::from_millis(500));
    let term = Instant::now();
    server.signal(Signal::SIGTERM);
    let refused = || {
        matches!(
            TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(500)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    };
    assert!(
        poll_until(Duration::from_secs(3), refused),
        "connections were not refused after TERM:\n{}",
        server.log()
    );
    let refused_after = term.elapsed();
    assert!(
        refused_after >= Duration::from_millis(250),
        "refused during shutdown_delay ({refused_after:?})"
    );
    assert!(
        !slow.is_finished(),
        "the in-flight request ended before the refusal was seen ({refused_after:?})"
    );
    // Refused at once, not held in a queue: the attempt fails fast.
    let attempt = Instant::now();
    assert!(refused());
    assert!(attempt.elapsed() < Duration::from_millis(400));
    let (status, _, _) = slow.join().unwrap().expect("the in-flight request");
    assert_eq!(status, 200, "{}", server.log());
    assert_eq!(
        server.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        server.log()
    );
}

/// Runs `forkd -c CONFIG -s status` (bounded): exit code, stdout, stderr.
fn status_of(config: &str) -> (Option<i32>, String, String) {
    let out = Forkd::new()
        .config(config)
        .args(["-s", "status"])
        .output(Duration::from_secs(15));
    (out.code, out.stdout, out.stderr)
}

/// The worker lines of a status answer: (pid, generation, state).
fn worker_rows(answer: &str) -> Vec<(i32, u64, String)> {
    answer
        .lines()
        .skip(2)
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 7, "{line:?}");
            (
                fields[0].parse().unwrap(),
                fields[1].parse().unwrap(),
                fields[2].to_string(),
            )
        })
        .collect()
}

/// `echo` with two workers and a pidfile in `dir` (so a control socket beside it): the
/// pidfile's path, the config file's and the server.
fn echo_with_pidfile(dir: &std::path::Path) -> (std::path::PathBuf, String, Server) {
    let pidfile = dir.join("forkd.pid");
    let config = write_config(
        dir,
        &format!(
            "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nworkers = 2\npidfile = {:?}\n",
            pidfile.to_str().unwrap()
        ),
    );
    let server = Forkd::new().config(&config).start();
    (pidfile, config, server)
}

#[test]
fn status_lists_every_worker_with_its_generation_across_a_hup_and_the_socket_is_private() {
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("status");
    let (_, config, mut server) = echo_with_pidfile(&dir);
    let control = dir.join("forkd.pid.ctl");
    let mode = std::fs::metadata(&control)
        .expect("control socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(get(&server.addr, "/").unwrap().0, 200);

    let all_ready = |generation: u64| {
        let mut rows = Vec::new();
        let done = poll_until(Duration::from_secs(15), || {
            let (code, out, err) = status_of(&config);
            assert_eq!(code, Some(0), "{err}");
            rows = worker_rows(&out);
            rows.len() == 2
                && rows
                    .iter()
                    .all(|(_, g, s)| *g == generation && s == "ready")
        });
        assert!(done, "{rows:?}\n{}", server.log());
        rows
    };
    let (code, out, _) = status_of(&config);
    assert_eq!(code, Some(0));
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with(&format!(
            "master {} serving: generation 1, 2 workers wanted",
            server.pid()
        )),
        "{out}"
    );
    let before = all_ready(1);
    let mut pids: Vec<i32> = before.iter().map(|r| r.0).collect();
    pids.sort();
    let mut live = workers_of(server.pid());
    live.sort();
    assert_eq!(pids, live);

    server.signal(Signal::SIGHUP);
    let after = all_ready(2);
    assert!(after.iter().all(|(pid, _, _)| !pids.contains(pid)));
    let (_, out, _) = status_of(&config);
    assert!(
        out.lines().next().unwrap().contains("generation 2"),
        "{out}"
    );

    // Garbage gets an error line; the master keeps serving (HTTP and status alike).
    let mut garbage = std::os::unix::net::UnixStream::connect(&control).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    garbage.write_all(b"\x00\xffGET / HTTP/1.1\r\n").unwrap();
    let mut answer = String::new();
    garbage.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("error: "), "{answer:?}");
    assert_eq!(answer.lines().count(), 1, "{answer:?}");
    // A client that connects and says nothing does not stall the master.
    let _silent = std::os::unix::net::UnixStream::connect(&control).unwrap();
    assert_eq!(get(&server.addr, "/").unwrap().0, 200);
    assert_eq!(status_of(&config).0, Some(0));

    server.signal(Signal::SIGTERM);
    assert_eq!(
        server.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        server.log()
    );
    assert!(!control.exists(), "the control socket outlived the master");
    let (code, _, err) = status_of(&config);
    assert_eq!(code, Some(1));
    assert!(err.contains("pidfile"), "{err}");
}

#[test]
fn status_without_a_pidfile_says_it_needs_one() {
    let config = temp_config("status-no-pidfile", "app = \"echo\"\n");
    let (code, out, err) = status_of(&config);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("status needs a pidfile"), "{err}");
}

#[test]
fn a_python_module_path_without_attr_gets_a_module_colon_app_hint() {
    let (code, log) = Forkd::new()
        .app("app.main")
        .run_to_exit(Duration::from_secs(15));
    assert_ne!(code, Some(0));
    assert!(log.contains("unknown app \"app.main\""), "{log}");
    assert!(log.contains("\"app.main:app\""), "{log}");
}

#[test]
fn after_usr2_status_answers_from_the_new_master_and_its_socket_outlives_the_old_one() {
    let dir = temp_dir("status-usr2");
    let (pidfile, config, mut server) = echo_with_pidfile(&dir);
    let old = server.pid();
    server.signal(Signal::SIGUSR2);
    let new = new_master(&pidfile, old, Duration::from_secs(20));
    assert!(new > 0, "no new master:\n{}", server.log());
    let _guard = PidGuard(new);
    // The old master hands over and stops; the new one keeps serving and answering.
    assert_eq!(
        server.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        server.log()
    );
    assert_eq!(get(&server.addr, "/").unwrap().0, 200);
    let (code, out, err) = status_of(&config);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with(&format!("master {new} ")), "{out}");
    assert_eq!(worker_rows(&out).len(), 2, "{out}");
    let control = dir.join("forkd.pid.ctl");
    signal_pid(new, Signal::SIGTERM);
    assert!(
        poll_until(Duration::from_secs(20), || !control.exists()),
        "the new master left its control socket"
    );
}
