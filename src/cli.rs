//! The command line: clap's parser for forkd's options, and the mapping of each option to
//! the config key it overrides (values are validated by the config module, so a bad
//! option gets the same message as a bad key, naming the option).

use clap::Parser;
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
    /// Signal the running master named by the pidfile.
    #[arg(short = 's', long = "signal", value_name = "SIGNAL",
          value_parser = ["reload", "stop", "quit", "reopen", "upgrade", "incr", "decr"])]
    pub signal: Option<String>,
    /// Address to listen on (repeatable): HOST:PORT, [::1]:PORT, unix:PATH, fd://N.
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
    #[arg(long, value_name = "DURATION")]
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
    #[arg(long, value_name = "TARGET")]
    pub access_log: Option<String>,
    /// Error log: "-" (stderr) or a file.
    #[arg(long, value_name = "TARGET")]
    pub error_log: Option<String>,
    /// App to serve: a built-in one (hello | echo) or a Python ASGI app, MODULE:ATTR.
    #[arg(value_name = "APP")]
    pub app: Option<String>,
    /// Run COMMAND as each worker (exec workers), after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl Cli {
    pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Cli::try_parse_from(args)
    }

    /// The options given, as (option name, config key, value), lowest precedence first.
    pub fn overrides(&self) -> Vec<(&'static str, &'static str, Value)> {
        let mut out = Vec::new();
        let text = |v: &Option<String>| v.clone().map(Value::String);
        let single: [(&'static str, &'static str, Option<Value>); 17] = [
            ("--workers", "workers", text(&self.workers)),
            ("--threads", "threads", text(&self.threads)),
            ("--timeout", "timeout", text(&self.timeout)),
            (
                "--graceful-timeout",
                "graceful_timeout",
                text(&self.graceful_timeout),
            ),
            ("--keepalive", "keepalive", text(&self.keepalive)),
            ("--max-requests", "max_requests", text(&self.max_requests)),
            (
                "--max-requests-jitter",
                "max_requests_jitter",
                text(&self.max_requests_jitter),
            ),
            ("--backlog", "backlog", text(&self.backlog)),
            ("--pid", "pidfile", text(&self.pid)),
            ("--user", "user", text(&self.user)),
            ("--group", "group", text(&self.group)),
            ("--log-level", "log.level", text(&self.log_level)),
            ("--log-format", "log.format", text(&self.log_format)),
            ("--access-log", "log.access_log", text(&self.access_log)),
            ("--error-log", "log.error_log", text(&self.error_log)),
            ("APP", "app", text(&self.app)),
            (
                "--bind",
                "bind",
                (!self.bind.is_empty())
                    .then(|| Value::Array(self.bind.iter().cloned().map(Value::String).collect())),
            ),
        ];
        for (option, key, value) in single {
            if let Some(value) = value {
                out.push((option, key, value));
            }
        }
        if !self.command.is_empty() {
            let words = self.command.iter().cloned().map(Value::String).collect();
            out.push(("-- COMMAND", "exec.command", Value::Array(words)));
        }
        out
    }
}
