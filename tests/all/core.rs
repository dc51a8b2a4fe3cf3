//! The core contract, end to end: config errors and precedence, the built-in apps,
//! worker replacement, TTIN/TTOU, WINCH, timeout, max_requests recycling, graceful TERM,
//! quick QUIT, master death, boot failure (exit 3), unix sockets and the pidfile.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use nix::sys::signal::Signal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn check(config: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    Forkd::new()
        .config(config)
        .arg("--check-config")
        .envs(env.iter().copied())
        .run_to_exit(Duration::from_secs(10))
}

#[test]
fn bad_configs_exit_2_naming_the_key_and_line() {
    let cases: [(&str, &str, &[&str]); 6] = [
        (
            "unknown",
            "app = \"hello\"\nworker = 2\n",
            &["line 2", "`worker`", "did you mean `workers`"],
        ),
        (
            "workers",
            "app = \"hello\"\nworkers = 0\n",
            &["line 2", "`workers`", "integer >= 1 or \"auto\""],
        ),
        (
            "duration",
            "timeout = \"ten\"\n",
            &["line 1", "`timeout`", "duration"],
        ),
        (
            "bind",
            "\n\nbind = [\"nowhere\"]\n",
            &["line 3", "`bind`", "HOST:PORT"],
        ),
        (
            "table",
            "[limits]\nmax_bdy = 1\n",
            &["line 2", "`limits.max_bdy`", "did you mean `max_body`"],
        ),
        (
            "syntax",
            "app = \"hello\"\nworkers = = 2\n",
            &["line 2", "invalid TOML"],
        ),
    ];
    for (name, text, needles) in cases {
        let path = temp_config(&format!("bad-{name}"), text);
        let (code, stderr) = check(&path, &[]);
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert!(stderr.contains(&path), "{name}: file not named: {stderr}");
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{name}: {needle:?} missing from: {stderr}"
            );
        }
    }
    let good = temp_config("bad-env", "app = \"hello\"\n");
    let (code, stderr) = check(&good, &[("FORKD_WORKERS", "zero")]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("FORKD_WORKERS"), "{stderr}");
    // An unknown variable is a warning, not an error (CONTRACT.md).
    let (code, stderr) = check(&good, &[("FORKD_WORKRS", "2")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.starts_with("forkd: warning: ") && stderr.contains("did you mean `FORKD_WORKERS`"),
        "{stderr}"
    );
    let (code, stderr) = check(&good, &[]);
    assert_eq!(
        (code, stderr.as_str()),
        (Some(0), ""),
        "a good config prints nothing"
    );
}

#[test]
fn print_config_shows_precedence_file_then_env_then_cli() {
    let path = temp_config("precedence", "app = \"hello\"\nworkers = 2\ntimeout = 5\n");
    let config = path.as_str();
    let print = |args: &[&str], env: &[(&str, &str)]| {
        let out = Forkd::new()
            .config(config)
            .arg("--print-config")
            .args(args)
            .envs(env.iter().copied())
            .output(Duration::from_secs(10));
        assert!(out.ok(), "{}", out.stderr);
        out.stdout
    };
    let file_only = print(&[], &[]);
    assert!(
        file_only.contains("workers = 2\n") && file_only.contains("timeout = \"5s\""),
        "{file_only}"
    );
    assert!(
        file_only.contains("graceful_timeout = \"30s\""),
        "defaults shown: {file_only}"
    );
    let env = print(&[], &[("FORKD_WORKERS", "3")]);
    assert!(env.contains("workers = 3\n"), "{env}");
    let cli = print(&["-w", "4"], &[("FORKD_WORKERS", "3")]);
    assert!(cli.contains("workers = 4\n"), "{cli}");
    // The printed config is itself a valid config with the same effect.
    let reprinted = temp_config("precedence-round-trip", &cli);
    let again = Forkd::new()
        .config(&reprinted)
        .arg("--print-config")
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(again.0, Some(0), "{}", again.1);
}

#[test]
fn proc_name_is_shown_after_the_role_as_gunicorns() {
    let server = Forkd::new()
        .local()
        .workers(2)
        .app("hello")
        .args(["-n", "shop api"])
        .start();
    let title = |pid: i32| {
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        String::from_utf8_lossy(&raw[..end]).into_owned()
    };
    assert_eq!(title(server.pid()), "forkd: master [shop api]");
    let workers = workers_of(server.pid());
    assert_eq!(workers.len(), 2, "{}", server.log());
    let mut titles: Vec<String> = workers.iter().map(|&w| title(w)).collect();
    titles.sort();
    assert_eq!(
        titles,
        [
            "forkd: worker [1] [shop api]",
            "forkd: worker [2] [shop api]"
        ]
    );
}

