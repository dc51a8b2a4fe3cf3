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
    let grace: f64 = yaml_field_after(DEPLOYMENT, "spec", "terminationGracePeriodSeconds")
        .parse()
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace > drain,
        "terminationGracePeriodSeconds {grace} must exceed shutdown_delay + graceful_timeout = {drain}"
    );

    // The probes ask forkd's own health paths, on the port it binds.
    for (probe, key) in [
        ("readinessProbe", "ready_path"),
        ("livenessProbe", "live_path"),
    ] {
        assert_eq!(
            Some(yaml_field_after(DEPLOYMENT, probe, "path").as_str()),
            health.get(key).and_then(|v| v.as_str()),
            "{probe} vs health.{key}"
        );
        assert_eq!(yaml_field_after(DEPLOYMENT, probe, "port"), "http");
    }
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
