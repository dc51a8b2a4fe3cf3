//! `preload_app`: a zygote per generation imports the Python app once and forks the
//! workers, HUP imports the new code in a new zygote, a failed import keeps the old
//! generation, a killed zygote is replaced while the workers keep serving, an import
//! that starts a thread is refused. The app (tests/python/preload_app.py) counts its
//! imports in `imports.txt` beside it. Needs the Python test environment (see
//! python.rs).

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness::*;
use crate::python::{python_forkd, ENV};
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// A fresh directory with the test app and a config preloading it.
fn app_dir(name: &str, extra: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir(&format!("preload-{name}"));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/preload_app.py");
    std::fs::copy(source, dir.join("preload_app.py")).expect("copy the test app");
    let config = dir.join("forkd.toml");
    let text = format!(
        "bind = [\"127.0.0.1:0\"]\napp = \"preload_app:app\"\npreload_app = true\n{extra}\n[python]\npath = [{:?}]\n",
        dir.display().to_string()
    );
    std::fs::write(&config, text).expect("write config");
    (dir, config)
}

fn start(config: &Path, args: &[&str]) -> Server {
    Forkd::program(python_forkd())
        .config(config)
        .args(args)
        .envs(ENV.iter().copied())
        .start()
}

/// The pids that imported the app, in order.
fn imports(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("imports.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Rewrites the app's VERSION on disk.
fn set_version(dir: &Path, version: u64) {
    let app = dir.join("preload_app.py");
    let text = std::fs::read_to_string(&app).unwrap();
    let start = text.find("VERSION = ").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let text = format!("{}VERSION = {version}{}", &text[..start], &text[end..]);
    std::fs::write(&app, text).unwrap();
}

fn version_and_pid(addr: &str) -> Option<(u64, i64)> {
    let (status, _, body) = get(addr, "/").ok()?;
    let body = json(&body);
    (status == 200).then(|| {
        (
            body["version"].as_u64().unwrap(),
            body["pid"].as_i64().unwrap(),
        )
    })
}

/// The master's zygotes (children named `forkd: zygote`).
fn zygotes_of(master: i32) -> Vec<i32> {
    children_of(master)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"forkd: zygote"))
        })
        .collect()
}

#[test]
fn one_import_per_generation_and_recycled_workers_keep_their_generations_code() {
    let (dir, config) = app_dir("generation", "max_requests = 4\n");
    let server = start(&config, &["-w", "3"]);
    let zygote = imports(&dir);
    assert_eq!(zygote.len(), 1, "one import for three workers");
    let workers = workers_of(server.pid());
    assert!(
        !workers.contains(&zygote[0]) && zygote[0] != server.pid(),
        "the zygote imported, neither a worker nor the master"
    );
    // New code on disk; workers recycled by max_requests still run the generation's.
    set_version(&dir, 2);
    let mut seen = std::collections::HashSet::new();
    let recycled = poll_until(Duration::from_secs(30), || {
        let (version, pid) = version_and_pid(&server.addr).expect("an answer");
        assert_eq!(version, 1, "a recycled worker ran the code on disk");
        seen.insert(pid);
        seen.len() > 4
    });
    assert!(recycled, "workers were not recycled: {seen:?}");
    assert!(server.log().contains("reason=\"max_requests\""));
    assert_eq!(
        imports(&dir).len(),
        1,
        "recycled workers did not import again"
    );
    // HUP: one more import, the new code.
    server.signal(Signal::SIGHUP);
    let reloaded = poll_until(Duration::from_secs(20), || {
        version_and_pid(&server.addr).is_some_and(|(v, _)| v == 2)
    });
    assert!(reloaded, "the new code never answered:\n{}", server.log());
    server.expect_log("HUP: reload finished", Duration::from_secs(20));
    assert_eq!(imports(&dir).len(), 2, "one import for the new generation");
    // The old generation's zygote has gone; one is left.
    let one = poll_until(Duration::from_secs(10), || {
        zygotes_of(server.pid()).len() == 1
    });
    assert!(one, "zygotes: {:?}", zygotes_of(server.pid()));
    for _ in 0..20 {
        assert_eq!(version_and_pid(&server.addr).map(|(v, _)| v), Some(2));
    }
}

