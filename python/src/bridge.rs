//! The ASGI bridge between the worker's server thread (tokio + hyper) and its main thread
//! (the asyncio loop, holding the GIL).
//!
//! Server thread -> loop: events go into the [`Inbox`] (a mutex-guarded vector) and an
//! eventfd the loop watches (`loop.add_reader`) is written once per round of the server's
//! tasks that pushed any (see [`Inbox::push`]), so the server thread never waits for the
//! GIL, and the loop takes many events per wake-up. One event per request head, one per body chunk the app asked for
//! (`receive()` signals demand, so an upload is read only as fast as the app consumes
//! it), one when the client is gone.
//!
//! Loop -> server thread: the response head and a whole body go back over a oneshot
//! channel; a streamed body over a small bounded channel whose `send()` waits (an
//! asyncio future resolved by an event) when it is full.

use bytes::Bytes;
use forkd::app::{BoxError, ClientAddr, Response, Scheme, ServerAddr};
use futures_util::FutureExt;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyStopIteration};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot, Notify};

/// Chunks of a streamed response body in flight between the loop and hyper.
const STREAM_CHUNKS: usize = 4;

/// A request head, handed to the loop.
pub struct Head {
    id: u64,
    parts: hyper::http::request::Parts,
    respond: oneshot::Sender<Response>,
    shared: Arc<Shared>,
    /// The body's first chunk when it was there with the head (always, for a request
    /// without a body): `receive()` answers it at once, without a round trip.
    first: Option<(Bytes, bool)>,
}

/// What a request's task on the server thread and its [`Conn`] on the loop share: one
/// allocation per request.
#[derive(Default)]
struct Shared {
    /// Rung by `receive()`: read one more body chunk.
    demand: Notify,
    /// Set by the loop once the response is complete (see [`DisconnectGuard`]).
    answered: AtomicBool,
    /// Set by the loop when the app failed after its streamed response started (see
    /// [`ChannelBody`]).
    aborted: AtomicBool,
}

pub enum Event {
    Head(Box<Head>),
    /// A WebSocket upgrade request.
    WsHead(Box<crate::ws::Head>),
    WsText {
        id: u64,
        text: String,
    },
    WsBinary {
        id: u64,
        data: Vec<u8>,
    },
    /// A WebSocket message that had to wait was queued (`ok`) or the socket is gone.
    WsSent {
        id: u64,
        ok: bool,
    },
    /// The WebSocket closed (the client's close code, or 1006).
    WsClosed {
        id: u64,
        code: u16,
    },
    Body {
        id: u64,
        data: Bytes,
        more: bool,
    },
    /// The client went away, or the response was written and dropped.
    Disconnect(u64),
    /// A streamed chunk that had to wait was queued (`ok`) or the client is gone.
    Sent {
        id: u64,
        ok: bool,
    },
    /// The worker's drain is over: run the lifespan shutdown and stop the loop.
    Stop,
}

/// A response from the loop for its request's task.
pub struct Answer(oneshot::Sender<Response>, Response);

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
    fn send(outbox: &Py<Outbox>, py: Python<'_>, answer: Answer) -> Result<(), ()> {
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
async fn dispatch(mut answers: mpsc::UnboundedReceiver<Vec<Answer>>) {
    let mut batches = Vec::new();
    while answers.recv_many(&mut batches, 16).await > 0 {
        for batch in batches.drain(..) {
            for Answer(to, response) in batch {
                let _ = to.send(response);
            }
        }
    }
}

/// At most this many events wait for the end of the server's round before the loop is
/// woken for them (see [`Inbox::push`]).
const WAKE_BATCH: usize = 32;

/// Events for the loop, and the eventfd that wakes it.
pub struct Inbox {
    queue: Mutex<Queue>,
    wake: OwnedFd,
    /// Set once [`flusher`] runs on the server's runtime: from then on a push leaves
    /// the wake-up to it.
    deferring: AtomicBool,
    /// Rings [`flusher`].
    flush: Notify,
    /// The server's runtime (set with the first request), where a streamed chunk that
    /// has to wait is sent from.
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
}

struct Queue {
    events: Vec<Event>,
    /// The eventfd was written since the loop last took the events: it will take
    /// these too, no further write is needed.
    signalled: bool,
    /// [`flusher`] was rung and has not run yet.
    flushing: bool,
}

impl Inbox {
    pub fn new() -> std::io::Result<Inbox> {
        // SAFETY: eventfd(2) with valid flags; the fd is owned from here.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Inbox {
            queue: Mutex::new(Queue {
                events: Vec::new(),
                signalled: false,
                flushing: false,
            }),
            // SAFETY: fd is a fresh, valid descriptor.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
            deferring: AtomicBool::new(false),
            flush: Notify::new(),
            runtime: std::sync::OnceLock::new(),
        })
    }

    pub fn fd(&self) -> i32 {
        self.wake.as_raw_fd()
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an event for the loop. The loop is woken once for all the events the
    /// server's current round of tasks pushes (the requests of every connection that
    /// became readable together, typically): the first push rings [`flusher`], a task
    /// that runs after the tasks already queued and writes the eventfd then; at
    /// [`WAKE_BATCH`] events it is written at once. Each write wakes a sleeping loop
    /// thread (a context switch each way), so larger batches cost fewer of them.
    pub(crate) fn push(&self, event: Event) {
        let deferring = self.deferring.load(Relaxed);
        let (write, ring) = {
            let mut queue = self.queue();
            queue.events.push(event);
            match wake_decision(&queue, deferring) {
                Wake::Now => {
                    queue.signalled = true;
                    (true, false)
                }
                Wake::Later => {
                    queue.flushing = true;
                    (false, true)
                }
                Wake::Nothing => (false, false),
            }
        };
        if ring {
            self.flush.notify_one();
        }
        if write {
            self.signal();
        }
    }

    /// The end of the server's round: wakes the loop for what was pushed in it.
    fn flush(&self) {
        let write = {
            let mut queue = self.queue();
            queue.flushing = false;
            let write = !queue.signalled && !queue.events.is_empty();
            queue.signalled |= write;
            write
        };
        if write {
            self.signal();
        }
    }

    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.fd(), (&one as *const u64).cast(), 8) };
    }

    /// The last event: written at once (the server's runtime is over when it is sent).
    pub fn stop(&self) {
        self.deferring.store(false, Relaxed);
        self.push(Event::Stop);
    }

    /// Everything queued, swapped into `batch` (empty: its capacity is kept for the
    /// next pushes); the eventfd is read first, so a push after it wakes again.
    fn take_into(&self, batch: &mut Vec<Event>) {
        let mut counter: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our (non-blocking) eventfd.
        unsafe { libc::read(self.fd(), (&mut counter as *mut u64).cast(), 8) };
        let mut queue = self.queue();
        queue.signalled = false;
        std::mem::swap(&mut queue.events, batch);
    }
}

