//! The master trusts nothing a worker or another local user can write: the shared
//! scoreboard, the exec workers' notify socket name, the pidfile `-s` reads, the sender
//! of a realtime signal. And a freeze of the whole process tree is not a timeout.

mod harness;

use harness::*;
use nix::sys::signal::Signal;
use std::io::{Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

/// The start of the scoreboard in `pid`'s memory: its only shared anonymous mapping.
fn scoreboard_address(pid: i32) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let line = maps
        .lines()
        .find(|l| {
            let mut fields = l.split_whitespace();
            let perms = fields.nth(1).unwrap_or("");
            perms == "rw-s" && (l.contains("/dev/zero") || l.contains("anon_shmem"))
        })
        .unwrap_or_else(|| panic!("no shared anonymous mapping in:\n{maps}"));
    let start = line.split('-').next().expect("range");
    u64::from_str_radix(start, 16).expect("hex address")
}

/// Writes `bytes` at `address` of `pid`'s memory (root, or the process's tracer).
fn poke(pid: i32, address: u64, bytes: &[u8]) {
    let mut mem = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .expect("open /proc/PID/mem (the test runs as root)");
    mem.seek(SeekFrom::Start(address)).expect("seek");
    mem.write_all(bytes).expect("write");
}

/// The header's fold sequence: after `started_ms` (u64) and `server_stopping` (u32).
const FOLD_SEQ_OFFSET: u64 = 16;

fn metrics_addr(server: &Server) -> String {
    server.expect_log("serving /metrics on ", Duration::from_secs(5));
    server
        .log()
        .split("serving /metrics on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("metrics address")
        .to_string()
}

#[test]
fn a_worker_leaving_the_fold_sequence_odd_does_not_hang_the_master() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: writing another process's memory needs root");
        return;
    }
    let dir = temp_dir("untrusted-scoreboard");
    let config = dir.join("forkd.toml");
    std::fs::write(
        &config,
        "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nworkers = 2\ngraceful_timeout = 5\n\
         [metrics]\nbind = \"127.0.0.1:0\"\n",
    )
    .expect("config");
    let mut server = Server::start(&forkd(), &["-c", config.to_str().unwrap()]);
    let metrics = metrics_addr(&server);
    assert_eq!(get(&server.addr, "/").expect("request").0, 200);
    // What a worker could do: the mapping is the same in every process of the tree.
    let worker = workers_of(server.pid())[0];
    poke(
        worker,
        scoreboard_address(worker) + FOLD_SEQ_OFFSET,
        &1u64.to_ne_bytes(),
    );
    // A reload makes the master count the requests served (STATUS=, its log).
    server.signal(Signal::SIGHUP);
    server.expect_log("reload finished", Duration::from_secs(10));
    let (status, _, _) = get(&metrics, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    assert_eq!(get(&server.addr, "/").expect("request").0, 200);
    server.signal(Signal::SIGTERM);
    let started = Instant::now();
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)),
        Some(0),
        "the master did not stop on TERM:\n{}",
        server.log()
    );
    eprintln!("stopped in {:?}", started.elapsed());
}
