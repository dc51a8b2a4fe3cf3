//! Configuration: the one validated `Config` built from defaults, the TOML file,
//! `FORKD_*` environment variables and command-line options (in that order of
//! precedence, lowest first). Errors name the file, key, line, problem and what is allowed.
//!
//! Every key is declared once, in `KEYS` (its name, what is allowed, how it is parsed
//! into the typed `Config`, how `--print-config` writes it, its command-line option);
//! tables, `FORKD_*` names, options and suggestions are derived from there. Values are
//! parsed once, here: the workers use `Config` as it is.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

mod env;
pub use env::warnings as env_warnings;

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
    pub lifespan: Lifespan,
    /// The ASGI `root_path` of every request (an app mounted under a prefix).
    pub root_path: String,
    /// A `logging.config.dictConfig` dict applied in each worker before the app is
    /// imported: a JSON file or `module:attr`; empty = none.
    pub log_config: String,
    /// How long a retiring worker's WebSockets stay open once its drain starts before
    /// they are closed with 1012 (Service Restart).
    pub websocket_grace: Duration,
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

// ---- the keys ----------------------------------------------------------------------------

/// One config key, declared once. Everything else is derived from [`KEYS`]: the file's
/// tables (the part of a name before its dot), the `FORKD_<KEY>` environment variables,
/// which command-line option sets what, `--print-config`, and the closest-key suggestion.
///
/// Adding a table (say `[python]`) is adding its keys here, in print order, after the
/// top-level keys, plus their fields in [`Config`] and its `Default`.
#[derive(Debug)]
pub(crate) struct Key {
    /// The dotted name: `workers`, `log.level` (key `level` of table `[log]`).
    pub(crate) name: &'static str,
    /// What is allowed, for error messages.
    allowed: &'static str,
    /// The id of the command-line option that sets it (the field's name in `cli::Cli`).
    pub(crate) option: Option<&'static str>,
    /// Parses and checks a value into the config: TOML from the file, a string from the
    /// environment or the command line (an array for a repeated option).
    set: fn(&mut Config, &Value) -> Result<(), Problem>,
    /// How `--print-config` writes it.
    print: Print,
    /// One line on what it does, for the generated reference (docs/reference.md).
    pub(crate) doc: &'static str,
}

/// How `--print-config` writes a key.
#[derive(Debug, Clone, Copy)]
enum Print {
    /// `name = VALUE` in the key's table; None is written `# name = (unset)`.
    Value(fn(&Config) -> Option<String>),
    /// A table of free names (`[env]`): its entries, as strings. A key printed this way
    /// is set from the file only (no environment variable, no option).
    Table(fn(&Config) -> Vec<(String, String)>),
}

/// What is wrong with a value; [`set`] makes the message, naming where it came from.
#[derive(Debug)]
enum Problem {
    /// Not of the allowed kind: "expected ALLOWED, got VALUE".
    Expected,
    /// Of the allowed kind, but wrong: "WHY; allowed: ALLOWED".
    Invalid(String),
    /// A message of its own about the key, or (`Some`) about one entry of its table.
    Said(Option<String>, String),
}

use Problem::{Expected, Invalid};

impl Key {
    const fn new(
        name: &'static str,
        allowed: &'static str,
        set: fn(&mut Config, &Value) -> Result<(), Problem>,
        print: fn(&Config) -> Option<String>,
    ) -> Key {
        Key {
            name,
            allowed,
            option: None,
            set,
            print: Print::Value(print),
            doc: "",
        }
    }

    /// What it does, in one line (the generated reference's "meaning" column).
    const fn doc(self, doc: &'static str) -> Key {
        Key { doc, ..self }
    }

    /// Its default as `--print-config` writes it, or None if unset by default.
    pub(crate) fn default_text(&self) -> Option<String> {
        match self.print {
            Print::Value(print) => print(&Config::default()),
            Print::Table(entries) => {
                let entries = entries(&Config::default());
                (!entries.is_empty()).then(|| format!("{entries:?}"))
            }
        }
    }

    /// Also set by the command-line option with this id.
    const fn option(self, id: &'static str) -> Key {
        Key {
            option: Some(id),
            ..self
        }
    }

    /// Its table (`log` for `log.level`); None at the top level.
    fn table(&self) -> Option<&'static str> {
        match self.print {
            Print::Table(_) => Some(self.name),
            Print::Value(_) => self.name.split_once('.').map(|(table, _)| table),
        }
    }

    /// Its name in its table.
    fn short_name(&self) -> &'static str {
        self.name
            .split_once('.')
            .map_or(self.name, |(_, name)| name)
    }

    /// `FORKD_<KEY>`: the name upper-cased, dots as underscores; None for a table of free
    /// names.
    pub(crate) fn env_var(&self) -> Option<String> {
        match self.print {
            Print::Table(_) => None,
            Print::Value(_) => Some(format!(
                "FORKD_{}",
                self.name.replace('.', "_").to_ascii_uppercase()
            )),
        }
    }
}

