//! The master trusts nothing a worker or another local user can write: the shared
//! scoreboard, the exec workers' notify socket name, the pidfile `-s` reads, the sender
//! of a realtime signal. And a freeze of the whole process tree is not a timeout.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use nix::sys::signal::Signal;
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

/// The start and length of the scoreboard in `pid`'s memory: its only shared
/// anonymous mapping.
fn scoreboard_mapping(pid: i32) -> (u64, u64) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let line = maps
        .lines()
        .find(|l| {
            let mut fields = l.split_whitespace();
            let perms = fields.nth(1).unwrap_or("");
            perms == "rw-s" && (l.contains("/dev/zero") || l.contains("anon_shmem"))
        })
        .unwrap_or_else(|| panic!("no shared anonymous mapping in:\n{maps}"));
    let range = line.split_whitespace().next().expect("range");
    let (start, end) = range.split_once('-').expect("range");
    let start = u64::from_str_radix(start, 16).expect("hex address");
    let end = u64::from_str_radix(end, 16).expect("hex address");
    (start, end - start)
}

fn scoreboard_address(pid: i32) -> u64 {
    scoreboard_mapping(pid).0
}

/// The address of each worker's slot in `pid`'s scoreboard: 64-byte aligned, starting
/// with the worker's pid (i32) and a valid state (u32, 1 to 3).
fn slot_addresses(pid: i32, workers: &[i32]) -> Vec<u64> {
    let (start, len) = scoreboard_mapping(pid);
    let mut bytes = vec![0u8; len as usize];
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("open mem");
    mem.seek(SeekFrom::Start(start)).expect("seek");
    mem.read_exact(&mut bytes).expect("read the scoreboard");
    let at = |offset: usize| u32::from_ne_bytes(bytes[offset..offset + 4].try_into().unwrap());
    workers
        .iter()
        .map(|worker| {
            (64..bytes.len() - 8)
                .step_by(64)
                .find(|&offset| at(offset) == *worker as u32 && (1..=3).contains(&at(offset + 4)))
                .map(|offset| start + offset as u64)
                .unwrap_or_else(|| panic!("no slot for worker {worker}"))
        })
        .collect()
}

/// Offsets in a slot: `pid` (i32), `state`, `flags`, `message_len` (u32), then
/// `progress_ms` and `requests` (u64).
const MESSAGE_LEN_OFFSET: u64 = 12;
const REQUESTS_OFFSET: u64 = 24;

/// Writes `bytes` at `address` of `pid`'s memory (root, or the process's tracer).
fn poke(pid: i32, address: u64, bytes: &[u8]) {
    let mut mem = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .expect("open /proc/PID/mem (the test runs as root)");
    mem.seek(SeekFrom::Start(address)).expect("seek");
    mem.write_all(bytes).expect("write");
}

/// Whether this test process may write other processes' memory (root); if not, the
/// test fails (or, with `ALLOW_TEST_SKIPS=1`, is skipped).
fn can_poke() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        harness::cannot_run_here("writing another process's memory needs root");
    }
    root
}

/// Two echo workers and a metrics listener, from a config in a fresh temp dir `name`;
/// the server and the metrics address.
fn echo_server_with_metrics(name: &str) -> (Server, String) {
    let dir = temp_dir(name);
    let config = dir.join("forkd.toml");
    std::fs::write(
        &config,
        "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nworkers = 2\ngraceful_timeout = 5\n\
         [metrics]\nbind = \"127.0.0.1:0\"\n",
    )
    .expect("config");
    let server = Forkd::new().config(&config).start();
    let metrics = metrics_addr(&server);
    (server, metrics)
}

/// The header's fold sequence: after `started_ms` (u64) and `server_stopping` (u32).
const FOLD_SEQ_OFFSET: u64 = 16;

