//! `limits.send_timeout`'s watchdogs above the IO (which fails any single write that
//! waits that long): [`SendWatch`], the decision "response bytes have waited this long
//! with none written", kept for the whole connection by its loop, and for each HTTP/2
//! stream, which the loop can end on its own.
//!
//! Why per stream: an HTTP/2 client can keep one stream's flow-control window moving
//! while it leaves the others' shut. The connection then writes bytes, so the
//! connection-wide watch sees progress, and the stalled streams would hold their
//! requests (and the app's resources behind them) for as long as the client likes.
//!
//! How a stream is ended: hyper runs each stream (the app's future, then the piping of
//! its body into h2) as a task of its own, through the executor the HTTP/2 builder was
//! given. [`StreamExecutor`] spawns each inside a [`Stoppable`] holding the stream's
//! [`StreamControl`], which the stream's request holds too. When the loop finds the
//! stream stalled it calls [`StreamControl::stop`]: the task ends and drops the stream,
//! and h2 sends RST_STREAM(CANCEL) for it; the request is logged and counted as cut by
//! `send_timeout`. hyper calls the service (which makes the request and its control)
//! and, on the same thread and before anything else, hands that stream's future to the
//! executor, which takes the control made last on this thread ([`NEXT`]).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

/// Response bytes waiting to be sent, and whether any has been written since: true
/// once bytes have waited `timeout_ms` with none written.
#[derive(Debug, Default)]
pub(crate) struct SendWatch {
    /// The bytes written when the wait was first seen or last moved.
    written: u64,
    since_ms: Option<u64>,
}

impl SendWatch {
    /// `waiting`: bytes are waiting to be sent (not on the app); `written`: the bytes
    /// written so far. True once bytes have waited `timeout_ms` with none written.
    pub(crate) fn stalled(
        &mut self,
        waiting: bool,
        written: u64,
        now_ms: u64,
        timeout_ms: u64,
    ) -> bool {
        if !waiting {
            self.since_ms = None;
            return false;
        }
        match self.since_ms {
            Some(since) if written == self.written => now_ms.saturating_sub(since) >= timeout_ms,
            _ => {
                self.written = written;
                self.since_ms = Some(now_ms);
                false
            }
        }
    }
}

thread_local! {
    /// The control of the stream whose request the service made last on this thread,
    /// for the executor to take when hyper hands it that stream's future.
    static NEXT: RefCell<Option<Arc<StreamControl>>> = const { RefCell::new(None) };
}

/// One HTTP/2 stream's end switch and send watch, shared by its request and its task.
#[derive(Debug, Default)]
pub(crate) struct StreamControl {
    stopped: AtomicBool,
    /// The stream's task, to wake when it is stopped.
    waker: Mutex<Option<Waker>>,
    watch: Mutex<SendWatch>,
    /// Stopped because of `send_timeout` (how the request is counted).
    timed_out: AtomicBool,
}

impl StreamControl {
    /// A control for the stream whose future hyper hands the executor next.
    pub(crate) fn for_next_stream() -> Arc<StreamControl> {
        let control = Arc::new(StreamControl::default());
        NEXT.with(|next| *next.borrow_mut() = Some(control.clone()));
        control
    }

    /// True once the stream's bytes have waited `timeout_ms` with none written.
    fn stalled(&self, waiting: bool, written: u64, now_ms: u64, timeout_ms: u64) -> bool {
        match self.watch.lock() {
            Ok(mut watch) => watch.stalled(waiting, written, now_ms, timeout_ms),
            Err(_) => false,
        }
    }

    /// Ends the stream's task (h2 then resets the stream).
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Release);
        let waker = self.waker.lock().ok().and_then(|mut w| w.take());
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out.load(Acquire)
    }
}

/// What the connection's loop asks of each HTTP/2 stream's request.
pub(crate) trait StreamProgress: Send + Sync {
    /// (response bytes wait to be sent, body bytes written so far).
    fn progress(&self) -> (bool, u64);
    /// None for a request that is no HTTP/2 stream.
    fn control(&self) -> Option<&StreamControl>;
}

/// The HTTP/2 streams of one connection whose responses have begun.
#[derive(Default)]
pub(crate) struct Streams(Mutex<Vec<Weak<dyn StreamProgress>>>);

impl Streams {
    pub(crate) fn add(&self, stream: Weak<dyn StreamProgress>) {
        if let Ok(mut streams) = self.0.lock() {
            streams.push(stream);
        }
    }