#[derive(Debug, PartialEq)]
enum Wake {
    /// Write the eventfd now.
    Now,
    /// Ring the flusher, which writes it at the end of the round.
    Later,
    /// The loop was woken or the flusher rung already.
    Nothing,
}

/// What a push does, given the queue with the new event in it, and whether the
/// flusher is running.
fn wake_decision(queue: &Queue, deferring: bool) -> Wake {
    if queue.signalled {
        Wake::Nothing
    } else if !deferring || queue.events.len() >= WAKE_BATCH {
        Wake::Now
    } else if queue.flushing {
        Wake::Nothing
    } else {
        Wake::Later
    }
}

/// Runs on the server's runtime: wakes the loop after each round of pushes (see
/// [`Inbox::push`]). A task woken from its own thread goes to the back of the run
/// queue, behind the connections that were ready in the same round.
async fn flusher(inbox: Arc<Inbox>) {
    inbox.deferring.store(true, Relaxed);
    loop {
        inbox.flush.notified().await;
        inbox.flush();
    }
}

/// Tells the loop a request's client is gone when dropped: with the request's future
/// (hyper dropped it) or with its response body (written, or the connection failed).
/// Not once the app's response is complete (`answered`): `receive()` answers
/// `http.disconnect` from then on by itself, and the event would only wake the loop
/// once more per request for nothing.
struct DisconnectGuard {
    id: u64,
    inbox: Arc<Inbox>,
    shared: Arc<Shared>,
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if !self.shared.answered.load(Acquire) {
            self.inbox.push(Event::Disconnect(self.id));
        }
    }
}

/// The app as forkd's server calls it, on the server thread.
pub struct PyApp {
    inbox: Arc<Inbox>,
    /// Until the first request spawns [`dispatch`] with it on the server's runtime.
    answers: Mutex<Option<mpsc::UnboundedReceiver<Vec<Answer>>>>,
    dispatching: AtomicBool,
    next_id: AtomicU64,
    /// Set when the drain's deadline nears: open WebSockets close with 1001.
    closing: tokio::sync::watch::Sender<bool>,
}

impl PyApp {
    pub fn new(inbox: Arc<Inbox>, answers: mpsc::UnboundedReceiver<Vec<Answer>>) -> PyApp {
        PyApp {
            inbox,
            answers: Mutex::new(Some(answers)),
            dispatching: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            closing: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl forkd::app::App for PyApp {
    fn call(&self, req: forkd::app::Request) -> forkd::app::BoxFuture<Response> {
        let id = self.next_id.fetch_add(1, Relaxed);
        if !self.dispatching.load(Acquire) {
            let answers = self
                .answers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(answers) = answers {
                let _ = self.inbox.runtime.set(tokio::runtime::Handle::current());
                tokio::spawn(dispatch(answers));
                tokio::spawn(flusher(self.inbox.clone()));
                self.dispatching.store(true, Release);
            }
        }
        let inbox = self.inbox.clone();
        if crate::ws::is_upgrade(&req) {
            return Box::pin(crate::ws::serve(id, req, inbox, self.closing.subscribe()));
        }
        Box::pin(async move {
            let (parts, mut body) = req.into_parts();
            let (respond, mut answer) = oneshot::channel();
            let shared = Arc::new(Shared::default());
            let first = if body.is_end_stream() {
                Some((Bytes::new(), false))
            } else {
                // Already read with the head (a small JSON body, typically)?
                match next_chunk(&mut body).now_or_never() {
                    Some(Some(chunk)) => Some(chunk),
                    _ => None,
                }
            };
            let body_ended = first.as_ref().is_some_and(|(_, more)| !more);
            let guard = DisconnectGuard {
                id,
                inbox: inbox.clone(),
                shared: shared.clone(),
            };
            inbox.push(Event::Head(Box::new(Head {
                id,
                parts,
                respond,
                shared: shared.clone(),
                first,
            })));
            let mut reading = !body_ended;
            loop {
                tokio::select! {
                    biased;
                    answered = &mut answer => {
                        return match answered {
                            Ok(resp) => resp.map(|inner| {
                                Guarded { inner, _guard: guard }.boxed_unsync()
                            }),
                            Err(_) => forkd::app::respond(
                                500,
                                "text/plain; charset=utf-8",
                                "Internal Server Error\n",
                            ),
                        };
                    }
                    _ = shared.demand.notified(), if reading => {
                        match next_chunk(&mut body).await {
                            Some((data, more)) => {
                                reading = more;
                                inbox.push(Event::Body { id, data, more });
                            }
                            None => {
                                reading = false;
                                inbox.push(Event::Disconnect(id));
                            }
                        }
                    }
                }
            }
        })
    }

    fn closing(&self) {
        self.closing.send_replace(true);
    }
}

/// The next data chunk and whether more may follow; None if the body failed (the
/// client went away, or forkd's limits cut it).
async fn next_chunk(body: &mut forkd::app::RequestBody) -> Option<(Bytes, bool)> {
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Some((data, !body.is_end_stream()));
                }
                // Trailers: ASGI has no message for them.
            }
            None => return Some((Bytes::new(), false)),
            Some(Err(_)) => return None,
        }
    }
}

