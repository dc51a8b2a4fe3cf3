//! Bodies on the server thread: the request's body read chunk by chunk as the app asks
//! ([`next_chunk`]), the response body that tells the loop when hyper is done with it
//! ([`Guarded`] with its [`DisconnectGuard`]), and a streamed response body fed by the
//! loop ([`ChannelBody`]).

use crate::event::{Event, Shared};
use crate::inbox::Inbox;
use bytes::Bytes;
use forkd::app::BoxError;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Tells the loop a request's client is gone when dropped: with the request's future
/// (hyper dropped it) or with its response body (written, or the connection failed).
/// Not once the app's response is complete (`answered`): `receive()` answers
/// `http.disconnect` from then on by itself, and the event would only wake the loop
/// once more per request for nothing.
pub struct DisconnectGuard {
    pub id: u64,
    pub inbox: Arc<Inbox>,
    pub shared: Arc<Shared>,
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if !self.shared.answered.load(Acquire) {
            self.inbox.push(Event::Disconnect(self.id));
        }
    }
}

/// The next data chunk and whether more may follow; None if the body failed (the
/// client went away, or forkd's limits cut it).
pub async fn next_chunk(body: &mut forkd::app::RequestBody) -> Option<(Bytes, bool)> {
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
pub struct Guarded {
    pub inner: forkd::app::Body,
    pub _guard: DisconnectGuard,
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
pub struct ChannelBody {
    pub chunks: mpsc::Receiver<Bytes>,
    pub shared: Arc<Shared>,
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
