//! Exec workers: forkd supervising programs that are not forkd (`-- COMMAND` or
//! `[exec] command`), with real uvicorn as the reference and a standard-library Python
//! worker for `ready = "notify"` and `timeout` by WATCHDOG=1.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

const ASGI_APP: &str = include_str!("../exec/asgi_app.py");
const NOTIFY_WORKER: &str = include_str!("../exec/notify_worker.py");

/// A temp dir holding `app.py` and a forkd.toml that runs `command` in it.
fn project(name: &str, command: &[&str], extra: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir(name);
    std::fs::write(dir.join("app.py"), ASGI_APP).expect("write app");
    std::fs::write(dir.join("notify_worker.py"), NOTIFY_WORKER).expect("write worker");
    let words: Vec<String> = command.iter().map(|w| format!("{w:?}")).collect();
    let config = dir.join("forkd.toml");
    std::fs::write(
        &config,
        format!(
            "bind = [\"127.0.0.1:0\"]\nworkers = 2\nchdir = {:?}\ngraceful_timeout = 10\n{extra}\n[exec]\ncommand = [{}]\n",
            dir.display(),
            words.join(", ")
        ),
    )
    .expect("write config");
    (dir, config)
}

fn uvicorn() -> Vec<&'static str> {
    vec!["uvicorn", "app:app", "--fd", "3", "--no-access-log"]
}

fn body_of(addr: &str) -> String {
    get(addr, "/")
        .map(|(_, _, body)| String::from_utf8_lossy(&body).to_string())
        .unwrap_or_else(|e| e)
}

#[test]
fn uvicorn_workers_serve_and_a_hup_brings_new_code_live_under_load() {
    let (dir, config) = project("exec-uvicorn-hup", &uvicorn(), "");
    let server = Forkd::new().config(&config).start();
    let workers = children_of(server.pid());
    assert_eq!(workers.len(), 2, "{}", server.log());
    // Both workers take requests from the shared socket.
    let mut answered = std::collections::HashSet::new();
    for _ in 0..200 {
        let body = body_of(&server.addr);
        assert!(body.starts_with("v1 "), "{body}");
        answered.insert(body);
        if answered.len() == 2 {
            break;
        }
    }
    assert_eq!(answered.len(), 2, "one worker served everything");
    // Their output reaches the error log, prefixed with their pid.
    server.expect_log(&format!("[{}] ", workers[0]), Duration::from_secs(5));

    // New code, then HUP under load (a fresh connection per request, as behind a
    // proxy that does not pool). forkd starts each new worker and waits until it polls
    // the socket before it TERMs an old one, so no connection is ever refused. What
    // uvicorn itself drops is counted: on TERM it closes connections it has accepted
    // but not yet read a request from (the same race as hyper's graceful shutdown,
    // which forkd's native workers handle and uvicorn does not).
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load_with(&server.addr, 16, stop.clone(), false);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(dir.join("app.py"), ASGI_APP.replace("\"v1\"", "\"v2\"")).expect("new code");
    server.signal(Signal::SIGHUP);
    server.expect_log("reload finished", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    finish(stop, handles);
    assert!(
        body_of(&server.addr).starts_with("v2 "),
        "new code is not live"
    );
    let ok = tally.ok.load(std::sync::atomic::Ordering::Relaxed);
    let failed = tally.failed.load(std::sync::atomic::Ordering::Relaxed);
    let refused = tally
        .connect_failed
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("HUP of 2 uvicorn workers under load: {ok} ok, {failed} failed ({refused} refused)");
    assert_eq!(
        refused,
        0,
        "connections refused during the HUP:\n{}",
        server.log()
    );
    assert!(
        failed * 200 <= ok,
        "{failed} of {ok} requests failed during the HUP: {:?}",
        tally.errors.lock().unwrap()
    );
    // The old workers are gone.
    assert!(poll_until(Duration::from_secs(15), || workers
        .iter()
        .all(|w| !Path::new(&format!("/proc/{w}")).exists())));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_killed_uvicorn_worker_is_replaced() {
    let (dir, config) = project("exec-uvicorn-kill", &uvicorn(), "");
    let server = Forkd::new().config(&config).start();
    let before = children_of(server.pid());
    let victim = before[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL).expect("kill");
    let replaced = poll_until(Duration::from_secs(20), || {
        let now = children_of(server.pid());
        now.len() == 2 && !now.contains(&victim)
    });
    assert!(replaced, "{}", server.log());
    assert!(poll_until(Duration::from_secs(20), || server
        .log()
        .matches("worker ready")
        .count()
        >= 3));
    assert!(server.log_contains("worker exited unexpectedly"));
    for _ in 0..10 {
        assert!(body_of(&server.addr).starts_with("v1 "));
    }
    // USR1 reopens forkd's logs; it is not passed to exec workers (it would kill them).
    let workers = children_of(server.pid());
    server.signal(Signal::SIGUSR1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(children_of(server.pid()), workers, "{}", server.log());
    // QUIT: at once, exit 0.
    let mut server = server;
    server.signal(Signal::SIGQUIT);
    let code = server.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", server.log());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn usr2_upgrades_the_master_while_uvicorn_workers_keep_serving() {
    let (dir, config) = project("exec-usr2", &uvicorn(), "");
    let pidfile = dir.join("forkd.pid");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!("pidfile = {:?}\n{text}", pidfile.display()),
    )
    .expect("config");
    let mut server = Forkd::new().config(&config).start();
    let old = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load_with(&server.addr, 8, stop.clone(), false);
    std::thread::sleep(Duration::from_millis(300));
    server.signal(Signal::SIGUSR2);
    let new = new_master(&pidfile, old, Duration::from_secs(30));
    let _new_master = PidGuard(new);
    assert!(new > 0, "{}", server.log());
    let old_gone = poll_until(Duration::from_secs(30), || {
        matches!(server.child.try_wait(), Ok(Some(_)))
    });
    std::thread::sleep(Duration::from_millis(300));
    finish(stop, handles);
    assert!(old_gone, "{}", server.log());
    assert_eq!(
        children_of(new).len(),
        2,
        "the new master's uvicorn workers"
    );
    assert!(body_of(&server.addr).starts_with("v1 "));
    let refused = tally
        .connect_failed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, 0, "connections refused during the upgrade");
    let (ok, failed) = (
        tally.ok.load(std::sync::atomic::Ordering::Relaxed),
        tally.failed.load(std::sync::atomic::Ordering::Relaxed),
    );
    eprintln!("USR2 with 2 uvicorn workers under load: {ok} ok, {failed} failed");
    assert!(failed * 200 <= ok, "{failed} of {ok} failed");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_or_failing_command_exits_3_with_a_clear_message() {
    let (code, stderr) = Forkd::new()
        .local()
        .args(["--", "forkd-no-such-command", "--fd", "3"])
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("forkd-no-such-command") && stderr.contains("not found"),
        "unclear: {stderr}"
    );
    // A command that exists but exits at once: no worker ever boots.
    let (code, stderr) = Forkd::new()
        .local()
        .args(["--log-level", "warn"])
        .args(["--", "sh", "-c", "echo cannot start >&2; exit 1"])
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("no worker could boot"), "{stderr}");
    // Its output is logged at info; at level warn the failure still quotes it.
    assert!(
        stderr.contains("its last output: cannot start"),
        "worker output lost: {stderr}"
    );
}

