//! The app as forkd's server calls it, on the server thread ([`PyApp`]): each request
//! becomes a task that hands its head to the loop, reads the body as the app asks for
//! it, and waits for the response; a WebSocket upgrade goes to `ws.rs` instead. The
//! first request starts the server thread's two helper tasks ([`dispatch`] and
//! [`flusher`]) on the runtime it runs on.

use super::body::{next_chunk, DisconnectGuard, Guarded};
use super::outbox::{dispatch, Answer};
use crate::event::{Event, HttpHead, Shared};
use crate::inbox::{flusher, Inbox};
use bytes::Bytes;
use forkd::app::Response;
use futures_util::FutureExt;
use http_body_util::BodyExt;
use hyper::body::Body as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The app as forkd's server calls it, on the server thread.
pub struct PyApp {
    inbox: Arc<Inbox>,
    /// Until the first request spawns [`dispatch`] with it on the server's runtime.
    answers: Mutex<Option<mpsc::UnboundedReceiver<Vec<Answer>>>>,
    dispatching: AtomicBool,
    next_id: AtomicU64,
    /// The close code of the open WebSockets once the worker retires (0 until then):
    /// 1012 `websocket_grace` after its drain starts, 1001 when the drain's deadline
    /// nears (whichever comes first).
    closing: Arc<tokio::sync::watch::Sender<u16>>,
    /// `python.websocket_grace`.
    websocket_grace: Duration,
}

impl PyApp {
    pub fn new(
        inbox: Arc<Inbox>,
        answers: mpsc::UnboundedReceiver<Vec<Answer>>,
        websocket_grace: Duration,
    ) -> PyApp {
        PyApp {
            inbox,
            answers: Mutex::new(Some(answers)),
            dispatching: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            closing: Arc::new(tokio::sync::watch::Sender::new(0)),
            websocket_grace,
        }
    }
}

/// The WebSockets' close code becomes `code` unless one was set already: the first
/// reason to close is the one the clients see.
fn close_all(closing: &tokio::sync::watch::Sender<u16>, code: u16) {
    closing.send_if_modified(|current| crate::ws::first_close(current, code));
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
                self.inbox.set_runtime(tokio::runtime::Handle::current());
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
            inbox.push(Event::Head(Box::new(HttpHead {
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
        close_all(&self.closing, crate::ws::GOING_AWAY);
    }

    fn draining(&self) {
        let closing = self.closing.clone();
        let grace = self.websocket_grace;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if !grace.is_zero() => {
                runtime.spawn(async move {
                    tokio::time::sleep(grace).await;
                    close_all(&closing, crate::ws::SERVICE_RESTART);
                });
            }
            _ => close_all(&closing, crate::ws::SERVICE_RESTART),
        }
    }
}
