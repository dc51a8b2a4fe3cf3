//! A throw-away systemd for end-to-end tests: boots the host's own /usr with a fresh
//! tmpfs root as a `systemd-nspawn` container (`--volatile=yes`, no root file system to
//! download), with forkd's binary, units and config bound in read-only, its own cgroup,
//! machine name and network namespace. Tests drive it from the host with `nsenter`
//! (`systemctl`, `journalctl`), reach its loopback from threads that joined its network
//! namespace, and map its pids to host pids. Dropping it halts the container, kills
//! whatever is left in its cgroup and removes the cgroup and the temp dir.
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What a command run inside the container returned.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// What goes into the container: files for /etc/systemd/system, /usr/local/bin,
/// /etc/forkd and /etc/sysusers.d (each dir bound read-only, so the shipped units,
/// config and sysusers.d file are used as they are, with no path rewritten).
pub struct Payload<'a> {
    pub units: &'a [(&'a str, &'a str)],
    pub binary: &'a Path,
    pub config: &'a str,
    /// `(file name, text)` for /etc/sysusers.d: the container's /etc starts empty, and
    /// its systemd-sysusers creates these accounts at boot, before any service starts.
    pub sysusers: &'a [(&'a str, &'a str)],
}

/// A booted container; halted and cleaned up on drop.
pub struct Container {
    pub name: String,
    dir: PathBuf,
    nspawn: Child,
    cgroups: Vec<PathBuf>,
    /// The container's PID 1 (systemd), as a host pid.
    pub init: i32,
}

/// Paths that must exist for the container to run; a missing one is named in the panic.
fn require_tools() {
    for tool in [
        "/usr/bin/systemd-nspawn",
        "/usr/bin/nsenter",
        "/usr/bin/systemctl",
    ] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: install systemd-container and util-linux (.ci/run does)"
        );
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the systemd end-to-end tests boot a container and need root"
    );
}

/// The cgroup hierarchies a container needs its own group in: the named systemd one and
/// the unified one on a hybrid host, the single unified tree on a pure cgroup v2 host.
fn cgroup_roots() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_path_buf()];
    }
    ["systemd", "unified"]
        .iter()
        .map(|h| base.join(h))
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

