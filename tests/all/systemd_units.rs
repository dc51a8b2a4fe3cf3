//! The shipped units (`config/forkd.service`, `config/forkd.socket`) pass
//! `systemd-analyze verify` with no output at all (it exits 0 on an unknown key, only
//! warning), and agree with the shipped `config/forkd.toml` and `config/forkd.sysusers`;
//! docs/systemd.md records the unit's `systemd-analyze security` exposure.
//!
//! The same for the Python app's unit, `config/python/forkd-app.service`: it passes the
//! lint, fits its `config/python/app.toml`, and docs/python.md records its exposure.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;
use crate::nspawn;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SERVICE: &str = include_str!("../../config/forkd.service");
const SOCKET: &str = include_str!("../../config/forkd.socket");
const CONFIG: &str = include_str!("../../config/forkd.toml");
const SYSUSERS: &str = include_str!("../../config/forkd.sysusers");
const SYSTEMD_DOC: &str = include_str!("../../docs/systemd.md");
const APP_SERVICE: &str = include_str!("../../config/python/forkd-app.service");
const APP_CONFIG: &str = include_str!("../../config/python/app.toml");
const PYTHON_DOC: &str = include_str!("../../docs/python.md");

/// A root directory for `systemd-analyze verify --root`: the host's system units (the
/// targets the units depend on), the units under test in /etc/systemd/system, and the
/// executables they name, so that verify checks them as installed.
fn verify_root(name: &str, service: &str, socket: &str) -> PathBuf {
    let root = harness::temp_dir(name);
    let units = root.join("etc/systemd/system");
    std::fs::create_dir_all(&units).expect("unit dir");
    std::fs::create_dir_all(root.join("usr/lib/systemd")).expect("system unit dir");
    let copied = Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(root.join("usr/lib/systemd"))
        .status()
        .expect("cp the host's system units");
    assert!(copied.success(), "copying /usr/lib/systemd/system failed");
    std::fs::write(units.join("forkd.service"), service).expect("write service");
    std::fs::write(units.join("forkd.socket"), socket).expect("write socket");
    for (from, to) in [
        (harness::forkd(), "usr/local/bin/forkd"),
        (PathBuf::from("/bin/sh"), "bin/sh"),
    ] {
        // The real file: /bin/sh is a symlink, which a hard link would copy as one.
        let from = std::fs::canonicalize(&from).expect("executable to install");
        let to = root.join(to);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("bin dir");
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).expect("install an executable into the root");
        }
    }
    root
}

/// Everything `systemd-analyze verify` says about the two units (empty = clean).
fn lint(root: &Path) -> String {
    lint_units(root, &["forkd.service", "forkd.socket"])
}

/// Everything `systemd-analyze verify` says about `units` under `root` (empty = clean).
fn lint_units(root: &Path, units: &[&str]) -> String {
    assert!(
        Path::new("/usr/bin/systemd-analyze").exists(),
        "systemd-analyze is missing: install the systemd package (.ci/run does)"
    );
    let mut command = Command::new("systemd-analyze");
    command
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(units)
        .env("SYSTEMD_LOG_COLOR", "0");
    let out = nspawn::run_bounded(&mut command, Duration::from_secs(60));
    let said = format!("{}{}", out.stdout, out.stderr);
    if out.ok() || !said.is_empty() {
        said
    } else {
        format!(
            "systemd-analyze verify exited {:?} without a word",
            out.code
        )
    }
}

#[test]
fn shipped_units_pass_systemd_analyze_verify() {
    let root = verify_root("verify", SERVICE, SOCKET);
    let said = lint(&root);
    let _ = std::fs::remove_dir_all(&root);
    assert!(said.is_empty(), "systemd-analyze verify complains:\n{said}");
}