/// Every key, in the order `--print-config` writes them: the top-level keys first, then
/// each table's keys together.
#[rustfmt::skip]
pub(crate) const KEYS: &[Key] = &[
    Key::new("app", "a built-in app name (hello | echo) or a Python ASGI app as MODULE:ATTR or MODULE:ATTR()",
        |c, v| { c.app = Some(string(v)?); Ok(()) },
        |c| c.app.as_deref().map(quoted),
    ).option("app")
    .doc("built-in app (`hello`, `echo`), or a Python ASGI app `MODULE:ATTR` / `MODULE:ATTR()` (a factory) served by the `forkd` command of the Python package (see Python (ASGI) apps); the APP argument overrides it"),
    Key::new("bind", "a list of \"HOST:PORT\", \"[V6]:PORT\", \"unix:/path\", \"fd://N\" (N >= 3) or \"fd://NAME\" (a socket systemd passed by that name); \"tls://HOST:PORT\", \"tls+fd://NAME\" or \"tls+unix:/path\" for HTTPS with [tls]",
        |c, v| {
            let entries = list(v).ok_or(Expected)?;
            if entries.is_empty() {
                return Err(Invalid("the list is empty".into()));
            }
            c.bind = entries.iter().map(|e| parse_bind(e)).collect::<Result<_, _>>().map_err(Invalid)?;
            c.bind_given = true;
            Ok(())
        },
        |c| Some(quoted_list(c.bind.iter().map(|b| b.to_string()))),
    ).option("bind")
    .doc("`\"HOST:PORT\"`, `\"[::1]:8000\"`, `\"unix:/path\"`, `\"fd://N\"` (an inherited listening TCP or unix stream socket; anything else, or an fd forkd opened itself, is refused at start naming the entry and the fd), `\"fd://NAME\"` (the socket systemd passed with `FileDescriptorName=NAME`); `\"tls://HOST:PORT\"`, `\"tls://[::1]:PORT\"`, `\"tls+fd://NAME\"` (or `N`) and `\"tls+unix:/path\"` are the same sockets served as HTTPS with `[tls]` (see TLS); with socket activation and no `bind` set, every passed socket is served (as plain HTTP). A unix socket's file: a stale one (a socket nobody accepts on) is replaced at start, and the file is removed at exit, both only through the directory opened at bind time (a directory swapped for a symlink since is not followed) and only if it is a socket file, at exit the very one forkd created"),
    Key::new("workers", "an integer >= 1 or \"auto\"",
        |c, v| {
            c.workers = match v {
                Value::String(s) if s.trim() == "auto" => Workers::Auto,
                _ => Workers::Count(at_least(v, 1)? as usize),
            };
            Ok(())
        },
        |c| Some(match c.workers {
            Workers::Auto => format!("\"auto\"  # = {} here", available_cpus()),
            Workers::Count(n) => n.to_string(),
        }),
    ).option("workers")
    .doc("integer >= 1 or `\"auto\"` (CPUs usable by this process: affinity and cgroup quota)"),
    Key::new("threads", "an integer >= 1",
        |c, v| { c.threads = at_least(v, 1)? as usize; Ok(()) },
        |c| Some(c.threads.to_string()),
    ).option("threads")
    .doc("runtime threads per worker; 1 = current-thread event loop"),
    Key::new("backlog", "an integer from 1 to 65535",
        |c, v| {
            c.backlog = integer(v).filter(|n| (1..=65535).contains(n)).ok_or(Expected)? as i32;
            Ok(())
        },
        |c| Some(c.backlog.to_string()),
    ).option("backlog")
    .doc("listen backlog"),
    Key::new("timeout", "a duration: seconds (integer or float) or a string like \"500ms\", \"30s\", \"2m\"; 0 = off",
        |c, v| { c.timeout = duration(v)?; Ok(()) },
        |c| Some(fmt_duration(c.timeout)),
    ).option("timeout")
    .doc("a worker whose event loop reports no progress this long is killed (SIGABRT, then SIGKILL) and replaced; 0 = off. Exec workers: only those that send `WATCHDOG=1` (see Exec workers)"),
    Key::new("graceful_timeout", "a duration: seconds or a string like \"30s\"",
        |c, v| { c.graceful_timeout = duration(v)?; Ok(()) },
        |c| Some(fmt_duration(c.graceful_timeout)),
    ).option("graceful_timeout")
    .doc("time in-flight requests get on reload/stop before SIGKILL"),
    Key::new("keepalive", "a duration: seconds or a string like \"2s\"; 0 = no keep-alive",
        |c, v| { c.keepalive = duration(v)?; Ok(()) },
        |c| Some(fmt_duration(c.keepalive)),
    ).option("keepalive")
    .doc("idle keep-alive connections are closed after this long; 0 = no keep-alive"),
    Key::new("max_requests", "an integer >= 0 (0 = never recycle)",
        |c, v| { c.max_requests = at_least(v, 0)?; Ok(()) },
        |c| Some(c.max_requests.to_string()),
    ).option("max_requests")
    .doc("recycle a worker after this many requests; 0 = never"),
    Key::new("max_requests_jitter", "an integer >= 0",
        |c, v| { c.max_requests_jitter = at_least(v, 0)?; Ok(()) },
        |c| Some(c.max_requests_jitter.to_string()),
    ).option("max_requests_jitter")
    .doc("each worker's limit is `max_requests + random(0..=jitter)` (requests only; not the lifetime)"),
    Key::new("max_worker_memory", "a size: bytes or a string like \"512MiB\", \"1GiB\"; 0 = off",
        |c, v| { c.max_worker_memory = size(v)?; Ok(()) },
        |c| Some(c.max_worker_memory.to_string()),
    )
    .doc("a size (`\"512MiB\"`, `\"1GiB\"`, bytes); recycle a worker whose resident memory (RSS) passes it, as at `max_requests`: its replacement is started first, then it drains. The master reads each ready worker's RSS from `/proc/PID/statm` at most once a second (not at all when 0), for every worker kind: native, Python, exec; 0 = off"),
    Key::new("max_worker_lifetime", "a duration: seconds or a string like \"6h\", \"30m\"; 0 = off",
        |c, v| { c.max_worker_lifetime = duration(v)?; Ok(()) },
        |c| Some(fmt_duration(c.max_worker_lifetime)),
    )
    .doc("a duration (`\"6h\"`, `\"30m\"`, seconds); recycle a worker this old, as at `max_requests`. Each worker's limit is spread by up to 10%: `max_worker_lifetime + random(0..=10%)`, drawn when it is started, so workers started together do not retire together; 0 = off"),
    Key::new("pidfile", "a file path",
        |c, v| { c.pidfile = Some(string(v)?.into()); Ok(()) },
        |c| c.pidfile.as_deref().map(quoted_path),
    ).option("pid")
    .doc("written at start, removed at exit. Written safely in a directory others can write: to a new, randomly named temporary file (`O_EXCL`, never through a symlink) renamed over it, mode 0644 whatever the umask. Something other than a regular file at that path (a symlink, a FIFO, a directory) is not opened: forkd exits 1 naming it, as does `forkd -s`"),
    Key::new("user", "a user name or uid",
        |c, v| { c.user = Some(string(v)?); Ok(()) },
        |c| c.user.as_deref().map(quoted),
    ).option("user")
    .doc("workers switch to them after the master has bound the sockets. From a root master, always: the supplementary groups become the user's own (as `initgroups(3)`, like Gunicorn; `group` alone without `user`), so none of the master's groups stay, then the gid, then the uid, and the worker checks that root cannot be regained; any failure is a boot failure naming the call"),
    Key::new("group", "a group name or gid",
        |c, v| { c.group = Some(string(v)?); Ok(()) },
        |c| c.group.as_deref().map(quoted),
    ).option("group")
    .doc("workers switch to them after the master has bound the sockets. From a root master, always: the supplementary groups become the user's own (as `initgroups(3)`, like Gunicorn; `group` alone without `user`), so none of the master's groups stay, then the gid, then the uid, and the worker checks that root cannot be regained; any failure is a boot failure naming the call"),
    Key::new("umask", "an octal string such as \"0022\" or an integer",
        |c, v| {
            let mask = match v {
                Value::Integer(n) => u32::try_from(*n).ok(),
                Value::String(s) => u32::from_str_radix(s.trim(), 8).ok(),
                _ => None,
            };
            c.umask = Some(mask.filter(|m| *m <= 0o777).ok_or(Expected)?);
            Ok(())
        },
        |c| c.umask.map(|m| quoted(&format!("{m:04o}"))),
    )
    .doc("e.g. `\"0022\"`"),
    Key::new("chdir", "a directory path",
        |c, v| { c.chdir = Some(string(v)?.into()); Ok(()) },
        |c| c.chdir.as_deref().map(quoted_path),
    )
    .doc("directory the master changes to at start; each exec worker is started in it, and a relative `exec.command` program path is found from it. A relative `chdir` is taken from the directory forkd was started in (also on HUP)"),
    Key::new("forwarded_allow_ips", "a list of IP addresses or CIDRs, or \"*\"",
        |c, v| {
            let headers = c.forwarded_allow_ips.headers();
            c.forwarded_allow_ips = TrustedProxies::parse(&list(v).ok_or(Expected)?, headers).map_err(Invalid)?;
            Ok(())
        },
        |c| Some(quoted_list(c.forwarded_allow_ips.entries().iter().cloned())),
    )
    .doc("proxies whose `Forwarded` / `X-Forwarded-For` / `X-Forwarded-Proto` are trusted: addresses, CIDRs (`\"10.0.0.0/8\"`), or `\"*\"` (see Proxies)"),
    Key::new("forwarded_headers", ProxyHeaders::ALLOWED,
        |c, v| {
            let headers = text(v).as_deref().and_then(ProxyHeaders::parse).ok_or(Expected)?;
            c.forwarded_allow_ips.set_headers(headers);
            Ok(())
        },
        |c| Some(quoted(c.forwarded_allow_ips.headers().as_str())),
    )
    .doc("which headers of a trusted proxy are read: `\"x-forwarded\"` (`X-Forwarded-For` and `X-Forwarded-Proto`), `\"forwarded\"` (RFC 7239 `Forwarded`) or `\"both\"` (`Forwarded` when present, else `X-Forwarded-*`); set it to what your proxy sets (see Proxies)"),
    Key {
        name: "env",
        allowed: "a table of strings",
        option: None,
        set: |c, v| {
            let Value::Table(entries) = v else {
                return Err(Problem::Said(None, "expected a table [env]".into()));
            };
            for (name, value) in entries {
                let Value::String(text) = value else {
                    return Err(Problem::Said(Some(format!("env.{name}")), "expected a string".into()));
                };
                c.env.insert(name.clone(), text.clone());
            }
            Ok(())
        },
        print: Print::Table(|c| c.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        doc: "",
    }
    .doc("extra environment for workers (exec workers: added to forkd's own)"),
    Key::new("log.level", "error | warn | info | debug | trace",
        |c, v| {
            c.log.level = match text(v).as_deref() {
                Some("error") => LogLevel::Error,
                Some("warn") => LogLevel::Warn,
                Some("info") => LogLevel::Info,
                Some("debug") => LogLevel::Debug,
                Some("trace") => LogLevel::Trace,
                _ => return Err(Expected),
            };
            Ok(())
        },
        |c| Some(quoted(&format!("{:?}", c.log.level).to_ascii_lowercase())),
    ).option("log_level")
    .doc("error, warn, info, debug, trace"),
    Key::new("log.format", "text | json",
        |c, v| {
            c.log.format = match text(v).as_deref() {
                Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                _ => return Err(Expected),
            };
            Ok(())
        },
        |c| Some(quoted(&format!("{:?}", c.log.format).to_ascii_lowercase())),
    ).option("log_format")
    .doc("text or json (one JSON object per line)"),
    Key::new("log.error_log", "\"-\" (stderr) or a file path",
        |c, v| {
            c.log.error_log = match string(v)?.as_str() {
                "-" => LogTarget::Std,
                "off" => return Err(Invalid("the error log cannot be turned off".into())),
                path => LogTarget::File(path.into()),
            };
            Ok(())
        },
        |c| Some(target(&c.log.error_log)),
    ).option("error_log")
    .doc("`-` = stderr, or a file (reopened on USR1)"),
    Key::new("log.access_log", "\"-\" (stdout), a file path, or \"off\"",
        |c, v| {
            c.log.access_log = match string(v)?.as_str() {
                "-" => LogTarget::Std,
                "off" => LogTarget::Off,
                path => LogTarget::File(path.into()),
            };
            Ok(())
        },
        |c| Some(target(&c.log.access_log)),
    ).option("access_log")
    .doc("`-` = stdout, a file (reopened on USR1), or off (see Access log)"),
    Key::new("log.access_log_format", "a format string of {named} fields (see the README)",
        |c, v| {
            c.log.access_log_format = Some(AccessLogFormat::parse(&string(v)?).map_err(Invalid)?);
            Ok(())
        },
        |c| c.log.access_log_format.as_ref().map(|f| quoted(f.as_str())),
    )
    .doc("`{named}` fields"),
    Key::new("limits.request_line", "an integer >= 1 (bytes)",
        |c, v| { c.limits.request_line = at_least(v, 1)? as usize; Ok(()) },
        |c| Some(c.limits.request_line.to_string()),
    )
    .doc("bytes in the request line; longer -> 414"),
    Key::new("limits.request_fields", "an integer >= 1",
        |c, v| { c.limits.request_fields = at_least(v, 1)? as usize; Ok(()) },
        |c| Some(c.limits.request_fields.to_string()),
    )
    .doc("header fields; more -> 431"),
    Key::new("limits.request_field_size", "an integer >= 1 (bytes)",
        |c, v| { c.limits.request_field_size = at_least(v, 1)? as usize; Ok(()) },
        |c| Some(c.limits.request_field_size.to_string()),
    )
    .doc("bytes per header field (`Name: value`); larger -> 431"),
    Key::new("limits.max_body", "a size: bytes or a string like \"64KiB\", \"10MiB\"",
        |c, v| { c.limits.max_body = size(v)?; Ok(()) },
        |c| Some(c.limits.max_body.to_string()),
    )
    .doc("request body; a larger `Content-Length` or a chunked body that grows past it -> 413"),
    Key::new("limits.header_read_timeout", "a duration > 0: seconds or a string like \"10s\"",
        |c, v| { c.limits.header_read_timeout = positive_duration(v)?; Ok(()) },
        |c| Some(fmt_duration(c.limits.header_read_timeout)),
    )
    .doc("a connection that has not sent a whole request head this long after connecting (or after its previous response) is closed"),
    Key::new("limits.body_read_timeout", "a duration: seconds or a string like \"30s\"; 0 = off",
        |c, v| { c.limits.body_read_timeout = duration(v)?; Ok(()) },
        |c| Some(fmt_duration(c.limits.body_read_timeout)),
    )
    .doc("a request body that sends nothing this long while the app waits for it gets 408 and the connection is closed; 0 = off"),
    Key::new("limits.send_timeout", "a duration > 0: seconds or a string like \"60s\"",
        |c, v| { c.limits.send_timeout = positive_duration(v)?; Ok(()) },
        |c| Some(fmt_duration(c.limits.send_timeout)),
    )
    .doc("a response write that makes no progress this long ends the connection (nginx's `send_timeout`; see Limits); a response is never cut earlier, however slowly the client reads. It also holds the app's writes on a connection it took over (a WebSocket)"),
    Key::new("limits.max_connections", "an integer >= 1",
        |c, v| { c.limits.max_connections = at_least(v, 1)? as usize; Ok(()) },
        |c| Some(c.limits.max_connections.to_string()),
    )
    .doc("open connections per worker; past it a new connection gets 503 with `Retry-After: 1`. forkd warns at start when a worker's fd limit (`RLIMIT_NOFILE`, `LimitNOFILE=`) is below it plus 64"),
    Key::new("limits.max_connections_per_ip", "an integer >= 0 (0 = no limit)",
        |c, v| { c.limits.max_connections_per_ip = at_least(v, 0)? as usize; Ok(()) },
        |c| Some(c.limits.max_connections_per_ip.to_string()),
    )
    .doc("open connections per worker from one client IP (the peer's address, not a forwarded one; unix sockets are not limited); past it a new connection from that IP gets 503 with `Retry-After: 1`; 0 = no limit"),
    Key::new("health.live_path", "a path starting with /",
        |c, v| { c.health.live_path = Some(url_path(v).ok_or(Expected)?); Ok(()) },
        |c| c.health.live_path.as_deref().map(quoted),
    )
    .doc("answered by forkd itself, before the app (see Health)"),
    Key::new("health.ready_path", "a path starting with /",
        |c, v| { c.health.ready_path = Some(url_path(v).ok_or(Expected)?); Ok(()) },
        |c| c.health.ready_path.as_deref().map(quoted),
    )
    .doc("answered by forkd itself, before the app (see Health)"),
    Key::new("health.shutdown_delay", "a duration: seconds or a string like \"5s\"",
        |c, v| { c.health.shutdown_delay = duration(v)?; Ok(()) },
        |c| Some(fmt_duration(c.health.shutdown_delay)),
    )
    .doc("on TERM, report not-ready this long (still serving) before draining"),
    Key::new("metrics.bind", "\"HOST:PORT\" or \"unix:/path\"",
        |c, v| {
            let spec = parse_bind(&string(v)?).map_err(Invalid)?;
            if spec.is_tls() {
                return Err(Invalid("metrics are served over plain HTTP".into()));
            }
            c.metrics.bind = Some(spec);
            Ok(())
        },
        |c| c.metrics.bind.as_ref().map(|b| quoted(&b.to_string())),
    )
    .doc("Prometheus listener, any `bind` form (see Metrics)"),
    Key::new("python.path", "a list of directories (relative to chdir or the start directory)",
        |c, v| { c.python.path = list(v).ok_or(Expected)?; Ok(()) },
        |c| Some(quoted_list(c.python.path.iter().cloned())),
    )
    .doc("directories put first on `sys.path` in each worker, relative to `chdir` (or the directory forkd started in)"),
    Key::new("python.lifespan", "auto | on | off",
        |c, v| {
            c.python.lifespan = match text(v).as_deref() {
                Some("auto") => Lifespan::Auto,
                Some("on") => Lifespan::On,
                Some("off") => Lifespan::Off,
                _ => return Err(Expected),
            };
            Ok(())
        },
        |c| Some(quoted(c.python.lifespan.as_str())),
    )
    .doc("ASGI lifespan: `\"auto\"` runs it and serves an app that does not support it anyway, `\"on\"` requires it, `\"off\"` skips it"),
    Key::new("python.root_path", "a string: empty, or a path starting with / and not ending with /",
        |c, v| {
            c.python.root_path = text(v)
                .filter(|p| p.is_empty() || (p.starts_with('/') && !p.ends_with('/')))
                .ok_or(Expected)?;
            Ok(())
        },
        |c| Some(quoted(&c.python.root_path)),
    )
    .doc("the ASGI `root_path` (an app mounted under a prefix behind a proxy): `\"\"` or `\"/prefix\"`"),
    Key::new("python.log_config", "a logging.config.dictConfig dict, as a JSON file or \"module:attr\"",
        |c, v| { c.python.log_config = text(v).filter(|s| !s.is_empty()).ok_or(Expected)?; Ok(()) },
        |c| (!c.python.log_config.is_empty()).then(|| quoted(&c.python.log_config)),
    )
    .doc("a `logging.config.dictConfig` dict, as a JSON file (relative to `chdir`) or `\"module:attr\"` (imported after `python.path` is set), applied in each worker before the app is imported; an error in it is a boot failure"),
    Key::new("python.websocket_grace", "a duration: seconds or a string like \"2s\"",
        |c, v| { c.python.websocket_grace = duration(v)?; Ok(()) },
        |c| Some(fmt_duration(c.python.websocket_grace)),
    )
    .doc("a retiring worker (HUP, USR2, recycling, TERM) closes its WebSockets with 1012 (Service Restart) this long after its drain starts (1001 at the end of `graceful_timeout` if that comes first)"),
    Key::new("exec.command", "a non-empty list of strings (the program and its arguments)",
        |c, v| {
            let words = match v {
                Value::String(s) => Some(s.split_whitespace().map(str::to_string).collect::<Vec<_>>()),
                Value::Array(_) => list(v),
                _ => None,
            };
            c.exec.command = words.filter(|w| !w.is_empty()).ok_or(Expected)?;
            Ok(())
        },
        |c| (!c.exec.command.is_empty()).then(|| quoted_list(c.exec.command.iter().cloned())),
    ).option("command")
    .doc("run this program as each worker instead of an app (exec workers); `-- COMMAND ARGS` overrides it; `FORKD_EXEC_COMMAND` is split on spaces"),
    Key::new("exec.ready", "\"auto\", \"notify\" or a duration such as \"2s\"",
        |c, v| {
            c.exec.ready = match v {
                Value::String(s) if s == "auto" => ReadyMode::Auto,
                Value::String(s) if s == "notify" => ReadyMode::Notify,
                _ => ReadyMode::After(duration(v)?),
            };
            Ok(())
        },
        |c| Some(ready_mode_text(&c.exec.ready)),
    )
    .doc("when an exec worker counts as ready: `\"auto\"`, `\"notify\"` or a duration such as `\"2s\"`"),
    Key::new("tls.certfile", "a PEM file: the certificate chain, the server's certificate first",
        |c, v| { c.tls.certfile = Some(string(v)?.into()); Ok(()) },
        |c| c.tls.certfile.as_deref().map(quoted_path),
    )
    .doc("PEM certificate chain, the server's certificate first; needed by `tls://` binds (see TLS)"),
    Key::new("tls.keyfile", "a PEM file: the private key (PKCS#8, PKCS#1 or SEC1)",
        |c, v| { c.tls.keyfile = Some(string(v)?.into()); Ok(()) },
        |c| c.tls.keyfile.as_deref().map(quoted_path),
    )
    .doc("PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC); a file readable by group or others is warned about"),
    Key::new("tls.ca_certs", "a PEM file of CA certificates that client certificates must chain to",
        |c, v| { c.tls.ca_certs = Some(string(v)?.into()); Ok(()) },
        |c| c.tls.ca_certs.as_deref().map(quoted_path),
    )
    .doc("PEM bundle of the CAs client certificates must chain to"),
    Key::new("tls.client_auth", "none | optional | required (optional and required need ca_certs)",
        |c, v| {
            c.tls.client_auth = match text(v).as_deref() {
                Some("none") => ClientAuth::None,
                Some("optional") => ClientAuth::Optional,
                Some("required") => ClientAuth::Required,
                _ => return Err(Expected),
            };
            Ok(())
        },
        |c| Some(quoted(match c.tls.client_auth {
            ClientAuth::None => "none",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        })),
    )
    .doc("`none`, `optional` (a certificate, if sent, must verify) or `required` (no certificate, no handshake); the last two need `ca_certs`"),
    Key::new("tls.alpn", "a list of \"h2\" and \"http/1.1\", in order of preference",
        |c, v| {
            let protocols = list(v).ok_or(Expected)?;
            if let Some(other) = protocols.iter().find(|p| *p != "h2" && *p != "http/1.1") {
                return Err(Invalid(format!("{other:?} is not a protocol forkd serves")));
            }
            c.tls.alpn = protocols;
            Ok(())
        },
        |c| Some(quoted_list(c.tls.alpn.iter().cloned())),
    )
    .doc("protocols offered by ALPN, in order of preference; `[]` = no ALPN (HTTP/1.1, or HTTP/2 with prior knowledge)"),
    Key::new("tls.min_version", "\"1.2\" or \"1.3\"",
        |c, v| {
            c.tls.min_version = match v {
                Value::String(s) if s.trim() == "1.2" => TlsVersion::V1_2,
                Value::String(s) if s.trim() == "1.3" => TlsVersion::V1_3,
                Value::Float(f) if *f == 1.2 => TlsVersion::V1_2,
                Value::Float(f) if *f == 1.3 => TlsVersion::V1_3,
                _ => return Err(Expected),
            };
            Ok(())
        },
        |c| Some(quoted(match c.tls.min_version {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        })),
    )
    .doc("`\"1.2\"` or `\"1.3\"` (TLS 1.3 is always on)"),
    Key::new("tls.handshake_timeout", "a duration > 0: seconds or a string like \"10s\"",
        |c, v| { c.tls.handshake_timeout = positive_duration(v)?; Ok(()) },
        |c| Some(fmt_duration(c.tls.handshake_timeout)),
    )
    .doc("a connection that has not finished its TLS handshake this long after it was accepted is closed"),
];

/// The key with this dotted name.
fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// The tables, in print order.
fn tables() -> Vec<&'static str> {
    let mut tables: Vec<&'static str> = Vec::new();
    for table in KEYS.iter().filter_map(Key::table) {
        if !tables.contains(&table) {
            tables.push(table);
        }
    }
    tables
}

