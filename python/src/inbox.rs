//! The server thread's way to the loop: [`Event`]s go into the [`Inbox`] (a
//! mutex-guarded vector) and an eventfd the loop watches (`loop.add_reader`) is written
//! once per round of the server's tasks that pushed any (see [`Inbox::push`]), so the
//! server thread never waits for the GIL, and the loop takes many events per wake-up.
//! When to write the eventfd is [`wake_decision`]; [`flusher`] is the task that writes
//! it at the end of a round. Also holds the server's runtime handle, where the loop's
//! side spawns the sends that have to wait.

use crate::event::Event;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::Notify;

/// At most this many events wait for the end of the server's round before the loop is
/// woken for them (see [`Inbox::push`]).
const WAKE_BATCH: usize = 32;

/// Events for the loop, and the eventfd that wakes it.
pub struct Inbox {
    queue: Mutex<Queue>,
    wake: OwnedFd,
    /// Set once [`flusher`] runs on the server's runtime: from then on a push leaves
    /// the wake-up to it.
    deferring: AtomicBool,
    /// Rings [`flusher`].
    flush: Notify,
    /// The server's runtime (set with the first request), where a streamed chunk that
    /// has to wait is sent from.
    runtime: OnceLock<tokio::runtime::Handle>,
}

struct Queue {
    events: Vec<Event>,
    /// The eventfd was written since the loop last took the events: it will take
    /// these too, no further write is needed.
    signalled: bool,
    /// [`flusher`] was rung and has not run yet.
    flushing: bool,
}

impl Inbox {
    pub fn new() -> std::io::Result<Inbox> {
        // SAFETY: eventfd(2) takes no pointers; any flags are sound to pass (these are
        // valid ones), and failure is a negative return, checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Inbox {
            queue: Mutex::new(Queue {
                events: Vec::new(),
                signalled: false,
                flushing: false,
            }),
            // SAFETY: `fd` was just returned by eventfd(2) (not negative: checked above)
            // and nothing else owns it, so the OwnedFd is its only owner and closes it
            // once.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
            deferring: AtomicBool::new(false),
            flush: Notify::new(),
            runtime: OnceLock::new(),
        })
    }

    pub fn fd(&self) -> i32 {
        self.wake.as_raw_fd()
    }

    /// The server's runtime, once the first request has set it (see
    /// [`set_runtime`](Self::set_runtime)).
    pub fn runtime(&self) -> Option<&tokio::runtime::Handle> {
        self.runtime.get()
    }

    /// Called on the server thread with its first request.
    pub fn set_runtime(&self, runtime: tokio::runtime::Handle) {
        let _ = self.runtime.set(runtime);
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an event for the loop. The loop is woken once for all the events the
    /// server's current round of tasks pushes (the requests of every connection that
    /// became readable together, typically): the first push rings [`flusher`], a task
    /// that runs after the tasks already queued and writes the eventfd then; at
    /// [`WAKE_BATCH`] events it is written at once. Each write wakes a sleeping loop
    /// thread (a context switch each way), so larger batches cost fewer of them.
    pub fn push(&self, event: Event) {
        let deferring = self.deferring.load(Relaxed);
        let (write, ring) = {
            let mut queue = self.queue();
            queue.events.push(event);
            match wake_decision(
                queue.signalled,
                queue.flushing,
                queue.events.len(),
                deferring,
            ) {
                Wake::Now => {
                    queue.signalled = true;
                    (true, false)
                }
                Wake::Later => {
                    queue.flushing = true;
                    (false, true)
                }
                Wake::Nothing => (false, false),
            }
        };
        if ring {
            self.flush.notify_one();
        }
        if write {
            self.signal();
        }
    }

    /// The end of the server's round: wakes the loop for what was pushed in it.
    fn flush(&self) {
        let write = {
            let mut queue = self.queue();
            queue.flushing = false;
            let write = !queue.signalled && !queue.events.is_empty();
            queue.signalled |= write;
            write
        };
        if write {
            self.signal();
        }
    }

    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: the pointer is to `one`, a u64 that lives across the call, and the
        // length is its 8 bytes, so write(2) reads only memory we own; `self.fd()` is
        // our eventfd, open as long as `self` (it is owned by `self.wake`). A failed
        // write (the counter is full: the loop has a wake-up pending anyway) is ignored.
        unsafe { libc::write(self.fd(), (&one as *const u64).cast(), 8) };
    }

    /// The last event: written at once (the server's runtime is over when it is sent).
    pub fn stop(&self) {
        self.deferring.store(false, Relaxed);
        self.push(Event::Stop);
    }

    /// Everything queued, swapped into `batch` (empty: its capacity is kept for the
    /// next pushes); the eventfd is read first, so a push after it wakes again.
    pub fn take_into(&self, batch: &mut Vec<Event>) {
        let mut counter: u64 = 0;
        // SAFETY: the pointer is to `counter`, a u64 that lives across the call and is
        // borrowed mutably only here, and the length is its 8 bytes, so read(2) writes
        // only memory we own; `self.fd()` is our eventfd, open as long as `self`. The
        // fd is non-blocking: with nothing to read it fails at once (ignored).
        unsafe { libc::read(self.fd(), (&mut counter as *mut u64).cast(), 8) };
        let mut queue = self.queue();
        queue.signalled = false;
        std::mem::swap(&mut queue.events, batch);
    }
}

