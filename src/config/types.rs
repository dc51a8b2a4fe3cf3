//! The typed configuration every process reads: `Config` and the value types of its keys,
//! with their defaults (Gunicorn's where it has the key).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::worker::http::access_log::Format as AccessLogFormat;
pub use crate::worker::http::forwarded::{ProxyHeaders, TrustedProxies};

/// One `bind` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindSpec {
    /// `"HOST:PORT"` or `"[V6]:PORT"` (hostnames resolved to their first address).
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
    /// A response write (HTTP/1, or an HTTP/2 connection's response bytes) that makes no
    /// progress this long ends the connection (nginx's `send_timeout`).
    pub send_timeout: Duration, // 60 s
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

/// `[python]`: how a worker runs a `MODULE:ATTR` ASGI app.
#[derive(Debug, Clone, PartialEq)]
pub struct Python {
    /// Directories put first on `sys.path`, relative to `chdir` (or the start directory).
    pub path: Vec<String>,
    /// ASGI or WSGI: told from the imported app (`Auto`) or said in the config.
    pub interface: Interface,
    pub lifespan: Lifespan,
    /// The ASGI `root_path` of every request (an app mounted under a prefix).
    pub root_path: String,
    /// A `logging.config.dictConfig` dict applied in each worker before the app is
    /// imported: a JSON file or `module:attr`; empty = none.
    pub log_config: String,
    /// How long a retiring worker's WebSockets stay open once its drain starts before
    /// they are closed with 1012 (Service Restart).
    pub websocket_grace: Duration,
    /// `[python.hooks]`: Gunicorn's server hooks by name, each a `module:function`.
    pub hooks: BTreeMap<String, String>,
}

/// `python.interface`: how the worker calls the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// ASGI if the callable (or its `__call__`) is a coroutine function, else WSGI.
    Auto,
    Asgi,
    Wsgi,
}

impl Interface {
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Auto => "auto",
            Interface::Asgi => "asgi",
            Interface::Wsgi => "wsgi",
        }
    }
}

/// `python.lifespan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifespan {
    /// Run it; an app that does not support it is served anyway.
    Auto,
    /// Run it; an app that does not support it fails to boot.
    On,
    Off,
}

impl Lifespan {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifespan::Auto => "auto",
            Lifespan::On => "on",
            Lifespan::Off => "off",
        }
    }
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
    /// Recycle a worker whose RSS passes this many bytes; 0 = off.
    pub max_worker_memory: u64,
    /// Recycle a worker this old (each spread by up to 10%); zero = off.
    pub max_worker_lifetime: Duration,
    pub pidfile: Option<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub umask: Option<u32>,
    pub chdir: Option<PathBuf>,
    /// `--reload`: a HUP when the app's files change (development; see master/watch.rs).
    pub reload: bool,
    /// Gunicorn's `proc_name`: shown in the process titles (`forkd: master [NAME]`).
    pub proc_name: Option<String>,
    /// `preload_app`: a Python app is imported once per generation in a zygote process
    /// that forks the workers (see master/zygote.rs).
    pub preload_app: bool,
    /// More files whose change makes a `reload` HUP: globs, relative to `chdir`.
    pub reload_extra_files: Vec<String>,
    /// Parsed once here, with `forwarded_headers` in it; the workers use it as it is.
    pub forwarded_allow_ips: TrustedProxies,
    pub env: BTreeMap<String, String>,
    pub log: LogConfig,
    pub limits: Limits,
    pub health: Health,
    pub metrics: Metrics,
    pub python: Python,
    pub exec: Exec,
    pub tls: Tls,
    /// Warnings found while loading (what a Gunicorn config file sets that forkd does
    /// not apply), logged at start and on HUP.
    pub warnings: Vec<String>,
}

/// A configuration error: what, where (file and line, environment variable or option),
/// and what is allowed. Its Display is the whole message forkd prints.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub(super) message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "forkd: config error: {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

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
            max_worker_memory: 0,
            max_worker_lifetime: Duration::ZERO,
            pidfile: None,
            user: None,
            group: None,
            umask: None,
            chdir: None,
            reload: false,
            proc_name: None,
            preload_app: false,
            reload_extra_files: Vec::new(),
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
                send_timeout: Duration::from_secs(60),
                max_connections: 1000,
                max_connections_per_ip: 0,
            },
            health: Health {
                live_path: None,
                ready_path: None,
                shutdown_delay: Duration::ZERO,
            },
            metrics: Metrics { bind: None },
            python: Python {
                path: vec![".".to_string()],
                interface: Interface::Auto,
                lifespan: Lifespan::Auto,
                root_path: String::new(),
                log_config: String::new(),
                websocket_grace: Duration::ZERO,
                hooks: BTreeMap::new(),
            },
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
            warnings: Vec::new(),
        }
    }
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
