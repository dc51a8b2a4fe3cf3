//! The error log: tracing events as text or JSON lines to stderr or a file that USR1
//! reopens (for logrotate). One `write` per line, files opened `O_APPEND`, so lines from
//! the master and its workers never interleave. The level can change on HUP.
//!
//! Two faults of the operating system are handled here:
//!
//! - **A full disk** (a file log): a line is written whole or not at all. Every writer
//!   of a log file (the master and each worker, each with its own open file) appends
//!   under an exclusive `flock`, so the end of the file is its own while it writes; a
//!   short write (`ENOSPC` half-way) is cut back with `ftruncate` to the last whole
//!   line, so no torn line stays for the next one to be glued to. The lines that could
//!   not be written are counted (`forkd_log_lines_dropped_total`) and, once writing
//!   works again, said in the log.
//! - **A stalled stderr** (a pipe nobody reads): the master's writes never block. It
//!   writes through its own non-blocking handle on the same pipe, tty or socket, and
//!   keeps what does not fit in a bounded queue, written as the pipe drains (the
//!   supervisor loop polls for it); past the bound, lines are dropped and counted.
//!   A line of up to `PIPE_BUF` (4096) bytes goes into a pipe whole or not at all; the
//!   rest of a longer one that went in partly is written next, before anything else.
//!   Workers do the same (their event loop must not block either); nothing polls for
//!   them, so their queue is written on their next line and before they exit.
//!
//! The h2 crate logs some of what a client does wrong as warnings, one line per frame
//! (`recv PING ack that we never sent`): a client could fill the disk with them. Its
//! lines at `info` and above go through [`H2Lines`]: the PING ACK one never (forkd
//! counts those frames in its HTTP/2 budgets, `worker/h2_frames.rs`), the others (limits
//! reached, once per connection) at most one a second per process. `debug` and `trace`
//! lines, which an operator asks for, pass.
//!
//! When stderr is the systemd journal (`JOURNAL_STREAM` names it), each line starts with
//! its syslog priority (`<3>` for errors, sd-daemon(3)), so `journalctl -p err` works,
//! and text lines leave the timestamp to the journal.

use crate::config::{LogConfig, LogFormat, LogLevel, LogTarget};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use tracing::{Level, Metadata};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Layer, Registry};

enum Sink {
    Stderr,
    File { path: PathBuf, file: File },
}

struct ErrorLog {
    sink: Mutex<Sink>,
    /// The non-blocking path to stderr (set up by `init`).
    stderr: Mutex<Option<Queued>>,
}

/// Lines that did not fit into stderr yet, bounded by [`MAX_QUEUED`] bytes.
struct Queued {
    out: NonBlocking,
    lines: std::collections::VecDeque<Vec<u8>>,
    /// Bytes of the first line already written.
    offset: usize,
    bytes: usize,
    /// Lines dropped since the last report.
    dropped: u64,
}

/// Bytes of error-log lines the master keeps while stderr is not being read.
const MAX_QUEUED: usize = 256 * 1024;

/// How the master writes stderr without blocking, without changing the file status
/// flags of fd 2, which it shares with whoever started it (a shell's terminal).
enum NonBlocking {
    /// A pipe or a terminal: an own open file description of it, `O_NONBLOCK`.
    Reopened(std::os::fd::OwnedFd),
    /// A socket (the journal's stream): `send` with `MSG_DONTWAIT`.
    Socket,
    /// A regular file: writing it does not wait for a reader.
    Direct,
}

impl NonBlocking {
    fn for_stderr() -> NonBlocking {
        use nix::sys::stat::SFlag;
        let Ok(stat) = nix::sys::stat::fstat(2) else {
            return NonBlocking::Direct;
        };
        let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFSOCK {
            return NonBlocking::Socket;
        }
        if kind == SFlag::S_IFIFO || kind == SFlag::S_IFCHR {
            let opened = nix::fcntl::open(
                "/proc/self/fd/2",
                nix::fcntl::OFlag::O_WRONLY
                    | nix::fcntl::OFlag::O_NONBLOCK
                    | nix::fcntl::OFlag::O_CLOEXEC
                    | nix::fcntl::OFlag::O_NOCTTY,
                nix::sys::stat::Mode::empty(),
            );
            if let Ok(fd) = opened {
                // SAFETY: a freshly opened fd, owned from here.
                return NonBlocking::Reopened(unsafe {
                    <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
                });
            }
        }
        NonBlocking::Direct
    }

    fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            NonBlocking::Reopened(fd) => fd.as_raw_fd(),
            _ => 2,
        }
    }

    fn write(&self, bytes: &[u8]) -> nix::Result<usize> {
        match self {
            NonBlocking::Socket => nix::sys::socket::send(
                2,
                bytes,
                nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
            ),
            _ => nix::unistd::write(
                // SAFETY: fd 2 or the handle this value owns, open for its lifetime.
                unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd()) },
                bytes,
            ),
        }
    }
}

impl Queued {
    /// Writes queued lines until stderr would block.
    fn pump(&mut self) {
        while let Some(line) = self.lines.front() {
            match self.out.write(&line[self.offset..]) {
                Ok(n) => {
                    self.offset += n;
                    if self.offset >= line.len() {
                        self.bytes -= line.len();
                        self.lines.pop_front();
                        self.offset = 0;
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(_) => {
                    // Gone for good (EPIPE...): nothing will ever take these lines.
                    self.dropped += self.lines.len() as u64;
                    count_dropped(self.lines.len() as u64);
                    self.lines.clear();
                    self.bytes = 0;
                    self.offset = 0;
                    return;
                }
            }
        }
    }

    fn push(&mut self, line: &[u8]) {
        self.pump();
        if self.dropped > 0 && self.lines.is_empty() {
            let note = format!(
                "forkd: error log: {} line(s) dropped: stderr was not being read\n",
                self.dropped
            );
            self.dropped = 0;
            self.bytes += note.len();
            self.lines.push_back(note.into_bytes());
        }
        if self.bytes + line.len() > MAX_QUEUED {
            self.dropped += 1;
            count_dropped(1);
            return;
        }
        self.bytes += line.len();
        self.lines.push_back(line.to_vec());
        self.pump();
    }
}

/// Where dropped lines are counted: the scoreboard's header, shared by all processes.
static DROPPED: OnceLock<&'static crate::shared::scoreboard::Header> = OnceLock::new();

/// Counts dropped log lines in `header` from now on (the master, before forking).
pub fn count_dropped_in(header: &'static crate::shared::scoreboard::Header) {
    let _ = DROPPED.set(header);
}

/// Counts `lines` log lines (error or access log) that could not be written.
pub fn count_dropped(lines: u64) {
    if let Some(header) = DROPPED.get() {
        header.count_log_lines_dropped(lines);
    }
}

/// What [`append_whole_lines`] could not write.
pub struct Dropped {
    pub lines: u64,
    pub error: io::Error,
}

/// Appends `batch` (whole lines) to a log file opened `O_APPEND`: all of it, or, on a
/// full disk, the whole lines that fit and nothing of the rest. Under an exclusive
/// `flock` that every forkd writer of the file takes (each process has its own open
/// file, so the lock excludes them from each other), so that after a short write the
/// torn tail at the end of the file is this write's own and can be cut off.
pub fn append_whole_lines(file: &File, batch: &[u8]) -> Result<(), Dropped> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: flock(2) on an open fd.
    while unsafe { libc::flock(fd, libc::LOCK_EX) } != 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
    let mut written = 0;
    let mut error = None;
    while written < batch.len() {
        match (&*file).write(&batch[written..]) {
            Ok(0) => {
                error = Some(io::Error::from(io::ErrorKind::WriteZero));
                break;
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let result = match error {
        None => Ok(()),
        Some(error) => {
            let whole = batch[..written]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            let torn = (written - whole) as u64;
            if torn > 0 {
                if let Ok(meta) = file.metadata() {
                    let _ = file.set_len(meta.len().saturating_sub(torn));
                }
            }
            let rest = &batch[whole..];
            let lines = rest.iter().filter(|&&b| b == b'\n').count() as u64
                + u64::from(!rest.is_empty() && !rest.ends_with(b"\n"));
            Err(Dropped { lines, error })
        }
    };
    // SAFETY: as above.
    unsafe { libc::flock(fd, libc::LOCK_UN) };
    result
}

static ERROR_LOG: OnceLock<ErrorLog> = OnceLock::new();
static LEVEL: OnceLock<reload::Handle<LevelFilter, Registry>> = OnceLock::new();
/// Whether stderr is the journal (checked once, at start).
static STDERR_IS_JOURNAL: OnceLock<bool> = OnceLock::new();
/// Whether the error log currently goes to the journal: stderr is it, and the error log
/// is stderr (a HUP can switch between stderr and a file).
static TO_JOURNAL: AtomicBool = AtomicBool::new(false);

/// Whether fd 2 is the stream systemd connected to the journal: `JOURNAL_STREAM` holds
/// its device and inode numbers ("DEV:INO"). A stderr redirected elsewhere by a wrapper
/// has other numbers, and then gets plain lines.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(2) else {
        return false;
    };
    dev.parse::<libc::dev_t>().ok() == Some(stat.st_dev)
        && ino.parse::<libc::ino_t>().ok() == Some(stat.st_ino)
}

fn set_sink(log: &ErrorLog, sink: Sink) {
    let journal = matches!(sink, Sink::Stderr) && *STDERR_IS_JOURNAL.get_or_init(stderr_is_journal);
    if let Ok(mut guard) = log.sink.lock() {
        *guard = sink;
        TO_JOURNAL.store(journal, Ordering::Relaxed);
    }
}

/// The syslog priority of a tracing level, for the journal's `<N>` line prefix.
fn syslog_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Wall-clock timestamps for text lines, except in the journal, which stamps every line
/// itself.
struct Timestamp;

impl FormatTime for Timestamp {
    fn format_time(&self, w: &mut format::Writer<'_>) -> std::fmt::Result {
        if TO_JOURNAL.load(Ordering::Relaxed) {
            Ok(())
        } else {
            SystemTime.format_time(w)
        }
    }
}

fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn sink_for(target: &LogTarget) -> io::Result<Sink> {
    match target {
        LogTarget::File(path) => {
            let file = open_append(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open error_log {}: {e}", path.display()),
                )
            })?;
            Ok(Sink::File {
                path: path.clone(),
                file,
            })
        }
        _ => Ok(Sink::Stderr),
    }
}

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// Installs the global subscriber. Call once, in the master, before forking.
pub fn init(config: &LogConfig) -> io::Result<()> {
    let sink = sink_for(&config.error_log)?;
    let log = ERROR_LOG.get_or_init(|| ErrorLog {
        sink: Mutex::new(Sink::Stderr),
        stderr: Mutex::new(None),
    });
    set_sink(log, sink);
    if let Ok(mut stderr) = log.stderr.lock() {
        *stderr = Some(Queued {
            out: NonBlocking::for_stderr(),
            lines: Default::default(),
            offset: 0,
            bytes: 0,
            dropped: 0,
        });
    }
    install_panic_hook();
    let (filter, handle) = reload::Layer::new(level_filter(config.level));
    let _ = LEVEL.set(handle);
    let format = match config.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_writer(MakeLogWriter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_timer(Timestamp)
            .with_target(false)
            .with_ansi(false)
            .with_writer(MakeLogWriter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(format.with_filter(H2Lines).with_filter(filter))
        .with(H2Malformed.with_filter(H2Malformed))
        .try_init()
        .map_err(io::Error::other)
}

/// Keeps the h2 crate's lines from flooding the log (see the module doc).
struct H2Lines;

/// The most h2 lines at `info` and above a process writes per second.
const H2_LINES_PER_SEC: u64 = 1;
/// When (monotonic ms) the last h2 line went out, in this process.
static H2_LINE_AT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether a line of the h2 crate from `module` at `level` is written, at `now_ms`
/// when the last one went at `*last_ms` (updated when it goes).
fn h2_line_passes(module: &str, level: &Level, now_ms: u64, last_ms: &mut u64) -> bool {
    if *level > Level::INFO {
        return true;
    }
    if module == "h2::proto::ping_pong" {
        return false;
    }
    if *last_ms != 0 && now_ms.saturating_sub(*last_ms) < 1000 / H2_LINES_PER_SEC {
        return false;
    }
    *last_ms = now_ms.max(1);
    true
}

fn is_h2(meta: &Metadata<'_>) -> bool {
    meta.target() == "h2" || meta.target().starts_with("h2::")
}

impl<S> Filter<S> for H2Lines {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        if !is_h2(meta) || !meta.is_event() {
            return true;
        }
        let mut last = H2_LINE_AT.load(Ordering::Relaxed);
        let module = meta.module_path().unwrap_or_default();
        let now = crate::shared::scoreboard::monotonic_ms();
        let passes = h2_line_passes(module, meta.level(), now, &mut last);
        if passes {
            H2_LINE_AT.store(last, Ordering::Relaxed);
        }
        passes
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if is_h2(meta) {
            // Asked per event: the rate depends on time.
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::always()
        }
    }
}

/// Called once for each HTTP/2 stream h2 resets for the client's protocol error (a
/// malformed request: bad pseudo-headers, connection-specific fields...), which never
/// reaches the service: set by workers, which count and log it (`worker/io.rs`).
static H2_MALFORMED_HOOK: OnceLock<fn()> = OnceLock::new();

/// Sets the function called for each malformed HTTP/2 stream (see [`H2_MALFORMED_HOOK`]).
pub fn on_h2_malformed_stream(hook: fn()) {
    let _ = H2_MALFORMED_HOOK.set(hook);
}

/// Sees h2's `debug` events whatever the log level, for the one each malformed stream
/// gives: `stream error PROTOCOL_ERROR -- ...` (h2's `proto_err!`) or `malformed
/// headers: ...` (h2's server). h2 logs no other events at `debug` per frame, so
/// seeing them costs nothing on a well-formed connection.
struct H2Malformed;

/// Whether an h2 `debug` message is the one of a stream reset for its malformation.
fn is_malformed_stream(message: &str) -> bool {
    message.starts_with("stream error PROTOCOL_ERROR") || message.starts_with("malformed headers")
}

fn is_h2_debug_event(meta: &Metadata<'_>) -> bool {
    is_h2(meta) && meta.is_event() && *meta.level() == Level::DEBUG
}

impl<S> Filter<S> for H2Malformed {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        is_h2_debug_event(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if is_h2_debug_event(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::DEBUG)
    }
}

impl<S: tracing::Subscriber> Layer<S> for H2Malformed {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = is_malformed_stream(&format!("{value:?}"));
                }
            }
        }
        let mut message = Message(false);
        event.record(&mut message);
        if message.0 {
            if let Some(hook) = H2_MALFORMED_HOOK.get() {
                hook();
            }
        }
    }
}