/// A response body that tells the loop when hyper is done with it.
struct Guarded {
    inner: forkd::app::Body,
    _guard: DisconnectGuard,
}

impl hyper::body::Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A streamed response body: chunks from the loop; ends with an error (hyper then
/// closes the connection) if the app failed after starting it.
struct ChannelBody {
    chunks: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.chunks.poll_recv(cx) {
            Poll::Ready(Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Poll::Ready(None) if self.shared.aborted.load(Acquire) => {
                Poll::Ready(Some(Err("the ASGI app failed during its response".into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// An awaitable that is already done (no asyncio future, no loop iteration).
#[pyclass]
pub struct Ready {
    value: Option<PyObject>,
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __next__(&mut self, py: Python<'_>) -> PyResult<PyObject> {
        let value = self.value.take().unwrap_or_else(|| py.None());
        Err(PyStopIteration::new_err((value,)))
    }
}

pub(crate) fn ready(py: Python<'_>, value: PyObject) -> PyResult<PyObject> {
    Ok(Py::new(py, Ready { value: Some(value) })?.into_any())
}

/// The loop's future that is done with None (set by `Bridge::new`).
static DONE: pyo3::sync::GILOnceCell<PyObject> = pyo3::sync::GILOnceCell::new();

/// An awaitable that is done with None: one shared asyncio future, not a new object per
/// `send` (every `await` of a done future returns its result at once, in C, without the
/// StopIteration a [`Ready`] raises).
pub(crate) fn done(py: Python<'_>) -> PyResult<PyObject> {
    match DONE.get(py) {
        Some(future) => Ok(future.clone_ref(py)),
        None => ready(py, py.None()),
    }
}

/// The open requests by id, with [`IdHash`].
pub type ById<T> = HashMap<u64, T, std::hash::BuildHasherDefault<IdHash>>;

/// The hash of a request id: ids are distinct numbers counted up from 1, so one
/// multiplication by an odd constant (Fibonacci hashing) spreads them over the high
/// bits the table's probes use, where SipHash (HashMap's default, made to resist
/// chosen keys, which ids are not) cost about 60 instructions a lookup, three or more
/// per request.
#[derive(Default)]
pub struct IdHash(u64);

impl std::hash::Hasher for IdHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used by u64 keys; any bytes still hash deterministically.
        for &byte in bytes {
            self.write_u64(u64::from(byte) ^ self.0.rotate_left(8));
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Conns = Rc<RefCell<ById<Py<Conn>>>>;

/// How many request header names the bridge keeps as Python bytes (see
/// `Bridge::header_names`): the standard ones and an app's own few fit many times
/// over, while a client sending made-up names cannot grow the map.
const HEADER_NAMES: usize = 256;

type NameHashing = std::hash::BuildHasherDefault<NameHash>;

/// The hash of a header name in `Bridge::header_names`: a standard name hashes as
/// one small number, another as its (short, lower-case) bytes, each step a rotate,
/// an xor and a multiplication (FxHash's). The map is bounded, so colliding names
/// chosen by a client cost at most [`HEADER_NAMES`] comparisons.
#[derive(Default)]
pub struct NameHash(u64);

impl std::hash::Hasher for NameHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }
    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u8(&mut self, byte: u8) {
        self.write_u64(u64::from(byte));
    }
    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }
    fn write_isize(&mut self, word: isize) {
        self.write_u64(word as u64);
    }
}

/// The loop's side: turns events into ASGI calls. Lives on the main thread.
#[pyclass(unsendable)]
pub struct Bridge {
    inbox: Arc<Inbox>,
    outbox: Py<Outbox>,
    /// The events of the current wake-up (kept for its capacity).
    batch: Vec<Event>,
    conns: Conns,
    websockets: crate::ws::WsConns,
    app: PyObject,
    /// `forkd._worker.handle`: runs the app for one request, handles its exceptions.
    handle: PyObject,
    tasks: TaskMaker,
    create_future: PyObject,
    /// The lifespan state, copied into each request's scope.
    state: PyObject,
    root_path: String,
    /// Every HTTP (WebSocket) scope starts as a copy of this (see `template`).
    http_template: Py<PyDict>,
    ws_template: Py<PyDict>,
    /// The last listener address's ASGI `server`.
    server: RefCell<Option<(std::net::SocketAddr, PyObject)>>,
    /// The last IPv4 client host seen (as written in `ClientAddr`) and its Python
    /// string: clients of a worker mostly share a few addresses (a proxy, a load
    /// balancer), and a match saves parsing the address and making the string.
    client_host: RefCell<Option<(String, PyObject)>>,
    /// Request header names as the scope gives them (lower-case `bytes`), made once
    /// per name: the same few names come with every request. At most
    /// [`HEADER_NAMES`] are kept; names past those are made for each request.
    header_names: RefCell<HashMap<hyper::header::HeaderName, Py<PyBytes>, NameHashing>>,
    /// Resolved on Stop.
    pub stopped: PyObject,
}

impl Bridge {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        py: Python<'_>,
        inbox: Arc<Inbox>,
        answers: mpsc::UnboundedSender<Vec<Answer>>,
        event_loop: &PyObject,
        app: PyObject,
        state: PyObject,
        stopped: PyObject,
        root_path: &str,
    ) -> PyResult<Bridge> {
        let asgi = PyDict::new(py);
        asgi.set_item("version", "3.0")?;
        asgi.set_item("spec_version", "2.4")?;
        let finished = event_loop.call_method0(py, "create_future")?;
        finished.call_method1(py, "set_result", (py.None(),))?;
        let _ = DONE.set(py, finished);
        Ok(Bridge {
            inbox,
            outbox: Outbox::new(py, event_loop, answers)?,
            batch: Vec::new(),
            conns: Rc::default(),
            websockets: Rc::default(),
            app,
            handle: py.import("forkd._worker")?.getattr("handle")?.unbind(),
            tasks: TaskMaker::new(py, event_loop)?,
            create_future: event_loop.getattr(py, "create_future")?,
            state,
            http_template: Self::template(py, &asgi, root_path, false)?,
            ws_template: Self::template(py, &asgi, root_path, true)?,
            server: RefCell::new(None),
            client_host: RefCell::new(None),
            header_names: RefCell::default(),
            root_path: root_path.to_string(),
            stopped,
        })
    }

    fn conn(&self, py: Python<'_>, id: u64) -> Option<Py<Conn>> {
        self.conns.borrow().get(&id).map(|c| c.clone_ref(py))
    }

    fn start(&mut self, py: Python<'_>, head: Box<Head>) -> PyResult<()> {
        let scope = self.scope(py, &head.parts, false)?;
        let Head {
            id,
            respond,
            shared,
            first,
            parts,
        } = *head;
        let mut headers = parts.headers;
        headers.clear();
        let conn = Py::new(
            py,
            Conn {
                id,
                conns: self.conns.clone(),
                inbox: self.inbox.clone(),
                outbox: self.outbox.clone_ref(py),
                create_future: self.create_future.clone_ref(py),
                shared,
                buffered: first,
                body_done: false,
                pending_receive: None,
                disconnected: false,
                respond: Some(respond),
                spare_headers: Some(headers),
                head: None,
                stream: None,
                pending_send: None,
                complete: false,
            },
        )?;
        self.conns.borrow_mut().insert(id, conn.clone_ref(py));
        let coroutine = self
            .handle
            .call1(py, (self.app.clone_ref(py), scope, conn))?;
        self.tasks.spawn(py, id, coroutine)
    }

    fn start_websocket(&mut self, py: Python<'_>, head: crate::ws::Head) -> PyResult<()> {
        let scope = self.scope(py, &head.parts, true)?;
        let subprotocols = PyList::empty(py);
        for value in head.parts.headers.get_all("sec-websocket-protocol") {
            for protocol in value.to_str().unwrap_or("").split(',') {
                if !protocol.trim().is_empty() {
                    subprotocols.append(protocol.trim())?;
                }
            }
        }
        scope.set_item(intern!(py, "subprotocols"), subprotocols)?;
        let id = head.id;
        let conn = crate::ws::WsConn::new(
            py,
            head,
            self.websockets.clone(),
            self.create_future.clone_ref(py),
            self.inbox.clone(),
        )?;
        let conn = Py::new(py, conn)?;
        self.websockets.borrow_mut().insert(id, conn.clone_ref(py));
        let coroutine = self
            .handle
            .call1(py, (self.app.clone_ref(py), scope, conn))?;
        self.tasks.spawn(py, id, coroutine)
    }

    fn websocket(&self, py: Python<'_>, id: u64) -> Option<Py<crate::ws::WsConn>> {
        self.websockets.borrow().get(&id).map(|c| c.clone_ref(py))
    }

    /// A dict with every key of a request's scope in order, the constant values set:
    /// each scope is a copy of it (CPython copies a dict's key table whole), whose
    /// values are then replaced in place, never growing the dict.
    fn template<'py>(
        py: Python<'py>,
        asgi: &Bound<'py, PyDict>,
        root_path: &str,
        websocket: bool,
    ) -> PyResult<Py<PyDict>> {
        let scope = PyDict::new(py);
        let kind = if websocket { "websocket" } else { "http" };
        scope.set_item(intern!(py, "type"), PyString::intern(py, kind))?;
        scope.set_item(intern!(py, "asgi"), asgi)?;
        scope.set_item(intern!(py, "http_version"), intern!(py, "1.1"))?;
        if !websocket {
            scope.set_item(intern!(py, "method"), intern!(py, "GET"))?;
        }
        let scheme = if websocket { "ws" } else { "http" };
        scope.set_item(intern!(py, "scheme"), PyString::intern(py, scheme))?;
        for key in [
            intern!(py, "path"),
            intern!(py, "raw_path"),
            intern!(py, "query_string"),
        ] {
            scope.set_item(key, py.None())?;
        }
        scope.set_item(intern!(py, "root_path"), root_path)?;
        for key in [
            intern!(py, "headers"),
            intern!(py, "client"),
            intern!(py, "server"),
            intern!(py, "state"),
        ] {
            scope.set_item(key, py.None())?;
        }
        Ok(scope.unbind())
    }

    /// `name` as the scope's `bytes` (see `header_names`).
    fn header_name<'py>(
        &self,
        py: Python<'py>,
        name: &hyper::header::HeaderName,
    ) -> Bound<'py, PyBytes> {
        let mut names = self.header_names.borrow_mut();
        if let Some(made) = names.get(name) {
            return made.bind(py).clone();
        }
        let made = PyBytes::new(py, name.as_str().as_bytes());
        if names.len() < HEADER_NAMES {
            names.insert(name.clone(), made.clone().unbind());
        }
        made
    }

    /// The ASGI `client` of a `ClientAddr`'s text (see [`address`]), None if it is no
    /// address.
    fn client<'py>(&self, py: Python<'py>, text: &str) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let mut cached = self.client_host.borrow_mut();
        if let Some((known, host)) = cached.as_ref() {
            if let Some(port) = known_host_port(text, known) {
                let port = port.into_pyobject(py)?.into_any();
                return Ok(Some(PyTuple::new(py, [host.bind(py).clone(), port])?));
            }
        }
        let Some((host, port)) = address(text) else {
            return Ok(None);
        };
        let ipv4_with_port = matches!(host, std::borrow::Cow::Borrowed(_)) && port != 0;
        let host_text = host.into_owned();
        let host = PyString::new(py, &host_text).into_any();
        if ipv4_with_port {
            *cached = Some((host_text, host.clone().unbind()));
        }
        let port = port.into_pyobject(py)?.into_any();
        Ok(Some(PyTuple::new(py, [host, port])?))
    }

    /// The ASGI `server` of a listener's address, made once per address.
    fn server<'py>(&self, py: Python<'py>, addr: std::net::SocketAddr) -> PyResult<PyObject> {
        let mut cached = self.server.borrow_mut();
        if let Some((known, server)) = cached.as_ref() {
            if *known == addr {
                return Ok(server.clone_ref(py));
            }
        }
        let server = (addr.ip().to_string(), addr.port())
            .into_pyobject(py)?
            .into_any()
            .unbind();
        *cached = Some((addr, server.clone_ref(py)));
        Ok(server)
    }

    fn scope<'py>(
        &self,
        py: Python<'py>,
        parts: &hyper::http::request::Parts,
        websocket: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let template = if websocket {
            &self.ws_template
        } else {
            &self.http_template
        };
        let scope = template.bind(py).copy()?;
        let version = match parts.version {
            hyper::Version::HTTP_10 => Some(intern!(py, "1.0")),
            hyper::Version::HTTP_2 => Some(intern!(py, "2")),
            hyper::Version::HTTP_11 => None,
            _ => Some(intern!(py, "1.1")),
        };
        if let Some(version) = version {
            scope.set_item(intern!(py, "http_version"), version)?;
        }
        let https = parts
            .extensions
            .get::<Scheme>()
            .is_some_and(|s| s.0 == "https");
        if websocket {
            if https {
                scope.set_item(intern!(py, "scheme"), intern!(py, "wss"))?;
            }
        } else {
            if parts.method != hyper::Method::GET {
                let method = match parts.method {
                    hyper::Method::POST => intern!(py, "POST").clone(),
                    hyper::Method::HEAD => intern!(py, "HEAD").clone(),
                    hyper::Method::PUT => intern!(py, "PUT").clone(),
                    hyper::Method::DELETE => intern!(py, "DELETE").clone(),
                    hyper::Method::PATCH => intern!(py, "PATCH").clone(),
                    hyper::Method::OPTIONS => intern!(py, "OPTIONS").clone(),
                    ref other => PyString::new(py, other.as_str()),
                };
                scope.set_item(intern!(py, "method"), method)?;
            }
            if https {
                scope.set_item(intern!(py, "scheme"), intern!(py, "https"))?;
            }
        }
        let raw_path = parts.uri.path();
        let path = percent_encoding::percent_decode_str(raw_path).decode_utf8_lossy();
        if self.root_path.is_empty() {
            scope.set_item(intern!(py, "path"), path.as_ref())?;
            scope.set_item(
                intern!(py, "raw_path"),
                PyBytes::new(py, raw_path.as_bytes()),
            )?;
        } else {
            // As uvicorn does: `path` includes the mount prefix, which apps strip.
            scope.set_item(intern!(py, "path"), format!("{}{path}", self.root_path))?;
            scope.set_item(
                intern!(py, "raw_path"),
                PyBytes::new(py, format!("{}{raw_path}", self.root_path).as_bytes()),
            )?;
        }
        let query = parts.uri.query().unwrap_or("");
        scope.set_item(
            intern!(py, "query_string"),
            PyBytes::new(py, query.as_bytes()),
        )?;
        let headers = PyList::empty(py);
        if let Some(authority) = parts.uri.authority() {
            // HTTP/2 carries the host as `:authority`; ASGI apps read the `host` header.
            if !parts.headers.contains_key(hyper::header::HOST) {
                headers.append(PyTuple::new(
                    py,
                    [
                        self.header_name(py, &hyper::header::HOST),
                        PyBytes::new(py, authority.as_str().as_bytes()),
                    ],
                )?)?;
            }
        }
        for (name, value) in &parts.headers {
            headers.append(PyTuple::new(
                py,
                [
                    self.header_name(py, name),
                    PyBytes::new(py, value.as_bytes()),
                ],
            )?)?;
        }
        scope.set_item(intern!(py, "headers"), headers)?;
        if let Some(client) = parts.extensions.get::<ClientAddr>() {
            if let Some(client) = self.client(py, &client.0)? {
                scope.set_item(intern!(py, "client"), client)?;
            }
        }
        if let Some(server) = parts.extensions.get::<ServerAddr>() {
            scope.set_item(intern!(py, "server"), self.server(py, server.0)?)?;
        }
        let state = self.state.bind(py).downcast::<PyDict>()?.copy()?;
        scope.set_item(intern!(py, "state"), state)?;
        Ok(scope)
    }
}