#[test]
fn the_lint_fails_on_a_misspelled_key_or_a_bad_value() {
    // Whole lines only: the comments mention the same settings.
    let edit = |unit: &str, line: &str, to: &str| {
        unit.replacen(&format!("\n{line}\n"), &format!("\n{to}\n"), 1)
    };
    let cases = [
        (
            edit(SERVICE, "NotifyAccess=main", "NotifyAcess=main"),
            SOCKET.to_string(),
            "NotifyAcess",
        ),
        (
            SERVICE.to_string(),
            edit(
                SOCKET,
                "ListenStream=127.0.0.1:8000",
                "ListenStream=127.0.0.1:80000",
            ),
            "127.0.0.1:80000",
        ),
    ];
    for (i, (service, socket, needle)) in cases.iter().enumerate() {
        assert!(
            service != SERVICE || socket != SOCKET,
            "case {i}: the shipped units no longer contain the line this case breaks"
        );
        let root = verify_root(&format!("verify-bad-{i}"), service, socket);
        let said = lint(&root);
        let _ = std::fs::remove_dir_all(&root);
        assert!(
            said.contains(needle),
            "case {i}: the lint did not report {needle:?}: {said:?}"
        );
    }
}

/// The value of `Key=` in a unit (its last setting, as systemd reads it).
fn setting<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .next_back()
}

/// A number of seconds from the shipped TOML config, or `default` when unset.
fn config_seconds(table: &toml::Table, path: &[&str], default: f64) -> f64 {
    let mut value = None;
    let mut current = table;
    for (i, key) in path.iter().enumerate() {
        match current.get(*key) {
            Some(toml::Value::Table(t)) if i + 1 < path.len() => current = t,
            Some(v) if i + 1 == path.len() => value = Some(v.clone()),
            _ => break,
        }
    }
    match value {
        None => default,
        Some(toml::Value::Integer(n)) => n as f64,
        Some(toml::Value::Float(f)) => f,
        Some(other) => panic!("{path:?} in config/forkd.toml is {other}, expected seconds"),
    }
}

#[test]
fn the_service_fits_forkd_and_its_config() {
    assert_eq!(setting(SERVICE, "Type"), Some("notify"));
    assert_eq!(setting(SERVICE, "NotifyAccess"), Some("main"));
    // Workers as a fixed account, not a uid shared with the root master; no capability
    // handed across exec.
    assert_eq!(setting(SERVICE, "DynamicUser"), None);
    assert_eq!(setting(SERVICE, "User"), None, "the master runs as root");
    assert_eq!(setting(SERVICE, "AmbientCapabilities"), None);
    // ProcSubset=pid hides /proc/locks, where `forkd -s` (ExecReload, ExecStop) checks
    // that the pidfile's lock holder is the pid it names: every reload would fail.
    assert_ne!(setting(SERVICE, "ProcSubset"), Some("pid"));
    assert_eq!(setting(SERVICE, "KillMode"), Some("mixed"));
    assert_eq!(setting(SERVICE, "RuntimeDirectory"), Some("forkd"));
    let start = setting(SERVICE, "ExecStart").expect("ExecStart");
    let reload = setting(SERVICE, "ExecReload").expect("ExecReload");
    assert!(
        reload.starts_with(start) && reload.ends_with(" -s reload"),
        "ExecReload must run `forkd -s reload` with ExecStart's config and pidfile: {reload}"
    );
    assert!(
        start.contains("/run/forkd/"),
        "the pidfile lives in RuntimeDirectory"
    );
    // The workers' account is the one forkd.sysusers creates.
    assert!(
        start.ends_with(" --user forkd --group forkd"),
        "ExecStart does not drop the workers to forkd: {start}"
    );
    assert!(
        SYSUSERS
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["u", "forkd"])),
        "config/forkd.sysusers does not create the forkd user"
    );

    let config: toml::Table = CONFIG.parse().expect("config/forkd.toml parses");
    let graceful = config_seconds(&config, &["graceful_timeout"], 30.0);
    let delay = config_seconds(&config, &["health", "shutdown_delay"], 0.0);
    let stop: f64 = setting(SERVICE, "TimeoutStopSec")
        .expect("TimeoutStopSec")
        .parse()
        .expect("TimeoutStopSec in plain seconds");
    assert!(
        stop > graceful + delay,
        "TimeoutStopSec={stop} must exceed graceful_timeout ({graceful}) + shutdown_delay ({delay})"
    );

    // forkd.socket listens where forkd.toml binds, so the passed socket matches an entry.
    let listen = setting(SOCKET, "ListenStream").expect("ListenStream");
    let binds = config
        .get("bind")
        .and_then(|b| b.as_array())
        .expect("bind in config/forkd.toml");
    assert!(
        binds.iter().any(|b| b.as_str() == Some(listen)),
        "forkd.socket's ListenStream={listen} matches no bind entry of forkd.toml {binds:?}"
    );
}

