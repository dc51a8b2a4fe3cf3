//! The scoreboard: a `MAP_SHARED` anonymous mapping made by the master before the first
//! fork, one fixed slot per worker. Workers store into their slot with relaxed atomics
//! (no syscall, no lock on the request path); the master loads from it to decide
//! readiness, timeouts and recycling. Slots are claimed and freed only by the master.

use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering::*};

/// Maximum number of worker processes alive at once (including old ones during a reload).
pub const CAPACITY: usize = 512;
const MESSAGE_BYTES: usize = 240;

/// What a worker is doing, as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum WorkerState {
    Free = 0,
    Booting = 1,
    Ready = 2,
    Draining = 3,
}

/// Flag: the worker reached `max_requests` and asks to be replaced.
pub const FLAG_RETIRE: u32 = 1;

/// One worker's slot. 64-byte aligned so that workers do not share cache lines.
#[repr(C, align(64))]
pub struct Slot {
    pid: AtomicI32,
    state: AtomicU32,
    flags: AtomicU32,
    message_len: AtomicU32,
    /// CLOCK_MONOTONIC milliseconds of the worker's last event-loop tick.
    progress_ms: AtomicU64,
    requests: AtomicU64,
    connections: AtomicU64,
    message: UnsafeCell<[u8; MESSAGE_BYTES]>,
}

// SAFETY: `message` is written only by the slot's own worker before it publishes
// `message_len` with Release, and read by the master after loading it with Acquire.
unsafe impl Sync for Slot {}

impl Slot {
    pub fn pid(&self) -> i32 {
        self.pid.load(Relaxed)
    }
    pub fn state(&self) -> WorkerState {
        match self.state.load(Acquire) {
            1 => WorkerState::Booting,
            2 => WorkerState::Ready,
            3 => WorkerState::Draining,
            _ => WorkerState::Free,
        }
    }
    pub fn set_state(&self, state: WorkerState) {
        self.state.store(state as u32, Release);
    }
    pub fn flags(&self) -> u32 {
        self.flags.load(Acquire)
    }
    pub fn set_flag(&self, flag: u32) {
        self.flags.fetch_or(flag, Release);
    }
    pub fn progress_ms(&self) -> u64 {
        self.progress_ms.load(Relaxed)
    }
    pub fn report_progress(&self) {
        self.progress_ms.store(monotonic_ms(), Relaxed);
    }
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }
    /// Counts one request; returns the count including it.
    pub fn count_request(&self) -> u64 {
        self.requests.fetch_add(1, Relaxed) + 1
    }
    pub fn connections(&self) -> u64 {
        self.connections.load(Relaxed)
    }
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Relaxed);
    }
    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Relaxed);
    }

    /// Records why the worker failed (read by the master after the worker exits).
    pub fn set_message(&self, text: &str) {
        let bytes = text.as_bytes();
        let len = bytes.len().min(MESSAGE_BYTES);
        // SAFETY: only this slot's worker writes, before publishing the length.
        unsafe { (&mut *self.message.get())[..len].copy_from_slice(&bytes[..len]) };
        self.message_len.store(len as u32, Release);
    }
    pub fn message(&self) -> Option<String> {
        let len = self.message_len.load(Acquire) as usize;
        if len == 0 {
            return None;
        }
        // SAFETY: published with Release by the writer; bounded by MESSAGE_BYTES.
        let bytes = unsafe { &(&*self.message.get())[..len.min(MESSAGE_BYTES)] };
        Some(String::from_utf8_lossy(bytes).into_owned())
    }

    /// Master only: prepare a slot for a worker about to be forked.
    fn reset(&self) {
        self.pid.store(0, Relaxed);
        self.flags.store(0, Relaxed);
        self.message_len.store(0, Relaxed);
        self.requests.store(0, Relaxed);
        self.connections.store(0, Relaxed);
        self.progress_ms.store(monotonic_ms(), Relaxed);
        self.state.store(WorkerState::Booting as u32, Release);
    }
    pub fn set_pid(&self, pid: i32) {
        self.pid.store(pid, Relaxed);
    }
}

/// The shared mapping. Created once by the master; inherited by every worker.
pub struct Scoreboard {
    slots: NonNull<Slot>,
    in_use: Vec<bool>,
}

impl Scoreboard {
    pub fn new() -> std::io::Result<Scoreboard> {
        let len = std::num::NonZeroUsize::new(CAPACITY * std::mem::size_of::<Slot>())
            .ok_or_else(|| std::io::Error::other("empty scoreboard"))?;
        // SAFETY: a fresh anonymous mapping, zero-filled, which is a valid all-Free slot array.
        let ptr = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                len,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
            )
        }
        .map_err(|e| std::io::Error::other(format!("mmap scoreboard: {e}")))?;
        Ok(Scoreboard {
            slots: ptr.cast(),
            in_use: vec![false; CAPACITY],
        })
    }

    pub fn slot(&self, index: usize) -> &'static Slot {
        assert!(index < CAPACITY, "slot index out of range");
        // SAFETY: the mapping lives for the whole process (never unmapped) and index is in range.
        unsafe { &*self.slots.as_ptr().add(index) }
    }

    /// Claims a free slot for a new worker, reset to Booting.
    pub fn claim(&mut self) -> Option<usize> {
        let index = self.in_use.iter().position(|used| !used)?;
        self.in_use[index] = true;
        self.slot(index).reset();
        Some(index)
    }

    pub fn release(&mut self, index: usize) {
        self.slot(index).set_state(WorkerState::Free);
        self.slot(index).set_pid(0);
        self.in_use[index] = false;
    }
}

/// CLOCK_MONOTONIC in milliseconds: the same clock in every process of the machine.
pub fn monotonic_ms() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000,
        Err(_) => 0,
    }
}