#[test]
fn notify_readiness_waits_for_ready_and_watchdog_drives_timeout() {
    let (dir, config) = project(
        "exec-notify",
        &["python3", "notify_worker.py"],
        "timeout = 4\n[env]\nREADY_DELAY = \"1.5\"\nAPP_ENV = \"test\"\n",
    );
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("{text}ready = \"notify\"\n")).expect("config");
    let server = Forkd::new().config(&config).start();
    let log = server.log();
    // Not ready before the worker said so, though it was running for 1.5 s.
    let sent = log.find("sending READY=1").expect("READY line in the log");
    let ready = log.find("all workers ready").expect("ready line");
    assert!(sent < ready, "ready before READY=1:\n{log}");

    // What the worker was given: its own LISTEN_PID, one fd, NOTIFY_SOCKET, [env], and
    // no fd of forkd's beyond 0-3 (the 4th is the listing's own).
    let (status, _, body) = get(&server.addr, "/env").expect("env");
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let env = &info["env"];
    assert_eq!(env["LISTEN_PID"], info["pid"].to_string().as_str());
    assert_eq!(env["LISTEN_FDS"], "1");
    assert_eq!(env["APP_ENV"], "test");
    assert!(env["NOTIFY_SOCKET"]
        .as_str()
        .is_some_and(|s| s.starts_with('@')));
    assert_eq!(env["WATCHDOG_USEC"], "4000000");
    let fds: Vec<u64> = info["open_fds_at_start"]
        .as_array()
        .expect("fds")
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    assert!(
        fds.iter().all(|fd| *fd <= 4) && fds.len() <= 5,
        "forkd leaked fds into the worker: {fds:?}"
    );

    // /hang blocks the worker's loop: no more WATCHDOG=1, so `timeout` (4 s) kills it.
    let hung = children_of(server.pid());
    let addr = server.addr.clone();
    std::thread::spawn(move || {
        let _ = get(&addr, "/hang");
    });
    server.expect_log("worker timeout", Duration::from_secs(15));
    // Only the hung worker is replaced: the other one kept its loop (and WATCHDOG=1) going.
    assert!(
        poll_until(Duration::from_secs(20), || {
            let now = children_of(server.pid());
            now.len() == 2 && hung.iter().filter(|w| now.contains(w)).count() == 1
        }),
        "{}",
        server.log()
    );
    assert_eq!(
        get(&server.addr, "/").map(|r| r.0),
        Ok(200),
        "{}",
        server.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let log = server.log();
    assert_eq!(log.matches("worker timeout").count(), 1, "{log}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_worker_that_never_gets_ready_is_killed_and_a_hup_keeps_the_old_ones() {
    let (dir, config) = project("exec-not-ready", &uvicorn(), "timeout = 3");
    let server = Forkd::new().config(&config).start();
    let old = children_of(server.pid());
    // The new config's workers accept nothing and never say READY=1.
    let text = std::fs::read_to_string(&config).expect("config");
    let stuck = text.replace("command = [", "command = [\"sleep\", \"60\"]\n# was: [");
    std::fs::write(&config, stuck).expect("config");
    server.signal(Signal::SIGHUP);
    server.expect_log(
        "keeping the workers of the previous configuration",
        Duration::from_secs(20),
    );
    assert!(server.log_contains("not ready within"), "{}", server.log());
    // The old workers kept serving throughout.
    for w in &old {
        assert!(Path::new(&format!("/proc/{w}")).exists());
    }
    assert!(body_of(&server.addr).starts_with("v1 "));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn max_worker_memory_reads_an_exec_workers_rss_and_recycles_it() {
    // Any Python program's RSS is far above 1 MiB: each worker is recycled once ready,
    // its replacement first.
    let (dir, config) = project("exec-memory", &uvicorn(), "max_worker_memory = \"1MiB\"\n");
    let server = Forkd::new().config(&config).start();
    let first = children_of(server.pid());
    let exited = |server: &Server| {
        server
            .log()
            .lines()
            .filter(|l| l.contains("worker exited") && l.contains("reason=\"max_worker_memory\""))
            .count()
    };
    assert!(
        poll_until(Duration::from_secs(30), || exited(&server) >= 2),
        "exec workers were not recycled:\n{}",
        server.log()
    );
    assert!(server.log_contains("passed max_worker_memory = 1.0 MiB"));
    // The workers it started with were among those recycled.
    let now = children_of(server.pid());
    assert!(
        first.iter().any(|pid| !now.contains(pid)),
        "{first:?} {now:?}"
    );
    assert_eq!(get(&server.addr, "/").map(|r| r.0), Ok(200));
    let _ = std::fs::remove_dir_all(dir);
}

/// `root/releases/{r1,r2}`, each with the release worker and a `release.txt` naming it,
/// and `root/current -> releases/r1`.
fn releases(name: &str) -> PathBuf {
    let root = temp_dir(name);
    for release in ["r1", "r2"] {
        let dir = root.join("releases").join(release);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("worker.py"), RELEASE_WORKER).unwrap();
        std::fs::write(dir.join("release.txt"), release).unwrap();
    }
    std::os::unix::fs::symlink("releases/r1", root.join("current")).unwrap();
    root
}

/// Points `root/current` at `release`, atomically (a new link renamed over the old), as
/// a deploy does.
fn switch_release(root: &Path, release: &str) {
    let next = root.join("current.next");
    std::os::unix::fs::symlink(format!("releases/{release}"), &next).unwrap();
    std::fs::rename(&next, root.join("current")).unwrap();
}

const RELEASE_WORKER: &str = include_str!("../exec/release_worker.py");

#[test]
fn a_hup_follows_a_switched_release_symlink_and_recycled_workers_keep_their_generations_release() {
    let root = releases("exec-release");
    let config = root.join("forkd.toml");
    std::fs::write(
        &config,
        format!(
            "bind = [\"127.0.0.1:0\"]\nworkers = 2\nchdir = {:?}\nmax_worker_lifetime = 1\n\
             [exec]\nready = \"1s\"\ncommand = [\"python3\", \"worker.py\"]\n",
            root.join("current").display()
        ),
    )
    .unwrap();
    let server = Forkd::new().config(&config).start();
    let r1 = std::fs::canonicalize(root.join("releases/r1")).unwrap();
    let r2 = std::fs::canonicalize(root.join("releases/r2")).unwrap();
    assert_eq!(body_of(&server.addr), format!("r1 {}\n", r1.display()));
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load_with(&server.addr, 4, stop.clone(), false);
    switch_release(&root, "r2");
    // Workers recycled after the switch but before the HUP still run release 1.
    let recycled = |server: &Server| {
        server
            .log()
            .matches("reason=\"max_worker_lifetime\"")
            .count()
    };
    let before = recycled(&server);
    assert!(
        poll_until(Duration::from_secs(30), || recycled(&server) >= before + 3),
        "workers were not recycled:\n{}",
        server.log()
    );
    for _ in 0..20 {
        assert_eq!(body_of(&server.addr), format!("r1 {}\n", r1.display()));
    }
    server.signal(Signal::SIGHUP);
    server.expect_log("generation=2", Duration::from_secs(20));
    let switched = poll_until(Duration::from_secs(20), || {
        (0..10).all(|_| body_of(&server.addr) == format!("r2 {}\n", r2.display()))
    });
    assert!(switched, "release 2 is not served alone:\n{}", server.log());
    // And its recycled workers stay on release 2.
    let after = recycled(&server);
    assert!(poll_until(Duration::from_secs(30), || recycled(&server) >= after + 3));
    for _ in 0..20 {
        assert_eq!(body_of(&server.addr), format!("r2 {}\n", r2.display()));
    }
    finish(stop, handles);
    assert_no_failures(
        &tally,
        &server,
        "a release switch with recycling exec workers",
    );
    let _ = std::fs::remove_dir_all(root);
}
