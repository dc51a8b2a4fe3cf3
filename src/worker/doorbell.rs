//! The worker's end of the master's doorbell pipe: one byte written into it tells the
//! master that this worker's scoreboard slot changed (ready, asking to be replaced).
//! The worker's entry point sets the fd at boot; until then (a core served in-process,
//! with no master) ringing does nothing.

use std::sync::atomic::{AtomicI32, Ordering::Relaxed};

/// The inherited write end of the pipe; -1 when there is none.
static DOORBELL: AtomicI32 = AtomicI32::new(-1);

/// Sets the fd [`ring`] writes to (the worker's entry point, once, at boot).
pub(super) fn set(fd: std::os::fd::RawFd) {
    DOORBELL.store(fd, Relaxed);
}

/// Tells the master that this worker's scoreboard slot changed: one byte into the
/// doorbell pipe (non-blocking: a full pipe has rung already). Works whatever uid the
/// worker switched to, which a signal to a root master would not.
#[allow(unsafe_code)] // write(2) to an inherited raw fd
pub(super) fn ring() {
    let fd = DOORBELL.load(Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) of one byte from a valid buffer to the inherited pipe.
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}
