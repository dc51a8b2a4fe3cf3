//! forkd's sd_notify messages, checked by playing systemd's side of `NOTIFY_SOCKET`: a
//! datagram socket in a temp dir (or the abstract namespace) that records each message
//! with the pid that sent it (SCM_CREDENTIALS), as systemd does to decide whom to trust.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use nix::sys::signal::Signal;
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
struct Message {
    sender: i32,
    text: String,
    /// For READY=1: the status of a request made the moment the message arrived.
    probe: Option<Result<u16, String>>,
}

impl Message {
    fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }
    fn value(&self, key: &str) -> Option<String> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
    }
}

/// systemd's end of the notification socket.
struct NotifySocket {
    address: String,
    messages: Arc<Mutex<Vec<Message>>>,
    stop: Arc<AtomicBool>,
}

impl NotifySocket {
    /// Binds `address` (a path, or `@name`) and records messages; on READY=1 it sends a
    /// request to `probe` (an address `harness::get` understands) at once.
    fn bind(address: &str, probe: Option<String>) -> NotifySocket {
        let socket = if let Some(name) = address.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .expect("abstract name");
            UnixDatagram::bind_addr(&addr).expect("bind abstract notify socket")
        } else {
            UnixDatagram::bind(address).expect("bind notify socket")
        };
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::PassCred, &true)
            .expect("SO_PASSCRED");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, done) = (messages.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !done.load(Ordering::Relaxed) {
                let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
                let mut iov = [IoSliceMut::new(&mut buf)];
                let Ok(msg) = nix::sys::socket::recvmsg::<()>(
                    socket.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    nix::sys::socket::MsgFlags::empty(),
                ) else {
                    continue;
                };
                let mut sender = 0;
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let nix::sys::socket::ControlMessageOwned::ScmCredentials(cred) = c {
                            sender = cred.pid();
                        }
                    }
                }
                let len = msg.bytes;
                let text = String::from_utf8_lossy(&buf[..len]).to_string();
                let probe = match (&probe, text.lines().any(|l| l == "READY=1")) {
                    (Some(addr), true) => Some(get(addr, "/").map(|(status, _, _)| status)),
                    _ => None,
                };
                sink.lock().unwrap().push(Message {
                    sender,
                    text,
                    probe,
                });
            }
        });
        NotifySocket {
            address: address.to_string(),
            messages,
            stop,
        }
    }

    fn all(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits for a message after index `from` having `line`; returns its index.
    fn wait_for(&self, from: usize, line: &str, limit: Duration) -> Option<usize> {
        let mut found = None;
        poll_until(limit, || {
            found = self
                .all()
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, m)| m.has(line))
                .map(|(i, _)| i);
            found.is_some()
        });
        found
    }

    fn dump(&self) -> String {
        self.all()
            .iter()
            .map(|m| format!("[{}] {}\n", m.sender, m.text.replace('\n', " | ")))
            .collect()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn monotonic_usec() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000
}

fn write_config(dir: &Path, extra: &str) -> (PathBuf, String) {
    let socket = dir.join("http.sock");
    let config = dir.join("forkd.toml");
    std::fs::write(
        &config,
        format!(
            "app = \"echo\"\nworkers = 2\nbind = [\"unix:{}\"]\npidfile = \"{}\"\n{extra}",
            socket.display(),
            dir.join("forkd.pid").display()
        ),
    )
    .expect("write config");
    (config, format!("unix:{}", socket.display()))
}

fn signal_cli(config: &Path, name: &str) -> (Option<i32>, String) {
    Forkd::new()
        .config(config)
        .args(["-s", name])
        .run_to_exit(Duration::from_secs(30))
}

