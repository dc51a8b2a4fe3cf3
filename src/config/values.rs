//! Values as the file, the environment and the command line give them: parsed and checked
//! (durations, sizes, binds, lists), and written back as TOML for `--print-config`.

use super::types::*;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;
use toml::Value;

/// What is wrong with a value; [`set`] makes the message, naming where it came from.
#[derive(Debug)]
pub(super) enum Problem {
    /// Not of the allowed kind: "expected ALLOWED, got VALUE".
    Expected,
    /// Of the allowed kind, but wrong: "WHY; allowed: ALLOWED".
    Invalid(String),
    /// A message of its own about the key, or (`Some`) about one entry of its table.
    Said(Option<String>, String),
}

pub(super) use Problem::{Expected, Invalid};

pub(super) fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

pub(super) fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_string()),
        _ => None,
    }
}

pub(super) fn non_empty(value: &Value) -> Option<String> {
    text(value).filter(|s| !s.is_empty())
}

/// A non-empty string.
pub(super) fn string(value: &Value) -> Result<String, Problem> {
    non_empty(value).ok_or(Expected)
}

pub(super) fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Integer(n) if *n >= 0 => Some(*n),
        Value::String(s) => s.trim().parse::<i64>().ok().filter(|n| *n >= 0),
        _ => None,
    }
}

/// An integer >= `min` (and >= 0).
pub(super) fn at_least(value: &Value, min: i64) -> Result<u64, Problem> {
    integer(value)
        .filter(|n| *n >= min)
        .map(|n| n as u64)
        .ok_or(Expected)
}

/// `proc_name`: what the process titles show after `forkd: master` (printable ASCII, at
/// most 64 bytes: a title is one line of `ps`, and the kernel's comm is 16 bytes).
pub(super) fn proc_name(name: &str) -> Result<String, String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("{} bytes; a name is 1 to 64 bytes", name.len()));
    }
    match name.chars().find(|c| !(' '..='~').contains(c)) {
        Some(c) => Err(format!(
            "{c:?} is not printable ASCII (letters, digits, punctuation and spaces)"
        )),
        None => Ok(name.to_string()),
    }
}

/// `true`/`false`, or the same as a string (how `--reload` arrives).
pub(super) fn boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Boolean(b) => Some(*b),
        Value::String(s) if s == "true" => Some(true),
        Value::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

pub(super) fn list(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Array(items) => items.iter().map(non_empty).collect(),
        Value::String(s) => Some(
            s.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
        ),
        _ => None,
    }
}

pub(super) fn url_path(value: &Value) -> Option<String> {
    non_empty(value).filter(|p| p.starts_with('/'))
}

pub(super) fn duration(value: &Value) -> Result<Duration, Problem> {
    match value {
        Value::Integer(n) if *n >= 0 => Ok(Duration::from_secs(*n as u64)),
        Value::Float(f) if f.is_finite() && *f >= 0.0 => Ok(Duration::from_secs_f64(*f)),
        Value::String(s) => parse_duration(s).map_err(Invalid),
        other => Err(Invalid(format!("got {}", show(other)))),
    }
}

pub(super) fn positive_duration(value: &Value) -> Result<Duration, Problem> {
    let d = duration(value)?;
    if d.is_zero() {
        return Err(Invalid("it must be greater than 0".into()));
    }
    Ok(d)
}

pub(super) fn size(value: &Value) -> Result<u64, Problem> {
    match value {
        Value::Integer(n) if *n >= 0 => Ok(*n as u64),
        Value::String(s) => parse_size(s).map_err(Invalid),
        other => Err(Invalid(format!("got {}", show(other)))),
    }
}

