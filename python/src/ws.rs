//! WebSockets for ASGI apps (the `websocket` scope). The server thread answers the
//! upgrade request once the app has sent `websocket.accept` (101, with the accept key)
//! or `websocket.close` (403), then runs the connection with tungstenite over hyper's
//! upgraded IO: each message from the client is an event for the loop, each message the
//! app sends goes out through a small bounded channel, whose `send()` waits (an asyncio
//! future resolved by an event) while it is full: a client that reads slowly slows the
//! app down instead of filling the worker's memory. The other way round is bounded too:
//! at most [`INCOMING`](crate::event::INCOMING) client messages wait for the app's `receive()`; past that the
//! connection is not read until the app takes one (as uvicorn's `--ws-max-queue`), so a
//! client that sends faster than the app receives is held back by TCP, not buffered.

use crate::awaitable::{done, fail, ready, resolve};
use crate::event::{Credit, Event, Outgoing, WsAnswer, WsHead};
use crate::ids::ById;
use crate::inbox::Inbox;
use crate::pybytes::bytes_of;
use bytes::Bytes;
use forkd::app::Response;
use futures_util::{SinkExt, StreamExt};
use hyper::header::{HeaderValue, CONNECTION, UPGRADE};
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;

/// Messages from the app in flight to the socket.
const OUTGOING: usize = 16;

/// Whether a request asks for a WebSocket (RFC 6455 section 4.1).
pub fn is_upgrade(req: &forkd::app::Request) -> bool {
    let has_token = |name, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    req.method() == hyper::Method::GET
        && req.version() == hyper::Version::HTTP_11
        && has_token(UPGRADE, "websocket")
        && has_token(CONNECTION, "upgrade")
        && req.headers().contains_key("sec-websocket-key")
}

/// Tells the loop the request is gone if hyper drops it before the app answered.
struct Pending {
    id: u64,
    inbox: Arc<Inbox>,
    armed: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.armed {
            self.inbox.push(Event::WsClosed {
                id: self.id,
                code: 1006,
            });
        }
    }
}

/// The server thread's side of a WebSocket request.
pub async fn serve(
    id: u64,
    mut req: forkd::app::Request,
    inbox: Arc<Inbox>,
    closing: tokio::sync::watch::Receiver<u16>,
) -> Response {
    let upgrade = hyper::upgrade::on(&mut req);
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
        .unwrap_or_default();
    let (parts, _body) = req.into_parts();
    let (answer, answered) = oneshot::channel();
    let (outgoing, to_send) = mpsc::channel(OUTGOING);
    let credit = Arc::new(Credit::default());
    let mut pending = Pending {
        id,
        inbox: inbox.clone(),
        armed: true,
    };
    inbox.push(Event::WsHead(Box::new(WsHead {
        id,
        parts,
        answer,
        outgoing,
        runtime: tokio::runtime::Handle::current(),
        credit: credit.clone(),
    })));
    let (subprotocol, headers) = match answered.await {
        Ok(WsAnswer::Accept {
            subprotocol,
            headers,
        }) => (subprotocol, headers),
        Ok(WsAnswer::Deny(status)) => return deny(status),
        Err(_) => return deny(500),
    };
    pending.armed = false;
    let mut resp = hyper::Response::new(forkd::app::full(Bytes::new()));
    *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
    *resp.headers_mut() = headers;
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&tungstenite::handshake::derive_accept_key(&key)) {
        h.insert("sec-websocket-accept", accept);
    }
    if let Some(protocol) = subprotocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
        h.insert("sec-websocket-protocol", protocol);
    }
    tokio::spawn(async move {
        let code = match upgrade.await {
            Ok(upgraded) => run(upgraded, to_send, closing, id, &inbox, &credit).await,
            Err(_) => 1006,
        };
        inbox.push(Event::WsClosed { id, code });
    });
    resp
}

fn deny(status: u16) -> Response {
    forkd::app::respond(status, "text/plain; charset=utf-8", "")
}

