//! The scoreboard: a `MAP_SHARED` anonymous mapping made by the master before the first
//! fork: a [`Header`] for the whole server, then one fixed slot per worker. Workers store
//! into their slot with relaxed atomics (no syscall, no lock on the request path); the
//! master loads from it to decide readiness, timeouts and recycling, and the workers
//! read all of it to serve `/metrics`. Slots are claimed and freed only by the master,
//! which folds a freed slot's counters into the header so that server-wide counters
//! never go backwards when a worker is replaced.
//!
//! Workers can write every byte of the mapping, so the master trusts none of it: its
//! reads are bounded (no loop waits on a value a worker could hold), clamped and
//! validated, and what it must know exactly (which pid is in which slot, the folded
//! totals of exited workers) it keeps in its own memory ([`Scoreboard`]), copying it
//! into the mapping only for the workers' `/metrics`.

use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering::*};

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

/// Upper bounds (microseconds) of the request duration histogram's buckets; one more
/// bucket counts everything above the last bound (`+Inf`).
pub const DURATION_BOUNDS_US: [u64; 12] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    10_000_000,
];
const BUCKETS: usize = DURATION_BOUNDS_US.len() + 1;

/// A request duration histogram of relaxed atomics: one bucket increment and one sum
/// addition per request, no lock. Buckets are stored non-cumulative.
#[repr(C)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

/// A plain copy of a histogram, for rendering.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Non-cumulative counts, one per bound of [`DURATION_BOUNDS_US`], then `+Inf`.
    pub buckets: [u64; BUCKETS],
    pub sum_us: u64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0, |sum, n| sum.saturating_add(*n))
    }
    /// Adds `other`, saturating: a worker may have written any number into its slot.
    pub fn add(&mut self, other: &HistogramSnapshot) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }
}

impl Histogram {
    pub fn observe(&self, micros: u64) {
        let index = DURATION_BOUNDS_US
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(BUCKETS - 1);
        self.buckets[index].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(micros, Relaxed);
    }
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            sum_us: self.sum_us.load(Relaxed),
        }
    }
    fn store(&self, values: &HistogramSnapshot) {
        for (mine, value) in self.buckets.iter().zip(values.buckets.iter()) {
            mine.store(*value, Relaxed);
        }
        self.sum_us.store(values.sum_us, Relaxed);
    }
    fn clear(&self) {
        for bucket in &self.buckets {
            bucket.store(0, Relaxed);
        }
        self.sum_us.store(0, Relaxed);
    }
}

/// A `forkd_worker_restarts_total{reason}` counter: why a worker was replaced. The
/// master maps each of its exit reasons to one of these or to none, exhaustively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// `crash`: died unasked after it was ready.
    Crash,
    /// `timeout`: stopped reporting progress.
    Timeout,
    /// `max_requests`: recycled.
    MaxRequests,
    /// `reload`: an old generation's worker replaced by a HUP.
    Reload,
    /// `scale`: one too many for the target.
    Scale,
    /// `boot_failure`: died before it was ready.
    BootFailure,
    /// `max_worker_memory`: recycled, its RSS past the limit.
    MaxWorkerMemory,
    /// `max_worker_lifetime`: recycled, older than its lifetime.
    MaxWorkerLifetime,
}

/// The labels of [`Restart`]'s counters, in its order (`Restart as usize` indexes it).
pub const RESTART_REASONS: [&str; 8] = [
    "crash",
    "timeout",
    "max_requests",
    "reload",
    "scale",
    "boot_failure",
    "max_worker_memory",
    "max_worker_lifetime",
];

/// Requests forkd refused before they reached the app, for
/// `forkd_requests_rejected_total{limit}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    RequestLine = 0,
    RequestFields = 1,
    RequestFieldSize = 2,
    MaxBody = 3,
    MaxConnections = 4,
    HeaderReadTimeout = 5,
    /// Framing forkd will not guess at (400): see `worker/limits.rs`.
    Malformed = 6,
    BodyReadTimeout = 7,
    MaxConnectionsPerIp = 8,
    /// An HTTP/2 connection ended with GOAWAY `ENHANCE_YOUR_CALM` for flooding frames
    /// that carry no request (`worker/h2_frames.rs`).
    Http2Flood = 9,
}

