//! End to end under a real systemd (the host's systemd 252 booted in a container, see
//! tests/all/nspawn): the shipped `config/forkd.service` and `config/forkd.socket`, installed
//! unchanged, with the shipped `config/forkd.toml` (its app switched to `echo`, for a
//! slow request), drive the built forkd. Checked: start reaches active/running with the
//! master as MainPID; `systemctl reload` under load drops nothing and returns only once
//! the new workers serve; USR2 moves MainPID to the new master and the unit stays active
//! (and systemd still notices that master die); `systemctl stop` lets an in-flight
//! request finish and ends inactive, not failed; socket activation starts forkd on the
//! first connection and keeps the socket across upgrades and restarts; a reload with a
//! bad config fails `systemctl reload` and keeps serving; forkd's lines reach the journal
//! with their priority and without a second timestamp. The unit's privilege split holds:
//! a root master with a bounded capability set, workers as the `forkd` system user that
//! `config/forkd.sysusers` creates at boot, and `NotifyAccess=main`; exec workers with
//! `ready = "auto"` are seen ready as `forkd` because the master keeps CAP_SYS_PTRACE.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "all/harness/mod.rs"]
mod harness;
#[path = "all/nspawn/mod.rs"]
mod nspawn;

use harness::{finish, get, load, poll_until, read_response, workers_of, Tally};
use nspawn::{Container, Payload};
use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SERVICE: &str = include_str!("../config/forkd.service");
const SOCKET: &str = include_str!("../config/forkd.socket");
const CONFIG: &str = include_str!("../config/forkd.toml");
const SYSUSERS: &str = include_str!("../config/forkd.sysusers");
/// Where the shipped config (and forkd.socket) listen, inside the container's own
/// network namespace: no port is shared with anything else on the host.
const ADDR: &str = "127.0.0.1:8000";
const STEP: Duration = Duration::from_secs(60);

/// The shipped config with the `echo` app, whose `sleep_ms` makes a slow request.
fn config() -> String {
    let shipped = "app = \"hello\"";
    assert!(
        CONFIG.contains(shipped),
        "config/forkd.toml no longer sets {shipped}"
    );
    CONFIG.replacen(shipped, "app = \"echo\"", 1)
}

fn boot(tag: &str) -> Container {
    let config = config();
    Container::boot(
        tag,
        &Payload {
            units: &[("forkd.service", SERVICE), ("forkd.socket", SOCKET)],
            binary: &harness::forkd(),
            config: &config,
            sysusers: &[("forkd.conf", SYSUSERS)],
        },
    )
}

/// Stops the load client if the test panics before it finishes the load itself.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `kill -SIGNAL PID` in the container, as an operator would type it there (the shell's
/// builtin: a minimal system may have no kill binary).
fn signal_in(c: &Container, signal: &str, inner_pid: i32) {
    let out = c.run(
        &["sh", "-c", &format!("kill -{signal} {inner_pid}")],
        Duration::from_secs(10),
    );
    assert!(out.ok(), "kill -{signal} {inner_pid}: {out:?}");
}

