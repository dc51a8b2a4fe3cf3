//! forkd in containers, as `config/Dockerfile` and `config/k8s/deployment.yaml` run it.
//!
//! As PID 1 of a new pid namespace (`unshare --pid --fork`): processes orphaned inside it
//! are reparented to forkd, which must reap them (no zombies) without mistaking them for
//! workers; a HUP sent from inside (`kubectl exec POD -- kill -HUP 1`) and the TERM a
//! container runtime sends from outside reach it (init gets no signal it has no handler
//! for, so neither is a given).
//!
//! The shipped files agree with each other: the ConfigMap's forkd.toml is valid, the
//! probes ask its health paths on its port, the grace period covers its drain, and the
//! image's entrypoint is in exec form with a valid default command.
//!
//! The same for the Python app's files (`config/python/Dockerfile`, `k8s.yaml`,
//! `app.toml`): a non-root image with the venv's forkd as PID 1, and the Dockerfile's
//! bytecode and permission step run against a temporary tree (no container engine here).

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;
use crate::nspawn;

use harness::{children_of, forkd, get, poll_until, workers_of, Forkd, Server};
use nspawn::{ns_pids, run_bounded};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// forkd as PID 1 of a new pid namespace (with its own /proc), sharing the host's
/// network; returns the guard (on `unshare`) and forkd's host pid.
fn start_as_pid1() -> (Server, i32) {
    let binary = forkd();
    let server = Forkd::program(Path::new("unshare"))
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(binary.to_str().expect("utf-8 path"))
        .local()
        .workers(2)
        .app("echo")
        .start();
    let master = children_of(server.pid())
        .into_iter()
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"forkd: master"))
        })
        .expect("forkd master under unshare");
    assert_eq!(
        ns_pids(master).last(),
        Some(&1),
        "forkd is not PID 1 of its namespace"
    );
    (server, master)
}

fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rfind(')').and_then(|i| stat[i + 2..].chars().next())
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn forkd_as_pid1_reaps_orphaned_grandchildren() {
    let (server, master) = start_as_pid1();
    let workers = workers_of(master);
    assert_eq!(workers.len(), 2);

    // A shell inside the namespace starts five sleeps and exits at once: they are
    // orphaned and reparented to the namespace's init, forkd.
    let out = run_bounded(
        Command::new("nsenter")
            .args(["-t", &master.to_string(), "-p", "--"])
            .args([
                "sh",
                "-c",
                "for i in 1 2 3 4 5; do sleep 3 >/dev/null 2>&1 & done; exit 0",
            ]),
        Duration::from_secs(10),
    );
    assert!(out.ok(), "nsenter: {out:?}");
    let mut orphans = Vec::new();
    let adopted = poll_until(Duration::from_secs(5), || {
        orphans = children_of(master)
            .into_iter()
            .filter(|p| comm(*p) == "sleep")
            .collect();
        orphans.len() == 5
    });
    assert!(
        adopted,
        "forkd did not adopt the 5 orphans (saw {orphans:?})"
    );

    // Once they exit, forkd must collect them: a zombie stays in the process table.
    let reaped = poll_until(Duration::from_secs(15), || {
        orphans.iter().all(|p| state(*p).is_none())
    });
    let states: Vec<_> = orphans.iter().map(|p| (p, state(*p))).collect();
    assert!(
        reaped,
        "orphans not reaped by forkd as PID 1 (Z = zombie): {states:?}\n{}",
        server.log()
    );

    // The workers were not disturbed, and forkd still serves.
    assert_eq!(workers_of(master), workers, "the workers changed");
    let (status, _, _) = get(&server.addr, "/").expect("GET / after the orphans");
    assert_eq!(status, 200);
    assert!(
        !server.log().contains("ERROR"),
        "the orphans' exits were logged as errors:\n{}",
        server.log()
    );
}

#[test]
fn forkd_as_pid1_takes_hup_from_inside_and_term_from_outside() {
    let (mut server, master) = start_as_pid1();
    let out = run_bounded(
        Command::new("nsenter")
            .args(["-t", &master.to_string(), "-p", "--"])
            .args(["sh", "-c", "kill -HUP 1"]),
        Duration::from_secs(10),
    );
    assert!(out.ok(), "kill -HUP 1 inside the namespace: {out:?}");
    assert!(
        poll_until(Duration::from_secs(20), || server
            .log_contains("HUP: reload finished")),
        "HUP from inside the namespace did not reload forkd:\n{}",
        server.log()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("TERM to forkd");
    // unshare exits with forkd's status.
    let code = server.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(0), "forkd as PID 1 on TERM:\n{}", server.log());
    assert!(
        server.log().contains("graceful stop"),
        "TERM did not start a graceful stop:\n{}",
        server.log()
    );
}