/// The key set by `FORKD_<KEY>` variable `var`.
fn key_for_env(var: &str) -> Option<&'static Key> {
    KEYS.iter()
        .find(|k| k.env_var().is_some_and(|name| name == var))
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
            max_worker_memory: 0,
            max_worker_lifetime: Duration::ZERO,
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
                lifespan: Lifespan::Auto,
                root_path: String::new(),
                log_config: String::new(),
                websocket_grace: Duration::ZERO,
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
    // A variable that names no key is ignored here (Kubernetes puts service links in
    // forkd's prefix); `env_warnings` says what a typo was meant to be.
    for (var, value) in env.iter().filter(|(k, _)| k.starts_with("FORKD_")) {
        let Some(key) = key_for_env(var) else {
            continue;
        };
        set(
            &mut config,
            key,
            &Value::String(value.clone()),
            &Origin::Env(var),
        )?;
    }
    for given in cli.overrides() {
        let key = key(given.key).ok_or_else(|| ConfigError {
            message: format!("option {} sets no key", given.option),
        })?;
        set(&mut config, key, &given.value, &Origin::Flag(&given.option))?;
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
    let tables = tables();
    for (name, value) in table {
        if let Some(key) = key(&name) {
            set(config, key, &value, &origin)?;
        } else if tables.contains(&name.as_str()) {
            let Value::Table(inner) = value else {
                return Err(origin.error(&name, &format!("expected a table [{name}]")));
            };
            for (sub, value) in inner {
                let dotted = format!("{name}.{sub}");
                let Some(key) = key(&dotted) else {
                    let known = KEYS
                        .iter()
                        .filter(|k| k.table() == Some(name.as_str()))
                        .map(Key::short_name);
                    let hint = suggestion(&sub, known);
                    return Err(origin.error(&dotted, &format!("unknown key in [{name}]{hint}")));
                };
                set(config, key, &value, &origin)?;
            }
        } else {
            let known = KEYS
                .iter()
                .filter(|k| !k.name.contains('.'))
                .map(|k| k.name)
                .chain(tables.iter().copied());
            let hint = suggestion(&name, known);
            return Err(origin.error(&name, &format!("unknown key{hint}")));
        }
    }
    Ok(())
}