/// Several properties of a unit from one `systemctl show`, so they are consistent.
fn props(c: &Container, unit: &str, names: &[&str]) -> HashMap<String, String> {
    let mut args = vec!["show", unit];
    for name in names {
        args.push("-p");
        args.push(name);
    }
    c.systemctl(&args, STEP)
        .stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The unit's main pid inside the container and on the host; asserts it is a forkd
/// master.
fn main_pid(c: &Container) -> (i32, i32) {
    let inner: i32 = c
        .property("forkd.service", "MainPID")
        .parse()
        .expect("MainPID is a number");
    assert!(inner > 0, "no MainPID:\n{}", c.journal("forkd.service"));
    let host = c
        .host_pid(inner)
        .unwrap_or_else(|| panic!("MainPID {inner} is not running"));
    let cmdline = std::fs::read(format!("/proc/{host}/cmdline")).unwrap_or_default();
    assert!(
        cmdline.starts_with(b"forkd: master"),
        "MainPID {inner} is {:?}, not the forkd master",
        String::from_utf8_lossy(&cmdline)
    );
    (inner, host)
}

fn alive(host_pid: i32) -> bool {
    // A zombie has exited; only its parent has not collected it yet.
    std::fs::read_to_string(format!("/proc/{host_pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

fn assert_state(c: &Container, unit: &str, active: &str, sub: &str) {
    let p = props(c, unit, &["ActiveState", "SubState", "Result"]);
    assert!(
        p["ActiveState"] == active && p["SubState"] == sub,
        "{unit} is {p:?}, expected {active}/{sub}:\n{}",
        c.journal(unit)
    );
}

/// Waits (bounded) for a unit to reach a state: a socket-activated forkd can answer the
/// connection that started it before systemd has processed its READY=1.
fn wait_state(c: &Container, unit: &str, active: &str, sub: &str) {
    poll_until(Duration::from_secs(20), || {
        let p = props(c, unit, &["ActiveState", "SubState"]);
        p["ActiveState"] == active && p["SubState"] == sub
    });
    assert_state(c, unit, active, sub);
}

/// Waits until the unit's status says `workers` of `workers` are ready in `generation`.
fn status_ready(status: &str, workers: usize, generation: u64) -> bool {
    status.starts_with(&format!("{workers} of {workers} workers ready"))
        && status.contains(&format!("generation {generation})"))
}

#[test]
fn start_reload_upgrade_and_stop_under_systemd() {
    let c = boot("e2e");

    // start: Type=notify returns once READY=1 came, i.e. every worker serves.
    c.systemctl(&["start", "forkd.service"], STEP);
    assert_state(&c, "forkd.service", "active", "running");
    let (mut main_inner, mut master) = main_pid(&c);
    assert_eq!(workers_of(master).len(), 2, "the config asks for 2 workers");
    assert_privileges(&c, master);
    let status = c.property("forkd.service", "StatusText");
    assert!(status_ready(&status, 2, 1), "status: {status:?}");
    let (code, _, _) = c
        .in_network(|| get(ADDR, "/"))
        .expect("GET / in the container");
    assert_eq!(code, 200);

    // Load on 8 keep-alive connections for the reloads and the upgrade.
    let stop = Arc::new(AtomicBool::new(false));
    let stop_load = stop.clone();
    let (tally, handles) = c.in_network(move || load(ADDR, 8, stop_load));
    let _stop_on_panic = StopOnDrop(stop.clone());
    let served = |t: &Tally| t.ok.load(Ordering::Relaxed);
    assert!(
        poll_until(Duration::from_secs(20), || served(&tally) > 50),
        "the load client gets no answers: {:?}",
        tally.errors.lock().unwrap()
    );

    // reload: synchronous, so when systemctl returns the new generation serves. The
    // first time, the master is frozen (SIGSTOP) while systemctl runs: a reload that
    // returned without waiting for it (ExecReload=kill -HUP) would return anyway.
    for generation in 2..=4u64 {
        let old = workers_of(master);
        let started = Instant::now();
        if generation == 2 {
            reload_with_master_frozen(&c, master);
        } else {
            c.systemctl(&["reload", "forkd.service"], STEP);
        }
        let took = started.elapsed();
        let p = props(
            &c,
            "forkd.service",
            &["ActiveState", "SubState", "StatusText", "MainPID"],
        );
        assert_eq!(p["ActiveState"], "active", "after reload: {p:?}");
        assert_eq!(
            p["MainPID"],
            main_inner.to_string(),
            "reload kept the master"
        );
        assert!(
            status_ready(&p["StatusText"], 2, generation),
            "systemctl reload returned before generation {generation} was ready: {p:?}\n{}",
            c.journal("forkd.service")
        );
        let new: Vec<i32> = workers_of(master)
            .into_iter()
            .filter(|w| !old.contains(w))
            .collect();
        assert!(
            new.len() >= 2,
            "after reload {generation}: new workers {new:?}, old {old:?}"
        );
        assert!(
            poll_until(Duration::from_secs(40), || old.iter().all(|w| !alive(*w))),
            "old workers {old:?} still running after reload {generation}"
        );
        eprintln!("systemctl reload {generation}: {took:?}");
    }
    // From a root shell on the machine (outside the unit's namespaces and capability
    // bounds) `forkd -s reload` gets the root master's answer too.
    let reload = c.run(
        &[
            "forkd",
            "-c",
            "/etc/forkd/forkd.toml",
            "--pid",
            "/run/forkd/forkd.pid",
            "-s",
            "reload",
        ],
        STEP,
    );
    assert!(reload.ok(), "forkd -s reload from a root shell: {reload:?}");
    let status = c.property("forkd.service", "StatusText");
    assert!(status_ready(&status, 2, 5), "status: {status:?}");

    // USR2: the new master sends READY=1, the old one MAINPID=; the unit stays active.
    let before = served(&tally);
    let old_master = master;
    signal_in(&c, "USR2", main_inner);
    let mut states = Vec::new();
    let moved = poll_until(STEP, || {
        let p = props(&c, "forkd.service", &["ActiveState", "MainPID"]);
        states.push(p["ActiveState"].clone());
        p["MainPID"] != main_inner.to_string()
    });
    assert!(
        moved,
        "MainPID did not move after USR2:\n{}",
        c.journal("forkd.service")
    );
    (main_inner, master) = main_pid(&c);
    assert!(
        poll_until(STEP, || !alive(old_master)),
        "the old master {old_master} did not exit"
    );
    assert!(
        states.iter().all(|s| s == "active"),
        "the unit left `active` during the upgrade: {states:?}"
    );
    assert_state(&c, "forkd.service", "active", "running");
    // NotifyAccess=main: systemd logs every message it refuses from another pid; forkd
    // sends none (the new master waits for the hand-over, the old one is silent after).
    let journal = c.journal("forkd.service");
    assert!(
        !journal.contains("reception only permitted for main PID"),
        "a process other than the main one notified systemd:\n{journal}"
    );
    assert_eq!(workers_of(master).len(), 2);
    assert!(
        poll_until(Duration::from_secs(20), || served(&tally) > before + 50),
        "no traffic after the upgrade"
    );

    finish(stop, handles);
    let (ok, failed) = (served(&tally), tally.failed.load(Ordering::Relaxed));
    eprintln!("load across 3 reloads and an upgrade: {ok} ok, {failed} failed");
    assert!(ok > 100, "too little traffic got through ({ok})");
    assert_eq!(
        failed,
        0,
        "requests failed: {:?}\n{}",
        tally.errors.lock().unwrap(),
        c.journal("forkd.service")
    );

    // The upgraded master is not systemd's child: systemd must still see it die and
    // restart the unit (Restart=on-failure).
    let restarts = c.property("forkd.service", "NRestarts");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the upgraded master");
    let restarted = poll_until(STEP, || {
        let p = props(
            &c,
            "forkd.service",
            &["ActiveState", "MainPID", "NRestarts"],
        );
        p["ActiveState"] == "active"
            && p["NRestarts"] != restarts
            && p["MainPID"] != main_inner.to_string()
    });
    assert!(
        restarted,
        "systemd did not restart forkd after its upgraded master died:\n{}",
        c.journal("forkd.service")
    );
    (main_inner, master) = main_pid(&c);

    // Upgrade again, then stop with a request in flight: the stop drains it.
    signal_in(&c, "USR2", main_inner);
    assert!(
        poll_until(STEP, || c.property("forkd.service", "MainPID")
            != main_inner.to_string()),
        "MainPID did not move after the second USR2"
    );
    assert!(poll_until(STEP, || !alive(master)), "old master stays");
    let (_, master) = main_pid(&c);
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let slow = c.in_network(move || {
        std::thread::spawn(move || -> Result<u16, String> {
            let stream = TcpStream::connect(ADDR).map_err(|e| format!("connect: {e}"))?;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let mut reader = BufReader::new(stream);
            // A first answer proves a worker holds the connection.
            reader
                .get_mut()
                .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                .map_err(|e| format!("write: {e}"))?;
            read_response(&mut reader)?;
            reader
                .get_mut()
                .write_all(b"GET /?sleep_ms=2000 HTTP/1.1\r\nHost: t\r\n\r\n")
                .map_err(|e| format!("write: {e}"))?;
            let _ = sent_tx.send(());
            read_response(&mut reader).map(|(status, _)| status)
        })
    });
    sent_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the slow request was not sent");
    let stopping = Instant::now();
    c.systemctl(&["stop", "forkd.service"], STEP);
    let stopped = Instant::now();
    // Answered (not cut off by SIGKILL), and the master had exited when systemctl
    // returned: the stop waited for the drain.
    let status = slow
        .join()
        .expect("slow request thread")
        .unwrap_or_else(|e| {
            panic!(
                "the in-flight request failed during stop: {e}\n{}",
                c.journal("forkd.service")
            )
        });
    assert_eq!(status, 200);
    assert!(
        !alive(master),
        "systemctl stop returned before the master exited"
    );
    eprintln!(
        "systemctl stop with a 2 s request in flight: {:?}",
        stopped - stopping
    );
    let p = props(&c, "forkd.service", &["ActiveState", "SubState", "Result"]);
    assert_eq!(
        (p["ActiveState"].as_str(), p["Result"].as_str()),
        ("inactive", "success"),
        "after stop: {p:?}\n{}",
        c.journal("forkd.service")
    );
    assert!(
        c.processes()
            .iter()
            .all(|p| !std::fs::read(format!("/proc/{p}/cmdline"))
                .unwrap_or_default()
                .starts_with(b"forkd")),
        "forkd processes remain after stop"
    );
}

#[test]
fn socket_activation_under_systemd() {
    let c = boot("sock");
    c.systemctl(&["start", "forkd.socket"], STEP);
    assert_state(&c, "forkd.socket", "active", "listening");
    assert_state(&c, "forkd.service", "inactive", "dead");

    // The first connection starts forkd, which serves the socket systemd holds.
    let (code, _, _) = c.in_network(|| get(ADDR, "/")).expect("GET / starts forkd");
    assert_eq!(code, 200);
    wait_state(&c, "forkd.service", "active", "running");
    let (main_inner, master) = main_pid(&c);
    let systemd_sockets = socket_inodes(c.init);
    assert!(
        socket_inodes(master)
            .iter()
            .any(|s| systemd_sockets.contains(s)),
        "the master does not hold the socket systemd listens on:\n{}",
        c.journal("forkd.service")
    );

    // An upgrade hands the passed socket on.
    signal_in(&c, "USR2", main_inner);
    assert!(
        poll_until(STEP, || c.property("forkd.service", "MainPID")
            != main_inner.to_string()),
        "MainPID did not move after USR2:\n{}",
        c.journal("forkd.service")
    );
    assert!(poll_until(STEP, || !alive(master)), "old master stays");
    let (_, master) = main_pid(&c);
    assert!(
        socket_inodes(master)
            .iter()
            .any(|s| systemd_sockets.contains(s)),
        "the new master does not hold systemd's socket"
    );
    let (code, _, _) = c.in_network(|| get(ADDR, "/")).expect("GET / after USR2");
    assert_eq!(code, 200);

    // The new master keeps the watchdog fed (WatchdogSec=20: a WATCHDOG=1 every 10 s),
    // or systemd would kill it 20 s after the upgrade.
    let fed = c.property("forkd.service", "WatchdogTimestampMonotonic");
    assert!(
        poll_until(Duration::from_secs(15), || c
            .property("forkd.service", "WatchdogTimestampMonotonic")
            != fed),
        "no WATCHDOG=1 from the upgraded master within 15 s:\n{}",
        c.journal("forkd.service")
    );

    // Stopped, the service leaves the socket with systemd; the next connection waits in
    // its queue and starts forkd again.
    c.systemctl(&["stop", "forkd.service"], STEP);
    let p = props(&c, "forkd.service", &["ActiveState", "Result"]);
    assert_eq!(
        (p["ActiveState"].as_str(), p["Result"].as_str()),
        ("inactive", "success"),
        "{}",
        c.journal("forkd.service")
    );
    assert_state(&c, "forkd.socket", "active", "listening");
    let (code, _, _) = c
        .in_network(|| get(ADDR, "/"))
        .expect("GET / restarts forkd");
    assert_eq!(code, 200);
    wait_state(&c, "forkd.service", "active", "running");
    c.systemctl(&["stop", "forkd.socket", "forkd.service"], STEP);
    assert_state(&c, "forkd.service", "inactive", "dead");
}

#[test]
fn a_failed_reload_keeps_serving_and_logs_reach_the_journal_by_priority() {
    let c = boot("log");
    c.systemctl(&["start", "forkd.service"], STEP);
    let (main_inner, _) = main_pid(&c);
    let journal = |priority: &str| {
        c.run(
            &[
                "journalctl",
                "--no-pager",
                "-o",
                "cat",
                "-u",
                "forkd.service",
                "-p",
                priority,
            ],
            Duration::from_secs(20),
        )
        .stdout
    };

    // forkd's own lines, without a timestamp of their own (the journal has one).
    let found = poll_until(Duration::from_secs(20), || {
        journal("info").contains("master started")
    });
    let info = journal("info");
    assert!(found, "no start line in the journal:\n{info}");
    let started = info
        .lines()
        .find(|l| l.contains("master started"))
        .expect("start line");
    assert!(
        started.starts_with("INFO master started"),
        "the journal line carries more than level and message: {started:?}"
    );

    // systemctl reload with a config forkd refuses fails, and the unit keeps serving with
    // the same master and workers.
    let (_, master) = main_pid(&c);
    let workers = workers_of(master);
    c.write_config("workers = 0\n");
    let reload = c.run(
        &["systemctl", "--no-pager", "reload", "forkd.service"],
        Duration::from_secs(60),
    );
    assert!(
        reload.code.is_some_and(|code| code != 0),
        "systemctl reload with an invalid config: {reload:?}"
    );
    assert_state(&c, "forkd.service", "active", "running");
    assert_eq!(main_pid(&c).1, master);
    assert_eq!(
        workers_of(master),
        workers,
        "a failed reload replaced workers"
    );
    let (code, _, _) = c
        .in_network(|| get(ADDR, "/"))
        .expect("GET / after the failed reload");
    assert_eq!(code, 200);

    // A plain HUP with that config: the master refuses it, keeps serving, and says so
    // as an error.
    signal_in(&c, "HUP", main_inner);
    assert!(
        poll_until(Duration::from_secs(20), || journal("err")
            .contains("reload failed")),
        "the failed reload is not in `journalctl -p err`:\n{}",
        c.journal("forkd.service")
    );
    let errors = journal("err");
    assert!(
        !errors.contains("master started") && !errors.contains("worker started"),
        "info lines are logged as errors:\n{errors}"
    );
    assert_state(&c, "forkd.service", "active", "running");
}

/// A `Name:` line of /proc/PID/status, its first field.
fn status_field(host_pid: i32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{host_pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

/// The privilege split of the shipped unit: a root master bounded to the capabilities
/// it needs, workers as the `forkd` system user (made by forkd.sysusers at boot) with
/// no capability at all, and only the main process allowed to notify.
fn assert_privileges(c: &Container, master: i32) {
    let id = c.run(&["id", "-u", "forkd"], Duration::from_secs(10));
    assert!(id.ok(), "no `forkd` user in the container: {id:?}");
    let forkd_uid = id.stdout.trim().to_string();
    assert_ne!(forkd_uid, "0");
    assert_eq!(
        c.property("forkd.service", "NotifyAccess"),
        "main",
        "the unit lets more than its main process notify"
    );
    // CAP_KILL 5, CAP_SETGID 6, CAP_SETUID 7, CAP_NET_BIND_SERVICE 10, CAP_SYS_PTRACE 19.
    let bounding: u64 = (1 << 5) | (1 << 6) | (1 << 7) | (1 << 10) | (1 << 19);
    assert_eq!(status_field(master, "Uid"), "0", "the master is not root");
    assert_eq!(
        u64::from_str_radix(&status_field(master, "CapBnd"), 16).expect("CapBnd"),
        bounding,
        "the master's capability bounding set"
    );
    for worker in workers_of(master) {
        assert_eq!(
            status_field(worker, "Uid"),
            forkd_uid,
            "worker {worker} does not run as the forkd user"
        );
        for set in ["CapEff", "CapPrm", "CapAmb"] {
            assert_eq!(
                u64::from_str_radix(&status_field(worker, set), 16).expect("capabilities"),
                0,
                "worker {worker} has capabilities ({set})"
            );
        }
    }
}

/// `systemctl reload` while the master is stopped: it must still be waiting (the unit
/// `reloading`) a while later, and finish once the master runs again.
fn reload_with_master_frozen(c: &Container, master: i32) {
    use nix::sys::signal::{kill, Signal};
    let master = nix::unistd::Pid::from_raw(master);
    kill(master, Signal::SIGSTOP).expect("SIGSTOP the master");
    std::thread::scope(|scope| {
        let reload = scope.spawn(|| c.systemctl(&["reload", "forkd.service"], STEP));
        let returned_early = poll_until(Duration::from_millis(1500), || reload.is_finished());
        let state = c.property("forkd.service", "ActiveState");
        kill(master, Signal::SIGCONT).expect("SIGCONT the master");
        assert!(
            !returned_early,
            "systemctl reload returned while the master could not have reloaded"
        );
        assert_eq!(state, "reloading", "while the reload waits");
        reload.join().expect("systemctl reload thread");
    });
}

/// The inodes of the sockets a process holds open.
fn socket_inodes(pid: i32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// An exec worker for the container's own Python (/usr/bin/python3, as the unit's
/// `ProtectHome=` hides anything under /root): an asyncio server on the listener forkd
/// passes as fd 3, which puts it in an epoll set, as uvicorn does.
const EXEC_WORKER: &str = r#"import asyncio, socket
async def handle(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    await writer.drain()
    writer.close()
async def main():
    server = await asyncio.start_server(handle, sock=socket.socket(fileno=3))
    await server.serve_forever()
asyncio.run(main())
"#;

fn exec_config() -> String {
    let command = toml::Value::Array(vec![
        "/usr/bin/python3".into(),
        "-c".into(),
        EXEC_WORKER.into(),
    ]);
    format!(
        "bind = [\"{ADDR}\"]\nworkers = 2\ntimeout = 5\n\n[exec]\ncommand = {command}\nready = \"auto\"\n"
    )
}

/// `ready = "auto"` exec workers under the shipped unit: the root master sees workers
/// that run as `forkd` serving (their /proc/PID/fdinfo) thanks to CAP_SYS_PTRACE in its
/// bounding set, and only thanks to it: without it they are never ready and the start
/// fails. Also runs the workers under `MemoryDenyWriteExecute=yes` and the syscall
/// filter.
#[test]
fn exec_workers_as_the_forkd_user_are_seen_ready_under_the_unit() {
    assert!(
        std::path::Path::new("/usr/bin/python3").exists(),
        "/usr/bin/python3 is missing: install python3"
    );
    let config = exec_config();
    let without_ptrace = SERVICE.replacen(" CAP_SYS_PTRACE\n", "\n", 1);
    assert_ne!(
        without_ptrace, SERVICE,
        "the unit's CapabilityBoundingSet= no longer ends with CAP_SYS_PTRACE"
    );
    for (tag, service, sees_ready) in [
        ("exec", SERVICE, true),
        ("exec-noptrace", without_ptrace.as_str(), false),
    ] {
        let c = Container::boot(
            tag,
            &Payload {
                units: &[("forkd.service", service)],
                binary: &harness::forkd(),
                config: &config,
                sysusers: &[("forkd.conf", SYSUSERS)],
            },
        );
        let start = c.run(&["systemctl", "--no-pager", "start", "forkd.service"], STEP);
        if !sees_ready {
            assert!(
                !start.ok(),
                "forkd started without CAP_SYS_PTRACE: did it see the workers ready?\n{}",
                c.journal("forkd.service")
            );
            let journal = c.journal("forkd.service");
            assert!(
                journal.contains("not ready within") && journal.contains("ready = \"auto\""),
                "the start failed for another reason than readiness:\n{journal}"
            );
            continue;
        }
        assert!(
            start.ok(),
            "systemctl start with exec workers: {start:?}\n{}",
            c.journal("forkd.service")
        );
        assert_state(&c, "forkd.service", "active", "running");
        let (_, master) = main_pid(&c);
        let workers = harness::children_of(master);
        assert_eq!(workers.len(), 2, "exec workers: {workers:?}");
        let id = c.run(&["id", "-u", "forkd"], Duration::from_secs(10));
        for worker in &workers {
            assert_eq!(status_field(*worker, "Uid"), id.stdout.trim());
        }
        let (code, _, _) = c
            .in_network(|| get(ADDR, "/"))
            .expect("GET / from an exec worker");
        assert_eq!(code, 200);
        c.systemctl(&["reload", "forkd.service"], STEP);
        assert_state(&c, "forkd.service", "active", "running");
        c.systemctl(&["stop", "forkd.service"], STEP);
    }
}