impl Rejection {
    pub const ALL: [Rejection; 10] = [
        Rejection::RequestLine,
        Rejection::RequestFields,
        Rejection::RequestFieldSize,
        Rejection::MaxBody,
        Rejection::MaxConnections,
        Rejection::HeaderReadTimeout,
        Rejection::Malformed,
        Rejection::BodyReadTimeout,
        Rejection::MaxConnectionsPerIp,
        Rejection::Http2Flood,
    ];
    /// The config key of the limit, as the metric's label.
    pub fn limit_name(self) -> &'static str {
        match self {
            Rejection::RequestLine => "request_line",
            Rejection::RequestFields => "request_fields",
            Rejection::RequestFieldSize => "request_field_size",
            Rejection::MaxBody => "max_body",
            Rejection::MaxConnections => "max_connections",
            Rejection::HeaderReadTimeout => "header_read_timeout",
            Rejection::Malformed => "malformed",
            Rejection::BodyReadTimeout => "body_read_timeout",
            Rejection::MaxConnectionsPerIp => "max_connections_per_ip",
            Rejection::Http2Flood => "http2_flood",
        }
    }
}

/// Why a response was cut short, for `forkd_responses_incomplete_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incomplete {
    /// The client closed the connection or reset the stream before the response was
    /// written whole.
    ClientClosed = 0,
    /// A write made no progress for `limits.send_timeout`.
    SendTimeout = 1,
    /// The app's response body failed, or forkd cut the request body mid-response.
    Error = 2,
    /// forkd closed the connection (an HTTP/2 reset flood).
    ServerClosed = 3,
}

impl Incomplete {
    pub const ALL: [Incomplete; 4] = [
        Incomplete::ClientClosed,
        Incomplete::SendTimeout,
        Incomplete::Error,
        Incomplete::ServerClosed,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Incomplete::ClientClosed => "client_closed",
            Incomplete::SendTimeout => "send_timeout",
            Incomplete::Error => "error",
            Incomplete::ServerClosed => "server_closed",
        }
    }
}

/// How a TLS handshake ended, for `forkd_tls_handshakes_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    Ok = 0,
    Failed = 1,
    Timeout = 2,
}

impl Handshake {
    pub const ALL: [Handshake; 3] = [Handshake::Ok, Handshake::Failed, Handshake::Timeout];
    pub fn label(self) -> &'static str {
        match self {
            Handshake::Ok => "ok",
            Handshake::Failed => "failed",
            Handshake::Timeout => "timeout",
        }
    }
}

/// Server-wide state: written by the master (restarts, reloads, the stop flag, the
/// counters of exited workers) and, rarely, by workers (rejections).
#[repr(C, align(64))]
pub struct Header {
    /// CLOCK_MONOTONIC ms when the master made the scoreboard (its start).
    started_ms: AtomicU64,
    /// Set once the whole server is stopping (TERM, INT, QUIT to the master): readiness
    /// answers 503 from then on. Never set by a reload or an upgrade.
    server_stopping: AtomicU32,
    /// Seqlock around folding a freed slot into the totals below: odd while folding.
    fold_seq: AtomicU64,
    exited_requests: AtomicU64,
    exited_durations: Histogram,
    restarts: [AtomicU64; RESTART_REASONS.len()],
    reloads: AtomicU64,
    upgrades: AtomicU64,
    rejected: [AtomicU64; Rejection::ALL.len()],
    /// Error and access log lines that could not be written (full disk, stalled
    /// stderr), from every process.
    log_lines_dropped: AtomicU64,
    /// TLS handshakes by result, and their total duration in µs (all results).
    handshakes: [AtomicU64; Handshake::ALL.len()],
    handshake_us: AtomicU64,
    /// Responses cut short, by [`Incomplete`] reason.
    incomplete: [AtomicU64; Incomplete::ALL.len()],
    /// One past the highest slot index ever claimed: scans of the slots (accept
    /// balancing, metrics, totals) look at this many, not all of [`CAPACITY`].
    slots_high_water: AtomicU32,
}

