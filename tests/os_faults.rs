//! Operating-system faults (issue 16): a master killed with SIGKILL, low fd limits,
//! workers running as another user, full disks, stalled pipes, crash loops, floods of
//! idle connections. Each test starts the real binary and provokes the fault.

mod harness;

use harness::*;
use nix::sys::signal::Signal;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const NOTIFY_WORKER: &str = include_str!("exec/notify_worker.py");

/// Starts `command` and waits for "all workers ready" (or its exit): the server, or
/// the log of a forkd that exited.
fn start_or_exit(command: &mut Command, limit: Duration) -> Result<Server, String> {
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
    let mut command = Command::new(forkd());
    command.args(["-c", config.to_str().unwrap()]);
    limit_fds(&mut command, 512);
    let server = start_or_exit(&mut command, Duration::from_secs(15))
        .unwrap_or_else(|log| panic!("forkd did not start with ulimit -n 512:\n{log}"));
    assert_eq!(children_of(server.pid()).len(), 1, "{}", server.log());
}

#[test]
fn a_relative_chdir_is_applied_once_for_exec_workers() {
    let (dir, config) = exec_project("os-exec-chdir", "app");
    let mut command = Command::new(forkd());
    command
        .current_dir(&dir)
        .args(["-c", config.to_str().unwrap()]);
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
        eprintln!("skipped: needs root to start workers as nobody");
        return;
    }
    let began = Instant::now();
    let server = Server::start(
        &forkd(),
        &["-b", "127.0.0.1:0", "-w", "1", "-u", "nobody", "hello"],
    );
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
    let server = Server::start(
        &forkd(),
        &[
            "-b",
            "127.0.0.1:0",
            "-w",
            "2",
            "--graceful-timeout",
            "20",
            "echo",
        ],
    );
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
    while killed.elapsed() < Duration::from_secs(8) {
        let mut command = Command::new(forkd());
        command.args(["-b", &addr, "-w", "1", "hello"]);
        match start_or_exit(&mut command, Duration::from_secs(10)) {
            Ok(server) => {
                restarted = Some((server, killed.elapsed()));
                break;
            }
            Err(log) => {
                assert!(log.contains("in use"), "{log}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let (new_server, took) = restarted.expect("no restart within 8 s");
    assert!(
        took < Duration::from_millis(1500),
        "the port was busy for {took:?} after the master died"
    );
    let (status, _, body) = get(&addr, "/").expect("new server serves");
    drop(new_server);
    assert_eq!((status, body.as_slice()), (200, &b"Hello, world!"[..]));
    let (status, _, _) = slow
        .join()
        .unwrap()
        .expect("the in-flight request finished");
    assert_eq!(status, 200);
}

#[allow(dead_code)]
fn unused(_: &Path) {}
