//! Configuration: the one validated `Config` built from defaults, the TOML file,
//! `FORKD_*` environment variables and command-line options (in that order of
//! precedence, lowest first). Errors name the file, key, line, problem and what is allowed.
//!

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::access_log::Format as AccessLogFormat;
pub use crate::forwarded::TrustedProxies;

/// One `bind` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindSpec {
    /// "HOST:PORT" or "[V6]:PORT" (hostnames resolved to their first address).
    Tcp(SocketAddr),
    /// "unix:/path/to.sock"
    Unix(PathBuf),
    /// "fd://N": an already-listening socket inherited as fd N.
    Fd(RawFd),
    /// "fd://NAME": the socket systemd passed under that name (`FileDescriptorName=`).
    Named(String),
    /// "tls://HOST:PORT", "tls+fd://NAME" (or N), "tls+unix:/path": the socket of the
    /// inner entry, served with `[tls]`. The listener itself is plain; workers wrap
    /// each accepted connection.
    Tls(Box<BindSpec>),
}

impl BindSpec {
    /// Served with TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, BindSpec::Tls(_))
    }
    /// The socket this entry names, without TLS.
    pub fn plain(&self) -> &BindSpec {
        match self {
            BindSpec::Tls(inner) => inner.plain(),
            other => other,
        }
    }
}

/// `tls.client_auth`: whether clients present a certificate (checked against `ca_certs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Optional,
    Required,
}

/// `tls.min_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