/// What makes each request's task.
enum TaskMaker {
    /// `asyncio.Task(coroutine, loop=LOOP, name="request-N")` when the loop has no task
    /// factory: what `loop.create_task` calls then, in asyncio and uvloop alike, without
    /// the keyword-argument handling that cost uvloop about 1,600 instructions per
    /// request. The loop given saves the task looking up the running one (in Python
    /// 3.11 a getpid(2) system call per request); the name given saves the `Task-N`
    /// that 3.11 formats with `PyUnicode_FromFormat` (about 1,450 instructions).
    /// `kwargs` is one dict, its `name` replaced for each task.
    Task { task: PyObject, kwargs: Py<PyDict> },
    /// `loop.create_task(coroutine)`, the loop's task factory then makes it.
    Factory(PyObject),
}

impl TaskMaker {
    /// A factory is looked for once, after the lifespan startup (an app sets it
    /// there, if at all).
    fn new(py: Python<'_>, event_loop: &PyObject) -> PyResult<TaskMaker> {
        if event_loop.call_method0(py, "get_task_factory")?.is_none(py) {
            let kwargs = PyDict::new(py);
            kwargs.set_item(intern!(py, "loop"), event_loop)?;
            kwargs.set_item(intern!(py, "name"), py.None())?;
            Ok(TaskMaker::Task {
                task: py.import("asyncio")?.getattr("Task")?.unbind(),
                kwargs: kwargs.unbind(),
            })
        } else {
            Ok(TaskMaker::Factory(event_loop.getattr(py, "create_task")?))
        }
    }