#[test]
fn apps_serve_and_workers_are_named() {
    let server = Forkd::new().local().workers(2).app("echo").start();
    let workers = workers_of(server.pid());
    assert_eq!(workers.len(), 2, "{}", server.log());
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.pid())).expect("cmdline");
    assert!(cmdline.starts_with(b"forkd: master"));
    let (status, head, body) = get(&server.addr, "/some/path?x=1").expect("echo");
    assert_eq!(status, 200);
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(json["method"], "GET");
    assert_eq!(json["path"], "/some/path");
    assert_eq!(json["query"], "x=1");
    assert_eq!(json["headers"]["host"], "test");
    assert_eq!(json["body_bytes"], 0);
    assert!(json["remote_addr"]
        .as_str()
        .unwrap_or("")
        .starts_with("127.0.0.1:"));
    assert!(
        workers.contains(&(json["pid"].as_i64().unwrap_or(0) as i32)),
        "pid is a worker's"
    );
    assert_eq!(get(&server.addr, "/?status=418").expect("status").0, 418);
    assert_eq!(
        get(&server.addr, "/?bytes=1000").expect("bytes").2.len(),
        1000
    );
    let post = request(
        &server.addr,
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .expect("post");
    let json: serde_json::Value = serde_json::from_slice(&post.2).expect("json");
    assert_eq!(json["body_bytes"], 5);
    // A malformed request gets a 4xx and the worker keeps serving.
    let bad = request(&server.addr, "GARBAGE\r\n\r\n");
    if let Ok((status, _, _)) = bad {
        assert!(
            (400..500).contains(&status),
            "malformed request got {status}"
        );
    }
    assert_eq!(get(&server.addr, "/").expect("after garbage").0, 200);
    assert_eq!(workers_of(server.pid()), workers, "no worker crashed");

    let hello = Forkd::new().local().app("hello").start();
    let (status, head, body) = get(&hello.addr, "/").expect("hello");
    assert_eq!((status, body.as_slice()), (200, &b"Hello, world!"[..]));
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: text/plain"));
}

#[test]
fn a_killed_worker_is_replaced_and_ttin_ttou_scale() {
    let server = Forkd::new().local().workers(2).app("hello").start();
    let before = workers_of(server.pid());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(before[0]), Signal::SIGKILL)
        .expect("kill worker");
    let replaced = poll_until(Duration::from_secs(5), || {
        let now = workers_of(server.pid());
        now.len() == 2 && !now.contains(&before[0])
    });
    assert!(
        replaced,
        "worker not replaced: {:?}\n{}",
        workers_of(server.pid()),
        server.log()
    );
    assert!(
        server.log_contains("exited unexpectedly"),
        "{}",
        server.log()
    );
    assert_eq!(get(&server.addr, "/").expect("serving").0, 200);
    server.signal(Signal::SIGTTIN);
    assert!(
        poll_until(Duration::from_secs(5), || workers_of(server.pid()).len()
            == 3),
        "TTIN"
    );
    server.signal(Signal::SIGTTOU);
    assert!(
        poll_until(Duration::from_secs(5), || workers_of(server.pid()).len()
            == 2),
        "TTOU"
    );
}

#[test]
fn a_blocked_worker_is_killed_after_timeout_while_the_other_serves() {
    let server = Forkd::new()
        .local()
        .workers(2)
        .args(["-t", "2"])
        .app("echo")
        .start();
    let addr = server.addr.clone();
    let blocked = std::thread::spawn(move || get(&addr, "/?block_ms=20000"));
    // Find the worker that took it: the one whose requests stop being answered.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        if get(&server.addr, "/").map(|r| r.0) == Ok(200) {
            served += 1;
        }
    }
    assert!(served > 0, "the other worker must keep serving");
    let killed = poll_until(Duration::from_secs(10), || {
        server.log_contains("worker timeout")
    });
    assert!(killed, "no timeout logged:\n{}", server.log());
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("worker timeout"))
        .unwrap_or_default();
    assert!(line.contains("pid="), "the log names the worker: {line}");
    let pid: i32 = line
        .split("pid=")
        .nth(1)
        .and_then(|p| p.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let replaced = poll_until(Duration::from_secs(5), || {
        let now = workers_of(server.pid());
        now.len() == 2 && !now.contains(&pid)
    });
    assert!(replaced, "{:?}\n{}", workers_of(server.pid()), server.log());
    assert!(
        blocked.join().expect("thread").is_err(),
        "the blocked request's connection dies with its worker"
    );
}