impl Container {
    /// Boots a container named `forkd-{tag}-{pid}` with `payload` installed, and waits
    /// (bounded) until its systemd reports `running`.
    pub fn boot(tag: &str, payload: &Payload) -> Container {
        require_tools();
        let name = format!("forkd-{tag}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        let (units, bin, conf) = (dir.join("units"), dir.join("bin"), dir.join("conf"));
        let sysusers = dir.join("sysusers");
        for d in [&dir, &units, &bin, &conf, &sysusers] {
            std::fs::create_dir_all(d).expect("container temp dir");
            // Readable by the unprivileged users the service's processes run as.
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                .expect("chmod temp dir");
        }
        for (file, text) in payload.units {
            std::fs::write(units.join(file), text).expect("write unit");
        }
        for (file, text) in payload.sysusers {
            std::fs::write(sysusers.join(file), text).expect("write sysusers.d file");
        }
        // First boot on an empty /etc would otherwise enable the host's presets and
        // end `degraded`.
        std::os::unix::fs::symlink("/dev/null", units.join("systemd-firstboot.service"))
            .expect("mask systemd-firstboot");
        let installed = bin.join("forkd");
        if std::fs::hard_link(payload.binary, &installed).is_err() {
            std::fs::copy(payload.binary, &installed).expect("copy forkd into the container");
        }
        std::fs::write(conf.join("forkd.toml"), payload.config).expect("write config");
        std::fs::set_permissions(
            conf.join("forkd.toml"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod config");

        // Our own cgroup in each hierarchy: nspawn --keep-unit puts the container under
        // the cgroup of the process that starts it.
        let cgroups: Vec<PathBuf> = cgroup_roots().iter().map(|r| r.join(&name)).collect();
        let mut enter = String::new();
        for cg in &cgroups {
            std::fs::create_dir_all(cg).expect("create the container's cgroup");
            enter.push_str(&format!("echo $$ > {}/cgroup.procs && ", cg.display()));
        }
        let script = format!(
            "{enter}exec systemd-nspawn -q -D / --volatile=yes -M {name} --register=no \
             --keep-unit --console=pipe --private-network \
             --bind-ro={units}:/etc/systemd/system --bind-ro={bin}:/usr/local/bin \
             --bind-ro={conf}:/etc/forkd --bind-ro={sysusers}:/etc/sysusers.d -b",
            units = units.display(),
            sysusers = sysusers.display(),
            bin = bin.display(),
            conf = conf.display(),
        );
        let console = std::fs::File::create(dir.join("console.log")).expect("console log");
        let spawned = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("console log"))
            .stderr(console)
            .spawn();
        let nspawn = spawned.unwrap_or_else(|e| {
            for cg in &cgroups {
                let _ = remove_cgroup(cg);
            }
            panic!("cannot start systemd-nspawn: {e}")
        });
        let mut container = Container {
            name,
            dir,
            nspawn,
            cgroups,
            init: 0,
        };
        container.init = container.find_init(Duration::from_secs(30));
        container.wait_running(Duration::from_secs(60));
        container
    }

    /// The container's PID 1: the descendant of nspawn whose innermost pid is 1.
    fn find_init(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            let mut frontier = vec![self.nspawn.id() as i32];
            while let Some(pid) = frontier.pop() {
                if pid != self.nspawn.id() as i32 && ns_pids(pid).last() == Some(&1) {
                    return pid;
                }
                frontier.extend(crate::harness::children_of(pid));
            }
            if let Ok(Some(status)) = self.nspawn.try_wait() {
                panic!(
                    "systemd-nspawn exited ({status}) before booting:\n{}",
                    self.console()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no container init after {limit:?}:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_running(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        while Instant::now() < deadline {
            let out = self.run(&["systemctl", "is-system-running"], Duration::from_secs(10));
            last = out.stdout.trim().to_string();
            match last.as_str() {
                "running" => return,
                "degraded" | "maintenance" | "stopping" => break,
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let failed = self.run(
            &["systemctl", "--failed", "--no-pager"],
            Duration::from_secs(10),
        );
        panic!(
            "the container's systemd is {last:?}, not running:\n{}\nconsole:\n{}",
            failed.stdout,
            self.console()
        );
    }

    /// Replaces /etc/forkd/forkd.toml as the container sees it (the bound dir is ours).
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.dir.join("conf").join("forkd.toml"), text).expect("write config");
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    /// Runs `args` inside the container (all its namespaces), killed past `limit`.
    pub fn run(&self, args: &[&str], limit: Duration) -> Output {
        let init = self.init.to_string();
        let mut command = Command::new("nsenter");
        command
            .args(["-t", &init, "-m", "-u", "-i", "-n", "-p", "--"])
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("SYSTEMD_COLORS", "0")
            .stdin(Stdio::null());
        run_bounded(&mut command, limit)
    }

    /// `systemctl ARGS` inside the container; panics (with the unit's journal) if it
    /// fails or takes longer than `limit`.
    pub fn systemctl(&self, args: &[&str], limit: Duration) -> Output {
        let mut all = vec!["systemctl", "--no-pager"];
        all.extend_from_slice(args);
        let out = self.run(&all, limit);
        assert!(
            out.ok(),
            "systemctl {args:?} failed ({:?}): {}{}\njournal:\n{}",
            out.code,
            out.stdout,
            out.stderr,
            self.journal("forkd.service")
        );
        out
    }

    /// One property of a unit (`systemctl show -P`).
    pub fn property(&self, unit: &str, name: &str) -> String {
        self.systemctl(&["show", "-P", name, unit], Duration::from_secs(20))
            .stdout
            .trim()
            .to_string()
    }

    /// The unit's journal, for failure messages.
    pub fn journal(&self, unit: &str) -> String {
        let out = self.run(
            &[
                "journalctl",
                "--no-pager",
                "-o",
                "short-monotonic",
                "-u",
                unit,
            ],
            Duration::from_secs(20),
        );
        out.stdout + &out.stderr
    }

    /// Host pids of every process in the container.
    pub fn processes(&self) -> Vec<i32> {
        let Ok(ns) = std::fs::read_link(format!("/proc/{}/ns/pid", self.init)) else {
            return Vec::new();
        };
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/ns/pid"))
                    .ok()
                    .as_ref()
                    == Some(&ns)
            })
            .collect()
    }

    /// The host pid of the container's process `inner`, if it exists.
    pub fn host_pid(&self, inner: i32) -> Option<i32> {
        self.processes()
            .into_iter()
            .find(|pid| ns_pids(*pid).last() == Some(&inner))
    }

    /// Runs `f` on a thread that joined the container's network namespace: sockets it
    /// (and threads it spawns, which inherit the namespace) opens reach the container's
    /// loopback.
    pub fn in_network<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let netns = std::fs::File::open(format!("/proc/{}/ns/net", self.init))
            .expect("open the container's network namespace");
        std::thread::spawn(move || {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("join the container's network namespace");
            f()
        })
        .join()
        .expect("thread in the container's network namespace")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // TERM to nspawn halts the container cleanly (systemd shuts down).
        let nspawn = nix::unistd::Pid::from_raw(self.nspawn.id() as i32);
        let _ = nix::sys::signal::kill(nspawn, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is still in our cgroups (a hung halt) is ours alone: kill it.
        for cg in &self.cgroups {
            for pid in cgroup_pids(cg) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        for cg in &self.cgroups {
            let deadline = Instant::now() + Duration::from_secs(10);
            while remove_cgroup(cg).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The pids of a process in each pid namespace it belongs to, outermost first.
pub fn ns_pids(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("NSpid:").map(|v| {
                    v.split_whitespace()
                        .filter_map(|p| p.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

/// Every pid in a cgroup and its descendants.
fn cgroup_pids(cg: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    if let Ok(text) = std::fs::read_to_string(cg.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for entry in std::fs::read_dir(cg).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(cgroup_pids(&entry.path()));
        }
    }
    pids
}

/// Removes a cgroup tree, deepest first (cgroup dirs go with rmdir, not unlink).
fn remove_cgroup(cg: &Path) -> std::io::Result<()> {
    if !cg.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(cg)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&entry.path())?;
        }
    }
    std::fs::remove_dir(cg)
}

/// Runs a command to completion within `limit` (SIGKILLed past it), capturing output.
pub fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    let tx_err = tx.clone();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = tx.send((true, text));
    });
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx_err.send((false, text));
    });
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (mut out, mut err) = (String::new(), String::new());
    for _ in 0..2 {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok((true, text)) => out = text,
            Ok((false, text)) => err = text,
            Err(_) => break,
        }
    }
    if code.is_none() {
        err.push_str(&format!("\n(killed after {limit:?})"));
    }
    Output {
        code,
        stdout: out,
        stderr: err,
    }
}