impl Header {
    pub fn uptime_ms(&self) -> u64 {
        monotonic_ms().saturating_sub(self.started_ms.load(Relaxed))
    }
    pub fn server_stopping(&self) -> bool {
        self.server_stopping.load(Acquire) != 0
    }
    pub fn set_server_stopping(&self) {
        self.server_stopping.store(1, Release);
    }
    /// Counts a worker's replacement under its reason (the master decides which exits
    /// are restarts: see `master::plan::ExitReason::restart`).
    pub fn count_restart(&self, reason: Restart) {
        self.restarts[reason as usize].fetch_add(1, Relaxed);
    }
    pub fn restarts(&self) -> [u64; RESTART_REASONS.len()] {
        std::array::from_fn(|i| self.restarts[i].load(Relaxed))
    }
    pub fn count_reload(&self) {
        self.reloads.fetch_add(1, Relaxed);
    }
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Relaxed)
    }
    pub fn count_upgrade(&self) {
        self.upgrades.fetch_add(1, Relaxed);
    }
    pub fn upgrades(&self) -> u64 {
        self.upgrades.load(Relaxed)
    }
    pub fn count_rejection(&self, rejection: Rejection) {
        self.rejected[rejection as usize].fetch_add(1, Relaxed);
    }
    pub fn count_log_lines_dropped(&self, lines: u64) {
        self.log_lines_dropped.fetch_add(lines, Relaxed);
    }
    pub fn log_lines_dropped(&self) -> u64 {
        self.log_lines_dropped.load(Relaxed)
    }
    pub fn rejections(&self, rejection: Rejection) -> u64 {
        self.rejected[rejection as usize].load(Relaxed)
    }
    pub fn count_handshake(&self, result: Handshake, took: std::time::Duration) {
        self.handshakes[result as usize].fetch_add(1, Relaxed);
        self.handshake_us
            .fetch_add(took.as_micros() as u64, Relaxed);
    }
    pub fn handshakes(&self, result: Handshake) -> u64 {
        self.handshakes[result as usize].load(Relaxed)
    }
    pub fn count_incomplete(&self, reason: Incomplete) {
        self.incomplete[reason as usize].fetch_add(1, Relaxed);
    }
    pub fn incomplete(&self, reason: Incomplete) -> u64 {
        self.incomplete[reason as usize].load(Relaxed)
    }
    /// The summed duration of every handshake counted, in µs.
    pub fn handshake_us(&self) -> u64 {
        self.handshake_us.load(Relaxed)
    }
}

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
    /// Bytes, not a plain buffer: both the master (an exec worker's boot deadline) and
    /// the worker (or the forked child before exec) write it, so a concurrent write
    /// garbles the text but is never a data race.
    message: [AtomicU8; MESSAGE_BYTES],
    /// The worker's number (`forkd: worker [N]`), set by the worker.
    number: AtomicU64,
    /// Requests whose response has not been completely sent yet.
    in_flight: AtomicU64,
    /// The configuration generation the worker was forked from, set by the master.
    generation: AtomicU64,
    /// WSGI: requests that found every pool thread busy and waited for one (counter),
    /// and those waiting now (gauge).
    queued: AtomicU64,
    waiting: AtomicU64,
    durations: Histogram,
}