/// Applies a reloaded config's level and error log target (format stays as started).
pub fn reconfigure(config: &LogConfig) -> io::Result<()> {
    if let Some(handle) = LEVEL.get() {
        let _ = handle.modify(|filter| *filter = level_filter(config.level));
    }
    let sink = sink_for(&config.error_log)?;
    if let Some(log) = ERROR_LOG.get() {
        set_sink(log, sink);
    }
    Ok(())
}

/// Reopens the error log file at its path (after logrotate moved it).
pub fn reopen() {
    let Some(log) = ERROR_LOG.get() else { return };
    let failed = match log.sink.lock() {
        Ok(mut guard) => match &mut *guard {
            Sink::File { path, file } => match open_append(path) {
                Ok(new) => {
                    *file = new;
                    if IN_WORKER.load(Ordering::Relaxed) {
                        stderr_to(file);
                    }
                    None
                }
                Err(e) => Some(format!("cannot reopen {}: {e}", path.display())),
            },
            Sink::Stderr => None,
        },
        Err(_) => None,
    };
    if let Some(why) = failed {
        tracing::error!("{why}; still writing to the old file");
    }
}

/// Set in a worker (after the fork).
static IN_WORKER: AtomicBool = AtomicBool::new(false);

/// In a worker, just after the fork: its error log writes are its own (nothing of the
/// master's queue), a file error log is opened anew (its own open file,
/// for the append lock) and stderr points at it, so that what the runtime writes to
/// stderr by itself (a failed allocation's "memory allocation of N bytes failed"
/// before the abort) lands in the error log too.
pub fn in_worker() {
    IN_WORKER.store(true, Ordering::Relaxed);
    let Some(log) = ERROR_LOG.get() else { return };
    if let Ok(mut stderr) = log.stderr.lock() {
        // The master's waiting lines are the master's to write.
        if let Some(queued) = stderr.as_mut() {
            queued.lines.clear();
            queued.offset = 0;
            queued.bytes = 0;
            queued.dropped = 0;
        }
    }
    if let Ok(mut guard) = log.sink.lock() {
        if let Sink::File { path, file } = &mut *guard {
            if let Ok(new) = open_append(path) {
                *file = new;
            }
            stderr_to(file);
        }
    }
}

