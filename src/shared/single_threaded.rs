//! What is sound only while this process has one thread, each in one audited place:
//!
//! - `fork()`: the child gets a copy of all memory but only the calling thread, so a lock
//!   another thread held (the allocator's, stdio's, tracing's) would stay locked forever
//!   in the child;
//! - changing the environment: glibc's `setenv`/`unsetenv` do not synchronise with
//!   `getenv` (or `getaddrinfo`, `localtime`...) running in another thread.
//!
//! The master never starts a thread (no runtime, no helper threads), and a forked child
//! has one thread until its worker builds its runtime. Debug builds (the test suite)
//! check it at every call; `clippy.toml` refuses `fork` and `set_var`/`remove_var`
//! anywhere else.

use nix::unistd::ForkResult;
use std::ffi::OsStr;

/// How many threads this process has (`/proc/self/task`); `None` when it cannot tell.
pub fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

/// Panics in debug builds if this process has more than one thread.
fn debug_assert_one_thread(what: &str) {
    if cfg!(debug_assertions) {
        let count = thread_count();
        assert!(
            matches!(count, None | Some(1)),
            "{what} with {count:?} threads: forkd's master must stay single-threaded"
        );
    }
}

/// `fork()`, for every fork site of the master: the same as `nix::unistd::fork`, with
/// the process checked to be single-threaded first (debug builds).
///
/// # Safety
///
/// As `nix::unistd::fork`: the process must have one thread, so that the child's copy of
/// memory holds no lock another thread owned; the child then ends in `execve`, `_exit`,
/// or a worker that never returns into the caller's state.
#[allow(clippy::disallowed_methods)]
pub unsafe fn fork() -> nix::Result<ForkResult> {
    debug_assert_one_thread("fork");
    // SAFETY: the caller's contract, checked above in debug builds.
    unsafe { nix::unistd::fork() }
}

/// Sets (`Some`) or removes (`None`) an environment variable: the one place forkd changes
/// its environment. Called by the master at start (taking the systemd and upgrade
/// variables out, so that workers never see them) and by a native worker's child before
/// its runtime exists (the config's `env`).
#[allow(clippy::disallowed_methods)]
pub fn set_env(key: impl AsRef<OsStr>, value: Option<&OsStr>) {
    debug_assert_one_thread("changing the environment");
    // Sound because no other thread exists that could read the environment meanwhile
    // (checked above in debug builds); `set_var` is `unsafe` from edition 2024 on for
    // exactly this reason.
    match value {
        Some(value) => std::env::set_var(key, value),
        None => std::env::remove_var(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_count_sees_a_new_thread() {
        let before = thread_count().expect("/proc/self/task");
        let (stop, wait) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || wait.recv());
        let during = thread_count().expect("/proc/self/task");
        drop(stop);
        let _ = thread.join();
        // Other tests run threads of their own meanwhile: at least one more.
        assert!(during >= 2 && before >= 1, "{before} then {during}");
    }
}