impl Slot {
    pub fn pid(&self) -> i32 {
        self.pid.load(Relaxed)
    }
    /// The state the worker reports; a value that is no [`WorkerState`] reads as
    /// `Free` (so never as ready).
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
    pub fn number(&self) -> u64 {
        self.number.load(Relaxed)
    }
    pub fn set_number(&self, number: u64) {
        self.number.store(number, Relaxed);
    }
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }
    pub fn request_began(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }
    /// A request's response is done (sent, or abandoned); `micros` is its duration.
    pub fn request_ended(&self, micros: Option<u64>) {
        self.in_flight.fetch_sub(1, Relaxed);
        if let Some(micros) = micros {
            self.durations.observe(micros);
        }
    }
    pub fn durations(&self) -> HistogramSnapshot {
        self.durations.snapshot()
    }
    /// Requests that waited for a WSGI pool thread, since the worker started.
    pub fn queued(&self) -> u64 {
        self.queued.load(Relaxed)
    }
    /// Requests waiting for a WSGI pool thread now.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Relaxed)
    }
    /// A request found every pool thread busy.
    pub fn request_queued(&self) {
        self.queued.fetch_add(1, Relaxed);
        self.waiting.fetch_add(1, Relaxed);
    }
    /// A queued request was taken by a pool thread (or dropped unserved).
    pub fn request_dequeued(&self) {
        self.waiting.fetch_sub(1, Relaxed);
    }

    /// Records why the worker failed (read by the master after the worker exits).
    pub fn set_message(&self, text: &str) {
        let bytes = text.as_bytes();
        let len = bytes.len().min(MESSAGE_BYTES);
        for (cell, byte) in self.message.iter().zip(&bytes[..len]) {
            cell.store(*byte, Relaxed);
        }
        self.message_len.store(len as u32, Release);
    }
    /// The worker's failure message: at most `MESSAGE_BYTES`, control characters
    /// escaped (it goes into the master's log as one line).
    pub fn message(&self) -> Option<String> {
        let len = (self.message_len.load(Acquire) as usize).min(MESSAGE_BYTES);
        if len == 0 {
            return None;
        }
        // Published with Release by the writer; a writer still at work gives garbled
        // text, never an invalid read.
        let bytes: [u8; MESSAGE_BYTES] = std::array::from_fn(|i| self.message[i].load(Relaxed));
        // Written by a worker, which may be compromised: it goes into the master's log,
        // escaped, without trailing NULs, at most 2 * MESSAGE_BYTES characters.
        let bytes = &bytes[..len.min(MESSAGE_BYTES)];
        let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        Some(crate::shared::escape::escape_untrusted(
            &bytes[..end],
            2 * MESSAGE_BYTES,
        ))
    }

    /// Master only: prepare a slot for a worker about to be forked.
    fn reset(&self) {
        self.pid.store(0, Relaxed);
        self.flags.store(0, Relaxed);
        self.message_len.store(0, Relaxed);
        self.requests.store(0, Relaxed);
        self.connections.store(0, Relaxed);
        self.number.store(0, Relaxed);
        self.in_flight.store(0, Relaxed);
        self.generation.store(0, Relaxed);
        self.queued.store(0, Relaxed);
        self.waiting.store(0, Relaxed);
        self.durations.clear();
        self.progress_ms.store(monotonic_ms(), Relaxed);
        self.state.store(WorkerState::Booting as u32, Release);
    }
    pub fn set_pid(&self, pid: i32) {
        self.pid.store(pid, Relaxed);
    }
    /// The configuration generation the worker was forked from (0: not set).
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }
    /// Master only: the generation of the worker forked for this slot.
    pub fn set_generation(&self, generation: u64) {
        self.generation.store(generation, Relaxed);
    }
}

/// How many times [`Board::totals`] re-reads when the fold sequence is odd or moved
/// before it settles for what it read: a worker can leave it odd forever.
const TOTALS_RETRIES: usize = 8;

/// The layout of the shared mapping.
#[repr(C)]
pub struct Board {
    header: Header,
    slots: [Slot; CAPACITY],
}

/// Server-wide totals read consistently with the live slots (see [`Board::totals`]).
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub requests: u64,
    pub durations: HistogramSnapshot,
}

impl Totals {
    /// Adds a slot's counters, saturating (a worker may have written any number).
    fn add_slot(&mut self, slot: &Slot) {
        self.requests = self.requests.saturating_add(slot.requests());
        self.durations.add(&slot.durations());
    }
}