/// The overall exposure `systemd-analyze security` gives `unit` (written as `name`).
fn security_exposure(name: &str, unit: &str) -> String {
    let dir = harness::temp_dir(&format!("security-{name}"));
    let path = dir.join(name);
    std::fs::write(&path, unit).expect("write the unit");
    let mut command = Command::new("systemd-analyze");
    command
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .env("SYSTEMD_LOG_COLOR", "0")
        .env("SYSTEMD_COLORS", "0");
    let out = nspawn::run_bounded(&mut command, Duration::from_secs(60));
    let _ = std::fs::remove_dir_all(&dir);
    let marker = format!("Overall exposure level for {name}: ");
    out.stdout
        .lines()
        .find_map(|l| l.split_once(marker.as_str())?.1.split_whitespace().next())
        .unwrap_or_else(|| panic!("no overall exposure from systemd-analyze security: {out:?}"))
        .to_string()
}

/// docs/systemd.md records the exposure `systemd-analyze security` gives the shipped unit;
/// a change to the unit that moves it must update docs/systemd.md.
#[test]
fn the_readme_records_the_units_security_exposure() {
    let exposure = security_exposure("forkd.service", SERVICE);
    let recorded = format!("rates the unit **{exposure}**");
    assert!(
        SYSTEMD_DOC.contains(&recorded),
        "systemd-analyze security rates config/forkd.service {exposure}; docs/systemd.md \
         (\"Running under systemd\", Exposure) records another score"
    );
}

/// A root for `systemd-analyze verify` with the Python app's unit installed as
/// forkd-app.service, and the executables it names where it names them (forkd in the
/// app's virtualenv, /bin/kill for ExecReload).
fn app_verify_root(name: &str, service: &str) -> PathBuf {
    let root = verify_root(name, SERVICE, SOCKET);
    std::fs::write(root.join("etc/systemd/system/forkd-app.service"), service)
        .expect("write forkd-app.service");
    // verify only checks that ExecReload's program is an executable file: any will do
    // where procps (the host's /bin/kill) is not installed.
    let kill = ["/bin/kill", "/usr/bin/kill", "/bin/sh"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("an executable to stand for /bin/kill");
    for (from, to) in [
        (harness::forkd(), "srv/app/venv/bin/forkd"),
        (kill, "bin/kill"),
    ] {
        let from = std::fs::canonicalize(&from).expect("executable to install");
        let to = root.join(to);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("bin dir");
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).expect("install an executable into the root");
        }
    }
    root
}

#[test]
fn python_app_unit_passes_systemd_analyze_verify() {
    let root = app_verify_root("verify-app", APP_SERVICE);
    let said = lint_units(&root, &["forkd-app.service"]);
    let _ = std::fs::remove_dir_all(&root);
    assert!(
        said.is_empty(),
        "systemd-analyze verify complains about config/python/forkd-app.service:\n{said}"
    );

    // The same lint on a broken copy speaks (whole lines: the comments name settings too).
    let broken = APP_SERVICE.replacen("\nNotifyAccess=main\n", "\nNotifyAcess=main\n", 1);
    assert_ne!(
        broken, APP_SERVICE,
        "the unit no longer has NotifyAccess=main"
    );
    let root = app_verify_root("verify-app-bad", &broken);
    let said = lint_units(&root, &["forkd-app.service"]);
    let _ = std::fs::remove_dir_all(&root);
    assert!(
        said.contains("NotifyAcess"),
        "the lint missed a typo: {said:?}"
    );
}