fn stderr_to(file: &File) {
    use std::os::fd::AsRawFd;
    let _ = nix::unistd::dup2(file.as_raw_fd(), 2);
}

/// Panics go to the error log (a file too), with the process and thread, instead of
/// only to stderr.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        tracing::error!(
            pid = std::process::id(),
            thread = thread.name().unwrap_or("unnamed"),
            "panic: {info}"
        );
    }));
}

/// The master's stderr fd while error-log lines wait for it (to poll for POLLOUT).
pub fn waiting_for_stderr() -> Option<std::os::fd::RawFd> {
    let log = ERROR_LOG.get()?;
    let stderr = log.stderr.lock().ok()?;
    let queued = stderr.as_ref()?;
    (!queued.lines.is_empty() && !matches!(queued.out, NonBlocking::Direct))
        .then(|| queued.out.fd())
}

/// Writes what waits for stderr, as far as it goes without blocking.
pub fn pump() {
    if let Some(log) = ERROR_LOG.get() {
        if let Ok(mut stderr) = log.stderr.lock() {
            if let Some(queued) = stderr.as_mut() {
                queued.pump();
            }
        }
    }
}

/// Before exit: writes what is pending, waiting for stderr up to a second at most.
pub fn flush() {
    let _ = io::stderr().flush();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while let Some(fd) = waiting_for_stderr() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        // SAFETY: the fd stays open while the log exists (for the process's life).
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let mut fds = [nix::poll::PollFd::new(
            borrowed,
            nix::poll::PollFlags::POLLOUT,
        )];
        let millis = left.as_millis().min(1000) as u16;
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(millis));
        pump();
    }
}

