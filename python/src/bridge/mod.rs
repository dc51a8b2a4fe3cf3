//! The ASGI bridge between the worker's server thread (tokio + hyper) and its main thread
//! (the asyncio loop, holding the GIL).
//!
//! Server thread -> loop: events go into the [`Inbox`](crate::inbox::Inbox), which
//! wakes the loop once per round of the server's tasks, so the server thread never
//! waits for the GIL, and the loop takes many events per wake-up. One event per request
//! head, one per body chunk the app asked for (`receive()` signals demand, so an upload
//! is read only as fast as the app consumes it), one when the client is gone.
//!
//! Loop -> server thread: the response head and a whole body go back through the
//! [`Outbox`](outbox::Outbox), once per loop iteration; a streamed body over a small
//! bounded channel whose `send()` waits (an asyncio future resolved by an event) when
//! it is full.
//!
//! Here: the [`Bridge`], the loop's side, which turns the events into ASGI calls.
//! Around it: [`app`] (the server thread's side of each request), [`body`] (request and
//! response bodies there), [`outbox`], [`conn`] (a request as the app sees it) with
//! [`headers`] (its response headers read), [`scope`] with [`recent`] (its objects that
//! repeat from request to request) and [`tasks`]. WebSockets are `ws.rs`'s.

mod app;
mod body;
mod conn;
mod headers;
mod outbox;
mod recent;
mod scope;
mod tasks;

pub use app::PyApp;
pub use conn::Conn;
pub use outbox::Answer;
/// The client's `(host, port)` of a `ClientAddr`, as the ASGI scope has it (the WSGI
/// environ's `REMOTE_ADDR` and `REMOTE_PORT` too).
pub use scope::address as client_address;

use crate::awaitable::resolve;
use crate::event::{Event, HttpHead, WsHead};
use crate::inbox::Inbox;
use crate::ws::{WsConn, WsConns};
use conn::Conns;
use outbox::Outbox;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyList;
use scope::Scopes;
use std::rc::Rc;
use std::sync::Arc;
use tasks::TaskMaker;
use tokio::sync::mpsc;

/// The loop's side: turns events into ASGI calls. Lives on the main thread.
#[pyclass(unsendable)]
pub struct Bridge {
    inbox: Arc<Inbox>,
    outbox: Py<Outbox>,
    /// The events of the current wake-up (kept for its capacity).
    batch: Vec<Event>,
    conns: Conns,
    websockets: WsConns,
    app: PyObject,
    /// `forkd._worker.handle`: runs the app for one request, handles its exceptions.
    handle: PyObject,
    tasks: TaskMaker,
    create_future: PyObject,
    scopes: Scopes,
    response_headers: Rc<headers::ResponseHeaders>,
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
        let scopes = Scopes::new(py, state, root_path)?;
        crate::awaitable::set_done(py, event_loop)?;
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
            scopes,
            response_headers: Rc::new(headers::ResponseHeaders::new()),
            stopped,
        })
    }

    fn conn(&self, py: Python<'_>, id: u64) -> Option<Py<Conn>> {
        self.conns.borrow().get(&id).map(|c| c.clone_ref(py))
    }

    fn start(&mut self, py: Python<'_>, head: Box<HttpHead>) -> PyResult<()> {
        let scope = self.scopes.scope(py, &head.parts, false)?;
        let id = head.id;
        let conn = Py::new(
            py,
            Conn::new(
                *head,
                self.conns.clone(),
                self.inbox.clone(),
                self.outbox.clone_ref(py),
                self.create_future.clone_ref(py),
                self.response_headers.clone(),
            ),
        )?;
        self.conns.borrow_mut().insert(id, conn.clone_ref(py));
        let coroutine = self
            .handle
            .call1(py, (self.app.clone_ref(py), scope, conn))?;
        self.tasks.spawn(py, id, coroutine)
    }

    fn start_websocket(&mut self, py: Python<'_>, head: WsHead) -> PyResult<()> {
        let scope = self.scopes.scope(py, &head.parts, true)?;
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
        let conn = WsConn::new(
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

    fn websocket(&self, py: Python<'_>, id: u64) -> Option<Py<WsConn>> {
        self.websockets.borrow().get(&id).map(|c| c.clone_ref(py))
    }
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