impl Board {
    pub fn header(&self) -> &Header {
        &self.header
    }
    /// The fewest open connections among the other workers that are accepting (ready,
    /// not draining) and whose event loop reported progress at or after `alive_since_ms`;
    /// `None` when there is no such peer. A handful of relaxed loads, no syscall.
    pub fn least_connections_of_peers(&self, me: &Slot, alive_since_ms: u64) -> Option<u64> {
        self.claimed_slots()
            .iter()
            .filter(|s| !std::ptr::eq(*s, me))
            .filter(|s| s.state.load(Relaxed) == WorkerState::Ready as u32)
            .filter(|s| s.progress_ms() >= alive_since_ms)
            .map(|s| s.connections())
            .min()
    }
    /// Every slot that was ever claimed; the ones past it have always been free.
    fn claimed_slots(&self) -> &[Slot] {
        let end = (self.header.slots_high_water.load(Acquire) as usize).min(CAPACITY);
        &self.slots[..end]
    }
    /// Slots in use (booting, ready or draining workers).
    pub fn live_slots(&self) -> impl Iterator<Item = &Slot> {
        self.claimed_slots()
            .iter()
            .filter(|s| s.state() != WorkerState::Free && s.pid() != 0)
    }
    /// Requests and durations of every worker, exited or alive, read under the fold
    /// seqlock so that a worker being folded into the header is counted exactly once.
    /// For `/metrics` in the workers: the seqlock is retried a few times only (a worker
    /// can leave it odd), then the last read is the best effort. The master counts
    /// from its own memory instead ([`Scoreboard::totals`]).
    pub fn totals(&self) -> Totals {
        let mut best_effort = Totals::default();
        for _ in 0..TOTALS_RETRIES {
            let before = self.header.fold_seq.load(Acquire);
            let mut totals = Totals {
                requests: self.header.exited_requests.load(Relaxed),
                durations: self.header.exited_durations.snapshot(),
            };
            for slot in self
                .claimed_slots()
                .iter()
                .filter(|s| s.state() != WorkerState::Free)
            {
                totals.add_slot(slot);
            }
            fence(Acquire);
            if before.is_multiple_of(2) && self.header.fold_seq.load(Relaxed) == before {
                return totals;
            }
            best_effort = totals;
            std::hint::spin_loop();
        }
        best_effort
    }
    /// Master only: publishes the exited totals (kept exactly in the master's memory)
    /// and frees the slot, as one step for [`Board::totals`].
    fn publish_fold(&self, index: usize, exited: &Totals) {
        let slot = &self.slots[index];
        // The master's own count, not the mapping's (a worker may have changed it).
        let seq = self.header.fold_seq.load(Relaxed) | 1;
        self.header.fold_seq.store(seq, Relaxed);
        fence(Release);
        self.header.exited_requests.store(exited.requests, Relaxed);
        self.header.exited_durations.store(&exited.durations);
        slot.set_state(WorkerState::Free);
        slot.set_pid(0);
        self.header.fold_seq.store(seq.wrapping_add(1), Release);
    }
}

/// The shared mapping. Created once by the master; inherited by every worker.
pub struct Scoreboard {
    board: NonNull<Board>,
    /// Which slots the master gave out: its own record, never read from the mapping.
    in_use: Vec<bool>,
    /// Counters of exited workers, kept by the master; the copy in the mapping's
    /// header is only for the workers' `/metrics`.
    exited: Totals,
}

impl Scoreboard {
    pub fn new() -> std::io::Result<Scoreboard> {
        let len = std::num::NonZeroUsize::new(std::mem::size_of::<Board>())
            .ok_or_else(|| std::io::Error::other("empty scoreboard"))?;
        // SAFETY: a fresh anonymous mapping, zero-filled, which is a valid board: all
        // atomics zero, every slot Free.
        let ptr = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                len,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
            )
        }
        .map_err(|e| std::io::Error::other(format!("mmap scoreboard: {e}")))?;
        let scoreboard = Scoreboard {
            board: ptr.cast(),
            in_use: vec![false; CAPACITY],
            exited: Totals::default(),
        };
        scoreboard
            .board()
            .header
            .started_ms
            .store(monotonic_ms(), Relaxed);
        Ok(scoreboard)
    }

    /// The whole mapping, for workers serving metrics and for the master's counters.
    pub fn board(&self) -> &'static Board {
        // SAFETY: the mapping lives for the whole process (never unmapped).
        unsafe { self.board.as_ref() }
    }

    pub fn header(&self) -> &'static Header {
        &self.board().header
    }

    pub fn slot(&self, index: usize) -> &'static Slot {
        &self.board().slots[index]
    }

    /// Claims a free slot for a new worker, reset to Booting.
    pub fn claim(&mut self) -> Option<usize> {
        let index = self.in_use.iter().position(|used| !used)?;
        self.in_use[index] = true;
        self.slot(index).reset();
        self.header()
            .slots_high_water
            .fetch_max(index as u32 + 1, Release);
        Some(index)
    }

    /// Frees a slot whose worker exited, keeping its counters in the server totals.
    pub fn release(&mut self, index: usize) {
        self.exited.add_slot(self.slot(index));
        self.board().publish_fold(index, &self.exited);
        self.in_use[index] = false;
    }

    /// The master's view of the server totals: exited workers from its own memory,
    /// plus the live slots it gave out (read once each, saturating). No loop waits on
    /// the mapping, so a worker cannot stall the master here.
    pub fn totals(&self) -> Totals {
        let mut totals = self.exited.clone();
        for (index, _) in self.in_use.iter().enumerate().filter(|(_, used)| **used) {
            totals.add_slot(self.slot(index));
        }
        totals
    }
}