    /// Request `id`'s task, running `coroutine`.
    fn spawn(&self, py: Python<'_>, id: u64, coroutine: PyObject) -> PyResult<()> {
        match self {
            TaskMaker::Task { task, kwargs } => {
                let kwargs = kwargs.bind(py);
                kwargs.set_item(intern!(py, "name"), task_name(py, id))?;
                task.bind(py).call((coroutine,), Some(kwargs))?;
            }
            TaskMaker::Factory(create_task) => {
                create_task.call1(py, (coroutine,))?;
            }
        }
        Ok(())
    }
}

/// `request-N`: the name of request `id`'s task, written without a formatter.
fn task_name(py: Python<'_>, id: u64) -> Bound<'_, PyString> {
    const PREFIX: &[u8] = b"request-";
    let mut text = [0u8; PREFIX.len() + 20];
    text[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = id;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let digits = &digits[start..];
    let end = PREFIX.len() + digits.len();
    text[PREFIX.len()..end].copy_from_slice(digits);
    // The text is ASCII.
    PyString::new(py, std::str::from_utf8(&text[..end]).unwrap_or("request"))
}

/// `IP:PORT` or `IP` (from a proxy) as ASGI's `(host, port)`. An IPv4 address is
/// given as written (the parser accepts only the canonical form, so it is the same
/// text `to_string` would make, without formatting it again); IPv6 in its canonical
/// form.
fn address(text: &str) -> Option<(std::borrow::Cow<'_, str>, u16)> {
    use std::borrow::Cow;
    if let Some((host, port)) = text.rsplit_once(':') {
        if !host.contains(':') {
            if let (Ok(_), Ok(port)) = (host.parse::<std::net::Ipv4Addr>(), port.parse()) {
                return Some((Cow::Borrowed(host), port));
            }
        }
    }
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Some((Cow::Owned(addr.ip().to_string()), addr.port()));
    }
    if text.parse::<std::net::Ipv4Addr>().is_ok() {
        return Some((Cow::Borrowed(text), 0));
    }
    text.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| (Cow::Owned(ip.to_string()), 0))
}

