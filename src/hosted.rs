//! Hooks for a host process that runs forkd inside another language's runtime: the
//! `forkd` Python package (`python/`) calls [`main_with_host`](crate::main_with_host)
//! from its interpreter, so the master is a Python process. The core knows nothing of
//! Python; the host gives it:
//!
//! - [`ForkHooks`], called around every `fork()` of a worker (Python's
//!   `PyOS_BeforeFork` / `PyOS_AfterFork_Parent` / `PyOS_AfterFork_Child`);
//! - a [`HostedLoader`] for apps named `MODULE:ATTR`: in each worker, after the fork and
//!   on the main thread (which the host's event loop needs), it imports the app and
//!   runs its startup; the worker then serves on a second thread with its own tokio
//!   runtime while the host's loop runs on the main thread (see `worker::run`).

/// How forkd writes text it did not make into its error log (one line, control
/// characters as `\xHH`): a host writes its app's output lines the same way.
pub use crate::shared::escape::escape_untrusted;

use crate::app::App;
use crate::config::Config;
use crate::shared::scoreboard::Slot;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What a host embedding forkd provides (all optional: the default is the plain binary).
#[derive(Clone, Default)]
pub struct Host {
    pub fork: Option<ForkHooks>,
    /// Serves `MODULE:ATTR` apps; without it such an app is a config error.
    pub loader: Option<HostedLoader>,
    /// How USR2 starts this program again (the interpreter and its script), when it is
    /// not `current_exe()` with the process's arguments.
    pub relaunch: Option<(PathBuf, Vec<OsString>)>,
    /// The interpreter that reads a Gunicorn config file (`-c gunicorn.conf.py`) in a
    /// child (`python -m forkd._gunicorn_config FILE`); without it such a file is a
    /// config error.
    pub python: Option<PathBuf>,
}

/// Called around each worker's `fork()` in the master (and after it, in the child).
#[derive(Clone, Copy)]
pub struct ForkHooks {
    pub before: fn(),
    pub parent: fn(),
    pub child: fn(),
}

/// Boots a hosted app in a worker (see the module docs).
pub type HostedLoader = Arc<dyn Fn(&HostedBoot<'_>) -> Result<Booted, String> + Send + Sync>;

/// What the loader gets: the app's name and the worker's context.
pub struct HostedBoot<'a> {
    /// `MODULE:ATTR` (or `MODULE:ATTR()`), as configured.
    pub spec: &'a str,
    pub config: &'a Config,
    /// The worker's scoreboard slot: the host's event loop stamps progress into it
    /// (`Slot::report_progress`) every `progress_every`, so that `timeout` sees a
    /// blocked loop.
    pub slot: &'static Slot,
    pub progress_every: Duration,
}

/// A booted hosted app.
pub struct Booted {
    /// What the worker's hyper server calls, on the server thread.
    pub app: Arc<dyn App>,
    /// Runs the host's event loop on the main thread until `stop` is called, then the
    /// app's shutdown; an error is logged and makes the worker exit non-zero.
    pub run: Box<dyn FnOnce() -> Result<(), String>>,
    /// Called on the server thread once the worker's drain is over.
    pub stop: Box<dyn FnOnce() + Send>,
    /// The server runtime's threads, when not `threads`: a WSGI app's pool takes
    /// `threads` for itself and the server keeps one runtime thread.
    pub server_threads: Option<usize>,
}

/// A `MODULE:ATTR` app, with the loader that serves it.
#[derive(Clone)]
pub struct HostedProgram {
    pub spec: String,
    pub loader: HostedLoader,
}

/// Whether an `app` value names a Python ASGI app (`MODULE:ATTR`) rather than a
/// built-in app.
pub fn is_python_app(name: &str) -> bool {
    name.contains(':')
}

/// Checks the shape of `MODULE:ATTR` / `MODULE:ATTR()` (without importing anything).
pub fn check_python_spec(spec: &str) -> Result<(), String> {
    let (module, attr) = spec.split_once(':').unwrap_or((spec, ""));
    let attr = attr.strip_suffix("()").unwrap_or(attr);
    let dotted_names = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|part| {
                let mut chars = part.chars();
                chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
                    && chars.all(|c| c.is_alphanumeric() || c == '_')
            })
    };
    if dotted_names(module) && dotted_names(attr) {
        Ok(())
    } else {
        Err(format!(
            "key `app`: {spec:?} is not MODULE:ATTR (for example \"app.main:app\" or \"app.main:create_app()\")"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_specs() {
        assert!(check_python_spec("app.main:app").is_ok());
        assert!(check_python_spec("app:create_app()").is_ok());
        assert!(check_python_spec("app:state.app").is_ok());
        assert!(check_python_spec("app:").is_err());
        assert!(check_python_spec(":app").is_err());
        assert!(check_python_spec("a b:app").is_err());
        assert!(check_python_spec("app:make(1)").is_err());
    }
}
