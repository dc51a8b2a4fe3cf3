//! The command line: clap's parser for forkd's options. Which option sets which config
//! key is said by the key, in `config::KEYS` (`Key::option`, the option's id here);
//! values are validated by the config module, so a bad option gets the same message as
//! a bad key, naming the option.

use crate::config::Given;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};
use std::ffi::OsString;
use std::path::PathBuf;
use toml::Value;

/// forkd: a pre-fork process manager for HTTP services.
#[derive(Parser, Debug, Clone, Default)]
#[command(name = "forkd", version, about, long_about = None)]
pub struct Cli {
    /// Config file (TOML).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print nothing but errors, exit 0 or 2.
    #[arg(long)]
    pub check_config: bool,
    /// Print the effective configuration as TOML.
    #[arg(long)]
    pub print_config: bool,
    /// Signal the running master named by the pidfile (reload = HUP, waits for the
    /// outcome; not `--reload`); `status` asks it for its workers over its control socket.
    #[arg(short = 's', long = "signal", value_name = "SIGNAL",
          value_parser = ["reload", "stop", "quit", "reopen", "upgrade", "incr", "decr", "status"])]
    pub signal: Option<String>,
    /// Address to listen on (repeatable): HOST:PORT, [::1]:PORT, unix:PATH, fd://N.
    // The text is `--help`'s, where `[::1]` is an address, not a rustdoc link.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(short = 'b', long = "bind", value_name = "ADDRESS")]
    pub bind: Vec<String>,
    /// Number of worker processes, or "auto".
    #[arg(short = 'w', long, value_name = "N")]
    pub workers: Option<String>,
    /// Runtime threads per worker.
    #[arg(long, value_name = "N")]
    pub threads: Option<String>,
    /// Kill a worker silent this long (seconds or "30s"; 0 = off).
    #[arg(short = 't', long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Time in-flight requests get on reload/stop.
    #[arg(long, value_name = "DURATION")]
    pub graceful_timeout: Option<String>,
    /// Idle keep-alive connections are closed after this long.
    #[arg(long, visible_alias = "keep-alive", value_name = "DURATION")]
    pub keepalive: Option<String>,
    /// Recycle a worker after this many requests (0 = never).
    #[arg(long, value_name = "N")]
    pub max_requests: Option<String>,
    /// Random extra requests per worker before recycling.
    #[arg(long, value_name = "N")]
    pub max_requests_jitter: Option<String>,
    /// listen(2) backlog.
    #[arg(long, value_name = "N")]
    pub backlog: Option<String>,
    /// Pidfile path.
    #[arg(short = 'p', long = "pid", value_name = "FILE")]
    pub pid: Option<String>,
    /// User the workers run as.
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,
    /// Group the workers run as.
    #[arg(short = 'g', long, value_name = "GROUP")]
    pub group: Option<String>,
    /// error | warn | info | debug | trace
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// text | json
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Access log: "-" (stdout), a file, or "off".
    #[arg(long, visible_alias = "access-logfile", value_name = "TARGET")]
    pub access_log: Option<String>,
    /// Error log: "-" (stderr) or a file.
    #[arg(long, visible_aliases = ["error-logfile", "log-file"], value_name = "TARGET")]
    pub error_log: Option<String>,
    /// The workers' directory (resolved anew at every HUP).
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<String>,
    /// Python: directories put first on sys.path (comma-separated or repeated).
    #[arg(long, value_name = "DIRS", value_delimiter = ',')]
    pub pythonpath: Vec<String>,
    /// Proxies whose X-Forwarded-*/Forwarded headers are trusted (comma-separated, or "*").
    #[arg(long, value_name = "ADDRESSES", value_delimiter = ',')]
    pub forwarded_allow_ips: Vec<String>,
    /// File mode creation mask of the workers (octal, e.g. 0022).
    #[arg(long, value_name = "MASK")]
    pub umask: Option<String>,
    /// TLS certificate chain (PEM); binds that say tls:// serve HTTPS.
    #[arg(long, value_name = "FILE")]
    pub certfile: Option<String>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub keyfile: Option<String>,
    /// CA certificates that client certificates must chain to (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca_certs: Option<String>,
    /// Longest request line, bytes (longer: 414).
    #[arg(long, value_name = "BYTES")]
    pub limit_request_line: Option<String>,
    /// Most header fields in a request (more: 431).
    #[arg(long, value_name = "N")]
    pub limit_request_fields: Option<String>,
    /// Largest header field, bytes (larger: 431).
    #[arg(
        long = "limit-request-field-size",
        visible_alias = "limit-request-field_size",
        value_name = "BYTES"
    )]
    pub limit_request_field_size: Option<String>,
    /// Most connections per worker (past it: 503).
    #[arg(long, value_name = "N")]
    pub worker_connections: Option<String>,
    /// Python: import the app once per generation in a zygote and fork the workers from
    /// it (`preload_app`; Gunicorn's `--preload`).
    #[arg(
        long = "preload",
        num_args = 0,
        default_missing_value = "true",
        value_name = ""
    )]
    pub preload: Option<String>,
    /// Gunicorn's worker class, accepted for its meaning: uvicorn's worker is an ASGI
    /// app, `sync`/`gthread` a WSGI one (`python.interface`); forkd's own workers serve either.
    #[arg(short = 'k', long = "worker-class", value_name = "CLASS")]
    pub worker_class: Option<String>,
    /// Extra environment for the workers, KEY=VALUE (repeatable; Gunicorn's `-e`).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// A name for `ps`: `forkd: master [NAME]`, `forkd: worker [N] [NAME]`.
    #[arg(short = 'n', long = "name", value_name = "NAME")]
    pub name: Option<String>,
    /// Development: reload (as HUP) when the app's files change (not `-s reload`, which
    /// sends one HUP to a running master).
    #[arg(long, num_args = 0, default_missing_value = "true", value_name = "")]
    pub reload: Option<String>,
    /// App to serve: a built-in one (hello | echo) or a Python ASGI app, MODULE:ATTR.
    #[arg(value_name = "APP")]
    pub app: Option<String>,
    /// Run COMMAND as each worker (exec workers), after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    /// The options above that set config keys, as given.
    #[arg(skip)]
    overrides: Vec<Given>,
    /// What an option given is not taken as (`-k gevent`), for the log.
    #[arg(skip)]
    pub warnings: Vec<String>,
}