/// CLOCK_MONOTONIC in milliseconds: the same clock in every process of the machine.
pub fn monotonic_ms() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_keep_what_freed_slots_counted() {
        let mut board = Scoreboard::new().expect("scoreboard");
        let a = board.claim().expect("slot");
        let b = board.claim().expect("slot");
        for (index, pid) in [(a, 100), (b, 101)] {
            board.slot(index).set_pid(pid);
            board.slot(index).set_state(WorkerState::Ready);
        }
        for _ in 0..3 {
            board.slot(a).count_request();
            board.slot(a).request_began();
            board.slot(a).request_ended(Some(1_500));
        }
        board.slot(b).count_request();
        board.slot(b).request_began();
        board.slot(b).request_ended(Some(20_000_000));
        let before = board.board().totals();
        assert_eq!(before.requests, 4);
        assert_eq!(before.durations.count(), 4);
        assert_eq!(
            before.durations.buckets[1], 3,
            "1.5 ms is in the 2.5 ms bucket"
        );
        assert_eq!(
            before.durations.buckets[BUCKETS - 1],
            1,
            "20 s is above 10 s"
        );
        board.release(a);
        let reused = board.claim().expect("slot");
        assert_eq!(reused, a, "the freed slot is reused, reset");
        assert_eq!(board.slot(reused).requests(), 0);
        let after = board.board().totals();
        assert_eq!(after.requests, 4);
        assert_eq!(after.durations, before.durations);
        assert_eq!(board.board().live_slots().count(), 1);
        board.header().count_restart(Restart::Scale);
        assert_eq!(board.header().restarts()[4], 1);
        assert_eq!(board.header().restarts().iter().sum::<u64>(), 1);
    }

    /// A worker can write anything into the mapping: an odd fold sequence, a state
    /// that is no state, counters at their maximum, a message length past the buffer.
    /// The reads return promptly, and the master's totals stay exact.
    #[test]
    fn corrupt_slots_do_not_stall_or_fool_the_reads() {
        let mut board = Scoreboard::new().expect("scoreboard");
        let honest = board.claim().expect("slot");
        board.slot(honest).count_request();
        board.slot(honest).request_began();
        board.slot(honest).request_ended(Some(1_000));
        board.release(honest);
        let evil = board.claim().expect("slot");
        let slot = board.slot(evil);
        slot.set_pid(4242);
        slot.state.store(0xdead_beef, Relaxed);
        slot.requests.store(u64::MAX, Relaxed);
        slot.durations.sum_us.store(u64::MAX, Relaxed);
        for bucket in &slot.durations.buckets {
            bucket.store(u64::MAX, Relaxed);
        }
        slot.set_message("line one\nforged line\u{1b}[31m");
        slot.message_len.store(u32::MAX, Relaxed);
        let header = board.header();
        header.fold_seq.store(1, Relaxed);
        header.slots_high_water.store(u32::MAX, Relaxed);

        let shared = board.board();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let totals = shared.totals();
            let _ = tx.send(totals.requests);
        });
        let best_effort = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("Board::totals returns with the fold sequence left odd");
        assert_eq!(best_effort, 1, "the garbage state counts as a free slot");

        assert_eq!(
            slot.state(),
            WorkerState::Free,
            "an invalid state is not ready"
        );
        let message = slot.message().expect("message");
        assert!(
            message.chars().count() <= 2 * MESSAGE_BYTES + 3,
            "{message}"
        );
        assert!(
            !message.contains('\n') && !message.contains('\u{1b}'),
            "{message:?}"
        );
        assert!(
            message.starts_with("line one\\x0aforged line"),
            "{message:?}"
        );

        // The master's own totals: exact for exited workers, saturating for the live.
        slot.state.store(WorkerState::Ready as u32, Relaxed);
        let master = board.totals();
        assert_eq!(master.requests, u64::MAX);
        assert_eq!(master.durations.count(), u64::MAX);
        board.release(evil);
        assert_eq!(board.totals().requests, u64::MAX, "saturated, not wrapped");
        let fresh = board.claim().expect("slot");
        assert_eq!(board.slot(fresh).requests(), 0);
        assert_eq!(
            header.fold_seq.load(Relaxed) % 2,
            0,
            "the fold republished it"
        );
        assert_eq!(board.board().totals().requests, u64::MAX);
    }
}