#[test]
fn a_worker_leaving_the_fold_sequence_odd_does_not_hang_the_master() {
    if !can_poke() {
        return;
    }
    let (mut server, metrics) = echo_server_with_metrics("untrusted-scoreboard");
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

#[test]
fn workers_writing_huge_counters_and_lengths_do_not_crash_the_master() {
    if !can_poke() {
        return;
    }
    let (mut server, metrics) = echo_server_with_metrics("untrusted-counters");
    let workers = workers_of(server.pid());
    for slot in slot_addresses(workers[0], &workers) {
        poke(workers[0], slot + REQUESTS_OFFSET, &u64::MAX.to_ne_bytes());
        poke(
            workers[0],
            slot + MESSAGE_LEN_OFFSET,
            &u32::MAX.to_ne_bytes(),
        );
    }
    // The master adds the counters up for its reload status; the workers for /metrics.
    server.signal(Signal::SIGHUP);
    server.expect_log("reload finished", Duration::from_secs(10));
    let (status, _, body) = get(&metrics, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&body).contains(&format!("forkd_requests_total {}", u64::MAX)),
        "saturated, not wrapped"
    );
    assert_eq!(get(&server.addr, "/").expect("request").0, 200);
    server.signal(Signal::SIGTERM);
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)),
        Some(0),
        "the master did not stop on TERM:\n{}",
        server.log()
    );
}

fn stop_all(pids: &[i32], signal: Signal) {
    for pid in pids {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), signal).expect("signal");
    }
}

/// Sorted, for comparing worker sets.
fn sorted(mut pids: Vec<i32>) -> Vec<i32> {
    pids.sort_unstable();
    pids
}

fn short_timeout_server(name: &str) -> Server {
    let dir = temp_dir(name);
    let config = dir.join("forkd.toml");
    std::fs::write(
        &config,
        "app = \"hello\"\nbind = [\"127.0.0.1:0\"]\nworkers = 2\ntimeout = 2\n",
    )
    .expect("config");
    Forkd::new().config(&config).start()
}

/// Freezes the master and its workers for longer than `timeout`, then thaws them, the
/// master first or last: no worker is taken for hung.
fn freeze_whole_tree(name: &str, master_first: bool) {
    let server = short_timeout_server(name);
    let workers = sorted(workers_of(server.pid()));
    assert_eq!(workers.len(), 2);
    let mut tree = vec![server.pid()];
    tree.extend(&workers);
    stop_all(&tree, Signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(4));
    if master_first {
        stop_all(&tree, Signal::SIGCONT);
    } else {
        tree.reverse();
        stop_all(&tree, Signal::SIGCONT);
    }
    // Past another timeout window: still the same workers, all serving.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !server.log_contains("worker timeout"),
        "a frozen tree killed workers:\n{}",
        server.log()
    );
    assert_eq!(
        sorted(workers_of(server.pid())),
        workers,
        "{}",
        server.log()
    );
    for _ in 0..10 {
        assert_eq!(get(&server.addr, "/").expect("request").0, 200);
    }
    assert!(server.log_contains("did not run for"), "{}", server.log());
}

#[test]
fn freezing_the_whole_tree_kills_no_worker_master_thawed_first() {
    freeze_whole_tree("untrusted-freeze-master-first", true);
}

#[test]
fn freezing_the_whole_tree_kills_no_worker_master_thawed_last() {
    freeze_whole_tree("untrusted-freeze-master-last", false);
}

#[test]
fn a_single_stopped_worker_is_still_killed_at_timeout_and_replaced() {
    let server = short_timeout_server("untrusted-freeze-one");
    let workers = workers_of(server.pid());
    let stopped = workers[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(stopped), Signal::SIGSTOP).expect("stop");
    server.expect_log("worker timeout", Duration::from_secs(10));
    assert!(
        poll_until(Duration::from_secs(10), || {
            let now = workers_of(server.pid());
            now.len() == 2 && !now.contains(&stopped)
        }),
        "the stopped worker was not replaced:\n{}",
        server.log()
    );
    assert!(!server.log_contains("did not run for"), "{}", server.log());
    assert_eq!(get(&server.addr, "/").expect("request").0, 200);
}

/// The address forkd logged it listens on.
fn listening_address(server: &Server) -> String {
    server
        .log()
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("listening line")
        .to_string()
}

/// A fresh temp dir `name` holding tests/exec/notify_worker.py, an exec worker that
/// says READY=1 on the notify socket.
fn dir_with_the_notify_worker(name: &str) -> std::path::PathBuf {
    let dir = temp_dir(name);
    std::fs::write(
        dir.join("notify_worker.py"),
        include_str!("../exec/notify_worker.py"),
    )
    .expect("worker");
    dir
}