/// Sets one key from a TOML value (a file) or a string (environment, command line);
/// the error names the key, where the value came from and what is allowed.
fn set(
    config: &mut Config,
    key: &Key,
    value: &Value,
    origin: &Origin<'_>,
) -> Result<(), ConfigError> {
    (key.set)(config, value).map_err(|problem| match problem {
        Problem::Expected => origin.error(
            key.name,
            &format!("expected {}, got {}", key.allowed, show(value)),
        ),
        Problem::Invalid(why) => {
            origin.error(key.name, &format!("{why}; allowed: {}", key.allowed))
        }
        Problem::Said(entry, message) => {
            origin.error(entry.as_deref().unwrap_or(key.name), &message)
        }
    })
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

/// A non-empty string.
fn string(value: &Value) -> Result<String, Problem> {
    non_empty(value).ok_or(Expected)
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Integer(n) if *n >= 0 => Some(*n),
        Value::String(s) => s.trim().parse::<i64>().ok().filter(|n| *n >= 0),
        _ => None,
    }
}

/// An integer >= `min` (and >= 0).
fn at_least(value: &Value, min: i64) -> Result<u64, Problem> {
    integer(value)
        .filter(|n| *n >= min)
        .map(|n| n as u64)
        .ok_or(Expected)
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

fn duration(value: &Value) -> Result<Duration, Problem> {
    match value {
        Value::Integer(n) if *n >= 0 => Ok(Duration::from_secs(*n as u64)),
        Value::Float(f) if f.is_finite() && *f >= 0.0 => Ok(Duration::from_secs_f64(*f)),
        Value::String(s) => parse_duration(s).map_err(Invalid),
        other => Err(Invalid(format!("got {}", show(other)))),
    }
}

fn positive_duration(value: &Value) -> Result<Duration, Problem> {
    let d = duration(value)?;
    if d.is_zero() {
        return Err(Invalid("it must be greater than 0".into()));
    }
    Ok(d)
}

fn size(value: &Value) -> Result<u64, Problem> {
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
    if ms.is_multiple_of(1000) {
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

fn quoted_path(path: &std::path::Path) -> String {
    quoted(&path.display().to_string())
}

impl Config {
    /// Resolves `workers` ("auto" counts usable CPUs).
    pub fn worker_count(&self) -> usize {
        match self.workers {
            Workers::Count(n) => n,
            Workers::Auto => available_cpus(),
        }
    }

    /// The effective configuration as TOML, every key included (unset ones as comments).
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let file = self
            .config_file
            .as_ref()
            .map_or("(none)".to_string(), |p| p.display().to_string());
        out.push_str(&format!(
            "# forkd effective configuration (config file: {file})\n"
        ));
        let mut current = None;
        for key in KEYS {
            if key.table() != current {
                current = key.table();
                out.push_str(&format!("\n[{}]\n", current.unwrap_or_default()));
            }
            match key.print {
                Print::Value(print) => match print(self) {
                    Some(value) => out.push_str(&format!("{} = {value}\n", key.short_name())),
                    None => out.push_str(&format!("# {} = (unset)\n", key.short_name())),
                },
                Print::Table(entries) => {
                    for (name, value) in entries(self) {
                        out.push_str(&format!("{} = {}\n", quoted(&name), quoted(&value)));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets a key by name (from the file, the environment or the command line).
    fn set(
        config: &mut Config,
        name: &str,
        value: Value,
        origin: &Origin<'_>,
    ) -> Result<(), ConfigError> {
        super::set(config, key(name).expect("a known key"), &value, origin)
    }

    /// `name = value` as the file writes it: under `[table]` for a dotted name.
    fn file_text(name: &str, value: &str) -> String {
        match name.split_once('.') {
            Some((table, short)) => format!("[{table}]\n{short} = {value}\n"),
            None => format!("{name} = {value}\n"),
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        apply_file(&mut config, std::path::Path::new("forkd.toml"), text)?;
        Ok(config)
    }

    /// A value other than the default for each key, as the file writes it.
    const SAMPLES: &[(&str, &str)] = &[
        ("app", "\"echo\""),
        (
            "bind",
            "[\"127.0.0.1:9000\", \"unix:/tmp/x.sock\", \"fd://web\", \"fd://5\"]",
        ),
        ("workers", "\"auto\""),
        ("threads", "4"),
        ("backlog", "100"),
        ("timeout", "1.5"),
        ("graceful_timeout", "\"2m\""),
        ("keepalive", "0"),
        ("max_requests", "5"),
        ("max_requests_jitter", "\"3\""),
        ("max_worker_memory", "\"512MiB\""),
        ("max_worker_lifetime", "\"6h\""),
        ("pidfile", "\"/run/forkd.pid\""),
        ("user", "\"nobody\""),
        ("group", "\"nogroup\""),
        ("umask", "\"0027\""),
        ("chdir", "\"/srv\""),
        (
            "forwarded_allow_ips",
            "[\"10.0.0.0/8\", \"::ffff:10.0.0.0/104\", \"*\"]",
        ),
        ("forwarded_headers", "\"forwarded\""),
        (
            "env",
            "{ APP_ENV = \"production\", \"A B\" = \"x = \\\"y\\\"\" }",
        ),
        ("log.level", "\"debug\""),
        ("log.format", "\"json\""),
        ("log.error_log", "\"/var/log/forkd error.log\""),
        ("log.access_log", "\"-\""),
        (
            "log.access_log_format",
            "\"{{literal}} { status } {header:x-request-id} \\\"q\\\"\"",
        ),
        ("limits.request_line", "100"),
        ("limits.request_fields", "5"),
        ("limits.request_field_size", "50"),
        ("limits.max_body", "\"64KiB\""),
        ("limits.header_read_timeout", "\"500ms\""),
        ("limits.body_read_timeout", "0"),
        ("limits.send_timeout", "\"1500ms\""),
        ("limits.max_connections", "7"),
        ("limits.max_connections_per_ip", "2"),
        ("health.live_path", "\"/live\""),
        ("health.ready_path", "\"/ready\""),
        ("health.shutdown_delay", "3"),
        ("metrics.bind", "\"[::1]:9100\""),
        ("python.path", "[\"src\", \"/srv/lib\"]"),
        ("python.lifespan", "\"off\""),
        ("python.root_path", "\"/api\""),
        ("python.log_config", "\"logging.json\""),
        ("python.websocket_grace", "\"2s\""),
        (
            "exec.command",
            "[\"uvicorn\", \"app:app\", \"--fd\", \"3\"]",
        ),
        ("exec.ready", "\"2s\""),
        ("tls.certfile", "\"/etc/forkd/cert.pem\""),
        ("tls.keyfile", "\"/etc/forkd/key.pem\""),
        ("tls.ca_certs", "\"/etc/forkd/ca.pem\""),
        ("tls.client_auth", "\"required\""),
        ("tls.alpn", "[\"http/1.1\"]"),
        ("tls.min_version", "1.3"),
        ("tls.handshake_timeout", "\"250ms\""),
    ];

    #[test]
    fn recycling_keys_are_validated() {
        for (key, value) in [
            ("max_worker_memory", "\"lots\""),
            ("max_worker_memory", "\"512PiB\""),
            ("max_worker_memory", "-1"),
            ("max_worker_lifetime", "\"6 days\""),
            ("max_worker_lifetime", "-5"),
            ("max_worker_lifetime", "true"),
        ] {
            let err = parse(&format!("{key} = {value}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("line 1: key `{key}`")) && err.contains("0 = off"),
                "{err}"
            );
        }
        let config =
            parse("max_worker_memory = \"64MiB\"\nmax_worker_lifetime = \"2s\"\n").unwrap();
        assert_eq!(config.max_worker_memory, 64 << 20);
        assert_eq!(config.max_worker_lifetime, Duration::from_secs(2));
        assert_eq!(Config::default().max_worker_memory, 0);
        assert!(Config::default().max_worker_lifetime.is_zero());
    }

    #[test]
    fn python_keys_are_validated() {
        let mut config = Config::default();
        let origin = Origin::Flag("test");
        let bad = |config: &mut Config, key: &'static str, value: Value| {
            set(config, key, value, &origin).is_err()
        };
        assert!(bad(
            &mut config,
            "python.lifespan",
            Value::String("maybe".into())
        ));
        assert!(bad(
            &mut config,
            "python.root_path",
            Value::String("api".into())
        ));
        assert!(bad(
            &mut config,
            "python.root_path",
            Value::String("/api/".into())
        ));
        assert!(bad(&mut config, "python.path", Value::Integer(3)));
        assert!(bad(
            &mut config,
            "python.log_config",
            Value::String(" ".into())
        ));
        assert!(bad(&mut config, "python.log_config", Value::Integer(1)));
        assert!(bad(
            &mut config,
            "python.websocket_grace",
            Value::String("soon".into())
        ));
        assert!(bad(
            &mut config,
            "python.websocket_grace",
            Value::Integer(-1)
        ));
        assert!(set(
            &mut config,
            "python.path",
            Value::String("a,b".into()),
            &origin
        )
        .is_ok());
        assert_eq!(config.python.path, ["a", "b"]);
    }

    #[test]
    fn every_key_round_trips_through_print_config() {
        // Every key at its default (printing names `bind`, so it counts as given)...
        let mut default = Config::default();
        let reloaded = parse(&default.to_toml()).unwrap();
        default.bind_given = true;
        assert_eq!(reloaded, default, "{}", default.to_toml());
        // ... and every key set to something else, one at a time.
        for (name, sample) in SAMPLES {
            let mut config = parse(&file_text(name, sample))
                .unwrap_or_else(|e| panic!("sample for {name}: {e}"));
            assert_ne!(
                config,
                Config::default(),
                "sample for {name} is the default"
            );
            config.bind_given = true;
            let text = config.to_toml();
            let reloaded =
                parse(&text).unwrap_or_else(|e| panic!("{name}: printed config: {e}\n{text}"));
            assert_eq!(reloaded, config, "{name}:\n{text}");
        }
    }

    #[test]
    fn keys_print_top_level_first_then_each_table_together() {
        let mut seen: Vec<Option<&str>> = Vec::new();
        for key in KEYS {
            assert!(!key.name.is_empty() && !key.allowed.is_empty());
            assert_eq!(
                KEYS.iter().filter(|k| k.name == key.name).count(),
                1,
                "{}",
                key.name
            );
            let table = key.table();
            if seen.last() != Some(&table) {
                assert!(
                    !seen.contains(&table),
                    "the keys of {table:?} are not together ({})",
                    key.name
                );
                assert!(
                    table.is_some() || seen.is_empty(),
                    "top-level key {} comes after a table",
                    key.name
                );
                seen.push(table);
            }
        }
    }

    #[test]
    fn every_key_has_an_env_name_that_maps_back() {
        for key in KEYS {
            match key.env_var() {
                Some(var) => {
                    assert!(var.starts_with("FORKD_"), "{var}");
                    assert_eq!(key_for_env(&var).map(|k| k.name), Some(key.name), "{var}");
                    if let Some((_, sample)) = SAMPLES.iter().find(|(n, _)| *n == key.name) {
                        // A string as the environment gives it: lists comma-separated.
                        let value: Value = toml::from_str::<toml::Table>(&format!("v = {sample}"))
                            .unwrap()
                            .remove("v")
                            .unwrap();
                        let text = match value {
                            Value::String(s) => s,
                            Value::Array(items) => items
                                .iter()
                                .map(|i| i.as_str().unwrap().to_string())
                                .collect::<Vec<_>>()
                                .join(if key.name == "exec.command" { " " } else { "," }),
                            other => other.to_string(),
                        };
                        let mut from_env = Config::default();
                        super::set(&mut from_env, key, &Value::String(text), &Origin::Env(&var))
                            .unwrap_or_else(|e| panic!("{var}: {e}"));
                        let from_file = parse(&file_text(key.name, sample)).unwrap();
                        assert_eq!(from_env, from_file, "{var}");
                    }
                }
                None => assert!(matches!(key.print, Print::Table(_)), "{}", key.name),
            }
        }
        assert_eq!(
            key_for_env("FORKD_LOG_ACCESS_LOG").map(|k| k.name),
            Some("log.access_log")
        );
        assert!(key_for_env("FORKD_ENV").is_none());
        // Ignored, with a warning (config::env's tests).
        let env = [("FORKD_ENV".to_string(), "x".to_string())];
        assert_eq!(load(&Cli::default(), &env).unwrap(), Config::default());
        assert!(env_warnings(&env)[0].contains("[env] table"));
    }

    #[test]
    fn unknown_keys_suggest_the_closest() {
        let error = |text: &str| parse(text).unwrap_err().to_string();
        for key in KEYS {
            // The name with its last letter missing.
            let short = key.short_name();
            let typo = &short[..short.len() - 1];
            let text = match key.table() {
                Some(table) if table != key.name => format!("[{table}]\n{typo} = 1\n"),
                _ => format!("{typo} = 1\n"),
            };
            let err = error(&text);
            assert!(
                err.contains(&format!("(did you mean `{short}`?)")),
                "{text}: {err}"
            );
            assert!(err.contains("line"), "{err}");
        }
        let err = error("[lgo]\nlevel = \"info\"\n");
        assert!(
            err.contains("key `lgo`: unknown key (did you mean `log`?)"),
            "{err}"
        );
        let err = error("[limits]\nmax_bdy = 1\n");
        assert!(
            err.contains("forkd.toml line 2: key `limits.max_bdy`: unknown key in [limits] (did you mean `max_body`?)"),
            "{err}"
        );
        // An unknown variable is a warning, not an error (CONTRACT.md).
        let env = [("FORKD_WORKRS".to_string(), "2".to_string())];
        assert_eq!(load(&Cli::default(), &env).unwrap(), Config::default());
        let warnings = env_warnings(&env);
        assert!(
            warnings[0].contains("(did you mean `FORKD_WORKERS`?)"),
            "{warnings:?}"
        );
    }

    #[test]
    fn errors_name_the_key_the_problem_and_what_is_allowed() {
        let error = |text: &str| parse(text).unwrap_err().to_string();
        assert_eq!(
            error("app = \"hello\"\nworkers = 0\n"),
            "forkd: config error: forkd.toml line 2: key `workers`: expected an integer >= 1 or \"auto\", got 0"
        );
        assert_eq!(
            error("forwarded_allow_ips = [\"10.0.0.0/40\"]\n"),
            "forkd: config error: forkd.toml line 1: key `forwarded_allow_ips`: \"10.0.0.0/40\": prefix length above 32; allowed: a list of IP addresses or CIDRs, or \"*\""
        );
        assert_eq!(
            error("forwarded_headers = \"auto\"\n"),
            "forkd: config error: forkd.toml line 1: key `forwarded_headers`: expected x-forwarded | forwarded | both, got \"auto\""
        );
        assert_eq!(
            error("env = 3\n"),
            "forkd: config error: forkd.toml line 1: key `env`: expected a table [env]"
        );
        assert_eq!(
            error("[env]\nA = 1\n"),
            "forkd: config error: forkd.toml line 2: key `env.A`: expected a string"
        );
        assert_eq!(
            error("log = 1\n"),
            "forkd: config error: forkd.toml line 1: key `log`: expected a table [log]"
        );
        let err = error("[log]\naccess_log_format = \"{stauts}\"\n");
        assert!(
            err.starts_with("forkd: config error: forkd.toml line 2: key `log.access_log_format`: unknown field {stauts}")
                && err.ends_with("; allowed: a format string of {named} fields (see the README)"),
            "{err}"
        );
    }

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