/// The `[tls]` table, for `tls://` binds. The files are loaded and checked by
/// `crate::tls::load` (at start, on HUP, and by `--check-config`).
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    /// PEM certificate chain, the server's own certificate first.
    pub certfile: Option<PathBuf>,
    /// PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub keyfile: Option<PathBuf>,
    /// PEM bundle of the CAs that client certificates must chain to.
    pub ca_certs: Option<PathBuf>,
    pub client_auth: ClientAuth,     // None
    pub alpn: Vec<String>,           // ["h2", "http/1.1"]
    pub min_version: TlsVersion,     // 1.2
    pub handshake_timeout: Duration, // 10 s
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    Count(usize),
    /// CPUs this process may use (affinity mask and cgroup CPU quota).
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where a log goes: "-" (stderr for the error log, stdout for the access log), a file, or off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Off,
    Std,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub level: LogLevel,       // default Info
    pub format: LogFormat,     // default Text
    pub error_log: LogTarget,  // default Std ("-"); "off" not allowed here
    pub access_log: LogTarget, // default Off
    /// Parsed once here; the workers use it as it is. None: the default format.
    pub access_log_format: Option<AccessLogFormat>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub request_line: usize,           // 8190
    pub request_fields: usize,         // 100
    pub request_field_size: usize,     // 8190
    pub max_body: u64,                 // 10 MiB
    pub header_read_timeout: Duration, // 10 s
    /// A request body that sends nothing this long gets 408; zero = off.
    pub body_read_timeout: Duration, // 30 s
    pub max_connections: usize,        // 1000
    /// Per worker and client IP; 0 = no limit.
    pub max_connections_per_ip: usize, // 0
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub live_path: Option<String>,  // must start with '/'
    pub ready_path: Option<String>, // must start with '/'
    pub shutdown_delay: Duration,   // 0
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub bind: Option<BindSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadyMode {
    Auto,
    Notify,
    After(Duration),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exec {
    pub command: Vec<String>, // empty = no exec workers
    pub ready: ReadyMode,     // Auto
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (`-c`), if any; HUP re-reads it.
    pub config_file: Option<PathBuf>,
    pub app: Option<String>,
    pub bind: Vec<BindSpec>,
    /// Whether `bind` was set (file, environment or command line) rather than defaulted:
    /// with socket activation and no `bind`, every passed socket is served.
    pub bind_given: bool,
    pub workers: Workers,
    pub threads: usize,
    pub backlog: i32,
    pub timeout: Duration,
    pub graceful_timeout: Duration,
    pub keepalive: Duration,
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    pub pidfile: Option<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub umask: Option<u32>,
    pub chdir: Option<PathBuf>,
    /// Parsed once here; the workers use it as it is.
    pub forwarded_allow_ips: TrustedProxies,
    pub env: BTreeMap<String, String>,
    pub log: LogConfig,
    pub limits: Limits,
    pub health: Health,
    pub metrics: Metrics,
    pub exec: Exec,
    pub tls: Tls,
}

// ---- loading ---------------------------------------------------------------------------

use crate::cli::Cli;
use toml::Value;

/// A configuration error: what, where (file and line, environment variable or option),
/// and what is allowed. Its Display is the whole message forkd prints.
#[derive(Debug, Clone)]
pub struct ConfigError {
    message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "forkd: config error: {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Where a value came from, for error messages.
enum Origin<'a> {
    File {
        path: &'a std::path::Path,
        source: &'a str,
    },
    Env(&'a str),
    Flag(&'a str),
}

impl Origin<'_> {
    fn error(&self, key: &str, problem: &str) -> ConfigError {
        let message = match self {
            Origin::File { path, source } => match line_of(source, key) {
                Some(line) => format!("{} line {line}: key `{key}`: {problem}", path.display()),
                None => format!("{}: key `{key}`: {problem}", path.display()),
            },
            Origin::Env(var) => format!("environment variable {var} (key `{key}`): {problem}"),
            Origin::Flag(option) => format!("option {option}: {problem}"),
        };
        ConfigError { message }
    }
}

/// Every key: (dotted key, what is allowed). The order is the print order.
const KEYS: &[(&str, &str)] = &[
    ("app", "a built-in app name: hello | echo"),
    ("bind", "a list of \"HOST:PORT\", \"[V6]:PORT\", \"unix:/path\", \"fd://N\" (N >= 3) or \"fd://NAME\" (a socket systemd passed by that name); \"tls://HOST:PORT\", \"tls+fd://NAME\" or \"tls+unix:/path\" for HTTPS with [tls]"),
    ("workers", "an integer >= 1 or \"auto\""),
    ("threads", "an integer >= 1"),
    ("backlog", "an integer from 1 to 65535"),
    ("timeout", "a duration: seconds (integer or float) or a string like \"500ms\", \"30s\", \"2m\"; 0 = off"),
    ("graceful_timeout", "a duration: seconds or a string like \"30s\""),
    ("keepalive", "a duration: seconds or a string like \"2s\"; 0 = no keep-alive"),
    ("max_requests", "an integer >= 0 (0 = never recycle)"),
    ("max_requests_jitter", "an integer >= 0"),
    ("pidfile", "a file path"),
    ("user", "a user name or uid"),
    ("group", "a group name or gid"),
    ("umask", "an octal string such as \"0022\" or an integer"),
    ("chdir", "a directory path"),
    ("forwarded_allow_ips", "a list of IP addresses or CIDRs, or \"*\""),
    ("env", "a table of strings"),
    ("log.level", "error | warn | info | debug | trace"),
    ("log.format", "text | json"),
    ("log.error_log", "\"-\" (stderr) or a file path"),
    ("log.access_log", "\"-\" (stdout), a file path, or \"off\""),
    ("log.access_log_format", "a format string of {named} fields (see the README)"),
    ("limits.request_line", "an integer >= 1 (bytes)"),
    ("limits.request_fields", "an integer >= 1"),
    ("limits.request_field_size", "an integer >= 1 (bytes)"),
    ("limits.max_body", "a size: bytes or a string like \"64KiB\", \"10MiB\""),
    ("limits.header_read_timeout", "a duration > 0: seconds or a string like \"10s\""),
    ("limits.body_read_timeout", "a duration: seconds or a string like \"30s\"; 0 = off"),
    ("limits.max_connections", "an integer >= 1"),
    ("limits.max_connections_per_ip", "an integer >= 0 (0 = no limit)"),
    ("health.live_path", "a path starting with /"),
    ("health.ready_path", "a path starting with /"),
    ("health.shutdown_delay", "a duration: seconds or a string like \"5s\""),
    ("metrics.bind", "\"HOST:PORT\" or \"unix:/path\""),
    ("exec.command", "a non-empty list of strings (the program and its arguments)"),
    ("exec.ready", "\"auto\", \"notify\" or a duration such as \"2s\""),
    ("tls.certfile", "a PEM file: the certificate chain, the server's certificate first"),
    ("tls.keyfile", "a PEM file: the private key (PKCS#8, PKCS#1 or SEC1)"),
    ("tls.ca_certs", "a PEM file of CA certificates that client certificates must chain to"),
    ("tls.client_auth", "none | optional | required (optional and required need ca_certs)"),
    ("tls.alpn", "a list of \"h2\" and \"http/1.1\", in order of preference"),
    ("tls.min_version", "\"1.2\" or \"1.3\""),
    ("tls.handshake_timeout", "a duration > 0: seconds or a string like \"10s\""),
];

const TABLES: &[&str] = &["env", "log", "limits", "health", "metrics", "exec", "tls"];

fn allowed(key: &str) -> &'static str {
    KEYS.iter().find(|(k, _)| *k == key).map_or("", |(_, a)| a)
}

impl Default for Config {
    fn default() -> Config {
        Config {
            config_file: None,
            app: None,
            bind: vec![BindSpec::Tcp(SocketAddr::from(([127, 0, 0, 1], 8000)))],
            bind_given: false,
            workers: Workers::Count(1),
            threads: 1,
            backlog: 2048,
            timeout: Duration::from_secs(30),
            graceful_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(2),
            max_requests: 0,
            max_requests_jitter: 0,
            pidfile: None,
            user: None,
            group: None,
            umask: None,
            chdir: None,
            forwarded_allow_ips: TrustedProxies::loopback(),
            env: BTreeMap::new(),
            log: LogConfig {
                level: LogLevel::Info,
                format: LogFormat::Text,
                error_log: LogTarget::Std,
                access_log: LogTarget::Off,
                access_log_format: None,
            },
            limits: Limits {
                request_line: 8190,
                request_fields: 100,
                request_field_size: 8190,
                max_body: 10 * 1024 * 1024,
                header_read_timeout: Duration::from_secs(10),
                body_read_timeout: Duration::from_secs(30),
                max_connections: 1000,
                max_connections_per_ip: 0,
            },
            health: Health {
                live_path: None,
                ready_path: None,
                shutdown_delay: Duration::ZERO,
            },
            metrics: Metrics { bind: None },
            exec: Exec {
                command: Vec::new(),
                ready: ReadyMode::Auto,
            },
            tls: Tls {
                certfile: None,
                keyfile: None,
                ca_certs: None,
                client_auth: ClientAuth::None,
                alpn: vec!["h2".to_string(), "http/1.1".to_string()],
                min_version: TlsVersion::V1_2,
                handshake_timeout: Duration::from_secs(10),
            },
        }
    }
}

/// Builds the effective config: defaults, then the file, then `FORKD_*` variables from
/// `env`, then the command line.
pub fn load(cli: &Cli, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    let mut file_source = None;
    if let Some(path) = &cli.config {
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
            message: format!("cannot read config file {}: {e}", path.display()),
        })?;
        apply_file(&mut config, path, &source)?;
        file_source = Some((path.as_path(), source));
        config.config_file = Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()));
    }
    for (var, value) in env.iter().filter(|(k, _)| k.starts_with("FORKD_")) {
        let key = key_for_env(var).ok_or_else(|| {
            let names: Vec<String> = KEYS.iter().map(|(k, _)| env_name(k)).collect();
            let hint = suggestion(var, names.iter().map(String::as_str));
            ConfigError {
                message: format!("unknown environment variable {var}{hint}"),
            }
        })?;
        set(
            &mut config,
            key,
            Value::String(value.clone()),
            &Origin::Env(var),
        )?;
    }
    for (option, key, value) in cli.overrides() {
        set(&mut config, key, value, &Origin::Flag(option))?;
    }
    let origin = match &file_source {
        Some((path, source)) => Origin::File { path, source },
        None => Origin::Env("FORKD_* or the command line"),
    };
    check_tls(&config, &origin)?;
    Ok(config)
}