#[test]
fn hups_under_keepalive_load_bring_new_code_and_drop_nothing() {
    let (dir, config) = app_dir("hup-load", "");
    let server = start(&config, &["-w", "2"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load(&server.addr, 64, stop.clone());
    for version in 2..=6u64 {
        set_version(&dir, version);
        server.signal(Signal::SIGHUP);
        let answered = poll_until(Duration::from_secs(20), || {
            version_and_pid(&server.addr).is_some_and(|(v, _)| v == version)
        });
        assert!(
            answered,
            "version {version} never answered:\n{}",
            server.log()
        );
    }
    // Settled: the last generation's two workers and its zygote, nothing older (a
    // reload's retirements are logged with reasons that depend on how the HUPs overlap
    // on a loaded machine, so they are not counted).
    let settled = poll_until(Duration::from_secs(30), || {
        workers_of(server.pid()).len() == 2 && zygotes_of(server.pid()).len() == 1
    });
    finish(stop, handles);
    assert!(settled, "workers did not settle:\n{}", server.log());
    assert_no_failures(&tally, &server, "5 HUPs of a preloaded app");
    assert_eq!(imports(&dir).len(), 6, "one import per generation");
}

#[test]
fn a_failing_import_on_hup_keeps_the_old_generation_serving() {
    let (dir, config) = app_dir("hup-fails", "");
    let server = start(&config, &["-w", "2"]);
    let workers = workers_of(server.pid());
    let app = dir.join("preload_app.py");
    let original = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, format!("{original}\ndef broken(:\n")).unwrap();
    server.signal(Signal::SIGHUP);
    server.expect_log("the zygote cannot import the app", Duration::from_secs(20));
    server.expect_log("reload failed", Duration::from_secs(20));
    assert!(server.log().contains("SyntaxError"), "{}", server.log());
    for _ in 0..20 {
        assert_eq!(version_and_pid(&server.addr).map(|(v, _)| v), Some(1));
    }
    assert_eq!(
        workers_of(server.pid()),
        workers,
        "the old workers serve on"
    );
    // Fixed code on the next HUP goes live.
    std::fs::write(&app, &original).unwrap();
    set_version(&dir, 3);
    server.signal(Signal::SIGHUP);
    let fixed = poll_until(Duration::from_secs(30), || {
        version_and_pid(&server.addr).is_some_and(|(v, _)| v == 3)
    });
    assert!(fixed, "the fixed code never answered:\n{}", server.log());
}

#[test]
fn a_killed_zygote_is_replaced_while_its_workers_serve() {
    let (dir, config) = app_dir("zygote-killed", "max_requests = 5\n");
    let server = start(&config, &["-w", "2"]);
    let zygote = zygotes_of(server.pid());
    assert_eq!(zygote.len(), 1, "one zygote");
    let workers = workers_of(server.pid());
    signal_pid(zygote[0], Signal::SIGKILL);
    server.expect_log("the zygote exited", Duration::from_secs(10));
    // The workers were not the zygote's to take along.
    assert_eq!(workers_of(server.pid()), workers);
    let replaced = poll_until(Duration::from_secs(20), || {
        let now = zygotes_of(server.pid());
        now.len() == 1 && now[0] != zygote[0]
    });
    assert!(replaced, "no new zygote:\n{}", server.log());
    // Recycling forks from the new zygote.
    let mut seen = std::collections::HashSet::new();
    poll_until(Duration::from_secs(30), || {
        let (version, pid) = version_and_pid(&server.addr).expect("an answer");
        assert_eq!(version, 1);
        seen.insert(pid);
        seen.iter().any(|pid| !workers.contains(&(*pid as i32)))
    });
    assert!(
        seen.iter().any(|pid| !workers.contains(&(*pid as i32))),
        "no recycled worker answered: {seen:?} {workers:?}\n{}",
        server.log()
    );
    assert_eq!(imports(&dir).len(), 2, "the new zygote imported once");
}

#[test]
fn an_import_that_starts_a_thread_is_refused_naming_it() {
    let (_dir, config) = app_dir("thread", "");
    let (code, stderr) = Forkd::program(python_forkd())
        .config(&config)
        .workers(2)
        .envs(ENV.iter().copied())
        .env("APP_START_THREAD", "1")
        .run_to_exit(Duration::from_secs(30));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("no worker could boot")
            && stderr.contains("thread")
            && stderr.contains("metrics-pusher"),
        "{stderr}"
    );
}

#[test]
fn an_import_that_makes_an_event_loop_is_refused_naming_it() {
    let (_dir, config) = app_dir("loop", "");
    let (code, stderr) = Forkd::program(python_forkd())
        .config(&config)
        .envs(ENV.iter().copied())
        .env("APP_MAKE_LOOP", "1")
        .run_to_exit(Duration::from_secs(30));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("no worker could boot") && stderr.contains("event loop(s) not closed"),
        "{stderr}"
    );
}

