//! The request body an app reads ([`RequestBody`]): hyper's body, plus the limits that
//! forkd cannot enforce below hyper for HTTP/2. For HTTP/1 the connection's IO (the
//! framing scanner in `worker/limits.rs`) already holds every body to `max_body` and
//! `body_read_timeout`, so the body passes through untouched; an HTTP/2 stream's data
//! frames are decoded by hyper itself, so here they are counted against `max_body`
//! and timed against `body_read_timeout`. A body past either ends with an error for the
//! app, and the request's [`Verdict`] tells the connection to answer 413 or 408 (or,
//! when the response has already started, to reset the stream).
//!
//! An HTTP/1 body the app drops unread is drained (`drain_unread`), as hyper drains
//! one it has already buffered, so the keep-alive connection goes on to the request
//! behind it; the IO's `max_body` and `body_read_timeout` bound the drain (past
//! either, the connection closes).

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering::*};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Any error, boxed: what an app's futures and bodies fail with (re-exported as
/// `app::BoxError`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body: `http_body::Body` with `Bytes` data, so `BodyExt::collect`,
/// `axum` extractors and the like work on it as on hyper's own.
pub struct RequestBody {
    /// None once dropped unread and handed to the drain (HTTP/1).
    inner: Option<Incoming>,
    /// Only for HTTP/2 streams (boxed: HTTP/1 requests pay one null pointer).
    limit: Option<Box<StreamLimit>>,
}

/// Why a stream's body was cut, shared between the body and the connection.
#[derive(Debug, Default, Clone)]
pub(crate) struct Verdict(Arc<AtomicU8>);

/// What [`Verdict`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    TooLarge,
    Stalled,
}

impl Verdict {
    pub(crate) fn get(&self) -> Option<Cut> {
        match self.0.load(Acquire) {
            1 => Some(Cut::TooLarge),
            2 => Some(Cut::Stalled),
            _ => None,
        }
    }
    fn set(&self, cut: Cut) {
        let code = match cut {
            Cut::TooLarge => 1,
            Cut::Stalled => 2,
        };
        self.0.store(code, Release);
    }
}

/// `body_read_timeout` for one body: how long it may send nothing while someone waits
/// for it. Used by this module for HTTP/2 streams and by the HTTP/1 connection IO.
pub(crate) struct StallTimer {
    /// Zero: off.
    timeout: Duration,
    /// Armed the first time a read waits, then moved on whenever bytes arrived.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes arrived since the timer was last set.
    progressed: bool,
}

impl StallTimer {
    pub(crate) fn new(timeout: Duration) -> StallTimer {
        StallTimer {
            timeout,
            timer: None,
            progressed: false,
        }
    }

    /// Bytes of the body arrived.
    pub(crate) fn progressed(&mut self) {
        self.progressed = true;
    }

    /// Called when a read of the body is pending: true once it has waited `timeout`
    /// with nothing arriving. Registers `cx` to be woken then.
    pub(crate) fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        if self.timeout.is_zero() {
            return false;
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if std::mem::take(&mut self.progressed) {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

struct StreamLimit {
    max_body: u64,
    received: u64,
    stall: StallTimer,
    verdict: Verdict,
    /// The error has been returned; the body ends.
    ended: bool,
}

/// The error a cut body ends with.
#[derive(Debug)]
pub struct BodyLimitError(&'static str);

impl std::fmt::Display for BodyLimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for BodyLimitError {}

impl RequestBody {
    /// An HTTP/1 body: limited by the connection's IO already.
    pub(crate) fn plain(inner: Incoming) -> RequestBody {
        RequestBody {
            inner: Some(inner),
            limit: None,
        }
    }

    /// An HTTP/2 stream's body, held to `max_body` and `timeout` (zero: off).
    pub(crate) fn limited(
        inner: Incoming,
        max_body: u64,
        timeout: Duration,
    ) -> (RequestBody, Verdict) {
        let verdict = Verdict::default();
        let body = RequestBody {
            inner: Some(inner),
            limit: Some(Box::new(StreamLimit {
                max_body,
                received: 0,
                stall: StallTimer::new(timeout),
                verdict: verdict.clone(),
                ended: false,
            })),
        };
        (body, verdict)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let Some(limit) = this.limit.as_mut() else {
            return Pin::new(inner).poll_frame(cx).map_err(Into::into);
        };
        if limit.ended {
            return Poll::Ready(None);
        }
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    limit.received += data.len() as u64;
                    limit.stall.progressed();
                    if limit.received > limit.max_body {
                        limit.ended = true;
                        limit.verdict.set(Cut::TooLarge);
                        return Poll::Ready(Some(Err(Box::new(BodyLimitError(
                            "request body larger than limits.max_body",
                        )))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
            Poll::Pending => {
                if limit.stall.stalled(cx) {
                    limit.ended = true;
                    limit.verdict.set(Cut::Stalled);
                    return Poll::Ready(Some(Err(Box::new(BodyLimitError(
                        "the request body stalled (limits.body_read_timeout)",
                    )))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.limit.as_ref().is_some_and(|l| l.ended)
            || self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if self.limit.is_none() {
            if let Some(inner) = self.inner.take() {
                drain_unread(inner);
            }
        }
    }
}

/// Reads what is left of an HTTP/1 body the app dropped, in a task of its own, so that
/// hyper reaches its end and keeps the connection (hyper itself only drains what it
/// has buffered, one frame, and closes otherwise). Bounded by the connection: the IO
/// ends the body with an error past `max_body` or after `body_read_timeout` without a
/// byte, and the body ends when the connection does.
fn drain_unread(body: Incoming) {
    if body.is_end_stream() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut body = std::pin::pin!(body);
        while let Some(Ok(_)) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {}
    });
}
