//! One client connection in a worker: serves it with hyper (HTTP/1.1, or HTTP/2 with
//! prior knowledge), counts requests, and owns the keep-alive and drain policy.
//!
//! Why forkd times idle connections itself instead of calling hyper's
//! `graceful_shutdown()` on HTTP/1: hyper closes a connection it considers idle at once,
//! and a connection is idle until the next request's headers are parsed, so a request
//! already on the wire would be lost. Here a draining worker instead marks every
//! response `Connection: close` (hyper then closes after writing it) and closes an idle
//! connection only after it has been silent for the keep-alive period, exactly as it
//! would when not draining. HTTP/2 gets GOAWAY, which is race-free by protocol.

use super::Shared;
use crate::app::{Body, ClientAddr};
use crate::scoreboard::{monotonic_ms, FLAG_RETIRE};
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::header::{HeaderValue, CONNECTION};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the connection's watchdog needs to know, updated from the IO and the service.
struct ConnState {
    in_flight: AtomicU64,
    bytes_read: AtomicU64,
    /// `bytes_read` when the connection last became idle.
    bytes_read_at_idle: AtomicU64,
    idle_since_ms: AtomicU64,
    is_h2: AtomicBool,
    first_read_seen: AtomicBool,
    /// Until the first request, a silent connection gets `header_read_timeout`, not
    /// the (shorter, possibly zero) keep-alive period.
    served_any: AtomicBool,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            in_flight: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_read_at_idle: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(monotonic_ms()),
            is_h2: AtomicBool::new(false),
            first_read_seen: AtomicBool::new(false),
            served_any: AtomicBool::new(false),
        }
    }

    /// How long until this connection should be closed for being idle (keep-alive) or
    /// for not finishing its headers; `Ok(())` means close now.
    fn time_left(&self, keepalive: Duration, header_timeout: Duration) -> Result<Duration, ()> {
        if self.in_flight.load(Acquire) > 0 {
            // Re-check after a while; a request in progress is never cut here.
            return Ok(keepalive.max(Duration::from_millis(100)));
        }
        let idle_for = monotonic_ms().saturating_sub(self.idle_since_ms.load(Acquire));
        let partial = self.bytes_read.load(Acquire) != self.bytes_read_at_idle.load(Acquire);
        let waiting_for_first = !self.served_any.load(Acquire);
        let limit = if partial || waiting_for_first {
            header_timeout
        } else {
            keepalive
        };
        let limit_ms = limit.as_millis() as u64;
        if idle_for >= limit_ms {
            Err(())
        } else {
            Ok(Duration::from_millis(limit_ms - idle_for))
        }
    }

    fn request_started(&self) {
        self.served_any.store(true, Release);
        self.in_flight.fetch_add(1, AcqRel);
    }

    fn request_finished(&self) {
        self.bytes_read_at_idle
            .store(self.bytes_read.load(Acquire), Release);
        self.idle_since_ms.store(monotonic_ms(), Release);
        self.in_flight.fetch_sub(1, AcqRel);
    }
}

/// Counts bytes read (to tell an idle connection from one with a request arriving) and
/// recognises the HTTP/2 prior-knowledge preface.
struct ActivityIo<T> {
    inner: T,
    state: Arc<ConnState>,
}

impl<T: AsyncRead + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            if !self.state.first_read_seen.swap(true, Relaxed) && new.starts_with(b"PRI ") {
                self.state.is_h2.store(true, Relaxed);
            }
            self.state.bytes_read.fetch_add(new.len() as u64, Release);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The response body, wrapped so that the request counts as finished only when hyper
/// has written (and dropped) the whole body.
pub struct TrackedBody {
    inner: Body,
    state: Arc<ConnState>,
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.state.request_finished();
    }
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = crate::app::BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one accepted connection until it ends, is idle too long, or the drain ends it.
pub async fn serve<T>(shared: Arc<Shared>, stream: T, remote: String)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(ActivityIo {
        inner: stream,
        state: state.clone(),
    });
    let service = {
        let shared = shared.clone();
        let state = state.clone();
        hyper::service::service_fn(move |mut req: crate::app::Request| {
            let shared = shared.clone();
            let state = state.clone();
            state.request_started();
            req.extensions_mut().insert(ClientAddr(remote.clone()));
            async move {
                shared.count_request();
                let resp = shared.app.call(req).await;
                let mut resp = resp.map(|inner| TrackedBody { inner, state });
                if shared.is_draining() && !resp.headers().contains_key(CONNECTION) {
                    resp.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(resp)
            }
        })
    };
    let conn = shared.http.serve_connection(io, service);
    tokio::pin!(conn);
    let mut drain = shared.drain_signal();
    let mut drain_seen = *drain.borrow();
    let mut goaway_sent = false;
    let keepalive = shared.keepalive;
    let header_timeout = shared.header_read_timeout;
    loop {
        if drain_seen && !goaway_sent && state.is_h2.load(Relaxed) {
            conn.as_mut().graceful_shutdown();
            goaway_sent = true;
        }
        let wait = match state.time_left(keepalive, header_timeout) {
            Ok(wait) => wait,
            Err(()) => break,
        };
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = tokio::time::sleep(wait) => {}
            changed = drain.changed(), if !drain_seen => {
                drain_seen = changed.is_err() || *drain.borrow();
            }
        }
    }
}

impl Shared {
    fn count_request(&self) {
        let served = self.slot.count_request();
        if self.request_limit != 0 && served == self.request_limit {
            tracing::info!(
                pid = std::process::id(),
                requests = served,
                "worker reached max_requests, asking to be replaced"
            );
            self.slot.set_flag(FLAG_RETIRE);
            super::ring_doorbell(self.master_pid);
        }
    }
}