/// The port of `text` if it is `HOST:PORT` with `host` (an IPv4 address as
/// [`address`] accepted it) as its HOST; None for anything else, which [`address`]
/// then reads.
fn known_host_port(text: &str, host: &str) -> Option<u16> {
    let port = text.strip_prefix(host)?.strip_prefix(':')?;
    // u16's parser takes a leading '+', which an address's port never has.
    if port.starts_with('+') {
        return None;
    }
    port.parse().ok()
}

#[pymethods]
impl Bridge {
    /// The eventfd is readable: take every event.
    fn wake(&mut self, py: Python<'_>) {
        let mut batch = std::mem::take(&mut self.batch);
        self.inbox.take_into(&mut batch);
        for event in batch.drain(..) {
            let handled = match event {
                Event::Head(head) => self.start(py, head),
                Event::Body { id, data, more } => match self.conn(py, id) {
                    Some(conn) => conn.borrow_mut(py).chunk(py, data, more),
                    None => Ok(()),
                },
                Event::Disconnect(id) => match self.conn(py, id) {
                    Some(conn) => conn.borrow_mut(py).gone(py),
                    None => Ok(()),
                },
                Event::WsHead(head) => self.start_websocket(py, *head),
                Event::WsText { id, text } => match self.websocket(py, id) {
                    Some(conn) => conn.borrow_mut(py).text(py, text),
                    None => Ok(()),
                },
                Event::WsBinary { id, data } => match self.websocket(py, id) {
                    Some(conn) => conn.borrow_mut(py).binary(py, data),
                    None => Ok(()),
                },
                Event::WsSent { id, ok } => match self.websocket(py, id) {
                    Some(conn) => conn.borrow_mut(py).sent(py, ok),
                    None => Ok(()),
                },
                Event::WsClosed { id, code } => match self.websocket(py, id) {
                    Some(conn) => conn.borrow_mut(py).gone(py, code),
                    None => Ok(()),
                },
                Event::Sent { id, ok } => match self.conn(py, id) {
                    Some(conn) => conn.borrow_mut(py).sent(py, ok),
                    None => Ok(()),
                },
                Event::Stop => resolve(py, &self.stopped, py.None()),
            };
            if let Err(e) = handled {
                tracing::error!(pid = std::process::id(), "ASGI bridge: {e}");
            }
        }
        self.batch = batch;
    }
}

/// Resolves an asyncio future unless it is done (cancelled) already.
pub(crate) fn resolve(py: Python<'_>, future: &PyObject, value: PyObject) -> PyResult<()> {
    if !future
        .call_method0(py, intern!(py, "done"))?
        .is_truthy(py)?
    {
        future.call_method1(py, intern!(py, "set_result"), (value,))?;
    }
    Ok(())
}

pub(crate) fn fail(py: Python<'_>, future: &PyObject, error: PyErr) -> PyResult<()> {
    if !future
        .call_method0(py, intern!(py, "done"))?
        .is_truthy(py)?
    {
        future.call_method1(py, intern!(py, "set_exception"), (error.value(py),))?;
    }
    Ok(())
}

fn disconnected_error() -> PyErr {
    PyOSError::new_err("the client disconnected")
}