const DEPLOYMENT: &str = include_str!("../../config/k8s/deployment.yaml");
const DOCKERFILE: &str = include_str!("../../config/Dockerfile");

/// The literal block under `key: |` (indented more than `key`), de-indented.
fn yaml_block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let key_line = lines
        .next()
        .unwrap_or_else(|| panic!("no `{key}: |` block"));
    let key_indent = key_line.len() - key_line.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > key_indent)
        .collect();
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .expect("an empty block");
    body.iter()
        .map(|l| l.get(indent..).unwrap_or("").to_string() + "\n")
        .collect()
}

/// The first `field:` value after the line `section:` (a scalar, quotes removed).
fn yaml_field_after(yaml: &str, section: &str, field: &str) -> String {
    yaml.lines()
        .skip_while(|l| l.trim() != format!("{section}:"))
        .find_map(|l| l.trim().strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} after {section}"))
        .trim()
        .trim_matches('"')
        .to_string()
}

#[test]
fn the_kubernetes_example_fits_forkd_and_its_config() {
    // The ConfigMap's config is one forkd accepts.
    let toml_text = yaml_block(DEPLOYMENT, "forkd.toml");
    let dir = harness::temp_dir("k8s-config");
    let file = dir.join("forkd.toml");
    std::fs::write(&file, &toml_text).expect("write the ConfigMap's forkd.toml");
    let out = Forkd::new()
        .config(&file)
        .arg("--check-config")
        .output(Duration::from_secs(20));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.ok(), "the ConfigMap's forkd.toml is invalid: {out:?}");

    let config: toml::Table = toml_text.parse().expect("ConfigMap TOML");
    let health = config["health"].as_table().expect("[health]");
    let seconds = |v: Option<&toml::Value>, default: f64| match v {
        None => default,
        Some(toml::Value::Integer(n)) => *n as f64,
        Some(toml::Value::Float(f)) => *f,
        Some(other) => panic!("{other} is not seconds"),
    };
    let drain =
        seconds(config.get("graceful_timeout"), 30.0) + seconds(health.get("shutdown_delay"), 0.0);
    assert_grace_covers_the_drain(DEPLOYMENT, drain);

    // The probes ask forkd's own health paths, on the port it binds.
    assert_probes_ask_forkds_health_paths(
        DEPLOYMENT,
        health,
        &[
            ("readinessProbe", "ready_path"),
            ("livenessProbe", "live_path"),
        ],
    );
    let port = yaml_field_after(DEPLOYMENT, "ports", "containerPort");
    let binds = config["bind"].as_array().expect("bind");
    assert!(
        binds
            .iter()
            .any(|b| b.as_str().is_some_and(|b| b.ends_with(&format!(":{port}")))),
        "containerPort {port} is not in bind {binds:?}"
    );

    // The container runs the mounted config.
    let mount = yaml_field_after(DEPLOYMENT, "volumeMounts", "mountPath");
    assert!(
        DEPLOYMENT.contains(&format!("args: [\"-c\", \"{mount}/forkd.toml\"]")),
        "the container's args do not name {mount}/forkd.toml"
    );
}

/// The manifest's Service: its name and its ports as (name, number, protocol).
fn manifest_service() -> (String, Vec<(String, u16, String)>) {
    let doc = DEPLOYMENT
        .split("\n---\n")
        .find(|d| d.lines().any(|l| l.trim() == "kind: Service"))
        .expect("a Service in the manifest");
    let name = yaml_field_after(doc, "metadata", "name");
    let mut ports: Vec<(String, u16, String)> = Vec::new();
    for line in doc.lines().skip_while(|l| l.trim() != "ports:").skip(1) {
        let item = line.trim();
        let (field, value) = match item.strip_prefix("- ").unwrap_or(item).split_once(':') {
            Some((f, v)) => (f.trim(), v.trim().trim_matches('"')),
            None => break,
        };
        if item.starts_with("- ") {
            ports.push((String::new(), 0, "TCP".to_string()));
        }
        let port = ports.last_mut().expect("a port item");
        match field {
            "name" => port.0 = value.to_string(),
            "port" => port.1 = value.parse().expect("port number"),
            "protocol" => port.2 = value.to_string(),
            _ => {}
        }
    }
    assert!(!ports.is_empty(), "the Service has no ports");
    (name, ports)
}