impl Cli {
    pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let command = Cli::command();
        let matches = command.clone().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        cli.overrides = given(&command, &matches);
        if let Some(class) = &cli.worker_class {
            match crate::config::gunicorn::worker_class_interface(class) {
                // Before the options that set `python.interface` itself: they win.
                Ok(interface) => cli.overrides.insert(
                    0,
                    Given {
                        option: "--worker-class".into(),
                        key: "python.interface",
                        value: Value::String(interface.into()),
                    },
                ),
                Err(note) => cli.warnings.push(note),
            }
        }
        Ok(cli)
    }

    /// The options given that set config keys, lowest precedence first.
    pub fn overrides(&self) -> &[Given] {
        &self.overrides
    }
}

/// For every key that an option sets (`config::KEYS`), the option if it was given.
fn given(command: &clap::Command, matches: &clap::ArgMatches) -> Vec<Given> {
    crate::config::KEYS
        .iter()
        .filter_map(|key| {
            let id = key.option?;
            let arg = command.get_arguments().find(|a| a.get_id() == id)?;
            let mut values = matches
                .get_raw(id)?
                .map(|v| Value::String(v.to_string_lossy().into_owned()));
            let value = match arg.get_action() {
                ArgAction::Append => Value::Array(values.collect()),
                _ => values.next()?,
            };
            Some(Given {
                option: shown(arg),
                key: key.name,
                value,
            })
        })
        .collect()
}

