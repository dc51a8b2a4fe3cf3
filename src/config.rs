//! Configuration: the one validated `Config` built from defaults, the TOML file,
//! `FORKD_*` environment variables and command-line options (in that order of
//! precedence, lowest first). Errors name the file, key, line, problem and what is allowed.
//!
//! TYPE DEFINITIONS ARE FIXED (the supervisor and workers use them); parsing is filled in below.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

/// One `bind` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindSpec {
    /// "HOST:PORT" or "[V6]:PORT" (hostnames resolved to their first address).
    Tcp(SocketAddr),
    /// "unix:/path/to.sock"
    Unix(PathBuf),
    /// "fd://N": an already-listening socket inherited as fd N.
    Fd(RawFd),
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
    pub access_log_format: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub request_line: usize,           // 8190
    pub request_fields: usize,         // 100
    pub request_field_size: usize,     // 8190
    pub max_body: u64,                 // 10 MiB
    pub header_read_timeout: Duration, // 10 s
    pub max_connections: usize,        // 1000
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
    pub forwarded_allow_ips: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub log: LogConfig,
    pub limits: Limits,
    pub health: Health,
    pub metrics: Metrics,
    pub exec: Exec,
}

// ---- TEMPORARY stub loader ----
#[derive(Debug)]
pub struct ConfigError(pub String);
impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "forkd: config error: {}", self.0)
    }
}
impl std::error::Error for ConfigError {}
pub fn load(cli: &crate::cli::Cli, _env: &[(String, String)]) -> Result<Config, ConfigError> {
    let mut c = Config {
        config_file: None,
        app: cli.app.clone(),
        bind: vec![],
        workers: Workers::Count(cli.workers.unwrap_or(1)),
        threads: 1,
        backlog: 2048,
        timeout: Duration::from_secs_f64(cli.timeout.unwrap_or(30.0)),
        graceful_timeout: Duration::from_secs_f64(cli.graceful_timeout.unwrap_or(30.0)),
        keepalive: Duration::from_secs(2),
        max_requests: cli.max_requests.unwrap_or(0),
        max_requests_jitter: cli.max_requests_jitter.unwrap_or(0),
        pidfile: cli.pid.clone(),
        user: None,
        group: None,
        umask: None,
        chdir: None,
        forwarded_allow_ips: vec![],
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
            max_body: 10 << 20,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1000,
        },
        health: Health {
            live_path: None,
            ready_path: None,
            shutdown_delay: Duration::ZERO,
        },
        metrics: Metrics { bind: None },
        exec: Exec {
            command: vec![],
            ready: ReadyMode::Auto,
        },
    };
    for b in &cli.bind {
        c.bind.push(if let Some(p) = b.strip_prefix("unix:") {
            BindSpec::Unix(p.into())
        } else {
            BindSpec::Tcp(
                b.parse()
                    .map_err(|e| ConfigError(format!("bind {b}: {e}")))?,
            )
        });
    }
    if c.bind.is_empty() {
        c.bind.push(BindSpec::Tcp(
            "127.0.0.1:8000"
                .parse()
                .map_err(|_| ConfigError("x".into()))?,
        ));
    }
    Ok(c)
}
impl Config {
    pub fn worker_count(&self) -> usize {
        match self.workers {
            Workers::Count(n) => n,
            Workers::Auto => 2,
        }
    }
    pub fn to_toml(&self) -> String {
        String::new()
    }
}
impl std::fmt::Display for BindSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindSpec::Tcp(a) => write!(f, "{a}"),
            BindSpec::Unix(p) => write!(f, "unix:{}", p.display()),
            BindSpec::Fd(n) => write!(f, "fd://{n}"),
        }
    }
}