/// Runs an accepted WebSocket until either side closes it; returns the close code.
async fn run(
    upgraded: hyper::upgrade::Upgraded,
    mut to_send: mpsc::Receiver<Outgoing>,
    mut closing: tokio::sync::watch::Receiver<u16>,
    id: u64,
    inbox: &Inbox,
    credit: &Credit,
) -> u16 {
    let io = hyper_util::rt::TokioIo::new(upgraded);
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut sink, mut stream) = ws.split();
    // Accepted after the worker's retirement was announced: told at once.
    let code = *closing.borrow_and_update();
    if code != 0 {
        return retire(&mut sink, code).await;
    }
    loop {
        tokio::select! {
            // Read only while the app keeps up (see `Credit`).
            _ = credit.room.notified(), if credit.full() => {}
            incoming = stream.next(), if !credit.full() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    credit.take();
                    inbox.push(Event::WsText { id, text });
                }
                Some(Ok(Message::Binary(data))) => {
                    credit.take();
                    inbox.push(Event::WsBinary { id, data });
                }
                Some(Ok(Message::Close(frame))) => {
                    // tungstenite answers the close; flush it out.
                    let _ = sink.flush().await;
                    return frame.map_or(1005, |f| u16::from(f.code));
                }
                Some(Ok(_)) => {
                    // Ping (the pong is queued by tungstenite) or pong.
                    let _ = sink.flush().await;
                }
                Some(Err(_)) | None => return 1006,
            },
            Ok(()) = closing.changed() => {
                let code = *closing.borrow_and_update();
                if code != 0 {
                    return retire(&mut sink, code).await;
                }
            }
            out = to_send.recv() => match out {
                Some(Outgoing::Message(message)) => {
                    if sink.send(message).await.is_err() {
                        return 1006;
                    }
                }
                Some(Outgoing::Close(code, reason)) => {
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    return code;
                }
                None => {
                    // The app returned without closing: a normal close.
                    let _ = sink.send(Message::Close(None)).await;
                    return 1000;
                }
            },
        }
    }
}

/// Close code for a worker's WebSockets when its drain starts (after
/// `python.websocket_grace`): "Service Restart", so that clients reconnect (to the new
/// workers), as Gunicorn and uvicorn send.
pub const SERVICE_RESTART: u16 = 1012;
/// Close code when the drain's `graceful_timeout` is nearly over: "Going Away".
pub const GOING_AWAY: u16 = 1001;

/// Sets the WebSockets' close code to `code` unless one is set (0 = none yet); whether
/// it changed.
pub fn first_close(current: &mut u16, code: u16) -> bool {
    if *current != 0 {
        return false;
    }
    *current = code;
    true
}

/// Closes a WebSocket because its worker retires; returns the code sent.
async fn retire<S>(sink: &mut S, code: u16) -> u16
where
    S: futures_util::Sink<Message> + Unpin,
{
    let reason = if code == SERVICE_RESTART {
        "service restart"
    } else {
        "server shutting down"
    };
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    code
}

/// The open WebSockets, by id.
pub type WsConns = Rc<RefCell<ById<Py<WsConn>>>>;

/// One WebSocket as the app sees it: its `receive` and `send`.
#[pyclass(unsendable)]
pub struct WsConn {
    id: u64,
    conns: WsConns,
    create_future: PyObject,
    inbox: Arc<Inbox>,
    runtime: tokio::runtime::Handle,
    answer: Option<oneshot::Sender<WsAnswer>>,
    outgoing: Option<mpsc::Sender<Outgoing>>,
    /// A `send()` waiting for room in `outgoing`.
    pending_send: Option<PyObject>,
    /// Messages for `receive()`, oldest first (`websocket.connect` to begin with), each
    /// with whether it holds one of the client's [`Credit`]s.
    queue: VecDeque<(PyObject, bool)>,
    credit: Arc<Credit>,
    pending_receive: Option<PyObject>,
    closed: bool,
}

