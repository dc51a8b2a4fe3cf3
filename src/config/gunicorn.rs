//! A Gunicorn config file (`forkd -c gunicorn.conf.py`): read as Gunicorn reads it (the
//! file is executed and its module-level names are the settings), but never in the
//! master: a short-lived child (`python -m forkd._gunicorn_config FILE`, the Python
//! package's interpreter) executes it and hands the settings back as JSON, within
//! [`READ_TIMEOUT`]. [`map`] (pure) turns them into forkd's keys, as the TOML table a
//! forkd.toml would be, plus one warning naming whatever forkd does not apply.

use super::types::ConfigError;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use toml::Value;

/// How long the file may take to execute before it is a config error.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The interpreter that reads `.py` config files: set by the Python package's host
/// (`hosted::Host::python`); the plain binary has none.
static INTERPRETER: OnceLock<PathBuf> = OnceLock::new();

/// Sets the interpreter for `.py` config files (once, at start).
pub fn set_interpreter(path: PathBuf) {
    let _ = INTERPRETER.set(path);
}

/// The interpreter for `.py` config files and their server hooks, if this is the
/// Python package.
pub fn interpreter() -> Option<&'static Path> {
    INTERPRETER.get().map(PathBuf::as_path)
}

/// Whether a config path names a Gunicorn (Python) config file.
pub fn is_python_config(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "py")
}

/// Gunicorn's server hooks forkd runs: the first three in each worker, the others in
/// the hooks' runner, a child of the master (`master::hooks`).
pub const HOOKS_RUN: &[&str] = &[
    "post_fork",
    "post_worker_init",
    "worker_int",
    "worker_abort",
    "worker_exit",
    "on_starting",
    "when_ready",
    "on_reload",
    "pre_fork",
    "child_exit",
    "nworkers_changed",
    "on_exit",
];

/// Gunicorn's server hooks that forkd does not run (named in the warning). The
/// worker-side ones it runs (`post_fork`, `post_worker_init`, `worker_int`,
/// `worker_abort`, `worker_exit`) run in each worker (`forkd._worker`, which executes
/// the file again there, after the fork).
/// The master-side ones (`on_starting`, `when_ready`, `on_reload`, `pre_fork`,
/// `child_exit`, `nworkers_changed`, `on_exit`) run in a child of the master
/// (`master::hooks`).
const HOOKS_NOT_RUN: &[&str] = &["pre_exec", "pre_request", "post_request", "ssl_context"];

/// Gunicorn settings forkd has no need for: what they ask for is how forkd always works
/// (accepted without a word; docs/python.md says why for each).
const NOT_NEEDED: &[&str] = &[
    // The heartbeat is the scoreboard, an anonymous shared mapping: no files to put on
    // a tmpfs.
    "worker_tmp_dir",
    // Workers' stdout and stderr always reach forkd's error log.
    "capture_output",
    "enable_stdio_inheritance",
    // The master binds once and the workers inherit the socket.
    "reuse_port",
    "sendfile",
    "do_handshake_on_connect",
    "suppress_ragged_eofs",
    "default_proc_name",
];

/// Gunicorn settings forkd has no equivalent for (named in the one warning).
const UNSUPPORTED: &[&str] = &[
    "spew",
    "check_config",
    "print_config",
    "daemon",
    "initgroups",
    "tmp_upload_dir",
    "secure_scheme_headers",
    "forwarder_headers",
    "proxy_protocol",
    "proxy_allow_ips",
    "syslog",
    "syslog_addr",
    "syslog_prefix",
    "syslog_facility",
    "statsd_host",
    "statsd_prefix",
    "dogstatsd_tags",
    "disable_redirect_access_to_syslog",
    "logger_class",
    "logconfig",
    "logconfig_json",
    "paste",
    "reload_engine",
    "ssl_version",
    "ciphers",
    "strip_header_spaces",
    "permit_obsolete_folding",
    "permit_unconventional_http_method",
    "permit_unconventional_http_version",
    "casefold_http_method",
    "header_map",
    "tolerate_dangerous_framing",
    "forwarded_allow_ips_header",
    "limit_request_body",
    "raw_paste_global_conf",
];

