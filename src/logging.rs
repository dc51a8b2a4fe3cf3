//! The error log: tracing events as text or JSON lines to stderr or a file that USR1
//! reopens (for logrotate). One `write` per line, files opened `O_APPEND`, so lines from
//! the master and its workers never interleave. The level can change on HUP.

use crate::config::{LogConfig, LogFormat, LogLevel, LogTarget};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Layer, Registry};

enum Sink {
    Stderr,
    File { path: PathBuf, file: File },
}

struct ErrorLog {
    sink: Mutex<Sink>,
}

static ERROR_LOG: OnceLock<ErrorLog> = OnceLock::new();
static LEVEL: OnceLock<reload::Handle<LevelFilter, Registry>> = OnceLock::new();

fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn sink_for(target: &LogTarget) -> io::Result<Sink> {
    match target {
        LogTarget::File(path) => {
            let file = open_append(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open error_log {}: {e}", path.display()),
                )
            })?;
            Ok(Sink::File {
                path: path.clone(),
                file,
            })
        }
        _ => Ok(Sink::Stderr),
    }
}

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// Installs the global subscriber. Call once, in the master, before forking.
pub fn init(config: &LogConfig) -> io::Result<()> {
    let sink = sink_for(&config.error_log)?;
    let log = ERROR_LOG.get_or_init(|| ErrorLog {
        sink: Mutex::new(Sink::Stderr),
    });
    if let Ok(mut guard) = log.sink.lock() {
        *guard = sink;
    }
    let (filter, handle) = reload::Layer::new(level_filter(config.level));
    let _ = LEVEL.set(handle);
    let format = match config.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_writer(Writer)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(false)
            .with_writer(Writer)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(format)
        .try_init()
        .map_err(io::Error::other)
}

/// Applies a reloaded config's level and error log target (format stays as started).
pub fn reconfigure(config: &LogConfig) -> io::Result<()> {
    if let Some(handle) = LEVEL.get() {
        let _ = handle.modify(|filter| *filter = level_filter(config.level));
    }
    let sink = sink_for(&config.error_log)?;
    if let Some(log) = ERROR_LOG.get() {
        if let Ok(mut guard) = log.sink.lock() {
            *guard = sink;
        }
    }
    Ok(())
}

/// Reopens the error log file at its path (after logrotate moved it).
pub fn reopen() {
    let Some(log) = ERROR_LOG.get() else { return };
    if let Ok(mut guard) = log.sink.lock() {
        if let Sink::File { path, file } = &mut *guard {
            match open_append(path) {
                Ok(new) => *file = new,
                Err(e) => eprintln!("forkd: cannot reopen {}: {e}", path.display()),
            }
        }
    }
}

pub fn flush() {
    let _ = io::stderr().flush();
}

/// The tracing writer: one formatted line per write.
struct Writer;

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(log) = ERROR_LOG.get() else {
            return io::stderr().write(buf);
        };
        let mut guard = log
            .sink
            .lock()
            .map_err(|_| io::Error::other("log lock poisoned"))?;
        match &mut *guard {
            Sink::Stderr => io::stderr().write_all(buf)?,
            Sink::File { file, .. } => file.write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Writer {
    type Writer = Writer;
    fn make_writer(&'a self) -> Writer {
        Writer
    }
}