/// The checks across `bind` and `[tls]` (the files themselves: `crate::tls::load`).
fn check_tls(config: &Config, origin: &Origin<'_>) -> Result<(), ConfigError> {
    let tls = &config.tls;
    let table_given = tls.certfile.is_some() || tls.keyfile.is_some() || tls.ca_certs.is_some();
    if let Some(spec) = config.bind.iter().find(|b| b.is_tls()) {
        if !table_given {
            return Err(origin.error(
                "bind",
                &format!("\"{spec}\" is served with TLS and needs a [tls] table with certfile and keyfile"),
            ));
        }
    }
    if table_given {
        if tls.certfile.is_none() {
            return Err(origin.error(
                "tls.certfile",
                "[tls] needs certfile (the PEM certificate chain)",
            ));
        }
        if tls.keyfile.is_none() {
            return Err(origin.error("tls.keyfile", "[tls] needs keyfile (the PEM private key)"));
        }
    }
    if tls.client_auth != ClientAuth::None && tls.ca_certs.is_none() {
        return Err(origin.error(
            "tls.client_auth",
            "client certificates are checked against tls.ca_certs, which is not set",
        ));
    }
    Ok(())
}

/// A warning about the config file's permissions, if someone other than root and the
/// user forkd runs as can change it: that someone chooses what forkd runs (`exec.command`,
/// `user`...) with forkd's privileges, root's at start. Checked at start and on HUP.
pub fn file_permission_warning(config: &Config) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let path = config.config_file.as_ref()?;
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Some(format!(
            "config file {} has mode {mode:04o}: writable by {}, who can make forkd run any program with its privileges; `chmod go-w` it",
            path.display(),
            if mode & 0o002 != 0 { "everyone" } else { "its group" }
        ));
    }
    let us = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != us {
        return Some(format!(
            "config file {} (mode {mode:04o}) is owned by uid {}, neither root nor forkd's uid {us}: its owner can make forkd run any program with its privileges; `chown root` it",
            path.display(),
            meta.uid()
        ));
    }
    None
}

fn env_name(key: &str) -> String {
    format!("FORKD_{}", key.replace('.', "_").to_ascii_uppercase())
}

fn key_for_env(var: &str) -> Option<&'static str> {
    KEYS.iter()
        .map(|(k, _)| *k)
        .find(|k| env_name(k) == var && *k != "env")
}

fn apply_file(
    config: &mut Config,
    path: &std::path::Path,
    source: &str,
) -> Result<(), ConfigError> {
    let origin = Origin::File { path, source };
    let table: toml::Table = source.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map(|span| {
            source[..span.start.min(source.len())]
                .lines()
                .count()
                .max(1)
        });
        let what = e.message().to_string();
        ConfigError {
            message: match line {
                Some(line) => format!("{} line {line}: invalid TOML: {what}", path.display()),
                None => format!("{}: invalid TOML: {what}", path.display()),
            },
        }
    })?;
    for (name, value) in table {
        if TABLES.contains(&name.as_str()) {
            let Value::Table(inner) = value else {
                return Err(origin.error(&name, &format!("expected a table [{name}]")));
            };
            for (sub, value) in inner {
                if name == "env" {
                    let Value::String(text) = value else {
                        return Err(origin.error(&format!("env.{sub}"), "expected a string"));
                    };
                    config.env.insert(sub, text);
                    continue;
                }
                let dotted = format!("{name}.{sub}");
                if !KEYS.iter().any(|(k, _)| *k == dotted) {
                    let prefix = format!("{name}.");
                    let known = KEYS
                        .iter()
                        .filter_map(|(k, _)| k.strip_prefix(prefix.as_str()));
                    let hint = suggestion(&sub, known);
                    return Err(origin.error(&dotted, &format!("unknown key in [{name}]{hint}")));
                }
                set(config, leak_key(&dotted), value, &origin)?;
            }
        } else if let Some((key, _)) = KEYS.iter().find(|(k, _)| *k == name && !k.contains('.')) {
            set(config, key, value, &origin)?;
        } else {
            let known = KEYS
                .iter()
                .map(|(k, _)| *k)
                .filter(|k| !k.contains('.'))
                .chain(TABLES.iter().copied());
            let hint = suggestion(&name, known);
            return Err(origin.error(&name, &format!("unknown key{hint}")));
        }
    }
    Ok(())
}