impl WsConn {
    pub fn new(
        py: Python<'_>,
        head: WsHead,
        conns: WsConns,
        create_future: PyObject,
        inbox: Arc<Inbox>,
    ) -> PyResult<WsConn> {
        let connect = PyDict::new(py);
        connect.set_item(intern!(py, "type"), intern!(py, "websocket.connect"))?;
        Ok(WsConn {
            id: head.id,
            conns,
            create_future,
            inbox,
            runtime: head.runtime,
            answer: Some(head.answer),
            outgoing: Some(head.outgoing),
            pending_send: None,
            queue: VecDeque::from([(connect.into_any().unbind(), false)]),
            credit: head.credit,
            pending_receive: None,
            closed: false,
        })
    }

    /// Gives `message` to a waiting `receive()`, or queues it; `counted`: a client
    /// message, whose credit is freed when the app takes it.
    fn deliver(&mut self, py: Python<'_>, message: PyObject, counted: bool) -> PyResult<()> {
        match self.pending_receive.take() {
            Some(future) => {
                if counted {
                    self.credit.free();
                }
                resolve(py, &future, message)
            }
            None => {
                self.queue.push_back((message, counted));
                Ok(())
            }
        }
    }

    pub fn text(&mut self, py: Python<'_>, text: String) -> PyResult<()> {
        let message = PyDict::new(py);
        message.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
        message.set_item(intern!(py, "text"), text)?;
        self.deliver(py, message.into_any().unbind(), true)
    }

    pub fn binary(&mut self, py: Python<'_>, data: Vec<u8>) -> PyResult<()> {
        let message = PyDict::new(py);
        message.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
        message.set_item(intern!(py, "bytes"), PyBytes::new(py, &data))?;
        self.deliver(py, message.into_any().unbind(), true)
    }

    pub fn gone(&mut self, py: Python<'_>, code: u16) -> PyResult<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.outgoing = None;
        if let Some(future) = self.pending_send.take() {
            fail(py, &future, gone_error())?;
        }
        let message = PyDict::new(py);
        message.set_item(intern!(py, "type"), intern!(py, "websocket.disconnect"))?;
        message.set_item(intern!(py, "code"), code)?;
        self.deliver(py, message.into_any().unbind(), false)
    }

    fn end(&mut self, deny: u16, close: u16) {
        self.conns.borrow_mut().remove(&self.id);
        if let Some(answer) = self.answer.take() {
            let _ = answer.send(WsAnswer::Deny(deny));
        } else if let Some(outgoing) = self.outgoing.take() {
            let _ = self.post(&outgoing, Outgoing::Close(close, String::new()));
        }
        self.pending_receive = None;
        self.pending_send = None;
    }

    /// Queues `item` for the socket: Ok(true) if it had to wait (a task sends it and an
    /// event says when), Err if the socket is gone.
    fn post(&self, outgoing: &mpsc::Sender<Outgoing>, item: Outgoing) -> Result<bool, ()> {
        match outgoing.try_send(item) {
            Ok(()) => Ok(false),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
            Err(mpsc::error::TrySendError::Full(item)) => {
                let (outgoing, inbox, id) = (outgoing.clone(), self.inbox.clone(), self.id);
                self.runtime.spawn(async move {
                    let ok = outgoing.send(item).await.is_ok();
                    inbox.push(Event::WsSent { id, ok });
                });
                Ok(true)
            }
        }
    }

    pub fn sent(&mut self, py: Python<'_>, ok: bool) -> PyResult<()> {
        match self.pending_send.take() {
            Some(future) if ok => resolve(py, &future, py.None()),
            Some(future) => fail(py, &future, gone_error()),
            None => Ok(()),
        }
    }
}

fn gone_error() -> PyErr {
    PyOSError::new_err("the WebSocket is closed")
}

#[pymethods]
impl WsConn {
    fn receive(&mut self, py: Python<'_>) -> PyResult<PyObject> {
        if let Some((message, counted)) = self.queue.pop_front() {
            if counted {
                self.credit.free();
            }
            return ready(py, message);
        }
        let future = self.create_future.call0(py)?;
        self.pending_receive = Some(future.clone_ref(py));
        Ok(future)
    }

