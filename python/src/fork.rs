//! The interpreter's fork hooks, which forkd's master calls around each worker's (and
//! zygote's) `fork()`, and a zygote (`preload_app`) around both forks of each worker's
//! double fork (see `forkd::hosted::ForkHooks`): what `os.fork()` does in CPython, so
//! the interpreter's locks and state are right in both processes.

/// Before `fork()`, in the master.
pub fn before() {
    // SAFETY: PyOS_BeforeFork must be called by a thread holding the GIL: the master's
    // thread holds it for the whole life of the process (`main` runs with it held and
    // never releases it; the master runs no Python code and starts no thread), and so
    // does the only thread of a zygote or of a double fork's middle process, a copy of
    // it (a zygote refuses an app whose import left another thread running).
    unsafe { pyo3::ffi::PyOS_BeforeFork() }
}

/// After `fork()`, in the master (also when the fork failed, as CPython's `os.fork`).
pub fn after_in_parent() {
    // SAFETY: called right after fork() in the parent, on the thread that called
    // PyOS_BeforeFork and still holds the GIL, as PyOS_AfterFork_Parent requires.
    unsafe { pyo3::ffi::PyOS_AfterFork_Parent() }
}

/// After `fork()`, in the new worker.
pub fn after_in_child() {
    // SAFETY: called right after fork() in the child, before any other code runs
    // there: its only thread is the copy of the one that held the GIL (and called
    // PyOS_BeforeFork), as PyOS_AfterFork_Child requires.
    unsafe { pyo3::ffi::PyOS_AfterFork_Child() }
}