#[test]
fn ready_only_when_serving_then_reload_and_stop_in_order() {
    let dir = temp_dir("notify-order");
    let (config, http) = write_config(&dir, "");
    let notify_path = dir.join("notify");
    let notify = NotifySocket::bind(notify_path.to_str().unwrap(), Some(http.clone()));
    let mut server = Forkd::new()
        .config(&config)
        .env("NOTIFY_SOCKET", &notify.address)
        .start();
    let master = server.pid();

    // READY=1 from the master, once every worker serves: a request made the moment it
    // arrives succeeds.
    let ready = notify
        .wait_for(0, "READY=1", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no READY=1:\n{}", notify.dump()));
    let first = &notify.all()[ready];
    assert_eq!(first.sender, master, "READY=1 must come from the master");
    assert_eq!(first.probe, Some(Ok(200)), "READY=1 before serving");
    assert!(
        first
            .value("STATUS")
            .is_some_and(|s| s.contains("2 of 2 workers ready")),
        "STATUS with worker counts: {}",
        notify.dump()
    );
    assert_eq!(
        notify.all()[..ready]
            .iter()
            .filter(|m| m.has("READY=1"))
            .count(),
        0
    );
    // `-s reload` returns only once the reload is done, between RELOADING=1 (with
    // MONOTONIC_USEC) and READY=1.
    let before_reload = notify.all().len();
    let sent_at = monotonic_usec();
    let (code, stderr) = signal_cli(&config, "reload");
    assert_eq!(
        code,
        Some(0),
        "forkd -s reload failed: {stderr}\n{}",
        server.log()
    );
    let returned_at = std::time::SystemTime::now();
    // The line may still be on its way through the log pipe: wait for it, then check
    // that the master wrote it before `-s reload` returned.
    server.expect_log("HUP: reload finished", Duration::from_secs(10));
    let line = server
        .log()
        .lines()
        .find(|l| l.contains("HUP: reload finished"))
        .map(str::to_string)
        .unwrap_or_default();
    let logged_at = log_time(&line).expect("a timestamp on the log line");
    assert!(
        logged_at <= returned_at,
        "-s reload returned before the reload finished:\n{}",
        server.log()
    );
    let reloading = notify
        .wait_for(before_reload, "RELOADING=1", Duration::from_secs(2))
        .unwrap_or_else(|| panic!("no RELOADING=1:\n{}", notify.dump()));
    let stamp: u64 = notify.all()[reloading]
        .value("MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC:\n{}", notify.dump()));
    assert!(
        stamp >= sent_at && stamp <= monotonic_usec(),
        "MONOTONIC_USEC {stamp} is not the time of the reload ({sent_at}..)"
    );
    let reloaded = notify
        .wait_for(reloading, "READY=1", Duration::from_secs(2))
        .unwrap_or_else(|| panic!("no READY=1 after RELOADING=1:\n{}", notify.dump()));
    assert_eq!(notify.all()[reloaded].probe, Some(Ok(200)));

    // `-s reload` checks the file first: an invalid one is refused with the key named,
    // and the master is not touched.
    let good = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(&config, format!("{good}threads = \"many\"\n")).expect("break config");
    let before_bad = notify.all().len();
    let (code, stderr) = signal_cli(&config, "reload");
    assert_eq!(code, Some(2), "an invalid config must exit 2: {stderr}");
    assert!(stderr.contains("threads"), "unclear message: {stderr}");
    // A plain HUP with it: RELOADING=1, the error logged, READY=1, still serving.
    server.signal(Signal::SIGHUP);
    let bad_reloading = notify
        .wait_for(before_bad, "RELOADING=1", Duration::from_secs(2))
        .unwrap_or_else(|| panic!("no RELOADING=1 for the bad reload:\n{}", notify.dump()));
    assert!(notify
        .wait_for(bad_reloading, "READY=1", Duration::from_secs(2))
        .is_some());
    assert!(server.log_contains("reload failed"), "{}", server.log());
    assert_eq!(get(&http, "/").map(|r| r.0), Ok(200));
    // A valid file the master cannot apply (a socket in a missing directory): the
    // master answers `-s reload` with the failure.
    std::fs::write(
        &config,
        good.replace(
            "bind = [",
            &format!("bind = [\"unix:{}/missing/x.sock\", ", dir.display()),
        ),
    )
    .expect("write config");
    let (code, stderr) = signal_cli(&config, "reload");
    assert_eq!(
        code,
        Some(1),
        "a reload the master refused must exit 1: {stderr}"
    );
    assert!(stderr.contains("failed"), "unclear message: {stderr}");
    assert_eq!(get(&http, "/").map(|r| r.0), Ok(200));

    // TERM: STOPPING=1 from the master, then exit 0.
    let before_stop = notify.all().len();
    server.signal(Signal::SIGTERM);
    let stopping = notify.wait_for(before_stop, "STOPPING=1", Duration::from_secs(5));
    assert!(stopping.is_some(), "no STOPPING=1:\n{}", notify.dump());
    assert_eq!(notify.all()[stopping.unwrap()].sender, master);
    let code = server.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", server.log());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn usr2_hands_mainpid_to_the_new_master_which_then_says_ready() {
    let dir = temp_dir("notify-usr2");
    let (config, http) = write_config(&dir, "");
    let pidfile = dir.join("forkd.pid");
    let notify_path = dir.join("notify");
    let notify = NotifySocket::bind(notify_path.to_str().unwrap(), Some(http.clone()));
    // With a watchdog, as under the shipped unit: keep-alives every 0.5 s, which the new
    // master must hold back until it is the main process.
    let mut server = Forkd::new()
        .config(&config)
        .env("NOTIFY_SOCKET", &notify.address)
        .env("WATCHDOG_USEC", "1000000")
        .start();
    let old = server.pid();
    notify
        .wait_for(0, "READY=1", Duration::from_secs(10))
        .expect("READY=1 at start");
    let before = notify.all().len();
    server.signal(Signal::SIGUSR2);
    let new = new_master(&pidfile, old, Duration::from_secs(15));
    let _new_master = PidGuard(new);
    assert!(new > 0, "no new master:\n{}", server.log());
    let line = format!("MAINPID={new}");
    let handed = notify
        .wait_for(before, &line, Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no {line}:\n{}\n{}", notify.dump(), server.log()));
    assert_eq!(
        notify.all()[handed].sender,
        old,
        "MAINPID= must come from the old (main) master, so NotifyAccess=main suffices"
    );
    let ready = notify
        .wait_for(handed, "READY=1", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no READY=1 after MAINPID:\n{}", notify.dump()));
    assert_eq!(
        notify.all()[ready].sender,
        new,
        "READY=1 from the new master"
    );
    assert_eq!(notify.all()[ready].probe, Some(Ok(200)));
    // Only the main process speaks (NotifyAccess=main refuses, and logs, anything else):
    // the new master says nothing before the hand-over, the old one nothing after it.
    let messages = notify.all();
    assert!(
        messages[before..handed].iter().all(|m| m.sender != new),
        "the new master notified before it was the main process:\n{}",
        notify.dump()
    );
    // The old master leaves quietly: systemd follows the new one, so it must not hear
    // STOPPING=1 from the old.
    let old_exited = poll_until(Duration::from_secs(15), || {
        matches!(server.child.try_wait(), Ok(Some(_)))
    });
    assert!(old_exited, "old master did not exit:\n{}", server.log());
    assert!(
        !notify.all()[handed + 1..].iter().any(|m| m.sender == old),
        "the old master notified after it handed over:\n{}",
        notify.dump()
    );
    assert_eq!(get(&http, "/").map(|r| r.0), Ok(200));
    // The new master reports its own stop.
    let before_stop = notify.all().len();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(new), Signal::SIGTERM).expect("TERM");
    let stopping = notify
        .wait_for(before_stop, "STOPPING=1", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no STOPPING=1 from the new master:\n{}", notify.dump()));
    assert_eq!(notify.all()[stopping].sender, new);
    poll_until(Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{new}")).exists()
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn watchdog_keepalives_at_half_the_interval_on_an_abstract_socket() {
    let dir = temp_dir("notify-watchdog");
    let (config, _http) = write_config(&dir, "");
    let address = format!("@forkd-test-notify-{}", std::process::id());
    let notify = NotifySocket::bind(&address, None);
    let server = Forkd::new()
        .config(&config)
        .env("NOTIFY_SOCKET", &address)
        .env("WATCHDOG_USEC", "400000")
        .start();
    notify
        .wait_for(0, "READY=1", Duration::from_secs(10))
        .expect("READY=1 on the abstract socket");
    let start = notify.all().len();
    std::thread::sleep(Duration::from_millis(1500));
    let pings = notify.all()[start..]
        .iter()
        .filter(|m| m.has("WATCHDOG=1") && m.sender == server.pid())
        .count();
    // Every 200 ms: about 7 in 1.5 s; loosely bounded for a busy machine.
    assert!(
        (4..=12).contains(&pings),
        "{pings} WATCHDOG=1 in 1.5 s with WATCHDOG_USEC=400000:\n{}",
        notify.dump()
    );
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn watchdog_meant_for_another_pid_is_ignored() {
    let dir = temp_dir("notify-watchdog-other");
    let (config, _http) = write_config(&dir, "");
    let notify_path = dir.join("notify");
    let notify = NotifySocket::bind(notify_path.to_str().unwrap(), None);
    let _server = Forkd::new()
        .config(&config)
        .env("NOTIFY_SOCKET", &notify.address)
        .env("WATCHDOG_USEC", "200000")
        .env("WATCHDOG_PID", "1")
        .start();
    notify
        .wait_for(0, "READY=1", Duration::from_secs(10))
        .expect("READY=1");
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        !notify.all().iter().any(|m| m.has("WATCHDOG=1")),
        "WATCHDOG=1 sent although WATCHDOG_PID names another process:\n{}",
        notify.dump()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_root_reload_of_a_master_running_as_another_user_gets_its_answer() {
    if !nix::unistd::geteuid().is_root() {
        harness::cannot_run_here("needs root to start a master as nobody");
        return;
    }
    let dir = temp_dir("reload-other-user");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let (config, http) = write_config(&dir, "");
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(forkd())
        .args(["-c", config.to_str().unwrap()]);
    let server = Server::spawn(&mut command);
    server.expect_log("all workers ready", Duration::from_secs(10));
    let (code, stderr) = signal_cli(&config, "reload");
    assert_eq!(code, Some(0), "{stderr}\n{}", server.log());
    assert!(server.log_contains("reload finished"));
    assert_eq!(get(&http, "/").map(|r| r.0), Ok(200));
    let _ = std::fs::remove_dir_all(dir);
}

/// The time at the start of a text log line (`2026-11-30T10:25:29.186829Z ...`).
fn log_time(line: &str) -> Option<std::time::SystemTime> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut ymd = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, d) = (ymd.next()?.ok()?, ymd.next()?.ok()?, ymd.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut parts = hms.split(':').map(|p| p.parse::<i64>());
    let (hh, mm, ss) = (
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    );
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's method).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    let micros: u64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    Some(
        std::time::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(secs).ok()?)
            + Duration::from_micros(micros),
    )
}