#[derive(Debug, PartialEq)]
enum Wake {
    /// Write the eventfd now.
    Now,
    /// Ring the flusher, which writes it at the end of the round.
    Later,
    /// The loop was woken or the flusher rung already.
    Nothing,
}

/// What a push does, given the queue with the new event in it (whether the eventfd was
/// written since the loop last took the events, whether the flusher was rung and has
/// not run yet, how many events wait), and whether the flusher is running.
fn wake_decision(signalled: bool, flushing: bool, queued: usize, deferring: bool) -> Wake {
    if signalled {
        Wake::Nothing
    } else if !deferring || queued >= WAKE_BATCH {
        Wake::Now
    } else if flushing {
        Wake::Nothing
    } else {
        Wake::Later
    }
}

/// Runs on the server's runtime: wakes the loop after each round of pushes (see
/// [`Inbox::push`]). A task woken from its own thread goes to the back of the run
/// queue, behind the connections that were ready in the same round.
pub async fn flusher(inbox: Arc<Inbox>) {
    inbox.deferring.store(true, Relaxed);
    loop {
        inbox.flush.notified().await;
        inbox.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_push_wakes_the_loop_once_per_round() {
        // Without the flusher (before the first request, after stop): at once.
        assert_eq!(wake_decision(false, false, 1, false), Wake::Now);
        // With it: the first push of a round rings it, the next ones do nothing.
        assert_eq!(wake_decision(false, false, 1, true), Wake::Later);
        assert_eq!(wake_decision(false, true, 2, true), Wake::Nothing);
        assert_eq!(
            wake_decision(false, true, WAKE_BATCH - 1, true),
            Wake::Nothing
        );
        // A full batch does not wait for the end of the round.
        assert_eq!(wake_decision(false, true, WAKE_BATCH, true), Wake::Now);
        assert_eq!(wake_decision(false, false, WAKE_BATCH, true), Wake::Now);
        // Once written, nothing more until the loop takes the events.
        for (flushing, queued, deferring) in [(false, 1, false), (true, 99, true)] {
            assert_eq!(
                wake_decision(true, flushing, queued, deferring),
                Wake::Nothing
            );
        }
    }

    /// The eventfd's counter: how many writes since the last read (0: none).
    fn writes(inbox: &Inbox) -> u64 {
        let mut file = std::fs::File::from(inbox.wake.try_clone().unwrap());
        let mut counter = [0u8; 8];
        match file.read(&mut counter) {
            Ok(8) => u64::from_ne_bytes(counter),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            other => panic!("eventfd read: {other:?}"),
        }
    }

    #[test]
    fn the_eventfd_is_written_once_until_the_loop_takes_the_events() {
        let inbox = Inbox::new().unwrap();
        inbox.push(Event::Disconnect(1));
        inbox.push(Event::Disconnect(2));
        let mut batch = Vec::new();
        assert_eq!(writes(&inbox), 1);
        inbox.take_into(&mut batch);
        assert_eq!(batch.len(), 2);
        batch.clear();
        // Taken: the next push wakes the loop again.
        inbox.push(Event::Disconnect(3));
        assert_eq!(writes(&inbox), 1);
        inbox.take_into(&mut batch);
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn with_the_flusher_the_round_ends_with_one_write() {
        let inbox = Inbox::new().unwrap();
        inbox.deferring.store(true, Relaxed);
        inbox.push(Event::Disconnect(1));
        inbox.push(Event::Disconnect(2));
        assert_eq!(writes(&inbox), 0);
        inbox.flush();
        assert_eq!(writes(&inbox), 1);
        // A flush with nothing new (the loop woke already) writes nothing.
        inbox.flush();
        assert_eq!(writes(&inbox), 0);
        // A full batch is written without waiting for the flush.
        let mut batch = Vec::new();
        inbox.take_into(&mut batch);
        for id in 0..WAKE_BATCH as u64 {
            inbox.push(Event::Disconnect(id));
        }
        assert_eq!(writes(&inbox), 1);
        inbox.flush();
        assert_eq!(writes(&inbox), 0);
        // stop() does not wait for a flush that will not come.
        inbox.take_into(&mut batch);
        inbox.stop();
        assert_eq!(writes(&inbox), 1);
    }
}
