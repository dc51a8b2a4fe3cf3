//! The error log: tracing events as text or JSON lines to stderr or a file that USR1
//! reopens (for logrotate). One `write` per line, files opened `O_APPEND`, so lines from
//! the master and its workers never interleave. The level can change on HUP.
//!
//! When stderr is the systemd journal (`JOURNAL_STREAM` names it), each line starts with
//! its syslog priority (`<3>` for errors, sd-daemon(3)), so `journalctl -p err` works,
//! and text lines leave the timestamp to the journal.

use crate::config::{LogConfig, LogFormat, LogLevel, LogTarget};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use tracing::{Level, Metadata};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
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
/// Whether stderr is the journal (checked once, at start).
static STDERR_IS_JOURNAL: OnceLock<bool> = OnceLock::new();
/// Whether the error log currently goes to the journal: stderr is it, and the error log
/// is stderr (a HUP can switch between stderr and a file).
static TO_JOURNAL: AtomicBool = AtomicBool::new(false);

/// Whether fd 2 is the stream systemd connected to the journal: `JOURNAL_STREAM` holds
/// its device and inode numbers ("DEV:INO"). A stderr redirected elsewhere by a wrapper
/// has other numbers, and then gets plain lines.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(2) else {
        return false;
    };
    dev.parse::<libc::dev_t>().ok() == Some(stat.st_dev)
        && ino.parse::<libc::ino_t>().ok() == Some(stat.st_ino)
}

fn set_sink(log: &ErrorLog, sink: Sink) {
    let journal = matches!(sink, Sink::Stderr) && *STDERR_IS_JOURNAL.get_or_init(stderr_is_journal);
    if let Ok(mut guard) = log.sink.lock() {
        *guard = sink;
        TO_JOURNAL.store(journal, Ordering::Relaxed);
    }
}

/// The syslog priority of a tracing level, for the journal's `<N>` line prefix.
fn syslog_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Wall-clock timestamps for text lines, except in the journal, which stamps every line
/// itself.
struct Timestamp;

impl FormatTime for Timestamp {
    fn format_time(&self, w: &mut format::Writer<'_>) -> std::fmt::Result {
        if TO_JOURNAL.load(Ordering::Relaxed) {
            Ok(())
        } else {
            SystemTime.format_time(w)
        }
    }
}

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
    set_sink(log, sink);
    let (filter, handle) = reload::Layer::new(level_filter(config.level));
    let _ = LEVEL.set(handle);
    let format = match config.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_writer(MakeLogWriter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_timer(Timestamp)
            .with_target(false)
            .with_ansi(false)
            .with_writer(MakeLogWriter)
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
        set_sink(log, sink);
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

/// The tracing writer: one formatted line per write, with the event's level for the
/// journal's priority prefix.
struct Writer {
    level: Option<Level>,
}

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
            Sink::Stderr if TO_JOURNAL.load(Ordering::Relaxed) => {
                let priority = self.level.as_ref().map_or(6, syslog_priority);
                // Without its timestamp a text line starts with the spaces that followed
                // it and those that right-align the level.
                let line = buf.trim_ascii_start();
                let mut prefixed = format!("<{priority}>").into_bytes();
                prefixed.extend_from_slice(line);
                io::stderr().write_all(&prefixed)?
            }
            Sink::Stderr => io::stderr().write_all(buf)?,
            Sink::File { file, .. } => file.write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Hands the fmt layer a writer per event, knowing the event's level.
struct MakeLogWriter;

impl<'a> MakeWriter<'a> for MakeLogWriter {
    type Writer = Writer;
    fn make_writer(&'a self) -> Writer {
        Writer { level: None }
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Writer {
        Writer {
            level: Some(*meta.level()),
        }
    }
}

/// Text from a worker (its boot-failure message, an exec worker's output) made safe for
/// one error log line: a worker may be compromised, and must not forge the master's
/// lines (a newline and a made-up line, a journal priority such as `<0>`) or send the
/// reader's terminal escape sequences. Control characters (newlines included) and bytes
/// that are not UTF-8 become `\xHH`, a backslash `\\`, so the result is one unambiguous
/// line; longer than `max` bytes, it is cut and ends with `...`.
pub fn escape_untrusted(bytes: &[u8], max: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len().min(max) + 8);
    let mut pieces = bytes.utf8_chunks().flat_map(|chunk| {
        let valid = chunk.valid().chars().map(Ok);
        valid.chain(chunk.invalid().iter().map(|b| Err(*b)))
    });
    for piece in pieces.by_ref() {
        match piece {
            Ok('\\') => out.push_str("\\\\"),
            Ok(c) if c.is_control() => {
                let mut utf8 = [0u8; 4];
                for b in c.encode_utf8(&mut utf8).bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
            Ok(c) => out.push(c),
            Err(b) => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
        if out.len() >= max {
            break;
        }
    }
    if pieces.next().is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_untrusted;

    #[test]
    fn untrusted_text_stays_one_plain_line() {
        assert_eq!(escape_untrusted(b"plain text: ok", 100), "plain text: ok");
        assert_eq!(
            escape_untrusted(b"a\n<0>forged\r\x1b[2J\\x", 100),
            "a\\x0a<0>forged\\x0d\\x1b[2J\\\\x"
        );
        assert_eq!(
            escape_untrusted("caf\u{e9} \u{85}".as_bytes(), 100),
            "caf\u{e9} \\xc2\\x85"
        );
        assert_eq!(
            escape_untrusted(b"bad \xff\xfe utf-8", 100),
            "bad \\xff\\xfe utf-8"
        );
        assert_eq!(escape_untrusted(&[b'x'; 50], 10), "xxxxxxxxxx...");
    }
}