/// The tracing writer: one formatted line per write, with the event's level for the
/// journal's priority prefix.
struct Writer {
    level: Option<Level>,
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(log) = ERROR_LOG.get() else {
            return io::stderr().write(buf);
        };
        let mut guard = log
            .sink
            .lock()
            .map_err(|_| io::Error::other("log lock poisoned"))?;
        match &mut *guard {
            Sink::Stderr if TO_JOURNAL.load(Ordering::Relaxed) => {
                let priority = self.level.as_ref().map_or(6, syslog_priority);
                // Without its timestamp a text line starts with the spaces that followed
                // it and those that right-align the level.
                let line = buf.trim_ascii_start();
                let mut prefixed = format!("<{priority}>").into_bytes();
                prefixed.extend_from_slice(line);
                to_stderr(log, &prefixed)?
            }
            Sink::Stderr => to_stderr(log, buf)?,
            Sink::File { file, .. } => {
                if let Err(dropped) = append_whole_lines(file, buf) {
                    count_dropped(dropped.lines);
                    LOST_TO_FILE.fetch_add(dropped.lines, Ordering::Relaxed);
                    return Ok(buf.len());
                }
                let lost = LOST_TO_FILE.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    let note = format!(
                        "forkd: error log: {lost} line(s) could not be written (disk full?) and were dropped\n"
                    );
                    if append_whole_lines(file, note.as_bytes()).is_err() {
                        LOST_TO_FILE.fetch_add(lost, Ordering::Relaxed);
                    }
                }
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Error-log lines this process could not write to the file since the last note.
static LOST_TO_FILE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One line to stderr: through the master's queue (never blocking), or directly.
fn to_stderr(log: &ErrorLog, line: &[u8]) -> io::Result<()> {
    if let Ok(mut stderr) = log.stderr.lock() {
        if let Some(queued) = stderr.as_mut() {
            queued.push(line);
            return Ok(());
        }
    }
    io::stderr().write_all(line)
}

/// Hands the fmt layer a writer per event, knowing the event's level.
struct MakeLogWriter;

impl<'a> MakeWriter<'a> for MakeLogWriter {
    type Writer = Writer;
    fn make_writer(&'a self) -> Writer {
        Writer { level: None }
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Writer {
        Writer {
            level: Some(*meta.level()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{h2_line_passes, is_malformed_stream};
    use tracing::Level;

    #[test]
    fn malformed_stream_messages_of_h2() {
        assert!(is_malformed_stream(
            "stream error PROTOCOL_ERROR -- malformed header block; stream=StreamId(1)"
        ));
        assert!(is_malformed_stream("malformed headers: missing path"));
        assert!(!is_malformed_stream(
            "connection error PROTOCOL_ERROR -- invalid preface"
        ));
        assert!(!is_malformed_stream("Connection::poll; IO error"));
    }

    #[test]
    fn h2_lines_are_dropped_or_rate_limited() {
        let mut last = 0;
        // The per-frame PING ACK warning never goes; debug lines always do.
        assert!(!h2_line_passes(
            "h2::proto::ping_pong",
            &Level::WARN,
            5,
            &mut last
        ));
        assert!(h2_line_passes(
            "h2::proto::ping_pong",
            &Level::DEBUG,
            5,
            &mut last
        ));
        assert_eq!(last, 0);
        // Other warnings: the first goes, then one a second.
        let module = "h2::proto::streams::recv";
        assert!(h2_line_passes(module, &Level::WARN, 5_000, &mut last));
        assert!(!h2_line_passes(module, &Level::WARN, 5_001, &mut last));
        assert!(!h2_line_passes(module, &Level::ERROR, 5_999, &mut last));
        assert!(h2_line_passes(module, &Level::TRACE, 5_999, &mut last));
        assert!(h2_line_passes(module, &Level::WARN, 6_000, &mut last));
        assert_eq!(last, 6_000);
    }
}
