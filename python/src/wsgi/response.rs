//! A WSGI response on its way out ([`Call`]): `start_response` (PEP 3333, with
//! `exc_info`), the `write()` callable and the iterable's chunks, handed to the
//! server thread: a response whose whole body is a list goes as one body; any other is
//! streamed over a small bounded channel ([`StreamBody`]), each chunk waiting (the GIL
//! released) until hyper has taken the one before, so a slow client holds the app back
//! instead of filling memory. A client that leaves ends the app's iteration (its
//! `close()` is `forkd._wsgi.handle`'s). An app's `Content-Length` holds: the body is
//! cut at it, and a shorter body ends in an error, so the connection closes instead of
//! passing for a complete response.

use super::head::{body_expected, check_header, content_length, parse_status, Header};
use crate::pybytes::bytes_of;
use bytes::Bytes;
use forkd::app::{BoxError, Response};
use hyper::body::Frame;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::StatusCode;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};

/// Chunks a streamed response may have in the channel ahead of hyper.
const IN_FLIGHT: usize = 2;

/// What goes to a streamed body.
pub enum Chunk {
    Data(Bytes),
    /// The response cannot be completed (the app failed after its head went, or its
    /// body was shorter than its `Content-Length`): the body ends with an error, and
    /// hyper closes the connection (resets the HTTP/2 stream).
    Abort,
}

/// A streamed response body, fed by a pool thread.
pub struct StreamBody {
    chunks: mpsc::Receiver<Chunk>,
    /// An `Abort` was received and answered `Pending` once, so that hyper flushed what
    /// it had (the head and the body so far) before the error, which ends the
    /// connection without flushing.
    aborting: bool,
}

