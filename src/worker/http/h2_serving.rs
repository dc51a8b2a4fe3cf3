//! Which HTTP/2 connection this thread is serving right now ([`SERVING_H2`]: the IO sets
//! it after a read, the connection's task clears it when it yields), so that h2's
//! malformed-stream resets, which reach forkd only as log lines, are counted for the
//! connection that sent them.

use std::sync::atomic::{AtomicU32, Ordering::*};
use std::sync::Arc;

thread_local! {
    /// The malformed-stream count of the HTTP/2 connection being served on this thread
    /// (its task is between a read and its next yield), if any.
    pub(crate) static SERVING_H2: std::cell::RefCell<Option<Arc<AtomicU32>>> =
        const { std::cell::RefCell::new(None) };
}

/// Called (through `logging.rs`) when h2 resets a stream as malformed: counted for the
/// connection that read the bytes, which is the one being served (h2 decodes a
/// connection's frames in its own task, right after reading them).
pub(crate) fn malformed_h2_stream() {
    SERVING_H2.with(|serving| {
        if let Some(counter) = &*serving.borrow() {
            counter.fetch_add(1, Relaxed);
        }
    });
}

/// The connection's task yields: what h2 logs next is not its doing.
pub(crate) fn left_connection() {
    SERVING_H2.with(|serving| {
        if let Ok(mut serving) = serving.try_borrow_mut() {
            serving.take();
        }
    });
}
