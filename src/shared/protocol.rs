//! What crosses process boundaries, in one place: the realtime signal numbers forkd's
//! processes send each other (upgrade handshake, `-s reload` answer, the master's
//! death), the exit codes of forkd and of its workers, the environment variables and
//! tokens of the upgrade and reload handshakes, who writes which part of the scoreboard,
//! and the only wrappers around `kill(2)`/`sigqueue(3)` that take a raw pid.
//!
//! The scoreboard's message ownership: a slot's progress, state, flags and counters are
//! written by its worker only; its failure message is written by its worker (boot
//! failure) or, for an exec worker, by the forked child before exec and by the master
//! when it kills one that did not boot (see `crate::shared::scoreboard::Slot::set_message`). The
//! header's counters (restarts, reloads, upgrades) are written by the master only.

use std::time::Duration;

// ---- signals ---------------------------------------------------------------------------

/// The signal a new master sends its old master once its workers are ready, and the old
/// master's answer once systemd follows the new one (both carrying the upgrade token).
pub fn upgrade_ready_signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

/// The signal the master answers a waiting `forkd -s reload` with (see `crate::control`).
pub fn reload_reply_signal() -> libc::c_int {
    libc::SIGRTMIN() + 2
}

/// The signal a native worker gets when its master dies (`PR_SET_PDEATHSIG`): not
/// TERM, so that the worker can tell "the master is gone" (close every listener at
/// once, so a restarted master can bind) from an ordinary graceful stop.
pub fn master_died_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

// ---- exit codes ------------------------------------------------------------------------

/// forkd exited normally (stopped by a signal, or a command that succeeded).
pub const EXIT_OK: u8 = 0;
/// forkd failed at run time (cannot bind, cannot write the pidfile, `-s` failed...).
pub const EXIT_FAILURE: u8 = 1;
/// A bad command line or config.
pub const EXIT_USAGE: u8 = 2;
/// No worker could boot.
pub const EXIT_NO_WORKER: u8 = 3;
/// Exit status of a worker whose app failed to boot (as Gunicorn's WORKER_BOOT_ERROR),
/// and of an exec worker's child that could not exec.
pub const EXIT_BOOT_ERROR: i32 = 3;
/// Exit status of the upgrade's forked child when it could not exec the new master.
pub const EXIT_EXEC_FAILED: i32 = 127;

// ---- handshakes ------------------------------------------------------------------------

/// Environment variable telling a new master which old master to notify when ready.
/// Deliberately outside the `FORKD_` prefix, which is reserved for config keys.
pub const UPGRADE_FROM_VAR: &str = "_FORKD_UPGRADE_FROM";
/// Environment variable with the upgrade handshake's token (hex), beside
/// `UPGRADE_FROM_VAR`.
pub const UPGRADE_TOKEN_VAR: &str = "_FORKD_UPGRADE_TOKEN";
/// How long a new master gets to have all its workers ready.
pub const UPGRADE_READY_DEADLINE: Duration = Duration::from_secs(60);

/// A fresh random token for one exchange of realtime signals (never 0): a secret, so
/// it waits for the kernel's entropy pool if that is not initialised yet.
pub fn random_token() -> u64 {
    random_bits(true).max(1)
}

/// 64 bits from getrandom(2), waiting for the entropy pool at early boot or not
/// (`wait`); a failure leaves the clock's nanoseconds mixed with the pid.
pub fn random_bits(wait: bool) -> u64 {
    let mut bytes = [0u8; 8];
    let flags = if wait { 0 } else { libc::GRND_NONBLOCK };
    // SAFETY: getrandom(2) writes at most `bytes.len()` bytes into this local buffer,
    // which lives until the call returns.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), flags) };
    if filled == bytes.len() as isize {
        return u64::from_ne_bytes(bytes);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    now ^ (u64::from(std::process::id()) << 32)
}

/// Whether a received HUP came from a `-s reload` that waits for an answer: queued,
/// with a token.
pub fn wants_reload_reply(code: i32, token: u64) -> bool {
    code == libc::SI_QUEUE && token != 0
}

/// The value of the master's answer to the reload that sent `token`: the token for
/// success, the token with every bit flipped for failure.
pub fn reload_reply_value(token: u64, ok: bool) -> u64 {
    if ok {
        token
    } else {
        !token
    }
}

/// What a reply carrying `value` says about the reload that sent `token`: `None` for
/// a value that is not an answer to it (forged, or meant for another reload).
pub fn reload_reply_outcome(token: u64, value: u64) -> Option<bool> {
    if value == reload_reply_value(token, true) {
        Some(true)
    } else if value == reload_reply_value(token, false) {
        Some(false)
    } else {
        None
    }
}

// ---- sending ---------------------------------------------------------------------------

/// Sends `signo` with `token` as its sigqueue value (`sival_ptr`, all 64 bits).
pub fn queue(pid: i32, signo: libc::c_int, token: u64) -> std::io::Result<()> {
    let value = libc::sigval {
        sival_ptr: token as usize as *mut libc::c_void,
    };
    // SAFETY: sigqueue(3) takes its arguments by value; the pointer in `value` is an
    // integer carried to the receiver and never dereferenced by anyone.
    if unsafe { libc::sigqueue(pid, signo, value) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sends `signo` (any number, realtime ones included, which `nix::sys::signal::Signal`
/// cannot name) with kill(2).
pub fn kill(pid: i32, signo: libc::c_int) -> std::io::Result<()> {
    // SAFETY: kill(2) takes two integers and touches no memory of this process.
    if unsafe { libc::kill(pid, signo) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_realtime_signals_are_distinct() {
        let all = [
            upgrade_ready_signal(),
            reload_reply_signal(),
            master_died_signal(),
        ];
        for (i, a) in all.iter().enumerate() {
            assert!(*a >= libc::SIGRTMIN() && *a <= libc::SIGRTMAX());
            assert!(all[i + 1..].iter().all(|b| b != a));
        }
    }

    #[test]
    fn tokens_are_random_and_never_zero() {
        let token = random_token();
        assert_ne!(token, 0);
        assert_ne!(token, random_token());
    }

    #[test]
    fn a_reply_counts_only_with_the_reloads_token() {
        let token = 0x0123_4567_89ab_cdef;
        let ok = reload_reply_value(token, true);
        let failed = reload_reply_value(token, false);
        assert_eq!(reload_reply_outcome(token, ok), Some(true));
        assert_eq!(reload_reply_outcome(token, failed), Some(false));
        // What the old wire carried, and another reload's answers.
        assert_eq!(reload_reply_outcome(token, 1), None);
        assert_eq!(reload_reply_outcome(token, 2), None);
        let other = reload_reply_value(token ^ 4, true);
        assert_eq!(reload_reply_outcome(token, other), None);
        assert!(!wants_reload_reply(libc::SI_USER, token));
        assert!(!wants_reload_reply(libc::SI_QUEUE, 0));
        assert!(wants_reload_reply(libc::SI_QUEUE, token));
    }
}