impl hyper::body::Body for StreamBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.aborting {
            return Poll::Ready(Some(Err("the WSGI response could not be completed".into())));
        }
        match self.chunks.poll_recv(cx) {
            Poll::Ready(Some(Chunk::Data(data))) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Poll::Ready(Some(Chunk::Abort)) => {
                self.aborting = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The status and headers `start_response` was given, not sent yet.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    /// The app's `Content-Length`.
    length: Option<u64>,
    /// `Connection: close` from the app (HTTP/1 only).
    close: bool,
}

/// One request's response, as the app's `start_response` and `write` and the driver
/// (`forkd._wsgi.handle`) see it.
#[pyclass(module = "forkd._native")]
pub struct Call {
    method: hyper::Method,
    http1: bool,
    /// Until the head is sent.
    respond: Option<oneshot::Sender<Response>>,
    head: Option<Head>,
    /// The streamed body's channel, once the head went with one.
    chunks: Option<mpsc::Sender<Chunk>>,
    /// The app's `Content-Length` and whether the body must reach it.
    length: Option<u64>,
    must_fill: bool,
    /// Body bytes sent so far.
    sent: u64,
    /// True once the response is complete or failed.
    done: bool,
    /// The client went away: the driver logs the app's end as routine.
    #[pyo3(get)]
    gone: bool,
}

impl Call {
    pub fn new(
        method: hyper::Method,
        version: hyper::Version,
        respond: oneshot::Sender<Response>,
    ) -> Call {
        Call {
            method,
            http1: version < hyper::Version::HTTP_2,
            respond: Some(respond),
            head: None,
            chunks: None,
            length: None,
            must_fill: false,
            sent: 0,
            done: false,
            gone: false,
        }
    }

    fn client_gone(&mut self) -> PyErr {
        self.gone = true;
        self.chunks = None;
        PyOSError::new_err("the client went away")
    }

    /// Sends the head with `body`; the client may be gone.
    fn send_head(&mut self, body: forkd::app::Body) -> PyResult<()> {
        let Some(head) = self.head.take() else {
            return Err(PyRuntimeError::new_err(
                "the WSGI app sent a body before calling start_response()",
            ));
        };
        let Some(respond) = self.respond.take() else {
            return Err(PyRuntimeError::new_err("the response was sent already"));
        };
        self.length = head.length;
        self.must_fill = head.length.is_some() && body_expected(&self.method, head.status);
        let mut response = hyper::Response::new(body);
        *response.status_mut() = head.status;
        *response.headers_mut() = head.headers;
        if head.close && self.http1 {
            response
                .headers_mut()
                .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        respond.send(response).map_err(|_| self.client_gone())
    }

    /// Sends the head with a streamed body, unless it went already.
    fn start_stream(&mut self) -> PyResult<()> {
        if self.respond.is_none() {
            return Ok(());
        }
        let (sender, receiver) = mpsc::channel(IN_FLIGHT);
        self.send_head(http_body_util::BodyExt::boxed_unsync(StreamBody {
            chunks: receiver,
            aborting: false,
        }))?;
        self.chunks = Some(sender);
        Ok(())
    }

    /// Sends `chunk` once the channel has room, the GIL released meanwhile.
    fn push(&mut self, py: Python<'_>, chunk: Chunk) -> PyResult<()> {
        let Some(sender) = self.chunks.as_ref() else {
            return Err(self.client_gone());
        };
        let sent = match sender.try_send(chunk) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
            Err(mpsc::error::TrySendError::Full(chunk)) => {
                py.allow_threads(|| sender.blocking_send(chunk).map_err(drop))
            }
        };
        sent.map_err(|()| self.client_gone())
    }

    /// Body bytes for the stream, cut at the app's `Content-Length`.
    fn send_data(&mut self, py: Python<'_>, mut data: Bytes) -> PyResult<()> {
        if let Some(length) = self.length {
            let room = length.saturating_sub(self.sent);
            if (data.len() as u64) > room {
                if room == 0 {
                    return Ok(());
                }
                data.truncate(room as usize);
            }
        }
        self.sent += data.len() as u64;
        self.push(py, Chunk::Data(data))
    }

    /// The end of a streamed body: complete, or cut (connection closed) if shorter than
    /// its `Content-Length`.
    fn end_stream(&mut self, py: Python<'_>) -> PyResult<()> {
        self.done = true;
        let short = self.must_fill && self.length.is_some_and(|l| self.sent < l);
        if short {
            tracing::warn!(
                pid = std::process::id(),
                "WSGI app sent {} of the {} bytes its Content-Length announced: the connection is closed",
                self.sent,
                self.length.unwrap_or(0)
            );
            let _ = self.push(py, Chunk::Abort);
        }
        self.chunks = None;
        Ok(())
    }
}

/// A status line or header list the app gave, checked.
fn head_of(status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<Head> {
    let status = status
        .downcast::<PyString>()
        .map_err(|_| PyTypeError::new_err("start_response(): the status must be a str"))?;
    let status = parse_status(&status.to_cow()?).map_err(PyValueError::new_err)?;
    let mut head = Head {
        status,
        headers: HeaderMap::new(),
        length: None,
        close: false,
    };
    let list = headers.downcast::<PyList>().map_err(|_| {
        PyTypeError::new_err("start_response(): the headers must be a list of (name, value)")
    })?;
    for item in list.iter() {
        let pair = item.downcast::<PyTuple>().map_err(|_| {
            PyTypeError::new_err("start_response(): each header must be a (name, value) tuple")
        })?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err(
                "start_response(): each header must be a (name, value) tuple",
            ));
        }
        let name = pair.get_item(0)?;
        let value = pair.get_item(1)?;
        let (Ok(name), Ok(value)) = (name.downcast::<PyString>(), value.downcast::<PyString>())
        else {
            return Err(PyTypeError::new_err(
                "start_response(): header names and values must be str",
            ));
        };
        match check_header(&name.to_cow()?, &value.to_cow()?).map_err(PyValueError::new_err)? {
            Header::Send(name, value) => {
                if name == hyper::header::CONTENT_LENGTH {
                    let length = content_length(&value).map_err(PyValueError::new_err)?;
                    if head.length.is_some_and(|l| l != length) {
                        return Err(PyValueError::new_err(
                            "start_response(): two different Content-Length headers",
                        ));
                    }
                    head.length = Some(length);
                    head.headers.insert(name, value);
                } else {
                    head.headers.append(name, value);
                }
            }
            Header::Drop => {}
            Header::Close => head.close = true,
        }
    }
    Ok(head)
}

