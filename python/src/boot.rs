//! A worker's start, on its main thread just after the fork: `forkd._worker.boot`
//! (Python) routes print/stderr to the error log, `logging` records to it as records
//! (`pylog`) and applies `[python] log_config`, puts `[python] path` first on
//! `sys.path`, makes the event loop, imports the app and runs the lifespan startup; then
//! the [`Bridge`](crate::bridge::Bridge) is wired to the loop and the worker's server
//! thread starts (forkd's `worker::serve_hosted`). A WSGI app goes to `wsgi::load`.

use crate::bridge::{Bridge, PyApp};
use crate::inbox::Inbox;
use forkd::hosted::{Booted, HostedBoot};
use forkd::shared::scoreboard::Slot;
use pyo3::prelude::*;
use std::sync::{Arc, OnceLock};

/// This worker's scoreboard slot, stamped by the event loop (`stamp`).
static SLOT: OnceLock<&'static Slot> = OnceLock::new();

/// Called by the event loop every `progress_every` (`loop.call_later`): a blocked loop
/// stops stamping, and the master's `timeout` replaces the worker.
#[pyfunction]
pub fn stamp() {
    if let Some(slot) = SLOT.get() {
        slot.report_progress();
    }
}

/// One line the app printed (`stderr`: to sys.stderr), into
/// forkd's error log with the worker's pid.
#[pyfunction]
pub fn log_line(stderr: bool, line: &str) {
    let line = log_text(line);
    let pid = std::process::id();
    if stderr {
        tracing::warn!(pid, "{line}");
    } else {
        tracing::info!(pid, "{line}");
    }
}

/// A line from the app as the error log writes it: control characters (an escape
/// sequence, a carriage return, a journal priority's newline) as `\xHH`, a backslash
/// doubled, as forkd writes any text it did not make (`escape_untrusted`), so the app
/// cannot forge a line of the master's or drive the reader's terminal. Not cut: the
/// app's own lines are as long as it makes them.
fn log_text(line: &str) -> String {
    forkd::hosted::escape_untrusted(line.as_bytes(), usize::MAX)
}

/// The [`HostedLoader`](forkd::hosted::HostedLoader) for `MODULE:ATTR` apps.
pub fn load(boot: &HostedBoot<'_>) -> Result<Booted, String> {
    let _ = SLOT.set(boot.slot);
    Python::with_gil(|py| load_with(py, boot).map_err(|e| describe(py, &e)))
}

fn load_with(py: Python<'_>, boot: &HostedBoot<'_>) -> PyResult<Booted> {
    let sys = py.import("sys")?;
    let version: String = sys.getattr("version")?.extract()?;
    let prefix: String = sys.getattr("prefix")?.extract()?;
    // A worker forked from its generation's zygote (`preload_app`) imports nothing.
    let how = if boot.config.preload_app {
        "starting (the app imported by the zygote)"
    } else {
        "loading"
    };
    tracing::info!(
        pid = std::process::id(),
        "python {} ({prefix}) {how} {}",
        version.split_whitespace().next().unwrap_or(&version),
        boot.spec
    );
    let python = &boot.config.python;
    let paths = absolute_paths(boot.config);
    let worker = py.import("forkd._worker")?;
    // `[env]` was set with setenv(3) after the fork; Python's os.environ is a copy made
    // when the interpreter started, in the master.
    let env = env_pairs(boot.config);
    // A Gunicorn config file (`-c gunicorn.conf.py`): its worker hooks run in the worker.
    let hooks_file = boot
        .config
        .config_file
        .as_deref()
        .filter(|p| forkd::config::gunicorn::is_python_config(p))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let hook_specs: Vec<(String, String)> = python
        .hooks
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let booted = worker.call_method1(
        "boot",
        (
            boot.spec,
            env,
            paths,
            python.lifespan.as_str(),
            boot.progress_every.as_secs_f64(),
            crate::pylog::python_level(boot.config.log.level),
            python.log_config.as_str(),
            hooks_file,
            hook_specs,
            python.interface.as_str(),
        ),
    )?;
    // A WSGI app: (None, app, None, None, None), served from a thread pool.
    if booted.get_item(0)?.is_none() {
        let interrupted = interrupted_hook(py)?;
        return crate::wsgi::load(py, boot, booted.get_item(1)?.unbind(), interrupted);
    }
    let (event_loop, app, lifespan, state, stopped): (
        PyObject,
        PyObject,
        PyObject,
        PyObject,
        PyObject,
    ) = booted.extract()?;
    let inbox = Arc::new(Inbox::new().map_err(|e| {
        pyo3::exceptions::PyOSError::new_err(format!("cannot make the eventfd: {e}"))
    })?);
    let (outbox, answers) = tokio::sync::mpsc::unbounded_channel();
    let bridge = Bridge::new(
        py,
        inbox.clone(),
        outbox,
        &event_loop,
        app,
        state,
        stopped,
        &python.root_path,
    )?;
    let bridge = Py::new(py, bridge)?;
    event_loop.call_method1(py, "add_reader", (inbox.fd(), bridge.getattr(py, "wake")?))?;
    let interrupted = interrupted_hook(py)?;
    let run = {
        let worker = worker.unbind();
        move || -> Result<(), String> {
            Python::with_gil(|py| {
                worker
                    .call_method1(py, "run", (event_loop, lifespan, stopped_of(py, &bridge)))
                    .map(drop)
                    .map_err(|e| describe(py, &e))
            })
        }
    };
    let stop = {
        let inbox = inbox.clone();
        move || inbox.stop()
    };
    Ok(Booted {
        app: Arc::new(PyApp::new(inbox, answers, python.websocket_grace)),
        run: Box::new(run),
        stop: Box::new(stop),
        interrupted,
        server_threads: None,
    })
}

