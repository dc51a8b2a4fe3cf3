//! Privilege boundaries, end to end with the real binary: the root master
//! must not be led by other users' files (a symlink at the pidfile's temporary name, a
//! FIFO at the pidfile, a swapped socket directory, a program in the working directory
//! found through an empty `PATH` entry), and a worker must not keep what belongs to the
//! master (its terminal, its session, its supplementary groups) or write the master's
//! log lines for it.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use nix::sys::signal::Signal;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A process's session id (/proc/PID/stat, the fourth field after the name).
fn session_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').expect("name") + 2..];
    rest.split(' ')
        .nth(3)
        .and_then(|s| s.parse().ok())
        .expect("session")
}

fn stdin_of(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/0"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn status_line(pid: i32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

#[test]
fn the_pidfile_is_written_through_no_symlink_and_with_mode_0644() {
    let dir = temp_dir("priv-pid-symlink");
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    let pidfile = dir.join("forkd.pid");
    // Where a temporary file next to the pidfile could be expected.
    for name in ["forkd.tmp", "forkd.pid.tmp"] {
        std::os::unix::fs::symlink(&victim, dir.join(name)).expect("symlink");
    }
    let pid_arg = pidfile.to_str().unwrap();
    let server = Forkd::new()
        .args(["-p", pid_arg])
        .local()
        .app("hello")
        .env("FORKD_UMASK", "0077")
        .start();
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "precious\n",
        "the symlink's target was written"
    );
    let meta = std::fs::symlink_metadata(&pidfile).expect("pidfile");
    assert!(
        meta.file_type().is_file(),
        "pidfile is {:?}",
        meta.file_type()
    );
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o644,
        "umask 0077 applies"
    );
    assert_eq!(read_pid(&pidfile), Some(server.pid()));
    // Nothing else was left in the directory (the control socket is forkd's).
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "forkd.pid",
            "forkd.pid.ctl",
            "forkd.pid.tmp",
            "forkd.tmp",
            "victim"
        ],
        "{names:?}"
    );
}

#[test]
fn a_fifo_at_the_pidfile_path_is_refused_at_once() {
    let dir = temp_dir("priv-pid-fifo");
    let pidfile = dir.join("forkd.pid");
    nix::unistd::mkfifo(&pidfile, nix::sys::stat::Mode::from_bits_truncate(0o666)).expect("mkfifo");
    let pid_arg = pidfile.to_str().unwrap();
    let (code, stderr) = Forkd::new()
        .args(["-p", pid_arg])
        .local()
        .app("hello")
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(pid_arg) && stderr.contains("FIFO"),
        "{stderr}"
    );
    // `forkd -s` reads the pidfile too.
    let (code, stderr) = Forkd::new()
        .args(["-p", pid_arg, "-s", "reopen"])
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(pid_arg) && stderr.contains("FIFO"),
        "{stderr}"
    );
    assert!(std::fs::symlink_metadata(&pidfile)
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn the_socket_file_is_removed_only_from_the_directory_it_was_bound_in() {
    let base = temp_dir("priv-sock-swap");
    let run = base.join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    let victims = base.join("victims");
    std::fs::create_dir(&victims).unwrap();
    std::fs::write(victims.join("forkd.sock"), "precious\n").unwrap();
    let socket = run.join("forkd.sock");
    let bind = format!("unix:{}", socket.display());
    let mut server = Forkd::new().bind(&bind).app("hello").start();
    // The socket's directory is swapped for a symlink to another one holding a file of
    // the socket's name.
    let moved = base.join("moved");
    std::fs::rename(&run, &moved).unwrap();
    std::os::unix::fs::symlink(&victims, &run).unwrap();
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert_eq!(
        std::fs::read_to_string(victims.join("forkd.sock"))
            .ok()
            .as_deref(),
        Some("precious\n"),
        "the victim file was removed:\n{}",
        server.log()
    );
    assert!(
        !moved.join("forkd.sock").exists(),
        "the socket file stayed in its (moved) directory"
    );
}

#[test]
fn native_workers_have_their_own_session_and_no_terminal_input() {
    let dir = temp_dir("priv-session");
    let mut server = Forkd::new()
        .local()
        .workers(2)
        .arg(format!("--bind=unix:{}", dir.join("s.sock").display()))
        .arg(format!("--pid={}", dir.join("forkd.pid").display()))
        .app("hello")
        .stdin_piped()
        .spawn();
    server.expect_log("all workers ready", Duration::from_secs(10));
    let master = server.pid();
    assert!(
        stdin_of(master).starts_with("pipe:"),
        "{}",
        stdin_of(master)
    );
    let workers = workers_of(master);
    assert_eq!(workers.len(), 2);
    for worker in &workers {
        assert_ne!(session_of(*worker), session_of(master));
        assert_eq!(session_of(*worker), *worker, "a session leader");
        assert_eq!(stdin_of(*worker), "/dev/null");
    }
    // The master holds the directory of its socket file and pidfile; workers do not.
    let holds_dir = |pid: i32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == dir))
    };
    assert!(holds_dir(master));
    for worker in &workers {
        assert!(
            !holds_dir(*worker),
            "worker {worker} holds {}",
            dir.display()
        );
    }
    // INT (Ctrl-C) reaches the master only now; it still stops every worker.
    server.signal(Signal::SIGINT);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    for worker in workers {
        assert!(!Path::new(&format!("/proc/{worker}")).exists());
    }
}