#[test]
fn preload_app_with_a_built_in_app_exits_2_naming_the_key() {
    let dir = temp_dir("preload-builtin");
    let (code, stderr) = Forkd::new()
        .config_in(
            &dir,
            "bind = [\"127.0.0.1:0\"]\napp = \"hello\"\npreload_app = true\n",
        )
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("preload_app"), "{stderr}");
}

#[test]
fn status_and_metrics_show_the_zygote_and_pss_beside_rss() {
    let (dir, _) = app_dir("status", "");
    let pidfile = dir.join("forkd.pid");
    let config = dir.join("status.toml");
    std::fs::write(
        &config,
        format!(
            "bind = [\"127.0.0.1:0\"]\napp = \"preload_app:app\"\npreload_app = true\nworkers = 2\npidfile = {:?}\n[metrics]\nbind = \"127.0.0.1:0\"\n[python]\npath = [{:?}]\n",
            pidfile.display().to_string(),
            dir.display().to_string()
        ),
    )
    .unwrap();
    let server = Forkd::program(python_forkd())
        .config(&config)
        .envs(ENV.iter().copied())
        .start();
    let out = Forkd::program(python_forkd())
        .config(&config)
        .args(["-s", "status"])
        .output(Duration::from_secs(15));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[1]
            .split_whitespace()
            .eq(["PID", "GEN", "STATE", "AGE", "REQUESTS", "RSS", "PSS"]),
        "{}",
        out.stdout
    );
    let rows: Vec<Vec<&str>> = lines[2..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let zygote = zygotes_of(server.pid());
    assert_eq!(zygote.len(), 1);
    assert!(
        rows.iter()
            .any(|r| r[0] == zygote[0].to_string() && r[2] == "zygote"),
        "{}",
        out.stdout
    );
    for row in &rows {
        // PSS at most RSS, both read.
        let mib = |s: &str| s.trim_end_matches('M').parse::<f64>().unwrap();
        assert!(
            mib(row[6]) > 0.0 && mib(row[6]) <= mib(row[5]),
            "{}",
            out.stdout
        );
    }
    let metrics_addr = server
        .log()
        .lines()
        .find_map(|l| l.split("/metrics on ").nth(1).map(|a| a.trim().to_string()))
        .unwrap_or_default();
    assert!(!metrics_addr.is_empty(), "{}", server.log());
    let (_, _, body) = get(&metrics_addr, "/metrics").unwrap();
    let text = String::from_utf8_lossy(&body);
    for family in [
        "forkd_worker_resident_memory_bytes{",
        "forkd_worker_proportional_memory_bytes{",
    ] {
        assert_eq!(text.matches(family).count(), 2, "{family} in\n{text}");
    }
}

/// A worker forked by the zygote that fails at once (its lifespan startup, run after
/// the fork) may exit before the zygote's report of its pid is read: either way its
/// exit is a boot failure with its message, and forkd exits 3.
#[test]
fn a_failing_lifespan_startup_in_preloaded_workers_exits_3_with_its_message() {
    let (dir, config) = app_dir("startup", "");
    let (code, stderr) = Forkd::program(python_forkd())
        .config(&config)
        .workers(3)
        .envs(ENV.iter().copied())
        .env("APP_FAIL_STARTUP", "1")
        .run_to_exit(Duration::from_secs(30));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("no worker could boot") && stderr.contains("cache is down"),
        "{stderr}"
    );
    assert_eq!(imports(&dir).len(), 1, "imported once, in the zygote");
}

#[test]
fn an_import_longer_than_timeout_is_a_boot_failure() {
    let (_dir, config) = app_dir("slow", "");
    let (code, stderr) = Forkd::program(python_forkd())
        .config(&config)
        .args(["--timeout", "1"])
        .envs(ENV.iter().copied())
        .env("APP_SLOW_IMPORT", "30")
        .run_to_exit(Duration::from_secs(20));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("no worker could boot")
            && stderr.contains("import took longer than timeout = 1s"),
        "{stderr}"
    );
}