/// Gunicorn's `worker_int` (`forkd._worker.interrupted`) for [`Booted::interrupted`],
/// when the config has one (the GIL is taken only then). ASGI and WSGI workers alike.
pub(crate) fn interrupted_hook(py: Python<'_>) -> PyResult<Option<Box<dyn FnOnce() + Send>>> {
    let worker = py.import("forkd._worker")?;
    let defined: bool = worker
        .call_method1("_hook_defined", ("worker_int",))?
        .extract()?;
    Ok(defined.then(|| {
        let worker = worker.unbind();
        Box::new(move || {
            Python::with_gil(|py| {
                if let Err(e) = worker.call_method0(py, "interrupted") {
                    tracing::warn!(pid = std::process::id(), "worker_int: {}", describe(py, &e));
                }
            })
        }) as Box<dyn FnOnce() + Send>
    }))
}

fn stopped_of(py: Python<'_>, bridge: &Py<Bridge>) -> PyObject {
    bridge.borrow(py).stopped.clone_ref(py)
}

/// `[python] path`, each made absolute (from the process's directory, the generation's
/// `chdir`), as `forkd._worker` puts them first on `sys.path`.
pub(crate) fn absolute_paths(config: &forkd::config::Config) -> Vec<String> {
    config
        .python
        .path
        .iter()
        .map(|p| {
            std::path::absolute(p)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| p.clone())
        })
        .collect()
}

/// `[env]`, for Python's `os.environ` (a copy made when the interpreter started).
pub(crate) fn env_pairs(config: &forkd::config::Config) -> Vec<(String, String)> {
    config
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A Python exception as one line for the boot failure message (the traceback went to
/// the error log already, from Python).
pub(crate) fn describe(py: Python<'_>, e: &PyErr) -> String {
    let kind = e
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".to_string());
    let message = e.value(py).to_string();
    if kind == "BootError" {
        message
    } else if message.is_empty() {
        kind
    } else {
        format!("{kind}: {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::log_text;

    #[test]
    fn the_apps_lines_are_escaped_as_forkds_own() {
        assert_eq!(log_text("plain: ok"), "plain: ok");
        assert_eq!(
            log_text("a\r<0>b\x1b[2J\tc\\d"),
            "a\\x0d<0>b\\x1b[2J\\x09c\\\\d"
        );
        assert_eq!(log_text("caf\u{e9} \u{85}"), "caf\u{e9} \\xc2\\x85");
        let long = "x".repeat(100_000);
        assert_eq!(log_text(&long), long);
    }
}