/// The service-link variables the kubelet gives a pod for a Service (as its
/// `envvars.FromServices` makes them), with `ip` as the cluster IP.
fn service_links(
    service: &str,
    ip: &str,
    ports: &[(String, u16, String)],
) -> Vec<(String, String)> {
    let prefix = service.replace('-', "_").to_ascii_uppercase();
    let mut vars = vec![(format!("{prefix}_SERVICE_HOST"), ip.to_string())];
    for (index, (name, number, proto)) in ports.iter().enumerate() {
        let url = format!("{}://{ip}:{number}", proto.to_ascii_lowercase());
        if index == 0 {
            vars.push((format!("{prefix}_SERVICE_PORT"), number.to_string()));
            vars.push((format!("{prefix}_PORT"), url.clone()));
        }
        if !name.is_empty() {
            let name = name.replace('-', "_").to_ascii_uppercase();
            vars.push((format!("{prefix}_SERVICE_PORT_{name}"), number.to_string()));
        }
        let link = format!("{prefix}_PORT_{number}_{proto}");
        vars.push((format!("{link}_PROTO"), proto.to_ascii_lowercase()));
        vars.push((format!("{link}_PORT"), number.to_string()));
        vars.push((format!("{link}_ADDR"), ip.to_string()));
        vars.push((link, url));
    }
    vars
}

