//! `reload = true` (`--reload`): a change of a watched file is one HUP after a quiet
//! 300 ms, however many saves came in a burst; refused where it makes no sense.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use std::time::Duration;

#[test]
fn a_burst_of_edits_to_a_watched_file_is_one_reload() {
    let dir = temp_dir("reload-watch");
    std::fs::write(dir.join("settings.toml"), "v = 0\n").unwrap();
    std::fs::write(dir.join("other.txt"), "not watched\n").unwrap();
    let server = Forkd::new()
        .config_in(
            &dir,
            &format!(
                "bind = [\"127.0.0.1:0\"]\nworkers = 1\nchdir = {:?}\nreload_extra_files = [\"*.toml\"]\n",
                dir.display()
            ),
        )
        .args(["--reload", "hello"])
        .start();
    server.expect_log("reload: watching", Duration::from_secs(5));
    // Not a watched file: no reload.
    std::fs::write(dir.join("other.txt"), "changed\n").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(!server.log_contains("generation=2"), "{}", server.log());
    // Five saves 50 ms apart: one reload, once they stop.
    for n in 1..=5 {
        std::fs::write(dir.join("settings.toml"), format!("v = {n}\n")).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    server.expect_log("generation=2", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!server.log_contains("generation=3"), "{}", server.log());
    assert_eq!(get(&server.addr, "/").map(|r| r.0), Ok(200));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn reload_is_refused_with_exec_workers_and_under_systemd_notify() {
    let (code, stderr) = Forkd::new()
        .args(["--reload", "--", "sh", "-c", "sleep 10"])
        .run_to_exit(Duration::from_secs(10));
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("key `reload`") && stderr.contains("exec workers"),
        "{stderr}"
    );
    let (code, stderr) = Forkd::new()
        .args(["--reload", "hello"])
        .env("NOTIFY_SOCKET", "/nonexistent/forkd-notify.sock")
        .run_to_exit(Duration::from_secs(10));
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("key `reload`") && stderr.contains("NOTIFY_SOCKET"),
        "{stderr}"
    );
}
