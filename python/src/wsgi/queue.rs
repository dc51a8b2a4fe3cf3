//! The requests waiting for a pool thread ([`Queue`]): the server thread pushes, pool
//! threads take with the GIL released. A request that finds no idle thread waits, and
//! is counted (the scoreboard's `wsgi_queued` / `wsgi_waiting`). A thread that waits
//! `idle_every` without work says so (`Next::Idle`), for the progress stamp `timeout`
//! reads: an idle pool is a live one. Plain Rust, generic over the job, unit-tested.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// What a pool thread gets.
#[derive(Debug, PartialEq)]
pub enum Next<T> {
    /// A request; `queued`: it had waited for a thread.
    Job(T, bool),
    /// Nothing came for `idle_every`.
    Idle,
    /// The worker is stopping and nothing is left.
    Closed,
}

struct State<T> {
    jobs: VecDeque<(T, bool)>,
    /// Threads waiting in [`Queue::next`].
    idle: usize,
    closed: bool,
}

/// See the module docs.
pub struct Queue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    stopped: Condvar,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                idle: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            stopped: Condvar::new(),
        }
    }
}

impl<T> Queue<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a job; true if it has to wait (no idle thread for it), after calling
    /// `queued` under the queue's lock (so a count it makes never runs behind the
    /// taker's). Jobs pushed after `close` are still served: the server's drain is over
    /// before it closes.
    pub fn push(&self, job: T, queued: impl FnOnce()) -> bool {
        let mut state = self.lock();
        let waits = state.jobs.len() >= state.idle;
        if waits {
            queued();
        }
        state.jobs.push_back((job, waits));
        let queued = waits;
        drop(state);
        self.ready.notify_one();
        queued
    }

    /// The next job, waiting for one at most `idle_every`.
    pub fn next(&self, idle_every: Duration) -> Next<T> {
        let mut state = self.lock();
        loop {
            if let Some((job, queued)) = state.jobs.pop_front() {
                return Next::Job(job, queued);
            }
            if state.closed {
                return Next::Closed;
            }
            state.idle += 1;
            let (next, timeout) = self
                .ready
                .wait_timeout(state, idle_every)
                .unwrap_or_else(|p| p.into_inner());
            state = next;
            state.idle -= 1;
            if timeout.timed_out() && state.jobs.is_empty() && !state.closed {
                return Next::Idle;
            }
        }
    }

    /// The next job if one is waiting, without waiting.
    pub fn try_next(&self) -> Option<(T, bool)> {
        self.lock().jobs.pop_front()
    }

    /// No more jobs: the threads end once the queue is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
        self.stopped.notify_all();
    }

    /// Waits until [`close`](Self::close).
    pub fn wait_closed(&self) {
        let mut state = self.lock();
        while !state.closed {
            state = self.stopped.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const LONG: Duration = Duration::from_secs(10);

    #[test]
    fn jobs_beyond_the_idle_threads_are_counted_as_queued() {
        let queue = Queue::default();
        // No thread waits: the first job waits.
        assert!(queue.push(1, || ()));
        assert!(queue.push(2, || ()));
        assert_eq!(queue.next(LONG), Next::Job(1, true));
        assert_eq!(queue.try_next(), Some((2, true)));
        assert_eq!(queue.try_next(), None);
        assert_eq!(queue.next(Duration::from_millis(20)), Next::Idle);
    }

    #[test]
    fn an_idle_thread_takes_a_job_without_queueing_it() {
        let queue = Arc::new(Queue::default());
        let taker = {
            let queue = queue.clone();
            std::thread::spawn(move || queue.next(LONG))
        };
        while queue.lock().idle == 0 {
            std::thread::yield_now();
        }
        assert!(!queue.push(7, || ()));
        assert_eq!(taker.join().unwrap(), Next::Job(7, false));
    }

    #[test]
    fn close_ends_the_threads_after_the_last_job() {
        let queue = Arc::new(Queue::default());
        let waiter = {
            let queue = queue.clone();
            std::thread::spawn(move || queue.wait_closed())
        };
        queue.push(1, || ());
        queue.close();
        waiter.join().unwrap();
        assert_eq!(queue.next(LONG), Next::Job(1, true));
        assert_eq!(queue.next(LONG), Next::Closed);
        let blocked = {
            let queue = queue.clone();
            std::thread::spawn(move || queue.next(LONG))
        };
        assert_eq!(blocked.join().unwrap(), Next::<i32>::Closed);
    }
}