#[test]
fn a_squatted_notify_socket_name_does_not_block_exec_workers() {
    use std::os::linux::net::SocketAddrExt;
    let dir = dir_with_the_notify_worker("untrusted-notify");
    let config = dir.join("forkd.toml");
    std::fs::write(
        &config,
        format!(
            "bind = [\"127.0.0.1:0\"]\nworkers = 1\nchdir = {:?}\n[env]\nREADY_DELAY = \"0.1\"\n\
             [exec]\ncommand = [\"python3\", \"notify_worker.py\"]\nready = \"notify\"\n",
            dir.display()
        ),
    )
    .expect("config");
    // forkd's pid is the shell's (it execs forkd): take the name forkd would have used
    // before forkd starts.
    let server = Server::spawn(
        std::process::Command::new("sh")
            .args(["-c", "sleep 0.5; exec \"$0\" \"$@\""])
            .arg(forkd())
            .args(["-c", config.to_str().unwrap()]),
    );
    let name = format!("forkd/{}/notify", server.pid());
    let squatter = std::os::unix::net::UnixDatagram::bind_addr(
        &std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name"),
    )
    .expect("bind the predictable name first");
    server.expect_log("all workers ready", Duration::from_secs(15));
    let addr = listening_address(&server);
    let (status, _, body) = get(&addr, "/").expect("request");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).starts_with("notify-worker"));
    assert!(
        !server.log_contains("Address already in use"),
        "{}",
        server.log()
    );
    drop(squatter);
}

#[test]
fn signal_command_refuses_a_pidfile_naming_another_process() {
    let dir = temp_dir("untrusted-pidfile");
    let pidfile = dir.join("forkd.pid");
    // A process that looks like a forkd master by its title, as any process can.
    let mut impostor = std::process::Command::new("bash")
        .args(["-c", "exec -a 'forkd: master' sleep 60"])
        .spawn()
        .expect("start sleep");
    let _guard = PidGuard(impostor.id() as i32);
    assert!(poll_until(Duration::from_secs(5), || {
        std::fs::read(format!("/proc/{}/cmdline", impostor.id()))
            .is_ok_and(|c| c.starts_with(b"forkd: master"))
    }));
    std::fs::write(&pidfile, format!("{}\n", impostor.id())).expect("pidfile");
    let pid_arg = pidfile.to_str().unwrap();
    for name in ["stop", "reload"] {
        let (code, stderr) = Forkd::new()
            .args(["-p", pid_arg, "-s", name])
            .run_to_exit(Duration::from_secs(10));
        assert_eq!(code, Some(1), "-s {name}: {stderr}");
        assert!(stderr.contains("refusing to signal"), "{stderr}");
        assert!(
            impostor.try_wait().expect("try_wait").is_none(),
            "-s {name} signalled the process the pidfile names"
        );
    }
    // Locked by someone else than the pid it names: refused too.
    let holder = std::fs::File::open(&pidfile).expect("open");
    // SAFETY: flock(2) on an open fd.
    let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&holder), libc::LOCK_EX) };
    assert_eq!(locked, 0);
    let (code, stderr) = Forkd::new()
        .args(["-p", pid_arg, "-s", "stop"])
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(impostor.try_wait().expect("try_wait").is_none());
    // A symlink is not a pidfile.
    let link = dir.join("link.pid");
    std::os::unix::fs::symlink(&pidfile, &link).expect("symlink");
    let (code, stderr) = Forkd::new()
        .args(["-p", link.to_str().unwrap(), "-s", "stop"])
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    assert!(impostor.try_wait().expect("try_wait").is_none());

    // The real master passes every check.
    std::fs::remove_file(&pidfile).expect("rm");
    let mut server = Forkd::new()
        .args(["-p", pid_arg])
        .local()
        .workers(1)
        .app("hello")
        .start();
    let (code, stderr) = Forkd::new()
        .args(["-p", pid_arg, "-s", "stop"])
        .run_to_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{stderr}\n{}", server.log());
    assert_eq!(server.wait_exit(Duration::from_secs(5)), Some(0));
}