/// Gunicorn's `worker_class` (or `-k`) as forkd's `python.interface`: uvicorn's worker
/// serves ASGI, `sync` and `gthread` serve WSGI (forkd from a thread pool of `threads`,
/// as gthread). Any other class: a note for the warning (forkd then tells the app's
/// kind itself).
pub fn worker_class_interface(class: &str) -> Result<&'static str, String> {
    let short = class.rsplit('.').next().unwrap_or(class);
    match short {
        _ if class.to_ascii_lowercase().contains("uvicorn") => Ok("asgi"),
        "sync" | "gthread" | "SyncWorker" | "ThreadWorker" => Ok("wsgi"),
        "gevent" | "eventlet" | "GeventWorker" | "GeventPyWSGIWorker" | "EventletWorker" => {
            Err(format!(
                "worker_class {class:?}: forkd serves WSGI from a thread pool of `threads` (no gevent/eventlet monkey-patching), ASGI on its event loop"
            ))
        }
        _ => Err(format!(
            "worker_class {class:?}: forkd serves the app itself (ASGI on its event loop, WSGI from a thread pool; `[python] interface` if its kind is not told right)"
        )),
    }
}

/// Gunicorn's comma-separated string setting (`"10.0.0.1, 10.0.0.2"`) as a list, its
/// items trimmed and empty ones dropped.
fn comma_list(text: &str) -> Value {
    Value::Array(
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| Value::String(item.to_string()))
            .collect(),
    )
}

/// What a Gunicorn config file becomes.
#[derive(Debug, Default, PartialEq)]
pub struct Mapped {
    /// forkd's keys, shaped as a forkd.toml's table (`[log]`, `[limits]`, `[env]`...).
    pub table: toml::Table,
    /// At most one line per kind of problem, for the log.
    pub warnings: Vec<String>,
}

/// Executes the file in a child and maps its settings (start and HUP).
pub fn read(path: &Path) -> Result<Mapped, ConfigError> {
    let error = |message: String| ConfigError { message };
    let Some(python) = INTERPRETER.get() else {
        return Err(error(format!(
            "{} is a Gunicorn (Python) config file: it is read by the forkd Python package (`pip install forkd`, then its `forkd` command), not by this binary",
            path.display()
        )));
    };
    let output = run_child(python, path, READ_TIMEOUT)
        .map_err(|why| error(format!("{}: {why}", path.display())))?;
    let parsed: Json = serde_json::from_str(&output).map_err(|e| {
        error(format!(
            "{}: the settings read from it are not JSON: {e}",
            path.display()
        ))
    })?;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(map(&parsed, &absolute))
}

/// Runs `python -m forkd._gunicorn_config FILE` with its output in memory files (no
/// pipe to drain, no thread), waiting at most `timeout`; stdout on success, the
/// file's error (its stderr) otherwise.
fn run_child(python: &Path, path: &Path, timeout: Duration) -> Result<String, String> {
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    use std::io::{Read, Seek};
    let memfd = |name: &std::ffi::CStr| {
        memfd_create(name, MemFdCreateFlag::MFD_CLOEXEC)
            .map(std::fs::File::from)
            .map_err(|e| format!("cannot make a memory file: {e}"))
    };
    let mut out = memfd(c"forkd-gunicorn-out")?;
    let mut err = memfd(c"forkd-gunicorn-err")?;
    let clone = |f: &std::fs::File| f.try_clone().map_err(|e| format!("cannot dup: {e}"));
    let mut child = std::process::Command::new(python)
        .args(["-m", "forkd._gunicorn_config"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(clone(&out)?)
        .stderr(clone(&err)?)
        .spawn()
        .map_err(|e| format!("cannot run {} to read it: {e}", python.display()))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "executing it took longer than {}s; it was stopped",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for the reader: {e}")),
        }
    };
    let text = |f: &mut std::fs::File| {
        let mut s = String::new();
        f.rewind().and_then(|_| f.read_to_string(&mut s)).map(|_| s)
    };
    let stdout = text(&mut out).map_err(|e| format!("reading its settings: {e}"))?;
    if status.success() {
        return Ok(stdout);
    }
    let stderr = text(&mut err).unwrap_or_default();
    let last = stderr.trim().lines().last().unwrap_or("").trim();
    Err(if last.is_empty() {
        format!("executing it failed ({status})")
    } else {
        format!("executing it failed: {last}")
    })
}