    /// Stops each stream whose response bytes have waited `timeout_ms` with none
    /// written; forgets the streams that ended. Returns how many it stopped.
    pub(crate) fn stop_stalled(&self, now_ms: u64, timeout_ms: u64) -> usize {
        let Ok(mut streams) = self.0.lock() else {
            return 0;
        };
        let mut stopped = 0;
        streams.retain(|stream| {
            let Some(stream) = stream.upgrade() else {
                return false;
            };
            let Some(control) = stream.control() else {
                return false;
            };
            let (waiting, written) = stream.progress();
            if control.stalled(waiting, written, now_ms, timeout_ms) {
                control.timed_out.store(true, Release);
                control.stop();
                stopped += 1;
                return false;
            }
            true
        });
        stopped
    }
}

/// The HTTP/2 builder's executor: spawns each stream's task on the worker's runtime,
/// stoppable when the service made a [`StreamControl`] for it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        match NEXT.with(|next| next.borrow_mut().take()) {
            Some(control) => {
                tokio::spawn(Stoppable {
                    future: Box::pin(future),
                    control,
                });
            }
            None => {
                tokio::spawn(future);
            }
        }
    }
}

/// A stream's task, ended (its future dropped) once its control is stopped. The
/// future is boxed so that it can be polled pinned without `unsafe` projection (one
/// allocation per HTTP/2 stream, which h2 itself allocates for many times over).
pub(crate) struct Stoppable<F> {
    future: Pin<Box<F>>,
    control: Arc<StreamControl>,
}

impl<F: Future<Output = ()>> Future for Stoppable<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.control.stopped.load(Acquire) {
            return Poll::Ready(());
        }
        if let Ok(mut waker) = this.control.waker.lock() {
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
        // Stopped between the check and the registration: its wake found no waker.
        if this.control.stopped.load(Acquire) {
            return Poll::Ready(());
        }
        this.future.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_stalls_only_with_nothing_written_for_the_timeout() {
        let mut watch = SendWatch::default();
        assert!(!watch.stalled(false, 0, 0, 100));
        assert!(!watch.stalled(true, 0, 0, 100), "the wait starts");
        assert!(!watch.stalled(true, 0, 99, 100));
        assert!(
            !watch.stalled(true, 10, 99, 100),
            "bytes moved: the clock restarts"
        );
        assert!(!watch.stalled(true, 10, 198, 100));
        assert!(watch.stalled(true, 10, 199, 100));
        assert!(
            !watch.stalled(false, 10, 500, 100),
            "nothing waits (the app's turn)"
        );
        assert!(!watch.stalled(true, 10, 501, 100), "a new wait starts now");
    }

    struct Fake {
        waiting: bool,
        written: std::sync::atomic::AtomicU64,
        control: StreamControl,
    }

    impl StreamProgress for Fake {
        fn progress(&self) -> (bool, u64) {
            (self.waiting, self.written.load(Relaxed))
        }
        fn control(&self) -> Option<&StreamControl> {
            Some(&self.control)
        }
    }

    #[test]
    fn only_the_stalled_stream_is_stopped_and_ended_ones_are_forgotten() {
        let fake = |waiting| {
            Arc::new(Fake {
                waiting,
                written: Default::default(),
                control: StreamControl::default(),
            })
        };
        let (stalled, moving, on_the_app) = (fake(true), fake(true), fake(false));
        let streams = Streams::default();
        for s in [&stalled, &moving, &on_the_app] {
            let s: Arc<dyn StreamProgress> = s.clone();
            streams.add(Arc::downgrade(&s));
        }
        let gone: Arc<dyn StreamProgress> = fake(true);
        streams.add(Arc::downgrade(&gone));
        drop(gone);
        assert_eq!(streams.stop_stalled(0, 100), 0);
        moving.written.store(5, Relaxed);
        assert_eq!(streams.stop_stalled(150, 100), 1);
        assert!(stalled.control.timed_out() && stalled.control.stopped.load(Relaxed));
        assert!(!moving.control.timed_out() && !on_the_app.control.timed_out());
        assert_eq!(
            streams.0.lock().unwrap().len(),
            2,
            "the stopped and the gone forgotten"
        );
    }

    #[tokio::test]
    async fn a_stopped_task_ends_and_drops_its_future() {
        struct Dropped(Arc<AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, Relaxed);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let control = StreamControl::for_next_stream();
        let held = Dropped(dropped.clone());
        hyper::rt::Executor::execute(&StreamExecutor, async move {
            let _held = held;
            std::future::pending::<()>().await
        });
        tokio::task::yield_now().await;
        assert!(!dropped.load(Relaxed));
        control.stop();
        for _ in 0..100 {
            if dropped.load(Relaxed) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(dropped.load(Relaxed), "the stopped task dropped its future");
    }
}