/// An option as the user knows it: `--pid`, `APP`, `-- COMMAND`.
fn shown(arg: &clap::Arg) -> String {
    if let Some(long) = arg.get_long() {
        return format!("--{long}");
    }
    let name = arg
        .get_value_names()
        .and_then(|names| names.first())
        .map_or_else(|| arg.get_id().to_string(), |name| name.to_string());
    if arg.is_last_set() {
        format!("-- {name}")
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options that are not config keys.
    const NOT_KEYS: &[&str] = &[
        "config",
        "check_config",
        "print_config",
        "signal",
        "worker_class",
        "help",
        "version",
    ];

    #[test]
    fn every_option_sets_a_registry_key_and_every_key_option_exists() {
        let command = Cli::command();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if NOT_KEYS.contains(&id) {
                continue;
            }
            assert!(
                crate::config::KEYS.iter().any(|k| k.option == Some(id)),
                "option {id} ({}) sets no config key: name it in its key's `option`",
                shown(arg)
            );
        }
        for key in crate::config::KEYS {
            if let Some(id) = key.option {
                assert!(
                    command.get_arguments().any(|a| a.get_id() == id),
                    "key {} names option {id}, which cli::Cli does not have",
                    key.name
                );
                assert!(!NOT_KEYS.contains(&id), "{id}");
            }
        }
    }

    #[test]
    fn gunicorns_command_line_flags_set_forkds_keys() {
        let cli = Cli::parse_args([
            "forkd",
            "--keep-alive",
            "5",
            "--access-logfile",
            "-",
            "--error-logfile",
            "/var/log/app/error.log",
            "--chdir",
            "/srv/app",
            "--pythonpath",
            "/srv/app,/srv/lib",
            "--forwarded-allow-ips",
            "10.0.0.1,10.0.0.0/8",
            "--umask",
            "0027",
            "--limit-request-line",
            "4094",
            "--limit-request-field_size",
            "100",
            "--worker-connections",
            "50",
            "--certfile",
            "/etc/c.pem",
            "--keyfile",
            "/etc/k.pem",
            "--preload",
            "-k",
            "gthread",
            "-e",
            "DJANGO_SETTINGS_MODULE=mysite.settings",
            "--env",
            "EMPTY=",
            "app.main:app",
        ])
        .unwrap();
        let config = crate::config::load(None, cli.overrides(), &[]).unwrap();
        assert_eq!(config.keepalive, std::time::Duration::from_secs(5));
        assert_eq!(config.log.access_log, crate::config::LogTarget::Std);
        assert_eq!(
            config.log.error_log,
            crate::config::LogTarget::File("/var/log/app/error.log".into())
        );
        assert_eq!(
            config.chdir.as_deref(),
            Some(std::path::Path::new("/srv/app"))
        );
        assert_eq!(config.python.path, ["/srv/app", "/srv/lib"]);
        assert_eq!(config.umask, Some(0o027));
        assert_eq!(config.limits.request_line, 4094);
        assert_eq!(config.limits.request_field_size, 100);
        assert_eq!(config.limits.max_connections, 50);
        assert!(config.preload_app);
        assert_eq!(config.python.interface.as_str(), "wsgi");
        assert_eq!(config.env["DJANGO_SETTINGS_MODULE"], "mysite.settings");
        assert_eq!(config.env["EMPTY"], "");
        let bad = Cli::parse_args(["forkd", "-e", "NOEQUALS", "hello"]).unwrap();
        let err = crate::config::load(None, bad.overrides(), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--env") && err.contains("KEY=VALUE"), "{err}");
        let gevent = Cli::parse_args(["forkd", "-k", "gevent", "app:app"]).unwrap();
        assert!(
            gevent.warnings[0].contains("gevent"),
            "{:?}",
            gevent.warnings
        );
        assert!(
            config.to_toml().contains("10.0.0.0/8"),
            "{}",
            config.to_toml()
        );
        assert_eq!(
            config.tls.certfile.as_deref(),
            Some(std::path::Path::new("/etc/c.pem"))
        );
        // A bad value names the option as given.
        let bad = Cli::parse_args(["forkd", "--worker-connections", "none"]).unwrap();
        let err = crate::config::load(None, bad.overrides(), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--worker-connections"), "{err}");
    }

    #[test]
    fn options_map_to_their_keys_as_given() {
        let cli = Cli::parse_args([
            "forkd",
            "-w",
            "4",
            "-b",
            "127.0.0.1:1",
            "--bind",
            "unix:/a",
            "-p",
            "/x.pid",
            "--log-level",
            "debug",
            "echo",
            "--",
            "sleep",
            "1",
        ])
        .unwrap();
        let given: Vec<(&str, &str, Value)> = cli
            .overrides()
            .iter()
            .map(|g| (g.option.as_str(), g.key, g.value.clone()))
            .collect();
        let strings = |items: &[&str]| {
            Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
        };
        assert_eq!(
            given,
            vec![
                ("APP", "app", Value::String("echo".into())),
                ("--bind", "bind", strings(&["127.0.0.1:1", "unix:/a"])),
                ("--workers", "workers", Value::String("4".into())),
                ("--pid", "pidfile", Value::String("/x.pid".into())),
                ("--log-level", "log.level", Value::String("debug".into())),
                ("-- COMMAND", "exec.command", strings(&["sleep", "1"])),
            ]
        );
        assert!(Cli::parse_args(["forkd"]).unwrap().overrides().is_empty());
    }
}