/// Maps the reader's JSON (`{"settings": {...}, "hooks": [...], "skipped": [...]}`)
/// to forkd's keys. `file`: the config file's absolute path (`logconfig_dict` is taken
/// from it in each worker).
pub fn map(parsed: &Json, file: &Path) -> Mapped {
    let mut mapped = Mapped::default();
    let mut ignored: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let empty = serde_json::Map::new();
    let settings = parsed
        .get("settings")
        .and_then(Json::as_object)
        .unwrap_or(&empty);
    let names = |key: &str| -> Vec<String> {
        parsed
            .get(key)
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Json::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let put = |table: Option<&str>, key: &str, value: Value, mapped: &mut Mapped| {
        let target = match table {
            None => &mut mapped.table,
            Some(t) => match mapped
                .table
                .entry(t)
                .or_insert_with(|| Value::Table(toml::Table::new()))
            {
                Value::Table(inner) => inner,
                _ => return,
            },
        };
        target.insert(key.to_string(), value);
    };
    for (name, value) in settings {
        if value.is_null() {
            continue;
        }
        let Some(toml_value) = to_toml(value) else {
            continue;
        };
        match name.as_str() {
            "bind" => {
                let list = match toml_value {
                    Value::String(s) => Value::Array(vec![Value::String(s)]),
                    other => other,
                };
                put(None, "bind", list, &mut mapped);
            }
            "wsgi_app" => put(None, "app", toml_value, &mut mapped),
            "workers"
            | "threads"
            | "timeout"
            | "graceful_timeout"
            | "keepalive"
            | "max_requests"
            | "max_requests_jitter"
            | "backlog"
            | "pidfile"
            | "chdir"
            | "preload_app"
            | "forwarded_allow_ips" => {
                let value = match (name.as_str(), toml_value) {
                    ("forwarded_allow_ips", Value::String(s)) if s != "*" => comma_list(&s),
                    (_, v) => v,
                };
                put(None, name, value, &mut mapped);
            }
            "user" | "group" => {
                let value = match toml_value {
                    Value::Integer(id) => Value::String(id.to_string()),
                    other => other,
                };
                put(None, name, value, &mut mapped);
            }
            "umask" => {
                // Gunicorn's umask is an integer (0o022) or a string it reads with
                // int(x, 0): "0o22", "0x12", "18"; forkd's string form is octal.
                let value = match toml_value {
                    Value::String(s) => match parse_c_integer(&s) {
                        Some(n) => Value::Integer(n),
                        None => Value::String(s),
                    },
                    other => other,
                };
                put(None, "umask", value, &mut mapped);
            }
            "accesslog" => put(Some("log"), "access_log", toml_value, &mut mapped),
            "errorlog" => put(Some("log"), "error_log", toml_value, &mut mapped),
            "loglevel" => {
                let value = match toml_value.as_str().map(str::to_ascii_lowercase) {
                    Some(level) => Value::String(
                        match level.as_str() {
                            "warning" => "warn",
                            "critical" => "error",
                            other => other,
                        }
                        .to_string(),
                    ),
                    None => toml_value,
                };
                put(Some("log"), "level", value, &mut mapped);
            }
            "access_log_format" => match toml_value.as_str() {
                Some(format) => {
                    let (format, unmapped) = access_log_format(format);
                    if !unmapped.is_empty() {
                        notes.push(format!(
                            "access_log_format: {} written as \"-\" (forkd has no such field)",
                            unmapped.join(" ")
                        ));
                    }
                    put(
                        Some("log"),
                        "access_log_format",
                        Value::String(format),
                        &mut mapped,
                    );
                }
                None => put(Some("log"), "access_log_format", toml_value, &mut mapped),
            },
            "raw_env" => {
                let entries: Vec<String> = match &toml_value {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(items) => items
                        .iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect(),
                    _ => Vec::new(),
                };
                for entry in entries {
                    match entry.split_once('=') {
                        Some((k, v)) => put(Some("env"), k, Value::String(v.into()), &mut mapped),
                        None => notes.push(format!("raw_env: {entry:?} is not KEY=VALUE")),
                    }
                }
            }
            "limit_request_line" => put(Some("limits"), "request_line", toml_value, &mut mapped),
            "worker_connections" => put(Some("limits"), "max_connections", toml_value, &mut mapped),
            "limit_request_fields" => {
                put(Some("limits"), "request_fields", toml_value, &mut mapped)
            }
            "limit_request_field_size" => put(
                Some("limits"),
                "request_field_size",
                toml_value,
                &mut mapped,
            ),
            "logconfig_dict" => {
                if toml_value.as_table().is_some_and(|t| !t.is_empty()) {
                    let spec = format!("{}:logconfig_dict", file.display());
                    put(
                        Some("python"),
                        "log_config",
                        Value::String(spec),
                        &mut mapped,
                    );
                }
            }
            "worker_class" => match worker_class_interface(toml_value.as_str().unwrap_or("")) {
                Ok(interface) => put(
                    Some("python"),
                    "interface",
                    Value::String(interface.into()),
                    &mut mapped,
                ),
                Err(note) => notes.push(note),
            },
            "reload" | "reload_extra_files" | "proc_name" => {
                put(None, name, toml_value, &mut mapped)
            }
            "pythonpath" => {
                // Gunicorn's is comma-separated: "/srv/app,/srv/lib".
                let value = match toml_value {
                    Value::String(s) => comma_list(&s),
                    other => other,
                };
                put(Some("python"), "path", value, &mut mapped);
            }
            "certfile" | "keyfile" | "ca_certs" => put(Some("tls"), name, toml_value, &mut mapped),
            "cert_reqs" => {
                // ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED.
                let value = match toml_value.as_integer() {
                    Some(0) => Value::String("none".into()),
                    Some(1) => Value::String("optional".into()),
                    Some(2) => Value::String("required".into()),
                    _ => toml_value,
                };
                put(Some("tls"), "client_auth", value, &mut mapped);
            }
            other if NOT_NEEDED.contains(&other) => {}
            other if UNSUPPORTED.contains(&other) => {
                if !is_default_like(&toml_value) {
                    ignored.push(other.to_string());
                }
            }
            // Gunicorn's settings are lower case: `HOOKS_DIR = ...` is the file's own.
            other if other.chars().any(|c| c.is_ascii_uppercase()) => {}
            _ => ignored.push(name.clone()),
        }
    }
    let hooks = names("hooks");
    let not_run: Vec<&str> = hooks
        .iter()
        .map(String::as_str)
        .filter(|h| HOOKS_NOT_RUN.contains(h))
        .collect();
    if !not_run.is_empty() {
        notes.push(format!(
            "server hooks not run by forkd yet: {}",
            not_run.join(", ")
        ));
    }
    ignored.extend(
        names("skipped")
            .into_iter()
            .filter(|n| !n.chars().any(|c| c.is_ascii_uppercase())),
    );
    if !ignored.is_empty() {
        ignored.sort();
        notes.push(format!(
            "not applied (no forkd equivalent): {}",
            ignored.join(", ")
        ));
    }
    if !notes.is_empty() {
        mapped.warnings.push(format!(
            "Gunicorn config {}: {}",
            file.display(),
            notes.join("; ")
        ));
    }
    mapped
}

/// A setting left at a value that changes nothing (False, None, empty, 0).
fn is_default_like(value: &Value) -> bool {
    match value {
        Value::Boolean(b) => !b,
        Value::Integer(n) => *n == 0,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Table(t) => t.is_empty(),
        _ => false,
    }
}

/// An integer as Python's `int(text, 0)` reads it: `0o22`, `0x12`, `0b1`, `18`.
fn parse_c_integer(text: &str) -> Option<i64> {
    let t = text.trim().to_ascii_lowercase();
    let (digits, radix) = if let Some(d) = t.strip_prefix("0o") {
        (d, 8)
    } else if let Some(d) = t.strip_prefix("0x") {
        (d, 16)
    } else if let Some(d) = t.strip_prefix("0b") {
        (d, 2)
    } else {
        (t.as_str(), 10)
    };
    i64::from_str_radix(&digits.replace('_', ""), radix).ok()
}

/// JSON to TOML: null entries are dropped (TOML has no null); None for a bare null.
fn to_toml(value: &Json) -> Option<Value> {
    Some(match value {
        Json::Null => return None,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64()?),
        },
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(items.iter().filter_map(to_toml).collect()),
        Json::Object(entries) => Value::Table(
            entries
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), to_toml(v)?)))
                .collect(),
        ),
    })
}

