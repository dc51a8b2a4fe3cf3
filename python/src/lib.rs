//! `forkd._native`: forkd as a Python extension module. The `forkd` console script
//! calls [`main`], which runs forkd's own entry point inside the interpreter: the master
//! is this (single-threaded) Python process, which imports nothing of the app and forks
//! the workers; each worker imports the ASGI app after the fork and serves it through
//! forkd's hyper stack (see `bridge/` for how requests cross into Python, `boot.rs`
//! for the worker's start).
//!
//! The modules, from the bottom up: `event` (what crosses from the server thread to the
//! loop), `inbox` (how it crosses, and wakes the loop), `ids`, `awaitable` and `pybytes`
//! (shared by the HTTP and WebSocket sides), `ws` (WebSockets), `pylog` (Python's
//! `logging` into forkd's log), `bridge` (HTTP requests
//! and the loop's dispatch of every event), `wsgi` (WSGI apps from a thread pool),
//! `boot` (a worker's start), `preload` (the app's import in a zygote, `preload_app`),
//! `fork` (the interpreter's fork hooks).

// `unsafe` only where a module needs it (marked `#[allow(unsafe_code)]` below); every
// block says why it is sound (clippy's `undocumented_unsafe_blocks`, in Cargo.toml).
#![deny(unsafe_code)]

mod awaitable;
mod boot;
mod bridge;
mod event;
#[allow(unsafe_code)] // the interpreter's C API around fork()
mod fork;
mod ids;
#[allow(unsafe_code)] // the eventfd: made, written and read with libc
mod inbox;
mod preload;
mod pybytes;
mod pylog;
mod ws;
mod wsgi;

use pyo3::prelude::*;
use std::ffi::OsString;
use std::sync::Arc;

/// Runs forkd with `argv` (`sys.argv`, the script first); returns its exit code.
/// `executable` is `sys.executable`, for USR2 to start the master again.
#[pyfunction]
fn main(argv: Vec<String>, executable: String) -> u8 {
    // The master keeps the GIL for its whole life, as a Python process that calls
    // `os.fork()` does: it runs no Python code and starts no thread.
    let mut relaunch_args = vec![OsString::from(&executable)];
    relaunch_args.extend(argv.iter().map(OsString::from));
    let host = forkd::hosted::Host {
        fork: Some(forkd::hosted::ForkHooks {
            before: fork::before,
            parent: fork::after_in_parent,
            child: fork::after_in_child,
        }),
        loader: Some(Arc::new(boot::load)),
        preload: Some(Arc::new(preload::preload)),
        relaunch: Some((executable.clone().into(), relaunch_args)),
        python: Some(executable.into()),
    };
    forkd::main_with_host(argv.into_iter().map(OsString::from).collect(), host)
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(boot::stamp, m)?)?;
    m.add_function(wrap_pyfunction!(boot::log_line, m)?)?;
    m.add_function(wrap_pyfunction!(pylog::log_record, m)?)?;
    m.add_function(wrap_pyfunction!(pylog::init_runner_log, m)?)?;
    m.add_function(wrap_pyfunction!(pylog::reopen_logs, m)?)?;
    m.add_class::<bridge::Bridge>()?;
    m.add_class::<bridge::Conn>()?;
    m.add_class::<awaitable::Ready>()?;
    m.add_class::<ws::WsConn>()?;
    m.add_class::<wsgi::Pool>()?;
    m.add_class::<wsgi::Call>()?;
    m.add_class::<wsgi::Input>()?;
    Ok(())
}