/// Parses "30", "1.5", "500ms", "30s", "2m", "1h".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration"))?;
    let seconds = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{text:?} has an unknown unit (use ms, s, m or h)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{text:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses "1024", "64KiB", "10MiB", "1GiB", "100KB", "5MB".
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit (use KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A bind entry spelled literally (`unix:`, `fd://`, or an IP address and port), without
/// resolving host names: for names that may or may not be entries (`LISTEN_FDNAMES`).
pub fn parse_bind_literal(text: &str) -> Option<BindSpec> {
    let inner = text
        .strip_prefix("tls://")
        .or_else(|| text.strip_prefix("tls+"))
        .unwrap_or(text);
    if inner.starts_with("unix:")
        || inner.starts_with("fd://")
        || inner.parse::<SocketAddr>().is_ok()
    {
        parse_bind(text).ok()
    } else {
        None
    }
}

/// Parses one bind entry.
pub fn parse_bind(text: &str) -> Result<BindSpec, String> {
    let t = text.trim();
    if let Some(address) = t.strip_prefix("tls://") {
        return match parse_bind(address)? {
            inner @ BindSpec::Tcp(_) => Ok(BindSpec::Tls(Box::new(inner))),
            _ => Err(format!(
                "{text:?}: tls:// takes HOST:PORT; use tls+fd:// or tls+unix: for the others"
            )),
        };
    }
    if let Some(rest) = t.strip_prefix("tls+") {
        if !(rest.starts_with("fd://") || rest.starts_with("unix:")) {
            return Err(format!(
                "{text:?}: tls+ goes before fd:// or unix: (tls:// for HOST:PORT)"
            ));
        }
        return Ok(BindSpec::Tls(Box::new(parse_bind(rest)?)));
    }
    if let Some(path) = t.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(format!("{text:?}: unix: needs a path"));
        }
        return Ok(BindSpec::Unix(PathBuf::from(path)));
    }
    if let Some(number) = t.strip_prefix("fd://") {
        if number.is_empty() {
            return Err(format!("{text:?}: fd:// needs a number or a name"));
        }
        if !number.bytes().all(|b| b.is_ascii_digit()) {
            // systemd's rule for FileDescriptorName=: printable ASCII without ':'.
            if number.len() > 255 || !number.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err(format!(
                    "{text:?}: a socket name is up to 255 printable ASCII characters without ':'"
                ));
            }
            return Ok(BindSpec::Named(number.to_string()));
        }
        let fd: RawFd = number
            .parse()
            .map_err(|_| format!("{text:?}: fd:// needs a number"))?;
        if fd < 3 {
            return Err(format!("{text:?}: fd must be 3 or more"));
        }
        return Ok(BindSpec::Fd(fd));
    }
    if let Ok(addr) = t.parse::<SocketAddr>() {
        return Ok(BindSpec::Tcp(addr));
    }
    let (host, port) = t
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{text:?}: {port:?} is not a port"))?;
    use std::net::ToSocketAddrs;
    let host = if host.is_empty() || host == "*" {
        "0.0.0.0"
    } else {
        host
    };
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{text:?}: cannot resolve {host}: {e}"))?
        .next()
        .map(BindSpec::Tcp)
        .ok_or_else(|| format!("{text:?}: {host} has no address"))
}

/// `exec.ready` as it is written in the file (for messages and `--print-config`).
pub fn ready_mode_text(mode: &ReadyMode) -> String {
    match mode {
        ReadyMode::Auto => "\"auto\"".to_string(),
        ReadyMode::Notify => "\"notify\"".to_string(),
        ReadyMode::After(d) => fmt_duration(*d),
    }
}

pub(super) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("\"{}s\"", ms / 1000)
    } else {
        format!("\"{ms}ms\"")
    }
}

pub(super) fn quoted(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

pub(super) fn quoted_list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.map(|i| quoted(&i)).collect();
    format!("[{}]", items.join(", "))
}

pub(super) fn target(t: &LogTarget) -> String {
    match t {
        LogTarget::Off => quoted("off"),
        LogTarget::Std => quoted("-"),
        LogTarget::File(p) => quoted(&p.display().to_string()),
    }
}

pub(super) fn quoted_path(path: &std::path::Path) -> String {
    quoted(&path.display().to_string())
}

/// `[python.hooks]`: hook names forkd runs, each a `module:function`.
pub(super) fn hooks(value: &Value) -> Result<std::collections::BTreeMap<String, String>, Problem> {
    // From the environment or the command line: `name=module:function,...`, or the
    // TOML inline table `{ name = "module:function" }`.
    let parsed;
    let table = match value {
        Value::Table(table) => table,
        Value::String(text) if text.trim_start().starts_with('{') => {
            parsed = format!("v = {text}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .and_then(|v| v.as_table().cloned())
                .ok_or(Problem::Expected)?;
            &parsed
        }
        Value::String(text) => {
            let mut table = toml::Table::new();
            for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let (name, spec) = entry.split_once('=').ok_or(Problem::Expected)?;
                table.insert(name.trim().into(), Value::String(spec.trim().into()));
            }
            parsed = table;
            &parsed
        }
        _ => return Err(Problem::Expected),
    };
    let mut hooks = std::collections::BTreeMap::new();
    for (name, spec) in table {
        if !super::gunicorn::HOOKS_RUN.contains(&name.as_str()) {
            return Err(Problem::Invalid(format!(
                "{name:?} is not a server hook forkd runs"
            )));
        }
        let spec = spec.as_str().ok_or(Problem::Expected)?;
        if spec.ends_with("()") || crate::hosted::check_python_spec(spec).is_err() {
            return Err(Problem::Invalid(format!(
                "hook {name}: {spec:?} is not \"module:function\""
            )));
        }
        hooks.insert(name.clone(), spec.to_string());
    }
    Ok(hooks)
}