/// One request as the app sees it: its `receive` and `send`.
#[pyclass(unsendable)]
pub struct Conn {
    id: u64,
    conns: Conns,
    inbox: Arc<Inbox>,
    outbox: Py<Outbox>,
    create_future: PyObject,
    /// With the request's task on the server thread (its `answered` is set with
    /// `complete`, for the [`DisconnectGuard`]).
    shared: Arc<Shared>,
    /// A body chunk that arrived before `receive()` asked (or the empty body).
    buffered: Option<(Bytes, bool)>,
    /// The last body chunk was given to the app.
    body_done: bool,
    pending_receive: Option<PyObject>,
    disconnected: bool,
    /// Until the response (head, and the body or the start of its stream) is handed over.
    respond: Option<oneshot::Sender<Response>>,
    /// The request's header map, emptied: the response's headers go into it. Its
    /// memory, allocated on the server thread, goes back there with the response
    /// and is freed there, and the response needs no allocation of its own for them
    /// (a map made on this thread and freed on the other cost malloc the slow path
    /// on both, their per-thread caches filling on one side and draining on the
    /// other).
    spare_headers: Option<hyper::HeaderMap>,
    head: Option<(hyper::StatusCode, hyper::HeaderMap)>,
    stream: Option<mpsc::Sender<Bytes>>,
    pending_send: Option<PyObject>,
    /// The last body message was sent.
    complete: bool,
}

impl Conn {
    fn request_message(py: Python<'_>, data: &[u8], more: bool) -> PyResult<PyObject> {
        let message = PyDict::new(py);
        message.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
        message.set_item(intern!(py, "body"), PyBytes::new(py, data))?;
        message.set_item(intern!(py, "more_body"), more)?;
        Ok(message.into_any().unbind())
    }

    fn disconnect_message(py: Python<'_>) -> PyResult<PyObject> {
        let message = PyDict::new(py);
        message.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
        Ok(message.into_any().unbind())
    }

    fn chunk(&mut self, py: Python<'_>, data: Bytes, more: bool) -> PyResult<()> {
        match self.pending_receive.take() {
            Some(future) => {
                self.body_done = !more;
                resolve(py, &future, Self::request_message(py, &data, more)?)
            }
            None => {
                self.buffered = Some((data, more));
                Ok(())
            }
        }
    }

    fn gone(&mut self, py: Python<'_>) -> PyResult<()> {
        self.disconnected = true;
        if let Some(future) = self.pending_receive.take() {
            resolve(py, &future, Self::disconnect_message(py)?)?;
        }
        if let Some(future) = self.pending_send.take() {
            fail(py, &future, disconnected_error())?;
        }
        Ok(())
    }

    fn sent(&mut self, py: Python<'_>, ok: bool) -> PyResult<()> {
        if !ok {
            self.disconnected = true;
        }
        match self.pending_send.take() {
            Some(future) if ok => resolve(py, &future, py.None()),
            Some(future) => fail(py, &future, disconnected_error()),
            None => Ok(()),
        }
    }

    fn future(&self, py: Python<'_>) -> PyResult<PyObject> {
        self.create_future.call0(py)
    }

    /// Hands the response to hyper: whole, or the start of a stream.
    fn respond(&mut self, py: Python<'_>, body: Bytes, more: bool) -> PyResult<PyObject> {
        let Some((status, headers)) = self.head.take() else {
            return Err(PyRuntimeError::new_err(
                "http.response.body sent before http.response.start",
            ));
        };
        let Some(respond) = self.respond.take() else {
            return Err(PyRuntimeError::new_err("response already sent"));
        };
        let mut chunks = None;
        let boxed = if more {
            let (sender, receiver) = mpsc::channel(STREAM_CHUNKS);
            chunks = Some(sender);
            ChannelBody {
                chunks: receiver,
                shared: self.shared.clone(),
            }
            .boxed_unsync()
        } else {
            // Before hyper has the response, so that its guard sees it.
            self.shared.answered.store(true, Release);
            forkd::app::full(body.clone())
        };
        let mut response = hyper::Response::new(boxed);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        if respond.is_closed() || Outbox::send(&self.outbox, py, Answer(respond, response)).is_err()
        {
            self.disconnected = true;
            return Err(disconnected_error());
        }
        match chunks {
            Some(sender) => {
                self.stream = Some(sender);
                self.push(py, body, true)
            }
            None => {
                self.completed(py)?;
                done(py)
            }
        }
    }

    /// Queues a streamed chunk; waits (a future) when the stream is full.
    fn push(&mut self, py: Python<'_>, body: Bytes, more: bool) -> PyResult<PyObject> {
        let Some(stream) = &self.stream else {
            return Err(PyRuntimeError::new_err("no response stream"));
        };
        let result = if body.is_empty() {
            Ok(())
        } else {
            stream.try_send(body)
        };
        let waited = match result {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.disconnected = true;
                return Err(disconnected_error());
            }
            Err(mpsc::error::TrySendError::Full(body)) => {
                let Some(runtime) = self.inbox.runtime.get() else {
                    return Err(PyRuntimeError::new_err("no server runtime"));
                };
                let stream = stream.clone();
                let inbox = self.inbox.clone();
                let id = self.id;
                runtime.spawn(async move {
                    let ok = stream.send(body).await.is_ok();
                    inbox.push(Event::Sent { id, ok });
                });
                let future = self.future(py)?;
                self.pending_send = Some(future.clone_ref(py));
                Some(future)
            }
        };
        if !more {
            // Dropping our sender ends the body once the queued chunks are written.
            self.stream = None;
            self.shared.answered.store(true, Release);
            self.completed(py)?;
        }
        match waited {
            Some(future) => Ok(future),
            None => done(py),
        }
    }

    /// The last body message was sent: from now on `receive()` answers
    /// `http.disconnect` (as uvicorn does once a response is complete), a waiting one
    /// at once, as no Disconnect event will come (see [`DisconnectGuard`]).
    fn completed(&mut self, py: Python<'_>) -> PyResult<()> {
        self.complete = true;
        match self.pending_receive.take() {
            Some(future) => resolve(py, &future, Self::disconnect_message(py)?),
            None => Ok(()),
        }
    }

    fn forget(&self) {
        self.conns.borrow_mut().remove(&self.id);
    }
}

