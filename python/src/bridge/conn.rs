//! One HTTP request as the app sees it, on the loop ([`Conn`]): its `receive()` (body
//! chunks as the app asks, then `http.disconnect`) and `send()` (the response head,
//! then a whole body or a stream), and how it ends when the app returns or raises.

use super::body::ChannelBody;
use super::headers::{Kind, ResponseHeaders};
use super::outbox::{Answer, Outbox};
use crate::awaitable::{done, fail, ready, resolve};
use crate::event::{Event, Shared};
use crate::ids::ById;
use crate::inbox::Inbox;
use crate::pybytes::bytes_of;
use bytes::Bytes;
use forkd::app::Response;
use http_body_util::BodyExt;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Chunks of a streamed response body in flight between the loop and hyper.
const STREAM_CHUNKS: usize = 4;

/// The open HTTP requests, by id.
pub type Conns = Rc<RefCell<ById<Py<Conn>>>>;

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
    /// The worker's reader of response headers (and its caches).
    response_headers: Rc<ResponseHeaders>,
    /// With the request's task on the server thread (its `answered` is set with
    /// `complete`, for the [`DisconnectGuard`](super::body::DisconnectGuard)).
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
    /// The request's extensions, read into its scope already: they go back with the
    /// response (see [`Answer`]).
    extensions: hyper::http::Extensions,
    head: Option<(hyper::StatusCode, hyper::HeaderMap)>,
    stream: Option<mpsc::Sender<Bytes>>,
    pending_send: Option<PyObject>,
    /// The last body message was sent.
    complete: bool,
}

impl Conn {
    /// The loop's side of request `head`, whose scope the app gets with it.
    pub fn new(
        head: crate::event::HttpHead,
        conns: Conns,
        inbox: Arc<Inbox>,
        outbox: Py<Outbox>,
        create_future: PyObject,
        response_headers: Rc<ResponseHeaders>,
    ) -> Conn {
        let crate::event::HttpHead {
            id,
            respond,
            shared,
            first,
            parts,
        } = head;
        let mut headers = parts.headers;
        headers.clear();
        let extensions = parts.extensions;
        Conn {
            id,
            conns,
            inbox,
            outbox,
            create_future,
            response_headers,
            shared,
            buffered: first,
            body_done: false,
            pending_receive: None,
            disconnected: false,
            respond: Some(respond),
            spare_headers: Some(headers),
            extensions,
            head: None,
            stream: None,
            pending_send: None,
            complete: false,
        }
    }

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

    pub fn chunk(&mut self, py: Python<'_>, data: Bytes, more: bool) -> PyResult<()> {
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

    pub fn gone(&mut self, py: Python<'_>) -> PyResult<()> {
        self.disconnected = true;
        if let Some(future) = self.pending_receive.take() {
            resolve(py, &future, Self::disconnect_message(py)?)?;
        }
        if let Some(future) = self.pending_send.take() {
            fail(py, &future, disconnected_error())?;
        }
        Ok(())
    }

    pub fn sent(&mut self, py: Python<'_>, ok: bool) -> PyResult<()> {
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
        // A stream: its sender, and the first chunk for it.
        let mut stream = None;
        let boxed = if more {
            let (sender, receiver) = mpsc::channel(STREAM_CHUNKS);
            stream = Some((sender, body));
            ChannelBody {
                chunks: receiver,
                shared: self.shared.clone(),
            }
            .boxed_unsync()
        } else {
            // Before hyper has the response, so that its guard sees it.
            self.shared.answered.store(true, Release);
            forkd::app::full(body)
        };
        let mut response = hyper::Response::new(boxed);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        let answer = Answer(respond, response, std::mem::take(&mut self.extensions));
        if answer.0.is_closed() || Outbox::send(&self.outbox, py, answer).is_err() {
            self.disconnected = true;
            return Err(disconnected_error());
        }
        match stream {
            Some((sender, first)) => {
                self.stream = Some(sender);
                self.push(py, first, true)
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
                let Some(runtime) = self.inbox.runtime() else {
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
    /// at once, as no Disconnect event will come (see [`DisconnectGuard`](super::body::DisconnectGuard)).
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
        if self.disconnected {
            return Err(disconnected_error());
        }
        let Some(kind) = self.response_headers.kind(&kind)? else {
            return Err(PyRuntimeError::new_err(format!(
                "unexpected ASGI message {:?} for an HTTP request",
                kind.str()?.to_string()
            )));
        };
        match kind {
            Kind::Start => {
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
                    let reader = &self.response_headers;
                    if let Ok(list) = headers.downcast::<PyList>() {
                        for item in list.iter() {
                            reader.append(&mut map, &item)?;
                        }
                    } else {
                        for item in headers.try_iter()? {
                            reader.append(&mut map, &item?)?;
                        }
                    }
                }
                self.head = Some((status, map));
                done(py)
            }
            Kind::Body => {
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
                    std::mem::take(&mut self.extensions),
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
