//! `forkd._native`: forkd as a Python extension module. The `forkd` console script
//! calls [`main`], which runs forkd's own entry point inside the interpreter: the master
//! is this (single-threaded) Python process, which imports nothing of the app and forks
//! the workers; each worker imports the ASGI app after the fork and serves it through
//! forkd's hyper stack (see `bridge.rs` for how requests cross into Python, `boot.rs`
//! for the worker's start).

mod boot;
mod bridge;
mod ws;

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
            before: before_fork,
            parent: after_fork_parent,
            child: after_fork_child,
        }),
        loader: Some(Arc::new(boot::load)),
        relaunch: Some((executable.into(), relaunch_args)),
    };
    forkd::main_with_host(argv.into_iter().map(OsString::from).collect(), host)
}

fn before_fork() {
    // SAFETY: called with the GIL held (the master never releases it), as required.
    unsafe { pyo3::ffi::PyOS_BeforeFork() }
}

fn after_fork_parent() {
    // SAFETY: as above, right after fork() in the parent.
    unsafe { pyo3::ffi::PyOS_AfterFork_Parent() }
}

fn after_fork_child() {
    // SAFETY: right after fork() in the child, which holds the GIL.
    unsafe { pyo3::ffi::PyOS_AfterFork_Child() }
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(boot::stamp, m)?)?;
    m.add_function(wrap_pyfunction!(boot::log_line, m)?)?;
    m.add_class::<bridge::Bridge>()?;
    m.add_class::<bridge::Conn>()?;
    m.add_class::<bridge::Ready>()?;
    m.add_class::<ws::WsConn>()?;
    Ok(())
}
