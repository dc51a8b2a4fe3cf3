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
//!   runtime while the host's loop runs on the main thread (see `worker::run`);
//! - a [`HostedPreloader`] for `preload_app`: in a generation's zygote (a child of the
//!   master, see `master::zygote`) it imports the app once, before any worker is forked
//!   from it; the loader then boots each worker with the app already imported.

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
    /// Imports a `MODULE:ATTR` app in a zygote (`preload_app`); without it
    /// `preload_app = true` is a config error.
    pub preload: Option<HostedPreloader>,
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

/// Imports a hosted app in a generation's zygote (`preload_app`), on its main thread,
/// after `chdir`, `[env]` and the privilege drop: the workers forked from it later get
/// the imported app from the host's own state (the loader looks there first). An error
/// (the import failed, or it started threads or an event loop, which a fork would copy
/// half-way) is the generation's: it fails to boot.
pub type HostedPreloader = Arc<dyn Fn(&HostedPreload<'_>) -> Result<(), String> + Send + Sync>;

/// What the preloader gets: the app's name and its generation's configuration.
pub struct HostedPreload<'a> {
    /// `MODULE:ATTR` (or `MODULE:ATTR()`), as configured.
    pub spec: &'a str,
    pub config: &'a Config,
}

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
    /// Called on a thread of its own when the worker is told to stop at once (QUIT or
    /// INT: Gunicorn's `worker_int`), before it exits; the worker waits for it at most
    /// [`INTERRUPTED_BOUND`], then exits anyway.
    pub interrupted: Option<Box<dyn FnOnce() + Send>>,
    /// The server runtime's threads, when not `threads`: a WSGI app's pool takes
    /// `threads` for itself and the server keeps one runtime thread.
    pub server_threads: Option<usize>,
}

/// How long a worker told to stop at once waits for [`Booted::interrupted`].
pub const INTERRUPTED_BOUND: Duration = Duration::from_secs(1);

/// The variables the master gives its hook runner (`master::hooks`): its effective
/// `log.level`, `log.format` and `log.error_log`, by their `FORKD_*` names.
pub const HOOK_RUNNER_LOG_VARS: [&str; 3] =
    ["FORKD_LOG_LEVEL", "FORKD_LOG_FORMAT", "FORKD_LOG_ERROR_LOG"];

/// In the hook runner (a process of the host's, started by the master): forkd's error
/// log set up as `log` says (the config the host loaded from [`HOOK_RUNNER_LOG_VARS`]),
/// written directly (nothing queued, as in a worker).
pub fn init_error_log(log: &crate::config::LogConfig) -> Result<(), String> {
    crate::shared::logging::init(log).map_err(|e| format!("cannot open the error log: {e}"))?;
    crate::shared::logging::in_worker();
    Ok(())
}

/// Reopens the error log file (USR1), in a host's process that set it up.
pub fn reopen_logs() {
    crate::shared::logging::reopen();
}

/// A `MODULE:ATTR` app, with the loader that serves it.
#[derive(Clone)]
pub struct HostedProgram {
    pub spec: String,
    pub loader: HostedLoader,
    /// Set with `preload_app`: the app is imported once per generation, in its zygote.
    pub preload: Option<HostedPreloader>,
}

/// Whether an `app` value names a Python ASGI app (`MODULE:ATTR`) rather than a
/// built-in app.
pub fn is_python_app(name: &str) -> bool {
    name.contains(':')
}

/// Python identifiers joined by dots (`app.main`, `_pkg.mod_2`): a module path or an
/// attribute path; not empty, no empty part.
pub fn is_dotted_name(text: &str) -> bool {
    text.split('.').all(|part| {
        let mut chars = part.chars();
        chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
            && chars.all(|c| c.is_alphanumeric() || c == '_')
    })
}

/// Gunicorn's `MODULE` without `:ATTR`: `MODULE:application`, for a dotted module path
/// (`myproject.wsgi`), or a single name that is a module in one of `dirs` (`NAME.py`
/// or `NAME/__init__.py`: a bare word is otherwise taken for a mistyped built-in app).
/// None for anything else (a `:`, a `.py` file name, a path).
pub fn module_alone(name: &str, dirs: &[std::path::PathBuf]) -> Option<String> {
    if name.contains(':') || !is_dotted_name(name) || name.ends_with(".py") {
        return None;
    }
    let found = |dir: &std::path::PathBuf| {
        dir.join(format!("{name}.py")).is_file() || dir.join(name).join("__init__.py").is_file()
    };
    (name.contains('.') || dirs.iter().any(found)).then(|| format!("{name}:application"))
}

/// Checks the shape of `MODULE:ATTR` / `MODULE:ATTR()` (without importing anything).
pub fn check_python_spec(spec: &str) -> Result<(), String> {
    let (module, attr) = spec.split_once(':').unwrap_or((spec, ""));
    let attr = attr.strip_suffix("()").unwrap_or(attr);
    if is_dotted_name(module) && is_dotted_name(attr) {
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
    fn a_module_alone_is_its_application_as_in_gunicorn() {
        let dir = std::env::temp_dir().join(format!("forkd-module-alone-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("pkg")).unwrap();
        std::fs::write(dir.join("wsgi.py"), "").unwrap();
        std::fs::write(dir.join("pkg/__init__.py"), "").unwrap();
        let dirs = [dir.clone()];
        assert_eq!(
            module_alone("myproject.wsgi", &dirs).as_deref(),
            Some("myproject.wsgi:application")
        );
        assert_eq!(
            module_alone("wsgi", &dirs).as_deref(),
            Some("wsgi:application")
        );
        assert_eq!(
            module_alone("pkg", &dirs).as_deref(),
            Some("pkg:application")
        );
        // A bare word that is no module here: a mistyped built-in app, say.
        assert_eq!(module_alone("helo", &dirs), None);
        for not_a_module in ["app:app", "main.py", "app/main", "a..b", "1abc.x", ""] {
            assert_eq!(module_alone(not_a_module, &dirs), None, "{not_a_module}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

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