#[test]
fn kubernetes_service_links_are_ignored_and_a_typo_only_warns() {
    // What a pod of the manifest gets without `enableServiceLinks: false`: the links of
    // its own Service (`forkd`, port 80) and of a `forkd-metrics` Service beside it.
    let (name, ports) = manifest_service();
    assert_eq!(
        name, "forkd",
        "the test assumes the manifest's Service name"
    );
    let mut env = service_links(&name, "10.0.0.1", &ports);
    env.extend(service_links(
        "forkd-metrics",
        "10.0.0.2",
        &[("metrics".to_string(), 9100, "TCP".to_string())],
    ));
    for var in [
        "FORKD_SERVICE_HOST",
        "FORKD_SERVICE_PORT",
        "FORKD_SERVICE_PORT_HTTP",
        "FORKD_PORT",
        "FORKD_PORT_80_TCP",
        "FORKD_PORT_80_TCP_PROTO",
        "FORKD_PORT_80_TCP_PORT",
        "FORKD_PORT_80_TCP_ADDR",
        "FORKD_METRICS_SERVICE_HOST",
        "FORKD_METRICS_PORT_9100_TCP_ADDR",
    ] {
        assert!(env.iter().any(|(k, _)| k == var), "{var} not made: {env:?}");
    }
    assert!(
        DEPLOYMENT.contains("enableServiceLinks: false"),
        "the manifest should keep service links out of the pod"
    );
    let dir = harness::temp_dir("k8s-service-links");
    let file = dir.join("forkd.toml");
    std::fs::write(&file, yaml_block(DEPLOYMENT, "forkd.toml")).expect("write forkd.toml");
    let mut with_typo = env.clone();
    with_typo.push(("FORKD_WORKRES".to_string(), "3".to_string()));

    // --check-config: exit 0; a warning for the typo only.
    for (vars, typo) in [(&env, false), (&with_typo, true)] {
        let out = Forkd::new()
            .config(&file)
            .arg("--check-config")
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .output(Duration::from_secs(20));
        assert!(out.ok(), "--check-config failed: {out:?}");
        let warning = "forkd: warning: unknown environment variable FORKD_WORKRES is ignored (did you mean `FORKD_WORKERS`?)\n";
        assert_eq!(out.stderr, if typo { warning } else { "" }, "{out:?}");
    }

    // It starts and serves, and warns about the typo alone.
    let server = Forkd::new()
        .config(&file)
        .args(["-b", "127.0.0.1:0", "-w", "1"])
        .envs(with_typo.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .start();
    let (status, _, _) = get(&server.addr, "/health/ready").expect("served");
    assert_eq!(status, 200, "{}", server.log());
    let log = server.log();
    assert!(
        log.contains(
            "unknown environment variable FORKD_WORKRES is ignored (did you mean `FORKD_WORKERS`?)"
        ),
        "{log}"
    );
    assert_eq!(log.matches("environment variable").count(), 1, "{log}");
    for (var, _) in &env {
        assert!(!log.contains(var.as_str()), "{var} mentioned:\n{log}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_image_runs_forkd_as_pid1_with_a_valid_default_command() {
    let json_array = |instruction: &str| -> Vec<String> {
        let line = DOCKERFILE
            .lines()
            .rfind(|l| l.starts_with(&format!("{instruction} ")))
            .unwrap_or_else(|| panic!("no {instruction} in config/Dockerfile"));
        serde_json::from_str(&line[instruction.len() + 1..]).unwrap_or_else(|e| {
            panic!("{instruction} is not in exec form (a JSON array): {line}: {e}")
        })
    };
    let entrypoint = json_array("ENTRYPOINT");
    assert_eq!(entrypoint, ["/usr/local/bin/forkd"]);
    assert!(
        DOCKERFILE.contains("COPY --from=build /usr/local/bin/forkd /usr/local/bin/forkd"),
        "the runtime stage does not install the built forkd where ENTRYPOINT runs it"
    );
    let cmd = json_array("CMD");
    let out = Forkd::new()
        .args(&cmd)
        .arg("--check-config")
        .output(Duration::from_secs(20));
    assert!(out.ok(), "the image's CMD {cmd:?} is not valid: {out:?}");
}

const PY_DOCKERFILE: &str = include_str!("../../config/python/Dockerfile");
const PY_MANIFEST: &str = include_str!("../../config/python/k8s.yaml");
const PY_CONFIG: &str = include_str!("../../config/python/app.toml");

/// `forkd -c <config text> --check-config ARGS`, with a built-in app standing in for a
/// Python `MODULE:ATTR` (the plain build has no Python; the APP argument overrides the
/// `app` key): whether every key and value is one forkd accepts.
fn check_python_config(name: &str, config: &str, args: &[String]) -> nspawn::Output {
    let dir = harness::temp_dir(name);
    let file = dir.join("app.toml");
    std::fs::write(&file, config).expect("write app.toml");
    let mut command = Command::new(forkd());
    for arg in args {
        if arg.starts_with("/etc/forkd/") {
            command.arg(&file);
        } else if is_python_app(arg) {
            command.arg("hello");
        } else {
            command.arg(arg);
        }
    }
    let out = run_bounded(command.arg("--check-config"), Duration::from_secs(20));
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// `MODULE:ATTR` (`app.main:app`), not `HOST:PORT`.
fn is_python_app(arg: &str) -> bool {
    let ident = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    arg.split_once(':')
        .is_some_and(|(module, attr)| module.split('.').all(ident) && ident(attr))
}

/// The last `INSTRUCTION` line of the Python Dockerfile, as an exec-form JSON array.
fn py_exec_form(instruction: &str) -> Vec<String> {
    let line = PY_DOCKERFILE
        .lines()
        .map(str::trim)
        .rfind(|l| l.starts_with(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("no {instruction} in config/python/Dockerfile"));
    serde_json::from_str(&line[instruction.len() + 1..])
        .unwrap_or_else(|e| panic!("{instruction} is not in exec form (a JSON array): {line}: {e}"))
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn py_instructions() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in PY_DOCKERFILE.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

#[test]
fn the_python_image_runs_the_venvs_forkd_as_pid1_and_not_as_root() {
    let instructions = py_instructions();
    let first = |word: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter_map(|i| i.strip_prefix(&format!("{word} ")))
            .collect()
    };
    assert_eq!(first("FROM"), ["python:3.11-slim"]);

    // The service user: numeric, created by the image, not root; the last USER wins.
    let user = *first("USER").last().expect("a USER instruction");
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0) && gid.parse::<u32>().is_ok_and(|g| g != 0),
        "USER {user} is root or not numeric (runAsNonRoot needs a number)"
    );
    assert!(
        first("RUN")
            .iter()
            .any(|r| r.contains(&format!("useradd --system --uid {uid} --gid {gid}"))),
        "no RUN creates the account USER {user} names"
    );
    assert_eq!(first("STOPSIGNAL"), ["SIGTERM"]);

    // forkd, installed from the wheel into the venv, is PID 1 (exec form).
    let entrypoint = py_exec_form("ENTRYPOINT");
    assert_eq!(entrypoint, ["/srv/app/venv/bin/forkd"]);
    let runs = first("RUN").join("\n");
    assert!(runs.contains("python -m venv /srv/app/venv"), "{runs}");
    assert!(
        runs.contains("/srv/app/venv/bin/pip install /tmp/wheels/forkd-"),
        "the wheel is not installed into the venv: {runs}"
    );
    assert!(runs.contains("python -m compileall"), "{runs}");
    assert!(runs.contains("chmod -R a+rX,go-w /srv/app"), "{runs}");

    // The default command is a valid forkd command line with the shipped config.
    let cmd = py_exec_form("CMD");
    assert!(
        first("COPY").contains(&"forkd.toml /etc/forkd/app.toml")
            && cmd.iter().any(|a| a == "/etc/forkd/app.toml"),
        "CMD {cmd:?} does not run the config the image copies"
    );
    let out = check_python_config("py-image", PY_CONFIG, &cmd);
    assert!(out.ok(), "the image's CMD {cmd:?} is not valid: {out:?}");

    // The health check asks forkd's own live path, on the port CMD binds.
    let health = first("HEALTHCHECK").join("");
    let config: toml::Table = PY_CONFIG.parse().expect("app.toml");
    let live = config["health"]["live_path"]
        .as_str()
        .expect("health.live_path");
    let bind = cmd
        .iter()
        .skip_while(|a| *a != "--bind")
        .nth(1)
        .expect("CMD binds");
    let port = bind.rsplit(':').next().expect("a port");
    assert!(
        health.contains(" CMD [\"") && health.contains(&format!("127.0.0.1:{port}{live}'")),
        "HEALTHCHECK does not ask http://127.0.0.1:{port}{live} in exec form: {health}"
    );
}

#[test]
fn the_python_images_bytecode_and_permission_step_leaves_the_app_read_only() {
    // The Dockerfile's RUN that compiles and sets modes, run against a temporary tree that
    // stands for / (with files as a careless build context has them: writable by all).
    let step = py_instructions()
        .into_iter()
        .filter_map(|i| i.strip_prefix("RUN ").map(str::to_string))
        .find(|r| r.contains("compileall"))
        .expect("a RUN with compileall");
    let root = harness::temp_dir("py-image-tree");
    let app = root.join("srv/app/app");
    std::fs::create_dir_all(&app).expect("app dir");
    std::fs::create_dir_all(root.join("srv/app/venv/lib")).expect("venv dir");
    std::fs::create_dir_all(root.join("etc/forkd")).expect("etc dir");
    std::fs::write(app.join("__init__.py"), "").expect("write");
    std::fs::write(
        app.join("main.py"),
        "async def app(scope, receive, send):\n    pass\n",
    )
    .expect("write");
    std::fs::write(root.join("etc/forkd/app.toml"), PY_CONFIG).expect("write");
    let status = Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(&root)
        .status()
        .expect("chmod");
    assert!(status.success());
    let me = format!(
        "{}:{}",
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw()
    );
    let script = step
        .replace("/srv/app/venv/bin/python", "python3")
        .replace("root:root", &me)
        .replace("/srv/app", &root.join("srv/app").display().to_string())
        .replace("/etc/forkd", &root.join("etc/forkd").display().to_string());
    let out = run_bounded(
        Command::new("sh").args(["-ec", &script]),
        Duration::from_secs(60),
    );
    assert!(out.ok(), "the RUN step failed: {script}\n{out:?}");

    assert!(
        std::fs::read_dir(app.join("__pycache__"))
            .expect("compileall wrote no __pycache__")
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("main.")),
        "no bytecode for main.py"
    );
    // Every file and directory: readable (and directories searchable) by all, writable
    // by the owner (root) alone, so the service user can run but not change the app.
    let mut stack = vec![root.join("srv/app"), root.join("etc/forkd")];
    let mut seen = 0;
    while let Some(path) = stack.pop() {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        let mode = meta.permissions().mode() & 0o777;
        let want_read = if meta.is_dir() { 0o555 } else { 0o444 };
        assert_eq!(
            mode & 0o022,
            0,
            "{} is writable by others: {mode:o}",
            path.display()
        );
        assert_eq!(
            mode & want_read,
            want_read,
            "{} is not readable by all: {mode:o}",
            path.display()
        );
        if meta.is_dir() {
            stack.extend(
                std::fs::read_dir(&path)
                    .expect("dir")
                    .map(|e| e.expect("entry").path()),
            );
        }
        seen += 1;
    }
    assert!(seen >= 8, "the walk saw only {seen} paths");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn the_python_kubernetes_manifest_fits_forkd_and_its_config() {
    let toml_text = yaml_block(PY_MANIFEST, "app.toml");
    let args: Vec<String> = PY_MANIFEST
        .lines()
        .find_map(|l| l.trim().strip_prefix("args: "))
        .map(|a| serde_json::from_str(a).expect("args as a JSON-style flow list"))
        .expect("the container's args");
    let mount = yaml_field_after(PY_MANIFEST, "volumeMounts", "mountPath");
    assert_eq!(
        args,
        ["-c", &format!("{mount}/app.toml"), "app.main:app"],
        "the container does not run the mounted config"
    );
    let out = check_python_config("py-k8s", &toml_text, &args);
    assert!(out.ok(), "the ConfigMap's app.toml is invalid: {out:?}");

    let config: toml::Table = toml_text.parse().expect("ConfigMap TOML");
    let health = config["health"].as_table().expect("[health]");
    let seconds = |v: Option<&toml::Value>, default: f64| match v {
        None => default,
        Some(toml::Value::Integer(n)) => *n as f64,
        Some(toml::Value::Float(f)) => *f,
        Some(other) => panic!("{other} is not seconds"),
    };
    // No preStop: health.shutdown_delay keeps the pod serving while it leaves the
    // endpoints, and the grace period covers that and the drain.
    let delay = seconds(health.get("shutdown_delay"), 0.0);
    assert!(
        delay > 0.0,
        "health.shutdown_delay is what replaces a preStop sleep"
    );
    assert!(
        !PY_MANIFEST
            .lines()
            .any(|l| l.trim_start().starts_with("preStop:")),
        "the design is preStop-free"
    );
    let drain = seconds(config.get("graceful_timeout"), 30.0) + delay;
    assert_grace_covers_the_drain(PY_MANIFEST, drain);

    assert_probes_ask_forkds_health_paths(
        PY_MANIFEST,
        health,
        &[
            ("readinessProbe", "ready_path"),
            ("livenessProbe", "live_path"),
            ("startupProbe", "live_path"),
        ],
    );
    let port = yaml_field_after(PY_MANIFEST, "ports", "containerPort");
    let binds = config["bind"].as_array().expect("bind");
    assert!(
        binds
            .iter()
            .any(|b| b.as_str() == Some(format!("0.0.0.0:{port}").as_str())),
        "containerPort {port} is not bound on every interface: {binds:?}"
    );

    // Runs as the image's user, read-only, with limits, and no service links.
    let image_user = py_exec_form_user();
    for (section, field, want) in [
        ("securityContext", "runAsNonRoot", "true"),
        ("securityContext", "runAsUser", image_user.as_str()),
        ("securityContext", "readOnlyRootFilesystem", "true"),
        ("securityContext", "allowPrivilegeEscalation", "false"),
        ("spec", "enableServiceLinks", "false"),
        ("limits", "memory", "1Gi"),
    ] {
        assert_eq!(
            yaml_field_after(PY_MANIFEST, section, field),
            want,
            "{section}.{field}"
        );
    }
    assert_eq!(
        yaml_field_after(PY_MANIFEST, "requests", "cpu"),
        "500m",
        "resources.requests"
    );
}

/// The uid of the Python image's last USER instruction.
fn py_exec_form_user() -> String {
    py_instructions()
        .iter()
        .rev()
        .find_map(|i| i.strip_prefix("USER "))
        .and_then(|u| u.split(':').next())
        .expect("USER")
        .to_string()
}

/// The pod's termination grace period outlasts forkd's drain (`drain` seconds).
fn assert_grace_covers_the_drain(manifest: &str, drain: f64) {
    let grace: f64 = yaml_field_after(manifest, "spec", "terminationGracePeriodSeconds")
        .parse()
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace > drain,
        "terminationGracePeriodSeconds {grace} must exceed shutdown_delay + graceful_timeout = {drain}"
    );
}

/// Each (probe, health key): the probe asks forkd's health path under that key, on the
/// port named `http`.
fn assert_probes_ask_forkds_health_paths(
    manifest: &str,
    health: &toml::Table,
    probes: &[(&str, &str)],
) {
    for (probe, key) in probes {
        assert_eq!(
            Some(yaml_field_after(manifest, probe, "path").as_str()),
            health.get(*key).and_then(|v| v.as_str()),
            "{probe} vs health.{key}"
        );
        assert_eq!(yaml_field_after(manifest, probe, "port"), "http");
    }
}