/// Gunicorn's access log format (`%(h)s %(l)s ...`, Python %-format over its atoms) as
/// forkd's `{field}` format; the atoms forkd has no field for become `-`, and are
/// returned to be named in the warning.
pub fn access_log_format(gunicorn: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut unmapped = Vec::new();
    let mut rest = gunicorn;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("%%") {
            out.push('%');
            rest = after;
            continue;
        }
        if let Some(after) = rest.strip_prefix("%(") {
            // `%(NAME)s`, NAME possibly `{header}i`; a conversion other than s is
            // taken as s.
            if let Some(close) = after.find(')') {
                let name = &after[..close];
                let tail = &after[close + 1..];
                let conv_len = tail
                    .char_indices()
                    .find(|(_, c)| c.is_ascii_alphabetic())
                    .map(|(i, c)| i + c.len_utf8());
                if let Some(conv_len) = conv_len {
                    match atom(name) {
                        Some(field) => out.push_str(&field),
                        None => {
                            out.push('-');
                            unmapped.push(format!("%({name})"));
                        }
                    }
                    rest = &tail[conv_len..];
                    continue;
                }
            }
        }
        match c {
            '{' => out.push_str("{{"),
            '}' => out.push_str("}}"),
            c => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    (out, unmapped)
}

/// One Gunicorn atom as forkd's field (with the text around it that Gunicorn adds).
fn atom(name: &str) -> Option<String> {
    let field = match name {
        "h" => "{remote_addr}",
        "l" | "u" => "-",
        "t" => "[{time}]",
        "r" => "{request}",
        "m" => "{method}",
        "U" => "{path}",
        "q" => "{query}",
        "H" => "{protocol}",
        "s" => "{status}",
        "B" | "b" => "{bytes}",
        "f" => "{referer}",
        "a" => "{user_agent}",
        "D" => "{duration_us}",
        "M" => "{duration_ms}",
        "L" => "{duration_s}",
        "p" => "{pid}",
        other => {
            let header = other.strip_prefix('{')?.strip_suffix("}i")?;
            let valid = !header.is_empty()
                && header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            return valid.then(|| format!("{{header:{}}}", header.to_ascii_lowercase()));
        }
    };
    Some(field.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapped(settings: Json) -> Mapped {
        map(
            &json!({"settings": settings, "hooks": ["post_fork", "when_ready", "worker_int", "pre_request"], "skipped": []}),
            Path::new("/etc/app/gunicorn.conf.py"),
        )
    }

    #[test]
    fn settings_become_forkd_keys() {
        let m = mapped(json!({
            "bind": "127.0.0.1:9000", "workers": 3, "timeout": 60, "loglevel": "WARNING",
            "accesslog": "-", "raw_env": ["A=1", "B=x=y"], "limit_request_line": 4094,
            "umask": "0o27", "user": 1000, "forwarded_allow_ips": "10.0.0.1, 10.0.0.2",
            "logconfig_dict": {"version": 1}, "worker_class": "uvicorn.workers.UvicornWorker",
            "pidfile": null,
        }));
        let t = &m.table;
        assert_eq!(
            t["bind"],
            Value::Array(vec![Value::String("127.0.0.1:9000".into())])
        );
        assert_eq!(t["workers"], Value::Integer(3));
        assert_eq!(t["timeout"], Value::Integer(60));
        assert_eq!(t["umask"], Value::Integer(0o27));
        assert_eq!(t["user"], Value::String("1000".into()));
        assert!(!t.contains_key("pidfile"));
        assert_eq!(t["log"]["level"].as_str(), Some("warn"));
        assert_eq!(t["log"]["access_log"].as_str(), Some("-"));
        assert_eq!(t["env"]["B"].as_str(), Some("x=y"));
        assert_eq!(t["limits"]["request_line"].as_integer(), Some(4094));
        assert_eq!(t["forwarded_allow_ips"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            t["python"]["log_config"].as_str(),
            Some("/etc/app/gunicorn.conf.py:logconfig_dict")
        );
        // Only the hook forkd does not run is warned about.
        assert_eq!(m.warnings.len(), 1);
        assert!(m.warnings[0].contains("pre_request"), "{:?}", m.warnings);
        assert!(!m.warnings[0].contains("worker_int"), "{:?}", m.warnings);
        assert!(!m.warnings[0].contains("post_fork"), "{:?}", m.warnings);
        assert!(!m.warnings[0].contains("when_ready"), "{:?}", m.warnings);
    }

    #[test]
    fn names_tls_reload_and_python_path_are_applied_and_what_forkd_needs_not_is_quiet() {
        let m = map(
            &json!({"settings": {
                "proc_name": "shop", "pythonpath": "/srv/app, /srv/lib,", "reload": true,
                "reload_extra_files": ["templates/index.html"], "certfile": "/etc/c.pem",
                "keyfile": "/etc/k.pem", "ca_certs": "/etc/ca.pem", "cert_reqs": 2,
                "worker_tmp_dir": "/dev/shm", "capture_output": true,
                "enable_stdio_inheritance": true, "reuse_port": true, "sendfile": false,
            }, "hooks": [], "skipped": []}),
            Path::new("/etc/app/gunicorn.conf.py"),
        );
        let t = &m.table;
        assert_eq!(t["proc_name"].as_str(), Some("shop"));
        assert_eq!(t["reload"].as_bool(), Some(true));
        assert_eq!(t["reload_extra_files"].as_array().map(Vec::len), Some(1));
        let path: Vec<&str> = t["python"]["path"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(path, ["/srv/app", "/srv/lib"]);
        assert_eq!(t["tls"]["certfile"].as_str(), Some("/etc/c.pem"));
        assert_eq!(t["tls"]["keyfile"].as_str(), Some("/etc/k.pem"));
        assert_eq!(t["tls"]["ca_certs"].as_str(), Some("/etc/ca.pem"));
        assert_eq!(t["tls"]["client_auth"].as_str(), Some("required"));
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        let plain = map(
            &json!({"settings": {"bind": "0.0.0.0:80", "worker_connections": 500}, "hooks": [], "skipped": []}),
            Path::new("/g.py"),
        );
        assert_eq!(plain.table["bind"][0].as_str(), Some("0.0.0.0:80"));
        assert_eq!(
            plain.table["limits"]["max_connections"].as_integer(),
            Some(500)
        );
        // The mapped table is a valid forkd config (cert_reqs 1 -> optional).
        let one = map(
            &json!({"settings": {"cert_reqs": 1}, "hooks": [], "skipped": []}),
            Path::new("/g.py"),
        );
        assert_eq!(one.table["tls"]["client_auth"].as_str(), Some("optional"));
    }

    #[test]
    fn worker_classes_become_the_interface() {
        for (class, interface) in [
            ("uvicorn.workers.UvicornWorker", "asgi"),
            ("uvicorn_worker.UvicornWorker", "asgi"),
            ("uvicorn.workers.UvicornH11Worker", "asgi"),
            ("sync", "wsgi"),
            ("gthread", "wsgi"),
            ("gunicorn.workers.gthread.ThreadWorker", "wsgi"),
        ] {
            assert_eq!(worker_class_interface(class), Ok(interface), "{class}");
        }
        for class in ["gevent", "eventlet", "tornado", "myapp.MyWorker", ""] {
            let note = worker_class_interface(class).unwrap_err();
            assert!(note.contains("worker_class"), "{note}");
        }
        let m = map(
            &json!({"settings": {"worker_class": "gthread", "threads": 8}, "hooks": [], "skipped": []}),
            Path::new("/g.py"),
        );
        assert_eq!(m.table["python"]["interface"].as_str(), Some("wsgi"));
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    #[test]
    fn everything_not_applied_is_named_in_one_warning() {
        let m = map(
            &json!({"settings": {"wokers": 2, "daemon": true, "MY_CONSTANT": 1, "spew": false,
                                 "worker_class": "gevent"},
                    "hooks": [], "skipped": ["obj"]}),
            Path::new("/g.py"),
        );
        assert_eq!(m.warnings.len(), 1);
        let w = &m.warnings[0];
        for name in ["wokers", "daemon", "obj", "gevent"] {
            assert!(w.contains(name), "{name} in {w}");
        }
        assert!(
            !w.contains("spew"),
            "a setting left at its default is not named: {w}"
        );
        assert!(
            !w.contains("MY_CONSTANT"),
            "not a Gunicorn setting's name: {w}"
        );
        let quiet = map(&json!({"settings": {"workers": 2}}), Path::new("/g.py"));
        assert!(quiet.warnings.is_empty());
    }

    #[test]
    fn preload_app_is_applied() {
        let m = map(
            &json!({"settings": {"preload_app": true}}),
            Path::new("/g.py"),
        );
        assert_eq!(m.table["preload_app"].as_bool(), Some(true));
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    #[test]
    fn malformed_reader_output_maps_to_nothing() {
        for bad in [
            json!(null),
            json!([]),
            json!({"settings": 3}),
            json!({"settings": {"bind": null}}),
        ] {
            let m = map(&bad, Path::new("/g.py"));
            assert!(m.table.is_empty(), "{bad}");
        }
    }

    #[test]
    fn gunicorn_access_log_format() {
        let (f, unmapped) =
            access_log_format(r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#);
        assert_eq!(
            f,
            r#"{remote_addr} - - [{time}] "{request}" {status} {bytes} "{referer}" "{user_agent}""#
        );
        assert!(unmapped.is_empty());
        let (f, unmapped) = access_log_format("%(T)s %({X-Id}i)s 100%% {x} %(M)d %(");
        assert_eq!(f, "- {header:x-id} 100% {{x}} {duration_ms} %(");
        assert_eq!(unmapped, vec!["%(T)".to_string()]);
        assert!(crate::config::AccessLogFormat::parse(&f).is_ok());
    }

    #[test]
    fn c_integers() {
        assert_eq!(parse_c_integer("0o22"), Some(0o22));
        assert_eq!(parse_c_integer("0x12"), Some(18));
        assert_eq!(parse_c_integer("18"), Some(18));
        assert_eq!(parse_c_integer("zz"), None);
    }

    /// Random texts over the format's own characters: the mapping never panics, and
    /// what it makes is a format forkd accepts or refuses with an error.
    #[test]
    fn access_log_format_property() {
        let alphabet: Vec<char> = "%()sdhtrbi{}X-a \"\u{e9}".chars().collect();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut text = String::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            for _ in 0..(state % 24) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            let (out, _) = access_log_format(&text);
            let _ = crate::config::AccessLogFormat::parse(&out);
        }
    }
}
