//! The loop's way back to the server thread: HTTP responses go into the [`Outbox`],
//! which hands them over once per iteration of the loop, and [`dispatch`] on the server
//! thread gives each to its request's task.

use forkd::app::Response;
use pyo3::prelude::*;
use std::cell::RefCell;
use tokio::sync::{mpsc, oneshot};

/// A response from the loop for its request's task, with the request's extensions
/// (client and server address, scheme), which go back to be dropped on the server
/// thread that allocated them: freed on the loop's thread they cost glibc's slow path
/// on both (the loop thread's cache of free chunks fills, the server thread's empties).
pub struct Answer(
    pub oneshot::Sender<Response>,
    pub Response,
    pub hyper::http::Extensions,
);

/// Responses from the loop to the server thread, handed over once per iteration of
/// the loop: the first response of an iteration schedules the hand-over with
/// `call_soon` (it runs after the callbacks already ready, so after every request task
/// of this round), and the whole batch crosses in one message. Waking the server's
/// runtime from this thread costs a write to its eventfd, and the server thread, which
/// has little to do per response, would otherwise be woken (and go back to sleep) once
/// per response whenever the app answers requests one after another (measured with
/// FastAPI: 0.99 wake-ups and 1.97 context switches of the server thread per request).
/// On the server thread one task ([`dispatch`]) gives each response to its request's
/// task (a wake-up on the same thread, no system call).
#[pyclass(unsendable)]
pub struct Outbox {
    pending: RefCell<Vec<Answer>>,
    sender: mpsc::UnboundedSender<Vec<Answer>>,
    call_soon: PyObject,
}

impl Outbox {
    pub fn new(
        py: Python<'_>,
        event_loop: &PyObject,
        sender: mpsc::UnboundedSender<Vec<Answer>>,
    ) -> PyResult<Py<Outbox>> {
        Py::new(
            py,
            Outbox {
                pending: RefCell::new(Vec::new()),
                sender,
                call_soon: event_loop.getattr(py, "call_soon")?,
            },
        )
    }

    /// Queues a response for the end of this iteration; `Err` when the server thread
    /// is gone.
    pub fn send(outbox: &Py<Outbox>, py: Python<'_>, answer: Answer) -> Result<(), ()> {
        let this = outbox.borrow(py);
        if this.sender.is_closed() {
            return Err(());
        }
        let first = {
            let mut pending = this.pending.borrow_mut();
            pending.push(answer);
            pending.len() == 1
        };
        if first && this.call_soon.call1(py, (outbox.clone_ref(py),)).is_err() {
            // The loop is closing: hand it over now.
            this.hand_over();
        }
        Ok(())
    }

    fn hand_over(&self) {
        let batch = std::mem::take(&mut *self.pending.borrow_mut());
        if !batch.is_empty() {
            let _ = self.sender.send(batch);
        }
    }
}

#[pymethods]
impl Outbox {
    /// The hand-over `call_soon` runs.
    fn __call__(&self) {
        self.hand_over();
    }
}

/// The server thread's end of the [`Outbox`]: each response to its request's task.
pub async fn dispatch(mut answers: mpsc::UnboundedReceiver<Vec<Answer>>) {
    let mut batches = Vec::new();
    while answers.recv_many(&mut batches, 16).await > 0 {
        for batch in batches.drain(..) {
            for Answer(to, response, extensions) in batch {
                let _ = to.send(response);
                drop(extensions);
            }
        }
    }
}