/// The static key name for a dotted key known to be in KEYS.
fn leak_key(dotted: &str) -> &'static str {
    KEYS.iter()
        .map(|(k, _)| *k)
        .find(|k| *k == dotted)
        .unwrap_or("")
}

/// Sets one key from a TOML value (a file) or a string (environment, command line).
fn set(
    config: &mut Config,
    key: &'static str,
    value: Value,
    origin: &Origin<'_>,
) -> Result<(), ConfigError> {
    let bad = |got: &Value| {
        origin.error(
            key,
            &format!("expected {}, got {}", allowed(key), show(got)),
        )
    };
    let fail =
        |problem: String| origin.error(key, &format!("{problem}; allowed: {}", allowed(key)));
    match key {
        "app" => config.app = Some(non_empty(&value).ok_or_else(|| bad(&value))?),
        "bind" => {
            let entries = list(&value).ok_or_else(|| bad(&value))?;
            if entries.is_empty() {
                return Err(fail("the list is empty".into()));
            }
            config.bind = entries
                .iter()
                .map(|e| parse_bind(e))
                .collect::<Result<_, _>>()
                .map_err(fail)?;
            config.bind_given = true;
        }
        "workers" => {
            config.workers = match &value {
                Value::String(s) if s.trim() == "auto" => Workers::Auto,
                _ => Workers::Count(
                    integer(&value)
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad(&value))? as usize,
                ),
            }
        }
        "threads" => {
            config.threads = integer(&value)
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad(&value))? as usize
        }
        "backlog" => {
            config.backlog = integer(&value)
                .filter(|n| (1..=65535).contains(n))
                .ok_or_else(|| bad(&value))? as i32
        }
        "timeout" => config.timeout = duration(&value).map_err(fail)?,
        "graceful_timeout" => config.graceful_timeout = duration(&value).map_err(fail)?,
        "keepalive" => config.keepalive = duration(&value).map_err(fail)?,
        "max_requests" => config.max_requests = integer(&value).ok_or_else(|| bad(&value))? as u64,
        "max_requests_jitter" => {
            config.max_requests_jitter = integer(&value).ok_or_else(|| bad(&value))? as u64
        }
        "pidfile" => config.pidfile = Some(non_empty(&value).ok_or_else(|| bad(&value))?.into()),
        "user" => config.user = Some(non_empty(&value).ok_or_else(|| bad(&value))?),
        "group" => config.group = Some(non_empty(&value).ok_or_else(|| bad(&value))?),
        "umask" => {
            let mask = match &value {
                Value::Integer(n) => u32::try_from(*n).ok(),
                Value::String(s) => u32::from_str_radix(s.trim(), 8).ok(),
                _ => None,
            };
            config.umask = Some(mask.filter(|m| *m <= 0o777).ok_or_else(|| bad(&value))?);
        }
        "chdir" => config.chdir = Some(non_empty(&value).ok_or_else(|| bad(&value))?.into()),
        "forwarded_allow_ips" => {
            let entries = list(&value).ok_or_else(|| bad(&value))?;
            config.forwarded_allow_ips = TrustedProxies::parse(&entries).map_err(fail)?;
        }
        "log.level" => {
            config.log.level = match text(&value).as_deref() {
                Some("error") => LogLevel::Error,
                Some("warn") => LogLevel::Warn,
                Some("info") => LogLevel::Info,
                Some("debug") => LogLevel::Debug,
                Some("trace") => LogLevel::Trace,
                _ => return Err(bad(&value)),
            }
        }
        "log.format" => {
            config.log.format = match text(&value).as_deref() {
                Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                _ => return Err(bad(&value)),
            }
        }
        "log.error_log" => {
            config.log.error_log = match non_empty(&value).ok_or_else(|| bad(&value))?.as_str() {
                "-" => LogTarget::Std,
                "off" => return Err(fail("the error log cannot be turned off".into())),
                path => LogTarget::File(path.into()),
            }
        }
        "log.access_log" => {
            config.log.access_log = match non_empty(&value).ok_or_else(|| bad(&value))?.as_str() {
                "-" => LogTarget::Std,
                "off" => LogTarget::Off,
                path => LogTarget::File(path.into()),
            }
        }
        "log.access_log_format" => {
            let format = non_empty(&value).ok_or_else(|| bad(&value))?;
            config.log.access_log_format = Some(AccessLogFormat::parse(&format).map_err(fail)?)
        }
        "limits.request_line" => {
            config.limits.request_line = positive(&value).ok_or_else(|| bad(&value))?
        }
        "limits.request_fields" => {
            config.limits.request_fields = positive(&value).ok_or_else(|| bad(&value))?
        }
        "limits.request_field_size" => {
            config.limits.request_field_size = positive(&value).ok_or_else(|| bad(&value))?
        }
        "limits.max_body" => config.limits.max_body = size(&value).map_err(fail)?,
        "limits.header_read_timeout" => {
            let d = duration(&value).map_err(fail)?;
            if d.is_zero() {
                return Err(fail("it must be greater than 0".into()));
            }
            config.limits.header_read_timeout = d;
        }
        "limits.body_read_timeout" => {
            config.limits.body_read_timeout = duration(&value).map_err(fail)?
        }
        "limits.max_connections" => {
            config.limits.max_connections = positive(&value).ok_or_else(|| bad(&value))?
        }
        "limits.max_connections_per_ip" => {
            config.limits.max_connections_per_ip = integer(&value)
                .map(|n| n as usize)
                .ok_or_else(|| bad(&value))?
        }
        "health.live_path" => {
            config.health.live_path = Some(url_path(&value).ok_or_else(|| bad(&value))?)
        }
        "health.ready_path" => {
            config.health.ready_path = Some(url_path(&value).ok_or_else(|| bad(&value))?)
        }
        "health.shutdown_delay" => config.health.shutdown_delay = duration(&value).map_err(fail)?,
        "metrics.bind" => {
            let entry = non_empty(&value).ok_or_else(|| bad(&value))?;
            let spec = parse_bind(&entry).map_err(fail)?;
            if spec.is_tls() {
                return Err(fail("metrics are served over plain HTTP".into()));
            }
            config.metrics.bind = Some(spec);
        }
        "tls.certfile" => {
            config.tls.certfile = Some(non_empty(&value).ok_or_else(|| bad(&value))?.into())
        }
        "tls.keyfile" => {
            config.tls.keyfile = Some(non_empty(&value).ok_or_else(|| bad(&value))?.into())
        }
        "tls.ca_certs" => {
            config.tls.ca_certs = Some(non_empty(&value).ok_or_else(|| bad(&value))?.into())
        }
        "tls.client_auth" => {
            config.tls.client_auth = match text(&value).as_deref() {
                Some("none") => ClientAuth::None,
                Some("optional") => ClientAuth::Optional,
                Some("required") => ClientAuth::Required,
                _ => return Err(bad(&value)),
            }
        }
        "tls.alpn" => {
            let protocols = list(&value).ok_or_else(|| bad(&value))?;
            if let Some(other) = protocols.iter().find(|p| *p != "h2" && *p != "http/1.1") {
                return Err(fail(format!("{other:?} is not a protocol forkd serves")));
            }
            config.tls.alpn = protocols;
        }
        "tls.min_version" => {
            config.tls.min_version = match &value {
                Value::String(s) if s.trim() == "1.2" => TlsVersion::V1_2,
                Value::String(s) if s.trim() == "1.3" => TlsVersion::V1_3,
                Value::Float(f) if *f == 1.2 => TlsVersion::V1_2,
                Value::Float(f) if *f == 1.3 => TlsVersion::V1_3,
                _ => return Err(bad(&value)),
            }
        }
        "tls.handshake_timeout" => {
            let d = duration(&value).map_err(fail)?;
            if d.is_zero() {
                return Err(fail("it must be greater than 0".into()));
            }
            config.tls.handshake_timeout = d;
        }
        "exec.command" => {
            let words = match &value {
                Value::String(s) => {
                    Some(s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                }
                Value::Array(_) => list(&value),
                _ => None,
            };
            config.exec.command = words.filter(|w| !w.is_empty()).ok_or_else(|| bad(&value))?;
        }
        "exec.ready" => {
            config.exec.ready = match &value {
                Value::String(s) if s == "auto" => ReadyMode::Auto,
                Value::String(s) if s == "notify" => ReadyMode::Notify,
                _ => ReadyMode::After(duration(&value).map_err(fail)?),
            }
        }
        _ => return Err(origin.error(key, "unknown key")),
    }
    Ok(())
}

fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_string()),
        _ => None,
    }
}

fn non_empty(value: &Value) -> Option<String> {
    text(value).filter(|s| !s.is_empty())
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Integer(n) if *n >= 0 => Some(*n),
        Value::String(s) => s.trim().parse::<i64>().ok().filter(|n| *n >= 0),
        _ => None,
    }
}

fn positive(value: &Value) -> Option<usize> {
    integer(value).filter(|n| *n >= 1).map(|n| n as usize)
}

fn list(value: &Value) -> Option<Vec<String>> {
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

fn url_path(value: &Value) -> Option<String> {
    non_empty(value).filter(|p| p.starts_with('/'))
}

fn duration(value: &Value) -> Result<Duration, String> {
    match value {
        Value::Integer(n) if *n >= 0 => Ok(Duration::from_secs(*n as u64)),
        Value::Float(f) if f.is_finite() && *f >= 0.0 => Ok(Duration::from_secs_f64(*f)),
        Value::String(s) => parse_duration(s),
        other => Err(format!("got {}", show(other))),
    }
}

fn size(value: &Value) -> Result<u64, String> {
    match value {
        Value::Integer(n) if *n >= 0 => Ok(*n as u64),
        Value::String(s) => parse_size(s),
        other => Err(format!("got {}", show(other))),
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

/// The line (1-based) where `key` (dotted for tables) is set in a TOML source.
fn line_of(source: &str, key: &str) -> Option<usize> {
    let (table, name) = match key.split_once('.') {
        Some((table, name)) => (Some(table), name),
        None => (None, key),
    };
    let mut current: Option<String> = None;
    for (index, line) in source.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(header) = trimmed.strip_prefix('[') {
            current = Some(header.trim_end_matches([']', ' ']).trim().to_string());
            if table.is_none() && current.as_deref() == Some(name) {
                return Some(index + 1);
            }
            continue;
        }
        let Some((lhs, _)) = trimmed.split_once('=') else {
            continue;
        };
        let lhs = lhs.trim().trim_matches('"');
        if current.as_deref() == table && lhs == name {
            return Some(index + 1);
        }
        if current.is_none() && table.is_some() && lhs == key {
            return Some(index + 1);
        }
    }
    None
}

/// " (did you mean `x`?)" for the closest known name, or "".
fn suggestion<'a>(unknown: &str, known: impl Iterator<Item = &'a str>) -> String {
    let best = known
        .map(|k| {
            (
                edit_distance(&unknown.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                k,
            )
        })
        .min();
    match best {
        Some((distance, name)) if distance <= (unknown.len() / 3).max(2) => {
            format!(" (did you mean `{name}`?)")
        }
        _ => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

// ---- CPUs and printing -------------------------------------------------------------------

/// CPUs this process may use: its affinity mask, limited by a cgroup CPU quota.
pub fn available_cpus() -> usize {
    let affinity = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|&i| set.is_set(i).unwrap_or(false))
                .count()
        })
        .unwrap_or(0);
    let affinity = if affinity == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        affinity
    };
    match cgroup_cpu_quota() {
        Some(quota) => affinity.min(quota).max(1),
        None => affinity.max(1),
    }
}

