//! What crosses from the worker's server thread (tokio + hyper) to its main thread (the
//! asyncio loop), and the handles a request's two sides share: the [`Event`]s the
//! [`Inbox`](crate::inbox::Inbox) carries, an HTTP request's [`HttpHead`] and
//! [`Shared`], a WebSocket's [`WsHead`] with its [`WsAnswer`], [`Outgoing`] messages and
//! [`Credit`]. Plain data: both the HTTP bridge (`bridge/`) and the WebSockets (`ws.rs`)
//! import it, and it imports neither.

use bytes::Bytes;
use forkd::app::Response;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_tungstenite::tungstenite::Message;

pub enum Event {
    Head(Box<HttpHead>),
    /// A WebSocket upgrade request.
    WsHead(Box<WsHead>),
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

/// An HTTP request head, handed to the loop.
pub struct HttpHead {
    pub id: u64,
    pub parts: hyper::http::request::Parts,
    pub respond: oneshot::Sender<Response>,
    pub shared: Arc<Shared>,
    /// The body's first chunk when it was there with the head (always, for a request
    /// without a body): `receive()` answers it at once, without a round trip.
    pub first: Option<(Bytes, bool)>,
}

/// What an HTTP request's task on the server thread and its `Conn` on the loop share:
/// one allocation per request.
#[derive(Default)]
pub struct Shared {
    /// Rung by `receive()`: read one more body chunk.
    pub demand: Notify,
    /// Set by the loop once the response is complete (see `bridge::body::DisconnectGuard`).
    pub answered: AtomicBool,
    /// Set by the loop when the app failed after its streamed response started (see
    /// `bridge::body::ChannelBody`).
    pub aborted: AtomicBool,
}

/// A WebSocket upgrade request, handed to the loop.
pub struct WsHead {
    pub id: u64,
    pub parts: hyper::http::request::Parts,
    pub answer: oneshot::Sender<WsAnswer>,
    pub outgoing: mpsc::Sender<Outgoing>,
    pub runtime: tokio::runtime::Handle,
    /// Client messages read and not yet taken by the app's `receive()`.
    pub credit: Arc<Credit>,
}

/// The app's answer to a WebSocket upgrade request.
pub enum WsAnswer {
    Accept {
        subprotocol: Option<String>,
        headers: hyper::HeaderMap,
    },
    /// Closed before accepting (403), or failed (500).
    Deny(u16),
}

/// What the app sends on an accepted WebSocket.
pub enum Outgoing {
    Message(Message),
    Close(u16, String),
}

/// Client messages that may wait for the app's `receive()` (uvicorn's default
/// `--ws-max-queue` is 32).
pub const INCOMING: usize = 32;

/// How many client messages wait for the app, shared by the connection's reading task
/// (which stops reading at [`INCOMING`]) and the app's side (which frees one per message
/// it takes).
#[derive(Default)]
pub struct Credit {
    waiting: AtomicUsize,
    pub room: Notify,
}

impl Credit {
    pub fn full(&self) -> bool {
        self.waiting.load(Acquire) >= INCOMING
    }
    pub fn take(&self) {
        self.waiting.fetch_add(1, AcqRel);
    }
    /// The app took a message: the reader may go on (`notify_one` keeps a permit if it
    /// is not waiting yet, so no wake-up is lost).
    pub fn free(&self) {
        self.waiting.fetch_sub(1, AcqRel);
        self.room.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_holds_the_reader_back_at_incoming_messages() {
        let credit = Credit::default();
        for _ in 0..INCOMING - 1 {
            credit.take();
        }
        assert!(!credit.full());
        credit.take();
        assert!(credit.full());
        credit.free();
        assert!(!credit.full());
    }
}