#[test]
fn max_requests_recycles_workers_without_failures_for_new_connections() {
    let server = Forkd::new()
        .local()
        .workers(2)
        .args(["--max-requests", "50", "--max-requests-jitter", "10"])
        .app("hello")
        .start();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (addr, stop, ok, failures) = (
                server.addr.clone(),
                stop.clone(),
                ok.clone(),
                failures.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match get(&addr, "/") {
                        Ok((200, _, _)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failures.lock().unwrap().push(format!("{other:?}")),
                    }
                }
            })
        })
        .collect();
    let recycled = poll_until(Duration::from_secs(20), || {
        server.log().matches("reason=\"max_requests\"").count() >= 6
    });
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    assert!(recycled, "{}", server.log());
    assert!(server.log_contains("reached max_requests"));
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    assert!(ok.load(Ordering::Relaxed) > 100);
}

#[test]
fn term_lets_a_slow_request_finish_then_exits_0_and_removes_the_pidfile() {
    let (mut server, pidfile) =
        start_with_pidfile("term", &forkd(), &["-b", "127.0.0.1:0", "-w", "1", "echo"]);
    assert_eq!(
        std::fs::read_to_string(&pidfile).expect("pidfile").trim(),
        server.pid().to_string()
    );
    let addr = server.addr.clone();
    let slow = std::thread::spawn(move || get(&addr, "/?sleep_ms=1500"));
    std::thread::sleep(Duration::from_millis(300));
    server.signal(Signal::SIGTERM);
    let response = slow.join().expect("thread").expect("slow request answered");
    assert_eq!(response.0, 200);
    let exited = poll_until(Duration::from_secs(10), || {
        matches!(server.child.try_wait(), Ok(Some(_)))
    });
    assert!(exited, "{}", server.log());
    assert_eq!(server.child.wait().expect("status").code(), Some(0));
    assert!(!pidfile.exists(), "pidfile removed");
}

#[test]
fn quit_stops_at_once_and_workers_die_with_a_killed_master() {
    let mut server = Forkd::new().local().workers(2).app("hello").start();
    let workers = workers_of(server.pid());
    server.signal(Signal::SIGQUIT);
    assert!(poll_until(Duration::from_secs(3), || matches!(
        server.child.try_wait(),
        Ok(Some(_))
    )));
    assert_eq!(server.child.wait().expect("status").code(), Some(0));
    assert!(workers.iter().all(
        |w| !std::path::Path::new(&format!("/proc/{w}/cmdline")).exists()
            || std::fs::read(format!("/proc/{w}/cmdline")).map_or(true, |c| c.is_empty())
    ));

    let server = Forkd::new().local().workers(2).app("hello").start();
    let workers = workers_of(server.pid());
    server.signal(Signal::SIGKILL);
    let gone = poll_until(Duration::from_millis(1500), || {
        workers.iter().all(|w| {
            std::fs::read(format!("/proc/{w}/cmdline"))
                .map_or(true, |c| !c.starts_with(b"forkd: worker"))
        })
    });
    assert!(gone, "workers outlived their master");
}

#[test]
fn winch_stops_workers_and_hup_brings_them_back() {
    let server = Forkd::new().local().workers(2).app("hello").start();
    server.signal(Signal::SIGWINCH);
    assert!(
        poll_until(Duration::from_secs(5), || workers_of(server.pid())
            .is_empty()),
        "{}",
        server.log()
    );
    assert!(
        std::fs::metadata(format!("/proc/{}", server.pid())).is_ok(),
        "master stays"
    );
    server.signal(Signal::SIGHUP);
    assert!(
        poll_until(Duration::from_secs(5), || workers_of(server.pid()).len()
            == 2),
        "{}",
        server.log()
    );
    assert!(poll_until(Duration::from_secs(5), || get(
        &server.addr,
        "/"
    )
    .map(|r| r.0)
        == Ok(200)));
}