/// The bytes of a `bytes` object (one copy), or of a bytearray / memoryview / other
/// buffer through `bytes(value)`.
pub(crate) fn bytes_of(value: Option<Bound<'_, PyAny>>) -> PyResult<Bytes> {
    let Some(value) = value else {
        return Ok(Bytes::new());
    };
    if let Ok(bytes) = value.downcast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(bytes.as_bytes()));
    }
    let converted = value.py().get_type::<PyBytes>().call1((value,))?;
    let bytes = converted.downcast::<PyBytes>()?;
    Ok(Bytes::copy_from_slice(bytes.as_bytes()))
}

/// `f` of the bytes of a `bytes` object in place (a header's name and value are parsed
/// from it, not copied first), or of `bytes(value)` for another buffer.
fn with_bytes<R>(value: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(bytes) = value.downcast::<PyBytes>() {
        return Ok(f(bytes.as_bytes()));
    }
    let converted = value.py().get_type::<PyBytes>().call1((value,))?;
    Ok(f(converted.downcast::<PyBytes>()?.as_bytes()))
}

/// One `(name, value)` of `http.response.start`'s headers into `map`. A 2-tuple (what
/// apps send) has its items read directly; any other sequence through `item[0]` and
/// `item[1]` (a Python int made and a `__getitem__` called for each).
fn append_header(map: &mut hyper::HeaderMap, item: &Bound<'_, PyAny>) -> PyResult<()> {
    let (name, value) = match item.downcast::<PyTuple>() {
        Ok(pair) if pair.len() == 2 => (pair.get_item(0)?, pair.get_item(1)?),
        _ => (item.get_item(0)?, item.get_item(1)?),
    };
    let name = with_bytes(&name, |name| {
        hyper::header::HeaderName::from_bytes(name).map_err(|_| {
            PyRuntimeError::new_err(format!(
                "invalid header name {:?}",
                String::from_utf8_lossy(name)
            ))
        })
    })??;
    let value = with_bytes(&value, |value| {
        hyper::header::HeaderValue::from_bytes(value)
            .map_err(|_| PyRuntimeError::new_err(format!("invalid value for header {name}")))
    })??;
    map.append(name, value);
    Ok(())
}

#[pymethods]
impl Conn {
    fn receive(&mut self, py: Python<'_>) -> PyResult<PyObject> {
        if let Some((data, more)) = self.buffered.take() {
            self.body_done = !more;
            return ready(py, Self::request_message(py, &data, more)?);
        }
        if self.disconnected || self.complete {
            return ready(py, Self::disconnect_message(py)?);
        }
        if !self.body_done {
            self.shared.demand.notify_one();
        }
        let future = self.future(py)?;
        self.pending_receive = Some(future.clone_ref(py));
        Ok(future)
    }

    fn send(&mut self, py: Python<'_>, message: &Bound<'_, PyDict>) -> PyResult<PyObject> {
        let kind = message
            .get_item(intern!(py, "type"))?
            .ok_or_else(|| PyRuntimeError::new_err("ASGI message without a type"))?;
        // PyBackedStr, not &str: a borrowed &str needs Python 3.10's limited API (abi3).
        let kind = kind.extract::<pyo3::pybacked::PyBackedStr>()?;
        if self.disconnected {
            return Err(disconnected_error());
        }
        match &*kind {
            "http.response.start" => {
                if self.head.is_some() || self.respond.is_none() {
                    return Err(PyRuntimeError::new_err("response already started"));
                }
                let status: u16 = message
                    .get_item(intern!(py, "status"))?
                    .ok_or_else(|| PyRuntimeError::new_err("http.response.start without status"))?
                    .extract()?;
                let status = hyper::StatusCode::from_u16(status)
                    .map_err(|_| PyRuntimeError::new_err(format!("invalid status {status}")))?;
                let mut map = self.spare_headers.take().unwrap_or_default();
                if let Some(headers) = message.get_item(intern!(py, "headers"))? {
                    if let Ok(list) = headers.downcast::<PyList>() {
                        for item in list.iter() {
                            append_header(&mut map, &item)?;
                        }
                    } else {
                        for item in headers.try_iter()? {
                            append_header(&mut map, &item?)?;
                        }
                    }
                }
                self.head = Some((status, map));
                done(py)
            }
            "http.response.body" => {
                if self.complete {
                    return Err(PyRuntimeError::new_err(
                        "http.response.body after the response completed",
                    ));
                }
                let body = bytes_of(message.get_item(intern!(py, "body"))?)?;
                let more = match message.get_item(intern!(py, "more_body"))? {
                    Some(more) => more.is_truthy()?,
                    None => false,
                };
                if self.stream.is_some() {
                    self.push(py, body, more)
                } else {
                    self.respond(py, body, more)
                }
            }
            other => Err(PyRuntimeError::new_err(format!(
                "unexpected ASGI message {other:?} for an HTTP request"
            ))),
        }
    }

    #[getter]
    fn disconnected(&self) -> bool {
        self.disconnected
    }

    /// The app returned: a response never started is a 500; a stream never ended is cut.
    fn finished(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.respond.is_some() {
            tracing::error!(
                pid = std::process::id(),
                "ASGI app returned without sending a response"
            );
        }
        self.failed(py)
    }

    /// The app raised: 500 if the response had not started, else the connection is cut.
    fn failed(&mut self, py: Python<'_>) -> PyResult<()> {
        self.forget();
        if let Some(respond) = self.respond.take() {
            let _ = Outbox::send(
                &self.outbox,
                py,
                Answer(
                    respond,
                    forkd::app::respond(
                        500,
                        "text/plain; charset=utf-8",
                        "Internal Server Error\n",
                    ),
                ),
            );
        } else if self.stream.take().is_some() {
            self.shared.aborted.store(true, Release);
        }
        self.pending_receive = None;
        self.pending_send = None;
        Ok(())
    }
}
