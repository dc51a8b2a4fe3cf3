//! Zero dropped requests: HUP rolling restarts, max_requests recycling and the USR2
//! binary upgrade, each under a keep-alive load client that counts every failure
//! (connect error, reset, short read, non-2xx). The real binary, real sockets, real
//! signals; every wait has a deadline and every process is killed by a guard.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn twenty_hups_under_keepalive_load_drop_nothing() {
    let server = Forkd::new().local().workers(2).app("hello").start();
    hups_under_load(&server, 20, 64, 2);
}

#[test]
fn max_requests_recycling_under_keepalive_load_drops_nothing() {
    let server = Forkd::new()
        .local()
        .workers(2)
        .args(["--max-requests", "1000", "--max-requests-jitter", "200"])
        .app("hello")
        .start();
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
    // Upgrade to a copy of the binary, as a deploy would replace it on disk.
    let (dir, binary, pidfile, server) = start_from_a_copy("usr2", 2);
    let old = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load(&server.addr, 64, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    // Replace the binary on disk (rename over it), then upgrade.
    let fresh = dir.join("forkd.new");
    std::fs::copy(forkd(), &fresh).expect("copy binary");
    std::fs::rename(&fresh, &binary).expect("replace binary");
    server.signal(nix::sys::signal::Signal::SIGUSR2);
    let current_pid = || read_pid(&pidfile);
    let moved = poll_until(Duration::from_secs(15), || {
        current_pid().is_some_and(|p| p != old)
    });
    let new_pid = current_pid().unwrap_or(0);
    let mut server = server;
    let old_gone = poll_until(Duration::from_secs(15), || {
        matches!(server.child.try_wait(), Ok(Some(_)))
    });
    std::thread::sleep(Duration::from_millis(300));
    finish(stop, handles);
    // The new master is no longer our child: stop it by pid.
    let new_workers = workers_of(new_pid);
    if new_pid > 0 {
        signal_pid(new_pid, nix::sys::signal::Signal::SIGKILL);
    }
    for w in new_workers {
        signal_pid(w, nix::sys::signal::Signal::SIGKILL);
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
    let (dir, binary, pidfile, server) = start_from_a_copy("usr2-bad", 1);
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

#[test]
fn hup_changing_workers_2_to_4_and_adding_a_bind_drops_nothing() {
    let extra = std::net::TcpListener::bind("127.0.0.1:0").expect("probe port");
    let extra_addr = extra.local_addr().expect("addr").to_string();
    drop(extra);
    let path = temp_config(
        "hup-scale",
        "app = \"hello\"\nworkers = 2\nbind = [\"127.0.0.1:0\"]\n",
    );
    let server = Forkd::new().config(&path).start();
    let first = server.addr.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load(&server.addr, 64, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    // The first address is kept by its spec ("127.0.0.1:0"), a second one is added.
    std::fs::write(
        &path,
        format!("app = \"hello\"\nworkers = 4\nbind = [\"127.0.0.1:0\", \"{extra_addr}\"]\n"),
    )
    .expect("rewrite");
    server.signal(nix::sys::signal::Signal::SIGHUP);
    let scaled = poll_until(Duration::from_secs(10), || {
        workers_of(server.pid()).len() == 4
            && server.log().matches("reason=\"reload\"").count() >= 2
    });
    std::thread::sleep(Duration::from_millis(300));
    finish(stop, handles);
    assert!(scaled, "{:?}\n{}", workers_of(server.pid()), server.log());
    assert_eq!(get(&extra_addr, "/").expect("new bind serves").0, 200);
    assert_eq!(get(&first, "/").expect("old bind still serves").0, 200);
    assert_no_failures(&tally, &server, "HUP workers 2 -> 4");
}

#[test]
fn hup_with_an_invalid_config_under_load_changes_nothing() {
    let path = temp_config(
        "hup-bad-load",
        "app = \"hello\"\nworkers = 2\nbind = [\"127.0.0.1:0\"]\n",
    );
    let server = Forkd::new().config(&path).start();
    let before = workers_of(server.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load(&server.addr, 64, stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(
        &path,
        "app = \"hello\"\nworkers = 2\n[limits]\nmax_body = \"lots\"\n",
    )
    .expect("rewrite");
    server.signal(nix::sys::signal::Signal::SIGHUP);
    let logged = poll_until(Duration::from_secs(5), || {
        server.log_contains("reload failed")
    });
    std::thread::sleep(Duration::from_millis(300));
    finish(stop, handles);
    assert!(logged, "{}", server.log());
    assert!(
        server.log_contains("`limits.max_body`"),
        "the error names the key:\n{}",
        server.log()
    );
    assert_eq!(workers_of(server.pid()), before);
    assert_no_failures(&tally, &server, "invalid HUP");
}

#[test]
fn manual_upgrade_usr2_then_winch_and_term_on_the_old_master_drops_nothing() {
    let (mut server, pidfile) = start_with_pidfile(
        "manual",
        &forkd(),
        &["-b", "127.0.0.1:0", "-w", "2", "hello"],
    );
    let old = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load(&server.addr, 64, stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    server.signal(nix::sys::signal::Signal::SIGUSR2);
    let new_pid = wait_for_a_new_master(&server, &pidfile, old);
    // The operator's half: WINCH, then TERM, to the old master.
    signal_pid(old, nix::sys::signal::Signal::SIGWINCH);
    signal_pid(old, nix::sys::signal::Signal::SIGTERM);
    let old_gone = poll_until(Duration::from_secs(15), || {
        matches!(server.child.try_wait(), Ok(Some(_)))
    });
    std::thread::sleep(Duration::from_millis(300));
    finish(stop, handles);
    let new_workers = workers_of(new_pid);
    assert_eq!(new_workers.len(), 2, "the new master serves with 2 workers");
    for pid in new_workers.into_iter().chain([new_pid]) {
        signal_pid(pid, nix::sys::signal::Signal::SIGKILL);
    }
    assert!(old_gone, "{}", server.log());
    assert_no_failures(&tally, &server, "manual WINCH/TERM upgrade");
}

#[test]
fn manual_upgrade_rolls_back_with_hup_to_the_old_master_and_term_to_the_new() {
    let (server, pidfile) = start_with_pidfile(
        "rollback",
        &forkd(),
        &["-b", "127.0.0.1:0", "-w", "2", "hello"],
    );
    let old = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load(&server.addr, 64, stop.clone());
    server.signal(nix::sys::signal::Signal::SIGUSR2);
    server.signal(nix::sys::signal::Signal::SIGWINCH);
    let current_pid = || read_pid(&pidfile);
    let new_pid = wait_for_a_new_master(&server, &pidfile, old);
    server.expect_log("staying for the operator", Duration::from_secs(10));
    assert!(
        poll_until(Duration::from_secs(10), || workers_of(old).is_empty()),
        "old workers stopped by WINCH"
    );
    // Roll back: the old master starts workers again, the new master stops gracefully.
    server.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        poll_until(Duration::from_secs(10), || workers_of(old).len() == 2),
        "{}",
        server.log()
    );
    signal_pid(new_pid, nix::sys::signal::Signal::SIGTERM);
    let restored = poll_until(Duration::from_secs(15), || current_pid() == Some(old));
    std::thread::sleep(Duration::from_millis(300));
    finish(stop, handles);
    assert!(
        restored,
        "pidfile names the old master again:\n{}",
        server.log()
    );
    assert!(
        server.log_contains("this master is the master again"),
        "{}",
        server.log()
    );
    assert_no_failures(&tally, &server, "manual upgrade rollback");
}

/// A counter's value from a /metrics scrape (the line `NAME_AND_LABELS VALUE`).
fn scrape_value(metrics_addr: &str, series: &str) -> Option<f64> {
    let (status, _, body) = get(metrics_addr, "/metrics").ok()?;
    if status != 200 {
        return None;
    }
    String::from_utf8_lossy(&body).lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn max_worker_memory_recycles_a_growing_worker_under_keepalive_load_dropping_nothing() {
    let server = Forkd::new()
        .local()
        .workers(2)
        .app("echo")
        .env("FORKD_MAX_WORKER_MEMORY", "48MiB")
        .env("FORKD_METRICS_BIND", "127.0.0.1:0")
        .start();
    let metrics = metrics_addr(&server);
    let series = "forkd_worker_restarts_total{reason=\"max_worker_memory\"}";
    assert_eq!(scrape_value(&metrics, series), Some(0.0));
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, mut handles) = load(&server.addr, 64, stop.clone());
    // Grows the workers' RSS: 4 MiB kept per request, ~80 MiB a second in all.
    handles.push(leak_requests(
        &server.addr,
        "/?leak_kb=4096",
        stop.clone(),
        tally.clone(),
    ));
    let recycled = poll_until(Duration::from_secs(30), || {
        scrape_value(&metrics, series).is_some_and(|n| n >= 3.0)
    });
    finish(stop, handles);
    assert!(recycled, "workers were not recycled:\n{}", server.log());
    assert!(
        server.log_contains("passed max_worker_memory = 48.0 MiB"),
        "{}",
        server.log()
    );
    let settled = poll_until(Duration::from_secs(10), || {
        workers_of(server.pid()).len() == 2
    });
    assert!(settled, "{:?}", workers_of(server.pid()));
    assert_no_failures(&tally, &server, "max_worker_memory recycling");
}

#[test]
fn max_worker_lifetime_recycles_every_worker_under_keepalive_load_dropping_nothing() {
    let server = Forkd::new()
        .local()
        .workers(2)
        .app("hello")
        .env("FORKD_MAX_WORKER_LIFETIME", "2s")
        .start();
    let first = workers_of(server.pid());
    assert_eq!(first.len(), 2, "{first:?}");
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load(&server.addr, 64, stop.clone());
    // Two rounds of recycling: every first worker gone, and at least 4 recycled.
    let recycled = poll_until(Duration::from_secs(20), || {
        let now = workers_of(server.pid());
        now.len() == 2
            && now.iter().all(|pid| !first.contains(pid))
            && server
                .log()
                .lines()
                .filter(|l| {
                    l.contains("worker exited") && l.contains("reason=\"max_worker_lifetime\"")
                })
                .count()
                >= 4
    });
    finish(stop, handles);
    assert!(recycled, "workers were not recycled:\n{}", server.log());
    assert!(
        server.log_contains("reached its max_worker_lifetime of 2."),
        "{}",
        server.log()
    );
    assert_no_failures(&tally, &server, "max_worker_lifetime recycling");
}

/// Starts forkd (`workers` of the hello app, a pidfile) from a copy of the binary in a
/// fresh temp dir `name`, so that a test can replace the copy as a deploy would.
/// The dir, the copy, the pidfile and the server.
fn start_from_a_copy(name: &str, workers: usize) -> (PathBuf, PathBuf, PathBuf, Server) {
    let dir = temp_dir(name);
    let binary = dir.join("forkd");
    std::fs::copy(forkd(), &binary).expect("copy binary");
    let pidfile = dir.join("forkd.pid");
    let server = Forkd::program(&binary)
        .local()
        .workers(workers)
        .args(["-p", pidfile.to_str().unwrap()])
        .app("hello")
        .start();
    (dir, binary, pidfile, server)
}

/// Waits up to 10 s for the pidfile to name a master other than `old`; its pid.
fn wait_for_a_new_master(server: &Server, pidfile: &Path, old: i32) -> i32 {
    let current_pid = || read_pid(pidfile);
    assert!(
        poll_until(Duration::from_secs(10), || current_pid()
            .is_some_and(|p| p != old)),
        "{}",
        server.log()
    );
    current_pid().unwrap_or(0)
}

/// A reload whose new workers cannot boot rolls back to the whole previous generation:
/// not only its config and app, but its listeners (here a second bind the new config
/// drops) and its metrics listener. Workers forked after the rollback must serve them
/// all, so once every old worker is replaced in turn (TTIN, then TTOU stops the
/// oldest), both binds and /metrics still answer.
#[test]
fn a_reload_that_cannot_boot_restores_every_listener_for_the_workers_after_it() {
    let extra = format!("127.0.0.1:{}", free_port());
    let path = temp_config(
        "hup-rollback",
        &format!(
            "workers = 2\nbind = [\"127.0.0.1:0\", \"{extra}\"]\n[metrics]\nbind = \"127.0.0.1:0\"\n"
        ),
    );
    let server = Forkd::program(counter_example()).config(&path).start();
    let metrics = metrics_addr(&server);
    let old = workers_of(server.pid());
    assert_eq!(old.len(), 2, "{}", server.log());
    // One bind fewer, no metrics, and an app that panics at boot.
    std::fs::write(
        &path,
        "workers = 2\nbind = [\"127.0.0.1:0\"]\n[env]\nCOUNTER_PANIC_AT_BOOT = \"1\"\n",
    )
    .expect("rewrite");
    server.signal(nix::sys::signal::Signal::SIGHUP);
    server.expect_log(
        "keeping the workers of the previous configuration",
        Duration::from_secs(10),
    );
    let ready_lines = |server: &Server| server.log().matches("worker ready").count();
    for round in 0..old.len() {
        let ready_before = ready_lines(&server);
        server.signal(nix::sys::signal::Signal::SIGTTIN);
        assert!(
            poll_until(Duration::from_secs(10), || ready_lines(&server)
                > ready_before),
            "round {round}: no new worker ready\n{}",
            server.log()
        );
        server.signal(nix::sys::signal::Signal::SIGTTOU);
        assert!(
            poll_until(Duration::from_secs(10), || {
                let now = workers_of(server.pid());
                now.len() == 2 && old.iter().filter(|w| now.contains(w)).count() < old.len() - round
            }),
            "round {round}: the oldest worker did not go\n{}",
            server.log()
        );
    }
    let now = workers_of(server.pid());
    assert!(old.iter().all(|w| !now.contains(w)), "{now:?} {old:?}");
    assert_eq!(
        get(&server.addr, "/").map(|r| r.0),
        Ok(200),
        "{}",
        server.log()
    );
    assert_eq!(get(&extra, "/").map(|r| r.0), Ok(200), "{}", server.log());
    assert_eq!(
        get(&metrics, "/metrics").map(|r| r.0),
        Ok(200),
        "{}",
        server.log()
    );
}