#[test]
fn a_hup_with_an_invalid_config_keeps_serving_and_logs_the_key() {
    let path = temp_config("hup-invalid", "app = \"hello\"\nworkers = 2\n");
    let server = Forkd::new().config(&path).local().start();
    let before = workers_of(server.pid());
    std::fs::write(&path, "app = \"hello\"\nworkers = \"many\"\n").expect("rewrite");
    server.signal(Signal::SIGHUP);
    server.expect_log("reload failed", Duration::from_secs(5));
    assert!(server.log_contains("`workers`"), "{}", server.log());
    assert_eq!(workers_of(server.pid()), before, "old workers untouched");
    assert_eq!(get(&server.addr, "/").expect("serving").0, 200);
    // A valid change of `workers` takes effect.
    std::fs::write(&path, "app = \"hello\"\nworkers = 3\n").expect("rewrite");
    server.signal(Signal::SIGHUP);
    assert!(
        poll_until(Duration::from_secs(10), || {
            let now = workers_of(server.pid());
            now.len() == 3 && before.iter().all(|b| !now.contains(b))
        }),
        "{}",
        server.log()
    );
}

#[test]
fn an_embedded_app_serves_and_a_panic_at_boot_exits_3() {
    let example = counter_example();
    let server = Forkd::program(&example).local().workers(2).start();
    let (status, _, body) = get(&server.addr, "/").expect("counter");
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&body).starts_with("count="),
        "{}",
        String::from_utf8_lossy(&body)
    );
    drop(server);
    let (code, stderr) = Forkd::program(&example)
        .local()
        .workers(2)
        .env("COUNTER_PANIC_AT_BOOT", "1")
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("no worker could boot") && stderr.contains("counter: refusing to boot"),
        "{stderr}"
    );
}

#[test]
fn unix_socket_is_served_replaces_a_stale_file_and_is_removed_on_exit() {
    let dir = temp_dir("unix");
    let socket = dir.join("forkd.sock");
    // A stale socket file, as left by a process that died.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("stale socket"));
    assert!(socket.exists());
    let bind = format!("unix:{}", socket.display());
    let mut server = Forkd::new().bind(&bind).app("hello").start();
    assert_eq!(server.addr, bind);
    let (status, _, body) = get(&bind, "/").expect("over unix socket");
    assert_eq!((status, body.as_slice()), (200, &b"Hello, world!"[..]));
    server.signal(Signal::SIGTERM);
    assert!(poll_until(Duration::from_secs(10), || matches!(
        server.child.try_wait(),
        Ok(Some(_))
    )));
    assert!(!socket.exists(), "socket file removed on exit");
}

#[test]
fn a_bind_conflict_exits_1_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, stderr) = Forkd::new()
        .bind(&addr)
        .app("hello")
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
}

#[test]
fn signal_command_checks_the_pidfile() {
    let dir = temp_dir("signal");
    let pidfile = dir.join("forkd.pid");
    let config = dir.join("forkd.toml");
    std::fs::write(
        &config,
        format!(
            "app = \"hello\"\npidfile = \"{}\"\nbind = [\"127.0.0.1:0\"]\n",
            pidfile.display()
        ),
    )
    .expect("config");
    let config = config.to_str().unwrap();
    let (code, stderr) = Forkd::new()
        .config(config)
        .args(["-s", "reload"])
        .run_to_exit(Duration::from_secs(5));
    assert_eq!(code, Some(1), "no pidfile: {stderr}");
    std::fs::write(&pidfile, format!("{}\n", std::process::id())).expect("pidfile");
    let (code, stderr) = Forkd::new()
        .config(config)
        .args(["-s", "reload"])
        .run_to_exit(Duration::from_secs(5));
    assert_eq!(code, Some(1), "not a forkd master: {stderr}");
    assert!(stderr.contains("not a running forkd master"), "{stderr}");
    std::fs::remove_file(&pidfile).expect("rm");
    let server = Forkd::new().config(config).workers(1).start();
    let before = workers_of(server.pid());
    let (code, stderr) = Forkd::new()
        .config(config)
        .args(["-s", "incr"])
        .run_to_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(poll_until(Duration::from_secs(5), || workers_of(
        server.pid()
    )
    .len()
        == before.len() + 1));
}

#[test]
fn a_relative_config_path_still_reloads_after_chdir() {
    let dir = temp_dir("relative-config");
    std::fs::write(
        dir.join("forkd.toml"),
        "app = \"hello\"\nbind = [\"127.0.0.1:0\"]\nchdir = \"/\"\n",
    )
    .expect("config");
    let server = Forkd::new().config("forkd.toml").current_dir(&dir).spawn();
    server.expect_log("all workers ready", Duration::from_secs(10));
    server.signal(Signal::SIGHUP);
    server.expect_log("reload finished", Duration::from_secs(10));
    assert!(!server.log_contains("reload failed"), "{}", server.log());
    let _ = std::fs::remove_dir_all(dir);
}
