//! The registry: every config key declared once (`KEYS`): its name, what is allowed, how
//! it is parsed into `Config`, how `--print-config` writes it, its command-line option and
//! one line on what it does. Tables, `FORKD_*` names, options, suggestions and the
//! generated reference are derived from here.

use super::cpus::available_cpus;
use super::types::*;
use super::values::*;
use toml::Value;

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
    pub(super) allowed: &'static str,
    /// The id of the command-line option that sets it (the field's name in `cli::Cli`).
    pub(crate) option: Option<&'static str>,
    /// Parses and checks a value into the config: TOML from the file, a string from the
    /// environment or the command line (an array for a repeated option).
    pub(super) set: fn(&mut Config, &Value) -> Result<(), Problem>,
    /// How `--print-config` writes it.
    pub(super) print: Print,
    /// One line on what it does, for the generated reference (docs/reference.md).
    pub(crate) doc: &'static str,
}

/// How `--print-config` writes a key.
#[derive(Debug, Clone, Copy)]
pub(super) enum Print {
    /// `name = VALUE` in the key's table; None is written `# name = (unset)`.
    Value(fn(&Config) -> Option<String>),
    /// A table of free names (`[env]`): its entries, as strings. A key printed this way
    /// is set from the file only (no environment variable, no option).
    Table(fn(&Config) -> Vec<(String, String)>),
}

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
    pub(super) fn table(&self) -> Option<&'static str> {
        match self.print {
            Print::Table(_) => Some(self.name),
            Print::Value(_) => self.name.split_once('.').map(|(table, _)| table),
        }
    }

    /// Its name in its table.
    pub(super) fn short_name(&self) -> &'static str {
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
    .doc("runtime threads per worker; 1 = current-thread event loop. A WSGI app: the size of each worker's thread pool (Gunicorn's gthread), the server keeping one runtime thread"),
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
    .option("umask")
    .doc("e.g. `\"0022\"`"),
    Key::new("chdir", "a directory path",
        |c, v| { c.chdir = Some(string(v)?.into()); Ok(()) },
        |c| c.chdir.as_deref().map(quoted_path),
    )
    .option("chdir")
    .doc("the workers' directory, resolved (symlinks followed) at start and anew at every HUP and USR2: each worker of a generation, recycled ones too, runs in the directory its generation resolved, so a release symlink (`current -> releases/N`) switched then HUPed is served. The master changes to it at start (relative `pidfile` and socket paths are taken from there). A relative `exec.command` program path is found from it; a relative `chdir` is taken from the directory forkd was started in (also on HUP)"),
    Key::new("proc_name", "a name (printable ASCII, at most 64 bytes)",
        |c, v| {
            let name = string(v)?;
            c.proc_name = Some(super::values::proc_name(&name).map_err(Invalid)?);
            Ok(())
        },
        |c| c.proc_name.as_deref().map(quoted),
    ).option("name")
    .doc("a name in the process titles `ps` shows, as Gunicorn's `proc_name`: `forkd: master [NAME]`, `forkd: worker [N] [NAME]`; unset, they are `forkd: master` and `forkd: worker [N]`. Read at start (the master's title) and per generation (its workers')"),
    Key::new("reload", "true or false",
        |c, v| { c.reload = boolean(v).ok_or(Expected)?; Ok(()) },
        |c| Some(c.reload.to_string()),
    ).option("reload")
    .doc("development: watch the app's files (for a Python app, the `.py` files under `chdir` and `python.path`) and `reload_extra_files` with inotify, and reload (as HUP) 300 ms after the last change. Refused with exec workers and under systemd (`NOTIFY_SOCKET`). Not `-s reload`, which sends one HUP"),
    Key::new("reload_extra_files", "a list of file globs (relative to chdir)",
        |c, v| { c.reload_extra_files = list(v).ok_or(Expected)?; Ok(()) },
        |c| Some(quoted_list(c.reload_extra_files.iter().cloned())),
    )
    .doc("with `reload`: more files whose change reloads, as globs (`*`, `?`, `**` for any depth), relative to `chdir`, e.g. `[\"templates/**/*.html\", \"settings.toml\"]`"),
    Key::new("preload_app", "true or false",
        |c, v| { c.preload_app = boolean(v).ok_or(Expected)?; Ok(()) },
        |c| Some(c.preload_app.to_string()),
    ).option("preload")
    .doc("Python apps: import the app once per generation in a zygote process (a child of the master, which itself runs no app code), `gc.freeze()` it, and fork the generation's workers from it, so they share its memory copy-on-write and start in milliseconds. A worker recycled later (`max_requests`, a crash) forks from its generation's zygote and runs the code that generation imported; HUP starts a new zygote that imports the code on disk then (an import error is a failed reload). An import that starts threads or an event loop is refused. With a built-in app or exec workers: a config error"),
    Key::new("forwarded_allow_ips", "a list of IP addresses or CIDRs, or \"*\"",
        |c, v| {
            let headers = c.forwarded_allow_ips.headers();
            c.forwarded_allow_ips = TrustedProxies::parse(&list(v).ok_or(Expected)?, headers).map_err(Invalid)?;
            Ok(())
        },
        |c| Some(quoted_list(c.forwarded_allow_ips.entries().iter().cloned())),
    )
    .option("forwarded_allow_ips")
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
        option: Some("env"),
        set: |c, v| {
            // `-e KEY=VALUE` (Gunicorn's `--env`), repeatable: a list of such strings.
            if let Value::Array(items) = v {
                for item in items {
                    let entry = item.as_str().and_then(|s| s.split_once('='));
                    match entry {
                        Some((name, value)) if !name.is_empty() && !name.contains('\0') && !value.contains('\0') => {
                            c.env.insert(name.to_string(), value.to_string());
                        }
                        _ => return Err(Problem::Said(None, format!("{} is not KEY=VALUE", show(item)))),
                    }
                }
                return Ok(());
            }
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
    .option("limit_request_line")
    .doc("bytes in the request line; longer -> 414"),
    Key::new("limits.request_fields", "an integer >= 1",
        |c, v| { c.limits.request_fields = at_least(v, 1)? as usize; Ok(()) },
        |c| Some(c.limits.request_fields.to_string()),
    )
    .option("limit_request_fields")
    .doc("header fields; more -> 431"),
    Key::new("limits.request_field_size", "an integer >= 1 (bytes)",
        |c, v| { c.limits.request_field_size = at_least(v, 1)? as usize; Ok(()) },
        |c| Some(c.limits.request_field_size.to_string()),
    )
    .option("limit_request_field_size")
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
    .option("worker_connections")
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
    .option("pythonpath")
    .doc("directories put first on `sys.path` in each worker, relative to its generation's resolved `chdir` (or the directory forkd started in)"),
    Key::new("python.interface", "auto | asgi | wsgi",
        |c, v| {
            c.python.interface = match text(v).as_deref() {
                Some("auto") => Interface::Auto,
                Some("asgi") => Interface::Asgi,
                Some("wsgi") => Interface::Wsgi,
                _ => return Err(Expected),
            };
            Ok(())
        },
        |c| Some(quoted(c.python.interface.as_str())),
    )
    .doc("how the app is called: `\"asgi\"` (an ASGI 3 app on the worker's event loop), `\"wsgi\"` (a PEP 3333 callable, from a pool of `threads` threads per worker), or `\"auto\"`: ASGI if the object imported is a coroutine function or has an async `__call__` (FastAPI, Starlette), else WSGI (Flask, Django's `get_wsgi_application()`); an explicit value the app does not fit is a boot failure"),
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
    .doc("the ASGI `root_path`, a WSGI app's `SCRIPT_NAME` (an app mounted under a prefix behind a proxy): `\"\"` or `\"/prefix\"`"),
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
    Key::new("python.hooks", "a table of Gunicorn server hooks, each \"module:function\" (in the environment: \"name=module:function,...\"): post_fork, post_worker_init, worker_exit (in each worker), on_starting, when_ready, on_reload, pre_fork, child_exit, nworkers_changed, on_exit (in the hooks' runner)",
        |c, v| { c.python.hooks = hooks(v)?; Ok(()) },
        |c| (!c.python.hooks.is_empty()).then(|| {
            let entries: Vec<String> =
                c.python.hooks.iter().map(|(k, v)| format!("{k} = {}", quoted(v))).collect();
            format!("{{ {} }}", entries.join(", "))
        }),
    )
    .doc("Gunicorn's server hooks as `name = \"module:function\"` (imported after `python.path` is set): the worker ones run in each worker, the master ones in a child of the master (the master runs no Python); see docs/python.md"),
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
    .option("certfile")
    .doc("PEM certificate chain, the server's certificate first; needed by `tls://` binds (see TLS)"),
    Key::new("tls.keyfile", "a PEM file: the private key (PKCS#8, PKCS#1 or SEC1)",
        |c, v| { c.tls.keyfile = Some(string(v)?.into()); Ok(()) },
        |c| c.tls.keyfile.as_deref().map(quoted_path),
    )
    .option("keyfile")
    .doc("PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC); a file readable by group or others is warned about"),
    Key::new("tls.ca_certs", "a PEM file of CA certificates that client certificates must chain to",
        |c, v| { c.tls.ca_certs = Some(string(v)?.into()); Ok(()) },
        |c| c.tls.ca_certs.as_deref().map(quoted_path),
    )
    .option("ca_certs")
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
pub(super) fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// The tables, in print order.
pub(super) fn tables() -> Vec<&'static str> {
    let mut tables: Vec<&'static str> = Vec::new();
    for table in KEYS.iter().filter_map(Key::table) {
        if !tables.contains(&table) {
            tables.push(table);
        }
    }
    tables
}

/// The key set by `FORKD_<KEY>` variable `var`.
pub(super) fn key_for_env(var: &str) -> Option<&'static Key> {
    KEYS.iter()
        .find(|k| k.env_var().is_some_and(|name| name == var))
}