/// The cgroup (v2, else v1) CPU quota of this process in whole CPUs, rounded up.
fn cgroup_cpu_quota() -> Option<usize> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (quota, period) = if controllers.is_empty() {
            let text = std::fs::read_to_string(format!("/sys/fs/cgroup{path}/cpu.max"))
                .or_else(|_| std::fs::read_to_string("/sys/fs/cgroup/cpu.max"))
                .ok()?;
            let mut fields = text.split_whitespace();
            let quota = fields.next()?;
            if quota == "max" {
                return None;
            }
            (
                quota.parse::<f64>().ok()?,
                fields.next()?.parse::<f64>().ok()?,
            )
        } else if controllers.split(',').any(|c| c == "cpu") {
            let base = format!("/sys/fs/cgroup/{controllers}{path}");
            let quota: f64 = std::fs::read_to_string(format!("{base}/cpu.cfs_quota_us"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            if quota <= 0.0 {
                return None;
            }
            let period: f64 = std::fs::read_to_string(format!("{base}/cpu.cfs_period_us"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            (quota, period)
        } else {
            continue;
        };
        if period > 0.0 {
            return Some((quota / period).ceil() as usize);
        }
    }
    None
}

impl std::fmt::Display for BindSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindSpec::Tcp(addr) => write!(f, "{addr}"),
            BindSpec::Unix(path) => write!(f, "unix:{}", path.display()),
            BindSpec::Fd(fd) => write!(f, "fd://{fd}"),
            BindSpec::Named(name) => write!(f, "fd://{name}"),
            BindSpec::Tls(inner) => match inner.as_ref() {
                BindSpec::Tcp(addr) => write!(f, "tls://{addr}"),
                other => write!(f, "tls+{other}"),
            },
        }
    }
}

/// `exec.ready` as it is written in the file (for messages and `--print-config`).
pub fn ready_mode_text(mode: &ReadyMode) -> String {
    match mode {
        ReadyMode::Auto => "\"auto\"".to_string(),
        ReadyMode::Notify => "\"notify\"".to_string(),
        ReadyMode::After(d) => fmt_duration(*d),
    }
}

fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("\"{}s\"", ms / 1000)
    } else {
        format!("\"{ms}ms\"")
    }
}

fn quoted(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn quoted_list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.map(|i| quoted(&i)).collect();
    format!("[{}]", items.join(", "))
}

fn target(t: &LogTarget) -> String {
    match t {
        LogTarget::Off => quoted("off"),
        LogTarget::Std => quoted("-"),
        LogTarget::File(p) => quoted(&p.display().to_string()),
    }
}

fn optional(out: &mut String, key: &str, value: Option<String>) {
    match value {
        Some(v) => out.push_str(&format!("{key} = {v}\n")),
        None => out.push_str(&format!("# {key} = (unset)\n")),
    }
}

impl Config {
    /// Resolves `workers` ("auto" counts usable CPUs).
    pub fn worker_count(&self) -> usize {
        match self.workers {
            Workers::Count(n) => n,
            Workers::Auto => available_cpus(),
        }
    }