#[pymethods]
impl Call {
    /// PEP 3333's `start_response`: returns the `write()` callable.
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn start_response(
        slf: &Bound<'_, Self>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyObject> {
        {
            let mut this = slf.borrow_mut();
            let exc_info = exc_info.filter(|e| !e.is_none());
            match exc_info {
                Some(exc_info) if this.respond.is_none() => {
                    // The head is out: re-raise the app's exception (PEP 3333).
                    let value = exc_info.get_item(1)?;
                    let traceback = exc_info.get_item(2)?;
                    let value = value.call_method1("with_traceback", (traceback,))?;
                    return Err(PyErr::from_value(value));
                }
                Some(_) => {}
                None if this.head.is_some() || this.respond.is_none() => {
                    return Err(PyRuntimeError::new_err(
                        "start_response() called again without exc_info",
                    ));
                }
                None => {}
            }
            this.head = Some(head_of(status, headers)?);
        }
        Ok(slf.getattr("write")?.unbind())
    }

    /// PEP 3333's `write()`, and each chunk of the app's iterable: an empty chunk sends
    /// nothing (not even the head); the head goes with the first non-empty one.
    fn write(&mut self, py: Python<'_>, data: Bound<'_, PyAny>) -> PyResult<()> {
        if self.done {
            return Err(PyRuntimeError::new_err("write() after the response ended"));
        }
        let data = bytes_of(Some(data))?;
        if data.is_empty() {
            return Ok(());
        }
        // The first chunk is the whole body its Content-Length announces (Django's
        // HttpResponse, Werkzeug's Response): sent as one body with the head, no
        // stream. Whatever the app yields after it is past its length, and dropped.
        let whole = self.respond.is_some()
            && self
                .head
                .as_ref()
                .is_some_and(|h| h.length == Some(data.len() as u64));
        if whole {
            self.sent = data.len() as u64;
            return self.send_head(forkd::app::full(data));
        }
        self.start_stream()?;
        self.send_data(py, data)
    }

    /// The app's iterable was a list: its chunks, as one body when the head is still
    /// here and the length is right.
    fn whole(&mut self, py: Python<'_>, chunks: Bound<'_, PyList>) -> PyResult<()> {
        if self.respond.is_some() && self.head.is_some() {
            let mut parts = Vec::with_capacity(chunks.len());
            let mut total = 0u64;
            for chunk in chunks.iter() {
                let data = bytes_of(Some(chunk))?;
                total += data.len() as u64;
                parts.push(data);
            }
            let declared = self.head.as_ref().and_then(|h| h.length);
            if declared.is_none_or(|l| l == total) {
                let body = match parts.len() {
                    1 => parts.pop().unwrap_or_default(),
                    _ => Bytes::from(parts.concat()),
                };
                self.done = true;
                return self.send_head(forkd::app::full(body));
            }
            for data in parts {
                if !data.is_empty() {
                    self.start_stream()?;
                    self.send_data(py, data)?;
                }
            }
            return self.finish(py);
        }
        for chunk in chunks.iter() {
            self.write(py, chunk)?;
        }
        self.finish(py)
    }

    /// The iterable is exhausted: the response is complete.
    fn finish(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.done {
            return Ok(());
        }
        if self.respond.is_some() {
            if self.head.is_none() {
                return Err(PyRuntimeError::new_err(
                    "the WSGI app returned without calling start_response()",
                ));
            }
            let empty_is_right = {
                let head = self.head.as_ref();
                head.and_then(|h| h.length).is_none_or(|l| l == 0)
                    || head.is_some_and(|h| !body_expected(&self.method, h.status))
            };
            if empty_is_right {
                self.done = true;
                return self.send_head(forkd::app::full(Bytes::new()));
            }
            self.start_stream()?;
        }
        self.end_stream(py)
    }

    /// The app failed: a 500 if nothing was sent yet, else the response is cut.
    fn fail(&mut self, py: Python<'_>) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(respond) = self.respond.take() {
            let _ = respond.send(forkd::app::respond(
                500,
                "text/plain; charset=utf-8",
                "Internal Server Error\n",
            ));
        } else if self.chunks.is_some() {
            let _ = self.push(py, Chunk::Abort);
            self.chunks = None;
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // A response neither finished nor failed (the driver never got to it) must not
        // pass for complete.
        if !self.done {
            if let Some(chunks) = self.chunks.take() {
                let _ = chunks.try_send(Chunk::Abort);
            }
        }
    }
}
