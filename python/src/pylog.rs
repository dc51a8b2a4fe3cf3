//! Python's `logging` in a worker, as forkd's own log records: `forkd._worker` installs
//! a `logging.Handler` whose `emit` calls [`log_record`], so one Python record (its
//! level, logger name, message and traceback) is one record of forkd's error log, at its
//! own level, rather than lines through stderr. [`python_level`] gives the root logger
//! the level of forkd's `log.level`, so that records forkd would drop are not even
//! formatted by Python.

use forkd::config::LogLevel;
use pyo3::prelude::*;
use tracing::Level;

/// The tracing level of a Python logging level number (custom levels included):
/// CRITICAL and ERROR -> error, WARNING -> warn, INFO -> info, DEBUG -> debug, below
/// DEBUG (NOTSET included) -> trace.
pub fn tracing_level(levelno: i64) -> Level {
    match levelno {
        40.. => Level::ERROR,
        30..=39 => Level::WARN,
        20..=29 => Level::INFO,
        10..=19 => Level::DEBUG,
        _ => Level::TRACE,
    }
}

/// The Python level of the root logger for forkd's `log.level`: the lowest level whose
/// records forkd writes (1 for trace: every record but NOTSET's 0, which Python's root
/// treats as "everything" anyway).
pub fn python_level(level: LogLevel) -> i64 {
    match level {
        LogLevel::Error => 40,
        LogLevel::Warn => 30,
        LogLevel::Info => 20,
        LogLevel::Debug => 10,
        LogLevel::Trace => 1,
    }
}

/// The message of a record as the error log writes it: on one line, control characters
/// as `\xHH` (forkd's `escape_untrusted`), so that an app cannot forge a line.
fn message_text(message: &str) -> String {
    forkd::hosted::escape_untrusted(message.as_bytes(), usize::MAX)
}

/// A traceback (or stack) as one field: each of its lines escaped as a message is, the
/// lines kept apart by `\n`, which the log's format then writes as the two characters
/// `\n` (inside the quoted text field, or the JSON string): one record, one line.
fn traceback_text(text: &str) -> String {
    text.trim_end_matches('\n')
        .split('\n')
        .map(|line| forkd::hosted::escape_untrusted(line.as_bytes(), usize::MAX))
        .collect::<Vec<_>>()
        .join("\n")
}

/// In the master's hook runner (`python -m forkd._gunicorn_hooks`, a process of its own):
/// forkd's error log as the master's (same destination, format and level, from the
/// variables the master gave it), so that the hooks' `server.log` records and errors
/// are records of it. Returns the root Python logger's level for that `log.level`.
#[pyfunction]
pub fn init_runner_log() -> PyResult<i64> {
    let env: Vec<(String, String)> = forkd::hosted::HOOK_RUNNER_LOG_VARS
        .iter()
        .filter_map(|var| std::env::var(var).ok().map(|v| (var.to_string(), v)))
        .collect();
    let config = forkd::config::load(None, &[], &env)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    forkd::hosted::init_error_log(&config.log).map_err(pyo3::exceptions::PyOSError::new_err)?;
    Ok(python_level(config.log.level))
}

/// USR1 in the hook runner: reopen the error log file, as the master and workers do.
#[pyfunction]
pub fn reopen_logs() {
    forkd::hosted::reopen_logs();
}

/// One record of Python's `logging` into forkd's error log (target `python`), with the
/// worker's pid, the logger's name (`logger`) and, when there is one, the traceback
/// and stack (`exc_info`).
#[pyfunction]
#[pyo3(signature = (levelno, logger, message, exc_info=None))]
pub fn log_record(levelno: i64, logger: &str, message: &str, exc_info: Option<&str>) {
    let pid = std::process::id();
    let logger = message_text(logger);
    let message = message_text(message);
    let exc_info = exc_info.map(traceback_text);
    let exc_info = exc_info.as_deref();
    // tracing's macros take the level as a constant: one arm each.
    macro_rules! emit {
        ($level:expr) => {
            tracing::event!(target: "python", $level, pid, logger = %logger, exc_info, "{message}")
        };
    }
    match tracing_level(levelno) {
        Level::ERROR => emit!(Level::ERROR),
        Level::WARN => emit!(Level::WARN),
        Level::INFO => emit!(Level::INFO),
        Level::DEBUG => emit!(Level::DEBUG),
        _ => emit!(Level::TRACE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_levels_map_to_tracing_levels() {
        for (levelno, level) in [
            (50, Level::ERROR),
            (45, Level::ERROR),
            (40, Level::ERROR),
            (30, Level::WARN),
            (25, Level::INFO),
            (20, Level::INFO),
            (10, Level::DEBUG),
            (5, Level::TRACE),
            (0, Level::TRACE),
            (-3, Level::TRACE),
            (1000, Level::ERROR),
        ] {
            assert_eq!(tracing_level(levelno), level, "{levelno}");
        }
    }

    #[test]
    fn the_roots_level_lets_through_exactly_what_forkd_writes() {
        for level in [
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
            LogLevel::Trace,
        ] {
            let threshold = python_level(level);
            let most = match level {
                LogLevel::Error => Level::ERROR,
                LogLevel::Warn => Level::WARN,
                LogLevel::Info => Level::INFO,
                LogLevel::Debug => Level::DEBUG,
                LogLevel::Trace => Level::TRACE,
            };
            // tracing orders levels by verbosity: kept when no more verbose than `most`.
            let kept = |levelno: i64| tracing_level(levelno) <= most;
            assert!(kept(threshold), "{level:?}");
            assert!(!kept(threshold - 1) || threshold <= 1, "{level:?}");
        }
    }

    #[test]
    fn tracebacks_keep_their_lines_and_escape_the_rest() {
        assert_eq!(
            traceback_text("Traceback:\n  File \"a\x1b.py\"\nValueError: x\r\n"),
            "Traceback:\n  File \"a\\x1b.py\"\nValueError: x\\x0d"
        );
        assert_eq!(message_text("two\nlines"), "two\\x0alines");
    }
}