#[test]
fn ttin_and_ttou_fork_from_the_zygote_without_importing_again() {
    let (dir, config) = app_dir("ttin", "");
    let server = start(&config, &["-w", "2"]);
    server.signal(Signal::SIGTTIN);
    let three = poll_until(Duration::from_secs(10), || {
        workers_of(server.pid()).len() == 3
    });
    assert!(three, "{}", server.log());
    server.signal(Signal::SIGTTOU);
    let two = poll_until(Duration::from_secs(10), || {
        workers_of(server.pid()).len() == 2
    });
    assert!(two, "{}", server.log());
    assert_eq!(imports(&dir).len(), 1);
    assert_eq!(version_and_pid(&server.addr).map(|(v, _)| v), Some(1));
}

/// A Gunicorn config file with `preload_app = True` (the FastAPI app of python.rs):
/// applied, `pre_fork` runs in the hooks' runner before each worker, `post_fork` in each
/// worker (forked from the zygote), whose `server.pid` is the master.
#[test]
fn a_gunicorn_config_file_with_preload_app_runs_its_hooks_around_the_zygotes_forks() {
    let dir = crate::python::app_dir("preload-gconf");
    let conf = crate::python::gunicorn_conf(
        &dir,
        "preload_app = True\n\n\ndef pre_fork(server, worker):\n    open(os.path.join(HOOKS, \"pre_fork-%d\" % worker.age), \"w\").close()\n",
    );
    let server = Forkd::program(python_forkd())
        .config(&conf)
        .app("fastapi_app:app")
        .envs(ENV.iter().copied())
        .start();
    assert_eq!(get(&server.addr, "/").unwrap().0, 200, "{}", server.log());
    assert_eq!(zygotes_of(server.pid()).len(), 1, "{}", server.log());
    let mut workers = workers_of(server.pid());
    workers.sort();
    assert_eq!(workers.len(), 2);
    let hooks = poll_until(Duration::from_secs(10), || {
        crate::python::hook_pids(&dir, "post_fork") == workers
            && crate::python::hook_pids(&dir, "pre_fork") == vec![1, 2]
    });
    assert!(
        hooks,
        "post_fork {:?} pre_fork {:?} workers {workers:?}\n{}",
        crate::python::hook_pids(&dir, "post_fork"),
        crate::python::hook_pids(&dir, "pre_fork"),
        server.log()
    );
    let first =
        std::fs::read_to_string(dir.join(format!("hooks/post_fork-{}", workers[0]))).unwrap();
    assert_eq!(
        first,
        format!("{} 2", server.pid()),
        "server.pid is the master's"
    );
    let log = server.log();
    let warning = log
        .lines()
        .find(|l| l.contains("Gunicorn config"))
        .unwrap_or("");
    assert!(
        !warning.contains("preload_app"),
        "preload_app applied, not warned about: {warning}"
    );
}

/// USR2: the new master starts its own zygote, imports the code on disk then, and takes
/// over with no failed request; the old master's zygote goes with it.
#[test]
fn usr2_under_keepalive_load_starts_a_new_master_with_its_own_zygote() {
    let (dir, config) = app_dir("usr2", "");
    let pidfile = dir.join("forkd.pid");
    let server = start(&config, &["-w", "2", "-p", pidfile.to_str().unwrap()]);
    let old = server.pid();
    let old_zygote = zygotes_of(old);
    assert_eq!(old_zygote.len(), 1);
    set_version(&dir, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = load(&server.addr, 64, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    server.signal(Signal::SIGUSR2);
    let moved = poll_until(Duration::from_secs(30), || {
        read_pid(&pidfile).is_some_and(|p| p != old)
    });
    let new_pid = read_pid(&pidfile).unwrap_or(0);
    // Stops the new master (not our child) whatever happens below.
    let _new_master = PidGuard(new_pid);
    let mut server = server;
    let old_gone = poll_until(Duration::from_secs(30), || {
        matches!(server.child.try_wait(), Ok(Some(_)))
    });
    std::thread::sleep(Duration::from_millis(300));
    finish(stop, handles);
    assert!(moved, "the pidfile did not move:\n{}", server.log());
    assert!(old_gone, "the old master did not exit:\n{}", server.log());
    assert_eq!(workers_of(new_pid).len(), 2, "{}", server.log());
    assert_eq!(zygotes_of(new_pid).len(), 1, "{}", server.log());
    assert!(
        poll_until(Duration::from_secs(10), || !Path::new(&format!(
            "/proc/{}",
            old_zygote[0]
        ))
        .exists()),
        "the old zygote is gone"
    );
    assert_no_failures(&tally, &server, "USR2 with preload_app");
    assert_eq!(version_and_pid(&server.addr).map(|(v, _)| v), Some(2));
    assert_eq!(imports(&dir).len(), 2, "one import per master");
}