    fn send(&mut self, py: Python<'_>, message: &Bound<'_, PyDict>) -> PyResult<PyObject> {
        let kind = message
            .get_item(intern!(py, "type"))?
            .ok_or_else(|| PyRuntimeError::new_err("ASGI message without a type"))?;
        // PyBackedStr, not &str: a borrowed &str needs Python 3.10's limited API (abi3).
        match &*kind.extract::<pyo3::pybacked::PyBackedStr>()? {
            "websocket.accept" => {
                let Some(answer) = self.answer.take() else {
                    return Err(PyRuntimeError::new_err(
                        "the WebSocket was already accepted",
                    ));
                };
                let subprotocol = match message.get_item(intern!(py, "subprotocol"))? {
                    Some(p) if !p.is_none() => Some(p.extract::<String>()?),
                    _ => None,
                };
                let mut headers = hyper::HeaderMap::new();
                if let Some(list) = message.get_item(intern!(py, "headers"))? {
                    for item in list.try_iter()? {
                        let item = item?;
                        let name = bytes_of(Some(item.get_item(0)?))?;
                        let value = bytes_of(Some(item.get_item(1)?))?;
                        if let (Ok(name), Ok(value)) = (
                            hyper::header::HeaderName::from_bytes(&name),
                            HeaderValue::from_bytes(&value),
                        ) {
                            headers.append(name, value);
                        }
                    }
                }
                let _ = answer.send(WsAnswer::Accept {
                    subprotocol,
                    headers,
                });
                done(py)
            }
            "websocket.send" => {
                if self.answer.is_some() {
                    return Err(PyRuntimeError::new_err(
                        "websocket.send before websocket.accept",
                    ));
                }
                let outgoing = self.outgoing.clone().ok_or_else(gone_error)?;
                let message = match message.get_item(intern!(py, "bytes"))? {
                    Some(data) if !data.is_none() => {
                        Message::Binary(bytes_of(Some(data))?.to_vec())
                    }
                    _ => match message.get_item(intern!(py, "text"))? {
                        Some(text) if !text.is_none() => Message::Text(text.extract::<String>()?),
                        _ => {
                            return Err(PyRuntimeError::new_err(
                                "websocket.send without bytes or text",
                            ))
                        }
                    },
                };
                match self.post(&outgoing, Outgoing::Message(message)) {
                    Ok(false) => done(py),
                    Ok(true) => {
                        let future = self.create_future.call0(py)?;
                        self.pending_send = Some(future.clone_ref(py));
                        Ok(future)
                    }
                    Err(()) => Err(gone_error()),
                }
            }
            "websocket.close" => {
                let code = match message.get_item(intern!(py, "code"))? {
                    Some(code) if !code.is_none() => code.extract::<u16>()?,
                    _ => 1000,
                };
                let reason = match message.get_item(intern!(py, "reason"))? {
                    Some(reason) if !reason.is_none() => reason.extract::<String>()?,
                    _ => String::new(),
                };
                if let Some(answer) = self.answer.take() {
                    let _ = answer.send(WsAnswer::Deny(403));
                } else if let Some(outgoing) = self.outgoing.take() {
                    let _ = self.post(&outgoing, Outgoing::Close(code, reason));
                }
                done(py)
            }
            other => Err(PyRuntimeError::new_err(format!(
                "unexpected ASGI message {other:?} for a WebSocket"
            ))),
        }
    }

    #[getter]
    fn disconnected(&self) -> bool {
        self.closed
    }

    fn finished(&mut self) {
        self.end(403, 1000);
    }

    fn failed(&mut self) {
        self.end(500, 1011);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_to_close_is_the_one_sent() {
        let mut code = 0;
        assert!(first_close(&mut code, SERVICE_RESTART));
        assert_eq!(code, 1012);
        assert!(!first_close(&mut code, GOING_AWAY));
        assert_eq!(code, 1012);
        let mut code = 0;
        assert!(first_close(&mut code, GOING_AWAY));
        assert!(!first_close(&mut code, SERVICE_RESTART));
        assert_eq!(code, 1001);
    }
}
