//! WSGI apps (PEP 3333: Flask, Django) in forkd's workers, Gunicorn's gthread model:
//! a pool of `threads` Python threads per worker runs the app, while the server thread
//! (tokio + hyper, one runtime thread) does all the I/O.
//!
//! Server thread: [`WsgiApp::call`] queues the request ([`queue`]) and waits for its
//! response; its body is read by a task on the server thread as the app reads
//! `wsgi.input` ([`input`]). Pool thread ([`Pool::serve`]): takes a request with the
//! GIL released, builds its environ ([`environ`], [`cgi`]), and runs
//! `forkd._wsgi.handle`, which calls the app and hands its response to a [`Call`]
//! ([`response`], [`head`]): the head and body go back to the server thread, the
//! GIL released whenever a pool thread waits for it (a body chunk, room for a response
//! chunk).
//!
//! `timeout`: a pool thread stamps the worker's progress after each request, and while
//! idle every `progress_every` (with the GIL held, so a wedged interpreter stops it),
//! so a worker whose threads are all stuck stops stamping and is replaced. The main
//! thread has no event loop to run: it waits for the drain's end, then runs the
//! `worker_exit` hook (`forkd._wsgi.run`).

mod cgi;
mod environ;
mod head;
mod input;
mod queue;
mod response;

pub use input::Input;
pub use response::Call;

use environ::Environs;
use forkd::app::Response;
use forkd::hosted::{Booted, HostedBoot};
use forkd::shared::scoreboard::Slot;
use hyper::body::Body as _;
use pyo3::prelude::*;
use queue::{Next, Queue};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A request for the pool.
struct Job {
    parts: hyper::http::request::Parts,
    input: Input,
    respond: oneshot::Sender<Response>,
}

/// The app as forkd's server calls it, on the server thread.
pub struct WsgiApp {
    queue: Arc<Queue<Job>>,
    slot: &'static Slot,
}

impl forkd::app::App for WsgiApp {
    fn call(&self, req: forkd::app::Request) -> forkd::app::BoxFuture<Response> {
        let (parts, body) = req.into_parts();
        let input = if body.is_end_stream() {
            Input::empty()
        } else {
            let (pieces, received) = mpsc::channel(1);
            tokio::spawn(input::pump(body, pieces));
            Input::new(bytes::Bytes::new(), received)
        };
        let (respond, answer) = oneshot::channel();
        let slot = self.slot;
        self.queue.push(
            Job {
                parts,
                input,
                respond,
            },
            || slot.request_queued(),
        );
        Box::pin(async move {
            answer.await.unwrap_or_else(|_| {
                forkd::app::respond(500, "text/plain; charset=utf-8", "Internal Server Error\n")
            })
        })
    }
}

/// The pool's shared part, which every pool thread runs ([`Pool::serve`]).
#[pyclass(frozen, module = "forkd._native")]
pub struct Pool {
    queue: Arc<Queue<Job>>,
    slot: &'static Slot,
    progress_every: Duration,
    app: PyObject,
    /// `forkd._wsgi.handle`.
    handle: PyObject,
    environs: Environs,
}

impl Pool {
    fn run(&self, py: Python<'_>, job: Job) {
        let Job {
            parts,
            input,
            respond,
        } = job;
        if respond.is_closed() {
            // The client left while the request waited for a thread.
            return;
        }
        let call = Call::new(parts.method.clone(), parts.version, respond);
        let handled = Py::new(py, input).and_then(|input| {
            let environ = self.environs.environ(py, &parts, &input)?;
            let call = Py::new(py, call)?;
            let handled = self
                .handle
                .call1(py, (self.app.clone_ref(py), environ, call))
                .map(drop);
            // The response is done: what the app left of the body is not its any more
            // (forkd drains it, so a keep-alive connection goes on), even if the
            // environ lives on in a reference cycle until the next garbage collection.
            if let Ok(mut input) = input.try_borrow_mut(py) {
                input.end();
            }
            handled
        });
        if let Err(e) = handled {
            // forkd._wsgi.handle answers the app's own errors; this is forkd's.
            tracing::error!(pid = std::process::id(), "WSGI pool: {e}");
        }
    }
}

#[pymethods]
impl Pool {
    /// A pool thread's life: requests until the worker stops.
    fn serve(&self, py: Python<'_>) {
        loop {
            let every = self.progress_every;
            match py.allow_threads(|| self.queue.next(every)) {
                Next::Job(mut job, mut queued) => loop {
                    if queued {
                        self.slot.request_dequeued();
                    }
                    self.run(py, job);
                    self.slot.report_progress();
                    // A request already waiting is taken with the GIL still held:
                    // releasing it only to take it back may hand it to another pool
                    // thread (bench/instructions.py, hello: 4 threads cost 625
                    // instructions per request more than 1 without this, 71 with it).
                    match self.queue.try_next() {
                        Some((next, next_queued)) => (job, queued) = (next, next_queued),
                        None => break,
                    }
                },
                Next::Idle => self.slot.report_progress(),
                Next::Closed => return,
            }
        }
    }

    /// Waits (the GIL released) until the worker's drain is over.
    fn wait_stopped(&self, py: Python<'_>) {
        py.allow_threads(|| self.queue.wait_closed());
    }
}

/// Serves `app`, a WSGI callable `forkd._worker.boot` imported: starts the pool.
/// `interrupted`: Gunicorn's `worker_int`, if the config has one (see `boot.rs`).
pub fn load(
    py: Python<'_>,
    boot: &HostedBoot<'_>,
    app: PyObject,
    interrupted: Option<Box<dyn FnOnce() + Send>>,
) -> PyResult<Booted> {
    let wsgi = py.import("forkd._wsgi")?;
    let config = boot.config;
    let threads = config.threads.max(1);
    let environs = Environs::new(
        py,
        &config.python.root_path,
        threads > 1,
        // Another process may run the app at the same time: the worker's siblings,
        // or, with one worker, its replacement during a reload.
        true,
        py.import("sys")?.getattr("stderr")?.unbind(),
        wsgi.getattr("FileWrapper")?.unbind(),
    )?;
    let queue = Arc::new(Queue::default());
    let pool = Py::new(
        py,
        Pool {
            queue: queue.clone(),
            slot: boot.slot,
            progress_every: boot.progress_every,
            app,
            handle: wsgi.getattr("handle")?.unbind(),
            environs,
        },
    )?;
    wsgi.call_method1("start", (pool.clone_ref(py), threads))?;
    tracing::info!(
        pid = std::process::id(),
        "serving a WSGI app from {threads} thread{}",
        if threads == 1 { "" } else { "s" }
    );
    let run = {
        let wsgi = wsgi.unbind();
        move || -> Result<(), String> {
            Python::with_gil(|py| {
                wsgi.call_method1(py, "run", (pool,))
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        }
    };
    let stop = {
        let queue = queue.clone();
        move || queue.close()
    };
    Ok(Booted {
        app: Arc::new(WsgiApp {
            queue,
            slot: boot.slot,
        }),
        run: Box::new(run),
        stop: Box::new(stop),
        interrupted,
        server_threads: Some(1),
    })
}