#[test]
fn exec_workers_have_their_own_session_and_no_terminal_input() {
    let server = Forkd::new()
        .local()
        .args(["--", "/bin/sleep", "60"])
        .stdin_piped()
        .spawn();
    let master = server.pid();
    let mut worker = 0;
    assert!(
        poll_until(Duration::from_secs(10), || {
            worker = children_of(master)
                .into_iter()
                .find(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| c.starts_with(b"/bin/sleep"))
                })
                .unwrap_or(0);
            worker > 0
        }),
        "{}",
        server.log()
    );
    assert_ne!(session_of(worker), session_of(master));
    assert_eq!(stdin_of(worker), "/dev/null");
}

#[test]
fn workers_drop_the_masters_supplementary_groups() {
    if !is_root() {
        harness::cannot_run_here("needs root");
        return;
    }
    // A root master whose gid already is the target group, with extra groups of root's.
    let mut command = Command::new("setpriv");
    command
        .args(["--regid=nogroup", "--groups=0,4", "--"])
        .arg(forkd())
        .args([
            "-u",
            "nobody",
            "-g",
            "nogroup",
            "-b",
            "127.0.0.1:0",
            "hello",
        ]);
    let server = Server::spawn(&mut command);
    server.expect_log("all workers ready", Duration::from_secs(10));
    let master = server.pid();
    assert_eq!(status_line(master, "Groups:"), "0 4");
    let workers = workers_of(master);
    assert_eq!(workers.len(), 1);
    let worker = workers[0];
    assert_eq!(status_line(worker, "Groups:"), "65534");
    assert_eq!(status_line(worker, "Uid:"), "65534\t65534\t65534\t65534");
    assert_eq!(status_line(worker, "Gid:"), "65534\t65534\t65534\t65534");
}

#[test]
fn a_workers_boot_message_cannot_forge_log_lines() {
    let dir = temp_dir("priv-boot-message");
    let path = write_config(
        &dir,
        "app = \"hello\"\nbind = [\"127.0.0.1:0\"]\n[log]\naccess_log = \"/nonexistent-forkd-dir/x\\n<0>FORGED \\u001b[2J\"\n",
    );
    let (code, stderr) = Forkd::new()
        .config(&path)
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("\\x0a<0>FORGED \\x1b[2J"), "{stderr}");
    assert!(
        !stderr.lines().any(|l| l.starts_with("<0>")),
        "a forged line:\n{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
}

#[test]
fn exec_output_quoted_in_a_boot_failure_is_escaped() {
    let (code, stderr) = Forkd::new()
        .local()
        .args([
            "--",
            "/bin/sh",
            "-c",
            "printf 'boom \\033[2J\\rFORGED\\n'; exit 1",
        ])
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("boom \\x1b[2J\\x0dFORGED"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}') && !stderr.contains('\r'),
        "{stderr}"
    );
}

#[test]
fn an_empty_path_entry_does_not_find_a_program_in_the_working_directory() {
    let dir = temp_dir("priv-path");
    let marker = dir.join("it-ran");
    let program = dir.join("forkd-test-planted");
    std::fs::write(
        &program,
        format!("#!/bin/sh\ntouch {}\nexec sleep 60\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    for search in [":/usr/bin:/bin", "/usr/bin:.:/bin", "/usr/bin::/bin"] {
        let (code, stderr) = Forkd::new()
            .local()
            .args(["--", "forkd-test-planted"])
            .current_dir(&dir)
            .env("PATH", search)
            .run_to_exit(Duration::from_secs(10));
        assert_eq!(code, Some(3), "PATH={search}: {stderr}");
        assert!(stderr.contains("was not found"), "PATH={search}: {stderr}");
        assert!(!marker.exists(), "PATH={search}: ./forkd-test-planted ran");
    }
}

#[test]
fn a_config_file_others_can_write_is_warned_about_at_start_and_on_hup() {
    let dir = temp_dir("priv-config-mode");
    let path = write_config(&dir, "app = \"hello\"\nbind = [\"127.0.0.1:0\"]\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let server = Forkd::new().config(&path).start();
    let warned = |log: &str| {
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains(&path) && l.contains("0666"))
            .count()
    };
    assert_eq!(warned(&server.log()), 1, "{}", server.log());
    server.signal(Signal::SIGHUP);
    server.expect_log("HUP: reload finished", Duration::from_secs(10));
    assert_eq!(warned(&server.log()), 2, "{}", server.log());
}