/// A siginfo as rt_sigqueueinfo(2) takes it (the `_rt` member, 64-bit layout): every
/// field the receiver sees is the sender's to choose.
#[repr(C)]
struct ForgedInfo {
    signo: i32,
    errno: i32,
    code: i32,
    _pad: i32,
    pid: i32,
    uid: u32,
    value: u64,
    _rest: [u8; 96],
}

/// Queues `signo` to `target` claiming to come from `claimed_pid` (root's uid) with
/// `value`, as any process allowed to signal `target` can.
fn forge(target: i32, signo: i32, claimed_pid: i32, value: u64) {
    let info = ForgedInfo {
        signo,
        errno: 0,
        code: libc::SI_QUEUE,
        _pad: 0,
        pid: claimed_pid,
        uid: 0,
        value,
        _rest: [0; 96],
    };
    // SAFETY: rt_sigqueueinfo with a siginfo-sized, initialised buffer.
    let done = unsafe {
        libc::syscall(
            libc::SYS_rt_sigqueueinfo,
            target,
            signo,
            &info as *const ForgedInfo,
        )
    };
    assert_eq!(
        done,
        0,
        "rt_sigqueueinfo: {}",
        std::io::Error::last_os_error()
    );
}

/// Whether `pid` has `signo` blocked.
fn blocks(pid: i32, signo: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigBlk:"))
                .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & (1 << (signo - 1)) != 0)
}

#[test]
fn a_forged_reload_reply_is_ignored_by_the_waiting_client() {
    let dir = dir_with_the_notify_worker("untrusted-reload-reply");
    let config = dir.join("forkd.toml");
    // Workers that take 3 s to be ready: the reload is still under way when the forged
    // replies arrive.
    std::fs::write(
        &config,
        format!(
            "bind = [\"127.0.0.1:0\"]\nworkers = 1\nchdir = {:?}\npidfile = {:?}\n\
             [env]\nREADY_DELAY = \"3\"\n\
             [exec]\ncommand = [\"python3\", \"notify_worker.py\"]\nready = \"notify\"\n",
            dir.display(),
            dir.join("forkd.pid").display()
        ),
    )
    .expect("config");
    let config = config.to_str().unwrap();
    let server = Forkd::new().config(config).start();
    let mut client = Forkd::new().config(config).args(["-s", "reload"]).spawn();
    let reply = libc::SIGRTMIN() + 2;
    assert!(
        poll_until(Duration::from_secs(10), || blocks(client.pid(), reply)),
        "the client never waited for the answer"
    );
    server.expect_log("HUP: reloading", Duration::from_secs(10));
    // The old wire's "failed" and "ok" values, then a random one, all claiming to come
    // from the master.
    for value in [2, 1, 0x5eed_5eed_5eed_5eed] {
        forge(client.pid(), reply, server.pid(), value);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        client.child.try_wait().expect("try_wait").is_none(),
        "a forged reply ended the wait:\n{}",
        client.log()
    );
    assert_eq!(
        client.wait_exit(Duration::from_secs(20)),
        Some(0),
        "client:\n{}\nforkd:\n{}",
        client.log(),
        server.log()
    );
    // The master logs before it answers, but its stderr reaches the harness through a
    // pipe and a reader thread: wait (bounded) for the line rather than race it.
    server.expect_log("reload finished", Duration::from_secs(5));
    assert!(
        client.log_contains("ignoring a reply signal"),
        "{}",
        client.log()
    );
}

#[test]
fn a_forged_upgrade_ready_signal_does_not_stop_the_master() {
    let server = short_timeout_server("untrusted-upgrade-forge");
    let ready = libc::SIGRTMIN() + 1;
    // No upgrade is under way, and none of these carries a token: all ignored.
    for claimed in [1, server.pid() + 1, std::process::id() as i32] {
        forge(server.pid(), ready, claimed, 0);
    }
    server.expect_log("ignoring an upgrade signal", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!server.log_contains("stops gracefully"), "{}", server.log());
    assert_eq!(get(&server.addr, "/").expect("request").0, 200);
}