#[test]
fn python_app_unit_fits_forkd_and_its_config() {
    assert_eq!(setting(APP_SERVICE, "Type"), Some("notify"));
    assert_eq!(setting(APP_SERVICE, "NotifyAccess"), Some("main"));
    assert_eq!(
        setting(APP_SERVICE, "ExecStart"),
        Some("/srv/app/venv/bin/forkd -c /etc/forkd/app.toml app.main:app")
    );
    assert_eq!(
        setting(APP_SERVICE, "ExecReload"),
        Some("/bin/kill -HUP $MAINPID")
    );
    assert_eq!(setting(APP_SERVICE, "KillMode"), Some("mixed"));
    // The whole service runs as an unprivileged account, with no capability at all.
    let user = setting(APP_SERVICE, "User").expect("User=");
    assert!(
        !user.is_empty() && user != "root" && user != "0",
        "User={user}"
    );
    assert_eq!(setting(APP_SERVICE, "CapabilityBoundingSet"), Some(""));
    assert_eq!(setting(APP_SERVICE, "AmbientCapabilities"), Some(""));
    assert_eq!(setting(APP_SERVICE, "NoNewPrivileges"), Some("yes"));
    // Hardening as forkd.service has it: every one of its protections is here too.
    for key in [
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "RestrictAddressFamilies",
        "RestrictNamespaces",
        "LockPersonality",
        "SystemCallFilter",
    ] {
        assert!(
            setting(APP_SERVICE, key).is_some() && setting(SERVICE, key).is_some(),
            "{key} is missing from one of the units"
        );
    }

    // Its config is one forkd accepts (the plain build has no Python: a built-in app
    // stands in for app.main:app; APP overrides the `app` key), and its stop fits.
    let dir = harness::temp_dir("app-config");
    let file = dir.join("app.toml");
    std::fs::write(&file, APP_CONFIG).expect("write app.toml");
    let out = nspawn::run_bounded(
        Command::new(harness::forkd())
            .arg("-c")
            .arg(&file)
            .args(["--check-config", "hello"]),
        Duration::from_secs(20),
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.ok(), "config/python/app.toml is invalid: {out:?}");
    let config: toml::Table = APP_CONFIG.parse().expect("config/python/app.toml parses");
    assert_eq!(
        config.get("chdir").and_then(|c| c.as_str()),
        Some("/srv/app"),
        "the unit's layout has the app's code in /srv/app"
    );
    let graceful = config_seconds(&config, &["graceful_timeout"], 30.0);
    let delay = config_seconds(&config, &["health", "shutdown_delay"], 0.0);
    let stop: f64 = setting(APP_SERVICE, "TimeoutStopSec")
        .expect("TimeoutStopSec")
        .parse()
        .expect("TimeoutStopSec in plain seconds");
    assert!(
        stop > graceful + delay,
        "TimeoutStopSec={stop} must exceed graceful_timeout ({graceful}) + shutdown_delay ({delay})"
    );
}

/// docs/python.md records the exposure `systemd-analyze security` gives the Python unit.
#[test]
fn python_doc_records_the_app_units_security_exposure() {
    let exposure = security_exposure("forkd-app.service", APP_SERVICE);
    assert!(
        PYTHON_DOC.contains(&format!("rates the unit **{exposure}**")),
        "systemd-analyze security rates config/python/forkd-app.service {exposure}; \
         docs/python.md records another score"
    );
}