    /// The effective configuration as TOML, every key included.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let file = self
            .config_file
            .as_ref()
            .map_or("(none)".to_string(), |p| p.display().to_string());
        out.push_str(&format!(
            "# forkd effective configuration (config file: {file})\n"
        ));
        optional(&mut out, "app", self.app.as_deref().map(quoted));
        out.push_str(&format!(
            "bind = {}\n",
            quoted_list(self.bind.iter().map(|b| b.to_string()))
        ));
        match self.workers {
            Workers::Auto => out.push_str(&format!(
                "workers = \"auto\"  # = {} here\n",
                available_cpus()
            )),
            Workers::Count(n) => out.push_str(&format!("workers = {n}\n")),
        }
        out.push_str(&format!(
            "threads = {}\nbacklog = {}\n",
            self.threads, self.backlog
        ));
        out.push_str(&format!("timeout = {}\n", fmt_duration(self.timeout)));
        out.push_str(&format!(
            "graceful_timeout = {}\n",
            fmt_duration(self.graceful_timeout)
        ));
        out.push_str(&format!("keepalive = {}\n", fmt_duration(self.keepalive)));
        out.push_str(&format!(
            "max_requests = {}\nmax_requests_jitter = {}\n",
            self.max_requests, self.max_requests_jitter
        ));
        optional(
            &mut out,
            "pidfile",
            self.pidfile
                .as_ref()
                .map(|p| quoted(&p.display().to_string())),
        );
        optional(&mut out, "user", self.user.as_deref().map(quoted));
        optional(&mut out, "group", self.group.as_deref().map(quoted));
        optional(
            &mut out,
            "umask",
            self.umask.map(|m| quoted(&format!("{m:04o}"))),
        );
        optional(
            &mut out,
            "chdir",
            self.chdir
                .as_ref()
                .map(|p| quoted(&p.display().to_string())),
        );
        out.push_str(&format!(
            "forwarded_allow_ips = {}\n",
            quoted_list(self.forwarded_allow_ips.entries().iter().cloned())
        ));
        out.push_str("\n[env]\n");
        for (k, v) in &self.env {
            out.push_str(&format!("{} = {}\n", quoted(k), quoted(v)));
        }
        let level = format!("{:?}", self.log.level).to_ascii_lowercase();
        let format = format!("{:?}", self.log.format).to_ascii_lowercase();
        out.push_str(&format!(
            "\n[log]\nlevel = {}\nformat = {}\n",
            quoted(&level),
            quoted(&format)
        ));
        out.push_str(&format!(
            "error_log = {}\naccess_log = {}\n",
            target(&self.log.error_log),
            target(&self.log.access_log)
        ));
        optional(
            &mut out,
            "access_log_format",
            self.log
                .access_log_format
                .as_ref()
                .map(|f| quoted(f.as_str())),
        );
        let l = &self.limits;
        out.push_str(&format!(
            "\n[limits]\nrequest_line = {}\nrequest_fields = {}\nrequest_field_size = {}\nmax_body = {}\nheader_read_timeout = {}\nbody_read_timeout = {}\nmax_connections = {}\nmax_connections_per_ip = {}\n",
            l.request_line, l.request_fields, l.request_field_size, l.max_body, fmt_duration(l.header_read_timeout), fmt_duration(l.body_read_timeout), l.max_connections, l.max_connections_per_ip
        ));
        out.push_str("\n[health]\n");
        optional(
            &mut out,
            "live_path",
            self.health.live_path.as_deref().map(quoted),
        );
        optional(
            &mut out,
            "ready_path",
            self.health.ready_path.as_deref().map(quoted),
        );
        out.push_str(&format!(
            "shutdown_delay = {}\n",
            fmt_duration(self.health.shutdown_delay)
        ));
        out.push_str("\n[metrics]\n");
        optional(
            &mut out,
            "bind",
            self.metrics.bind.as_ref().map(|b| quoted(&b.to_string())),
        );
        out.push_str("\n[exec]\n");
        let command =
            (!self.exec.command.is_empty()).then(|| quoted_list(self.exec.command.iter().cloned()));
        optional(&mut out, "command", command);
        out.push_str(&format!("ready = {}\n", ready_mode_text(&self.exec.ready)));
        let tls = &self.tls;
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| quoted(&p.display().to_string()));
        out.push_str("\n[tls]\n");
        optional(&mut out, "certfile", path(&tls.certfile));
        optional(&mut out, "keyfile", path(&tls.keyfile));
        optional(&mut out, "ca_certs", path(&tls.ca_certs));
        let client_auth = match tls.client_auth {
            ClientAuth::None => "none",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        };
        let min_version = match tls.min_version {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        };
        out.push_str(&format!(
            "client_auth = {}\nalpn = {}\nmin_version = {}\nhandshake_timeout = {}\n",
            quoted(client_auth),
            quoted_list(tls.alpn.iter().cloned()),
            quoted(min_version),
            fmt_duration(tls.handshake_timeout)
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("-1").is_err());
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert!(parse_size("10XB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn bind_entries() {
        assert_eq!(
            parse_bind("127.0.0.1:8000"),
            Ok(BindSpec::Tcp("127.0.0.1:8000".parse().unwrap()))
        );
        assert_eq!(
            parse_bind("[::1]:8000"),
            Ok(BindSpec::Tcp("[::1]:8000".parse().unwrap()))
        );
        assert_eq!(
            parse_bind("unix:/run/a.sock"),
            Ok(BindSpec::Unix("/run/a.sock".into()))
        );
        assert_eq!(parse_bind("fd://3"), Ok(BindSpec::Fd(3)));
        assert_eq!(parse_bind("fd://web"), Ok(BindSpec::Named("web".into())));
        assert!(parse_bind("fd://").is_err());
        assert!(parse_bind("fd://a b").is_err());
        assert!(parse_bind("fd://1").is_err());
        assert!(parse_bind("localhost:80").is_ok());
        assert!(parse_bind("nowhere").is_err());
        assert!(parse_bind("127.0.0.1:99999").is_err());
        assert_eq!(
            parse_bind("tls://127.0.0.1:8443"),
            Ok(BindSpec::Tls(Box::new(BindSpec::Tcp(
                "127.0.0.1:8443".parse().unwrap()
            ))))
        );
        assert_eq!(
            parse_bind("tls+fd://https"),
            Ok(BindSpec::Tls(Box::new(BindSpec::Named("https".into()))))
        );
        assert!(parse_bind("tls://unix:/run/a.sock").is_err());
        assert!(parse_bind("tls+127.0.0.1:1").is_err());
        assert_eq!(
            parse_bind_literal("tls://[::1]:8443").map(|b| b.to_string()),
            Some("tls://[::1]:8443".to_string())
        );
        for text in [
            "127.0.0.1:8000",
            "[::1]:8000",
            "unix:/run/a.sock",
            "fd://3",
            "tls://127.0.0.1:8443",
            "tls://[::1]:8443",
            "tls+fd://https",
            "tls+fd://4",
            "tls+unix:/run/s.sock",
        ] {
            assert_eq!(parse_bind(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn suggestions_pick_the_closest_key() {
        assert_eq!(
            suggestion("worker", ["workers", "threads"].into_iter()),
            " (did you mean `workers`?)"
        );
        assert_eq!(suggestion("zzzzzz", ["workers", "threads"].into_iter()), "");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn lines_are_found_in_tables() {
        let source = "app = \"x\"\n[log]\nlevel = \"loud\"\n[limits]\nmax_body = 1\n";
        assert_eq!(line_of(source, "app"), Some(1));
        assert_eq!(line_of(source, "log.level"), Some(3));
        assert_eq!(line_of(source, "limits.max_body"), Some(5));
    }

    #[test]
    fn every_source_validates_the_same_way() {
        let mut config = Config::default();
        let env = Origin::Env("FORKD_WORKERS");
        assert!(set(&mut config, "workers", Value::String("auto".into()), &env).is_ok());
        assert_eq!(config.workers, Workers::Auto);
        assert!(config.worker_count() >= 1);
        let err = set(&mut config, "workers", Value::Integer(0), &env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("FORKD_WORKERS") && err.contains("integer >= 1"),
            "{err}"
        );
        assert!(set(&mut config, "umask", Value::String("0022".into()), &env).is_ok());
        assert_eq!(config.umask, Some(0o022));
        assert!(set(
            &mut config,
            "forwarded_allow_ips",
            Value::String("10.0.0.0/8, ::1".into()),
            &env
        )
        .is_ok());
        assert!(set(
            &mut config,
            "forwarded_allow_ips",
            Value::String("10.0.0.0/40".into()),
            &env
        )
        .is_err());
        assert!(set(
            &mut config,
            "log.error_log",
            Value::String("off".into()),
            &env
        )
        .is_err());
        assert!(set(&mut config, "exec.ready", Value::String("2s".into()), &env).is_ok());
        assert_eq!(config.exec.ready, ReadyMode::After(Duration::from_secs(2)));
    }

    #[test]
    fn printed_config_loads_back_to_the_same_config() {
        let mut config = Config::default();
        let origin = Origin::Flag("test");
        set(&mut config, "app", Value::String("echo".into()), &origin).unwrap();
        set(
            &mut config,
            "bind",
            Value::String("127.0.0.1:9000,unix:/tmp/x.sock".into()),
            &origin,
        )
        .unwrap();
        set(
            &mut config,
            "timeout",
            Value::String("1500ms".into()),
            &origin,
        )
        .unwrap();
        set(
            &mut config,
            "exec.command",
            Value::String("uvicorn app:app --fd 3".into()),
            &origin,
        )
        .unwrap();
        config.env.insert("APP_ENV".into(), "production".into());
        set(
            &mut config,
            "tls.certfile",
            Value::String("/etc/forkd/cert.pem".into()),
            &origin,
        )
        .unwrap();
        set(
            &mut config,
            "tls.alpn",
            Value::String("http/1.1".into()),
            &origin,
        )
        .unwrap();
        set(
            &mut config,
            "tls.min_version",
            Value::String("1.3".into()),
            &origin,
        )
        .unwrap();
        let text = config.to_toml();
        let mut reloaded = Config::default();
        apply_file(&mut reloaded, std::path::Path::new("printed.toml"), &text).unwrap();
        assert_eq!(reloaded, config, "{text}");
    }
}
