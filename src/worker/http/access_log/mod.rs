//! The access log: one line per request, in a format of named fields
//! (`log.access_log_format`, or [`DEFAULT_FORMAT`]) or as JSON lines when
//! `log.format = "json"`, written to a file or stdout (`log.access_log`).
//!
//! Why a writer thread: a slow or stalled disk must not stall the event loop. The event
//! loop only formats a line and pushes it on a channel (no syscall, no lock); a thread of
//! the worker collects the lines every [`FLUSH_EVERY`] (sooner when many are waiting)
//! and appends them with one `write` per batch. Whole lines per `write` on an
//! `O_APPEND` file, so lines of several workers never interleave. USR1 reopens the file
//! (after logrotate moved it); the drain and the exit flush what is pending.

mod format;

use format::Piece;
pub use format::{Field, Format, DEFAULT_FORMAT};

use crate::config::LogTarget;
use crate::shared::timefmt::Utc;
use hyper::header::{HeaderValue, HOST, REFERER, USER_AGENT};
use hyper::{Method, Uri, Version};
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often the writer thread writes what has accumulated.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Lines waiting that make the writer thread write at once.
const WAKE_AT: usize = 512;
/// Lines waiting beyond which new lines are dropped (and counted) rather than letting a
/// stalled disk eat the worker's memory.
const MAX_PENDING: usize = 200_000;

/// The `remote_addr` of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    /// The peer's IP, or the client's as a trusted proxy reported it.
    Ip(IpAddr),
    /// A unix socket peer that no proxy header names a client for: `unix`.
    Unix,
    /// A trusted proxy's headers name no usable client address: `-` (JSON `null`).
    Unknown,
}

/// What is kept of a request for its log line, captured before the app takes it.
pub struct Record {
    wall: SystemTime,
    client: Remote,
    peer: Option<SocketAddr>,
    /// None for a request refused before hyper parsed it (see [`Record::refused`]).
    head: Option<Head>,
    /// The request line as received, for a refused request (its raw bytes, cut short):
    /// escaped as written, so `\xFF` logs as `\xFF`, not as a replacement character.
    raw_line: Vec<u8>,
    scheme: &'static str,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    host: Option<HeaderValue>,
    /// Values of the `{header:NAME}` fields, in format order.
    headers: Vec<Option<HeaderValue>>,
    /// The TLS version and cipher suite, on a TLS connection.
    tls: Option<(&'static str, &'static str)>,
}

impl Record {
    /// A request refused before it was parsed (a broken limit, or a full worker):
    /// `line` is what arrived of its request line, if anything.
    pub fn refused(client: Remote, peer: Option<SocketAddr>, line: &[u8]) -> Record {
        let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut raw_line = line[..line.len().min(RAW_LINE_MAX)].to_vec();
        if line.len() > RAW_LINE_MAX {
            raw_line.extend_from_slice(b"...");
        }
        Record {
            wall: SystemTime::now(),
            client,
            peer,
            head: None,
            raw_line,
            scheme: "http",
            user_agent: None,
            referer: None,
            host: None,
            headers: Vec::new(),
            tls: None,
        }
    }

    /// The request came over TLS (version, cipher suite).
    pub fn set_tls(&mut self, tls: Option<(&'static str, &'static str)>) {
        if tls.is_some() && self.scheme == "http" {
            self.scheme = "https";
        }
        self.tls = tls;
    }
}

struct Head {
    method: Method,
    uri: Uri,
    version: Version,
}

/// How much of a refused request's line the log keeps.
const RAW_LINE_MAX: usize = 200;

/// The outcome of a request, known when its response is done (written whole) or
/// abandoned.
pub struct Outcome {
    /// The status sent (499 when no response was sent).
    pub status: u16,
    /// Body bytes written to the connection (nginx's `$body_bytes_sent`): response
    /// headers and HTTP framing not included; on TLS, bytes handed to the TLS layer.
    pub bytes: u64,
    pub duration: Duration,
    /// The whole response was written (`{completion}`).
    pub completed: bool,
}

enum Message {
    Line(Vec<u8>),
    Reopen,
    Finish(mpsc::SyncSender<()>),
}

/// A worker's access log: the format and the channel to its writer thread.
pub struct AccessLog {
    format: Format,
    json: bool,
    pid: u32,
    worker: u64,
    sender: mpsc::Sender<Message>,
    writer: std::thread::Thread,
    pending: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
}

enum Sink {
    Stdout(File),
    File { path: PathBuf, file: File },
}

impl Sink {
    fn open(target: &LogTarget) -> Result<Option<Sink>, String> {
        match target {
            LogTarget::Off => Ok(None),
            LogTarget::Std => {
                use std::os::fd::AsFd;
                let fd = std::io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|e| format!("cannot use stdout for access_log: {e}"))?;
                Ok(Some(Sink::Stdout(File::from(fd))))
            }
            LogTarget::File(path) => Ok(Some(Sink::File {
                path: path.clone(),
                file: open_append(path)?,
            })),
        }
    }
    fn file(&mut self) -> &mut File {
        match self {
            Sink::Stdout(file) | Sink::File { file, .. } => file,
        }
    }
    fn reopen(&mut self) {
        if let Sink::File { path, file } = self {
            match open_append(path) {
                Ok(new) => *file = new,
                Err(e) => tracing::error!("{e}; still writing to the old file"),
            }
        }
    }
}

fn open_append(path: &PathBuf) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open access_log {}: {e}", path.display()))
}

impl AccessLog {
    /// Opens the log and starts its writer thread; `None` when the log is off. No
    /// `format` means [`DEFAULT_FORMAT`].
    pub fn start(
        target: &LogTarget,
        format: Option<&Format>,
        json: bool,
        worker: u64,
    ) -> Result<Option<AccessLog>, String> {
        let Some(sink) = Sink::open(target)? else {
            return Ok(None);
        };
        let format = match format {
            Some(format) => format.clone(),
            None => Format::parse(DEFAULT_FORMAT)
                .map_err(|e| format!("the default access_log_format: {e}"))?,
        };
        let (sender, receiver) = mpsc::channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let handle = std::thread::Builder::new()
            .name("access-log".into())
            .spawn({
                let (pending, dropped) = (pending.clone(), dropped.clone());
                move || write_lines(sink, receiver, pending, dropped)
            })
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        Ok(Some(AccessLog {
            format,
            json,
            pid: std::process::id(),
            worker,
            sender,
            writer: handle.thread().clone(),
            pending,
            dropped,
        }))
    }

    /// Keeps what the log line needs from a request head.
    pub fn capture(
        &self,
        req: &hyper::http::request::Parts,
        client: Remote,
        peer: Option<SocketAddr>,
        scheme: &'static str,
        tls: Option<(&'static str, &'static str)>,
    ) -> Record {
        let headers = &req.headers;
        Record {
            wall: SystemTime::now(),
            client,
            peer,
            head: Some(Head {
                method: req.method.clone(),
                uri: req.uri.clone(),
                version: req.version,
            }),
            raw_line: Vec::new(),
            scheme,
            tls,
            user_agent: headers.get(USER_AGENT).cloned(),
            referer: headers.get(REFERER).cloned(),
            host: headers.get(HOST).cloned(),
            headers: self
                .format
                .fields()
                .filter_map(|f| match f {
                    Field::Header(name) => Some(headers.get(name).cloned()),
                    _ => None,
                })
                .collect(),
        }
    }

    /// Formats the line and hands it to the writer thread.
    pub fn log(&self, record: &Record, outcome: &Outcome) {
        let waiting = self.pending.fetch_add(1, Relaxed);
        if waiting >= MAX_PENDING {
            self.pending.fetch_sub(1, Relaxed);
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        let mut line = Vec::with_capacity(256);
        if self.json {
            self.write_json(&mut line, record, outcome);
        } else {
            self.write_text(&mut line, record, outcome);
        }
        line.push(b'\n');
        if self.sender.send(Message::Line(line)).is_err() {
            return;
        }
        if waiting + 1 == WAKE_AT {
            self.writer.unpark();
        }
    }

    /// USR1: write what is pending to the old file, then reopen it by path.
    pub fn reopen(&self) {
        if self.sender.send(Message::Reopen).is_ok() {
            self.writer.unpark();
        }
    }

    /// Writes everything pending and waits (bounded) until it is written: before the
    /// worker exits, so that no line is lost.
    pub fn finish(&self) {
        let (ack, done) = mpsc::sync_channel(1);
        if self.sender.send(Message::Finish(ack)).is_ok() {
            self.writer.unpark();
            let _ = done.recv_timeout(Duration::from_secs(5));
        }
    }

    fn write_text(&self, out: &mut Vec<u8>, record: &Record, outcome: &Outcome) {
        use std::io::Write as _;
        let mut header_index = 0;
        for piece in &self.format.pieces {
            // The default format's fields are written straight into the line, without
            // an allocation each; the rest go through `value`.
            let missing = |out: &mut Vec<u8>| out.push(b'-');
            let header = |out: &mut Vec<u8>, v: &Option<HeaderValue>| match v {
                Some(v) => escape_text(out, v.as_bytes()),
                None => missing(out),
            };
            match piece {
                Piece::Literal(text) => out.extend_from_slice(text.as_bytes()),
                Piece::Field(Field::RemoteAddr) => match record.client {
                    Remote::Ip(ip) => {
                        let _ = write!(out, "{ip}");
                    }
                    Remote::Unix => out.extend_from_slice(b"unix"),
                    Remote::Unknown => missing(out),
                },
                Piece::Field(Field::Time) => {
                    with_common_log_time(record.wall, |t| out.extend_from_slice(t.as_bytes()))
                }
                Piece::Field(Field::Request) => match &record.head {
                    Some(h) => {
                        escape_text(out, h.method.as_str().as_bytes());
                        out.push(b' ');
                        match h.uri.path_and_query() {
                            Some(p) if h.uri.scheme().is_none() => {
                                escape_text(out, p.as_str().as_bytes())
                            }
                            _ => escape_text(out, request_target(&h.uri).as_bytes()),
                        }
                        out.push(b' ');
                        out.extend_from_slice(version_text(h.version).as_bytes());
                    }
                    None if record.raw_line.is_empty() => missing(out),
                    None => escape_text(out, &record.raw_line),
                },
                Piece::Field(Field::Status) => {
                    let _ = write!(out, "{}", outcome.status);
                }
                Piece::Field(Field::Bytes) => {
                    let _ = write!(out, "{}", outcome.bytes);
                }
                Piece::Field(Field::UserAgent) => header(out, &record.user_agent),
                Piece::Field(Field::Referer) => header(out, &record.referer),
                Piece::Field(Field::Pid) => {
                    let _ = write!(out, "{}", self.pid);
                }
                Piece::Field(field) => {
                    let value = self.value(field, record, outcome, &mut header_index);
                    match value {
                        Value::Missing => out.push(b'-'),
                        Value::Number(n) => {
                            let _ = write!(out, "{n}");
                        }
                        Value::Millis(d) => {
                            let _ = write!(out, "{:.3}", d.as_secs_f64() * 1000.0);
                        }
                        Value::Seconds(d) => {
                            let _ = write!(out, "{}.{:06}", d.as_secs(), d.subsec_micros());
                        }
                        Value::Text(bytes) => escape_text(out, &bytes),
                        Value::Flag(true) => out.extend_from_slice(b"OK"),
                        Value::Flag(false) => {}
                    }
                }
            }
        }
    }

    fn write_json(&self, out: &mut Vec<u8>, record: &Record, outcome: &Outcome) {
        let mut object = serde_json::Map::new();
        let mut header_index = 0;
        for field in self.format.fields() {
            let value = match self.value(field, record, outcome, &mut header_index) {
                Value::Missing => serde_json::Value::Null,
                Value::Number(n) => serde_json::Value::from(n),
                Value::Millis(d) => serde_json::Value::from(d.as_secs_f64() * 1000.0),
                Value::Seconds(d) => serde_json::Value::from(d.as_secs_f64()),
                Value::Text(bytes) => {
                    serde_json::Value::from(String::from_utf8_lossy(&bytes).into_owned())
                }
                Value::Flag(flag) => serde_json::Value::from(flag),
            };
            // In JSON `time` is RFC 3339, which log pipelines parse without a pattern.
            let value = match field {
                Field::Time => {
                    serde_json::Value::from(Utc::from_system(record.wall).rfc3339_millis())
                }
                _ => value,
            };
            object.insert(field.json_key(), value);
        }
        let _ = serde_json::to_writer(&mut *out, &object);
    }

    fn value(
        &self,
        field: &Field,
        record: &Record,
        outcome: &Outcome,
        header_index: &mut usize,
    ) -> Value {
        let text = |s: String| Value::Text(s.into_bytes());
        let header = |v: &Option<HeaderValue>| match v {
            Some(v) => Value::Text(v.as_bytes().to_vec()),
            None => Value::Missing,
        };
        match field {
            Field::RemoteAddr => match record.client {
                Remote::Ip(ip) => text(ip.to_string()),
                Remote::Unix => text("unix".into()),
                Remote::Unknown => Value::Missing,
            },
            Field::PeerAddr => match record.peer {
                Some(addr) => text(addr.to_string()),
                None => text("unix".into()),
            },
            Field::Time => with_common_log_time(record.wall, |t| text(t.to_string())),
            Field::TimeIso => text(Utc::from_system(record.wall).rfc3339_millis()),
            Field::Request => match &record.head {
                Some(h) => text(format!(
                    "{} {} {:?}",
                    h.method,
                    request_target(&h.uri),
                    h.version
                )),
                None if record.raw_line.is_empty() => Value::Missing,
                None => Value::Text(record.raw_line.clone()),
            },
            Field::Method => record
                .head
                .as_ref()
                .map_or(Value::Missing, |h| text(h.method.to_string())),
            Field::Uri => record
                .head
                .as_ref()
                .map_or(Value::Missing, |h| text(request_target(&h.uri))),
            Field::Path => record
                .head
                .as_ref()
                .map_or(Value::Missing, |h| text(h.uri.path().to_string())),
            Field::Query => match record.head.as_ref().and_then(|h| h.uri.query()) {
                Some(q) => text(q.to_string()),
                None => Value::Missing,
            },
            Field::Protocol => record
                .head
                .as_ref()
                .map_or(Value::Missing, |h| text(format!("{:?}", h.version))),
            Field::Scheme => text(record.scheme.to_string()),
            Field::Status => Value::Number(u64::from(outcome.status)),
            Field::Bytes => Value::Number(outcome.bytes),
            Field::DurationMs => Value::Millis(outcome.duration),
            Field::DurationUs => Value::Number(outcome.duration.as_micros() as u64),
            Field::DurationS => Value::Seconds(outcome.duration),
            Field::UserAgent => header(&record.user_agent),
            Field::Referer => header(&record.referer),
            Field::Host => header(&record.host),
            Field::Pid => Value::Number(u64::from(self.pid)),
            Field::Worker => Value::Number(self.worker),
            Field::TlsVersion => record.tls.map_or(Value::Missing, |(v, _)| text(v.into())),
            Field::TlsCipher => record.tls.map_or(Value::Missing, |(_, c)| text(c.into())),
            Field::Completion => Value::Flag(outcome.completed),
            Field::Header(_) => {
                let value = record.headers.get(*header_index).cloned().flatten();
                *header_index += 1;
                header(&value)
            }
        }
    }
}

enum Value {
    Missing,
    Number(u64),
    Millis(Duration),
    Seconds(Duration),
    Text(Vec<u8>),
    /// `{completion}`: `OK` or nothing in text, a boolean in JSON.
    Flag(bool),
}

/// The request target as the client sent it: path and query (or the whole URI for
/// absolute-form and authority-form requests).
fn request_target(uri: &Uri) -> String {
    if uri.scheme().is_some() || uri.path_and_query().is_none() {
        uri.to_string()
    } else {
        uri.path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string()
    }
}

/// Text fields escape `"`, `\` and bytes outside printable ASCII as `\xHH` (as nginx
/// does), so a client cannot forge a line break or break out of a quoted field.
fn escape_text(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        } else {
            out.push(b);
        }
    }
}

thread_local! {
    static TIME_CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Runs `f` with the common-log time, formatted once per second per thread.
fn with_common_log_time<R>(wall: SystemTime, f: impl FnOnce(&str) -> R) -> R {
    let secs = wall
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    TIME_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs {
            *cache = (secs, Utc::from_system(wall).common_log());
        }
        f(&cache.1)
    })
}

fn version_text(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// The writer thread: every FLUSH_EVERY (or when woken), take every waiting line and
/// append the batch with one write.
fn write_lines(
    mut sink: Sink,
    receiver: mpsc::Receiver<Message>,
    pending: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
) {
    let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut last_error = WriteFailures::default();
    loop {
        std::thread::park_timeout(FLUSH_EVERY);
        let mut taken = 0;
        let mut finish: Option<mpsc::SyncSender<()>> = None;
        let mut disconnected = false;
        loop {
            match receiver.try_recv() {
                Ok(Message::Line(line)) => {
                    taken += 1;
                    batch.extend_from_slice(&line);
                }
                Ok(Message::Reopen) => {
                    flush(&mut sink, &mut batch, &mut last_error);
                    sink.reopen();
                }
                Ok(Message::Finish(ack)) => {
                    finish = Some(ack);
                    break;
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        pending.fetch_sub(taken, Relaxed);
        flush(&mut sink, &mut batch, &mut last_error);
        let lost = dropped.swap(0, Relaxed);
        if lost > 0 {
            tracing::error!(
                pid = std::process::id(),
                lines = lost,
                "access log: the disk does not keep up; lines dropped"
            );
        }
        if let Some(ack) = finish {
            let _ = ack.send(());
        }
        if disconnected {
            return;
        }
    }
}

/// Appends the batch, whole lines only (see `logging::append_whole_lines`: on a full
/// disk the lines that fit are written and the rest dropped, never half a line).
/// Dropped lines are counted, and said in the error log once every 10 s at most, with
/// how many since the last such line, so a full disk does not flood it.
fn flush(sink: &mut Sink, batch: &mut Vec<u8>, failures: &mut WriteFailures) {
    if batch.is_empty() {
        return;
    }
    if let Err(dropped) = crate::shared::logging::append_whole_lines(sink.file(), batch) {
        crate::shared::logging::count_dropped(dropped.lines);
        failures.lines += dropped.lines;
        if failures
            .reported
            .is_none_or(|at| at.elapsed() > Duration::from_secs(10))
        {
            tracing::error!(
                pid = std::process::id(),
                dropped = failures.lines,
                "access log write failed: {}; {} line(s) dropped",
                dropped.error,
                failures.lines
            );
            failures.reported = Some(Instant::now());
            failures.lines = 0;
        }
    }
    batch.clear();
}

/// Access log lines a failing disk made the writer drop, for its rate-limited report.
#[derive(Default)]
struct WriteFailures {
    /// Dropped since the last report.
    lines: u64,
    reported: Option<Instant>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderName;

    #[test]
    fn formats_parse_and_reject_unknown_fields() {
        assert!(Format::parse(DEFAULT_FORMAT).is_ok());
        let f = Format::parse("{{literal}} {status} {header:x-request-id}").unwrap();
        assert_eq!(
            f.pieces,
            vec![
                Piece::Literal("{literal} ".into()),
                Piece::Field(Field::Status),
                Piece::Literal(" ".into()),
                Piece::Field(Field::Header(HeaderName::from_static("x-request-id"))),
            ]
        );
        let e = Format::parse("{status} {stauts}").unwrap_err();
        assert!(e.contains("unknown field {stauts}"), "{e}");
        assert!(Format::parse("{status").unwrap_err().contains("unclosed"));
        assert!(Format::parse("status}").unwrap_err().contains("unmatched"));
        assert!(Format::parse("no fields")
            .unwrap_err()
            .contains("names no field"));
        assert!(Format::parse("{header:bad name}").is_err());
    }

    #[test]
    fn text_escapes_quotes_and_control_bytes() {
        let mut out = Vec::new();
        escape_text(&mut out, b"a\"b\\c\nd\xff");
        assert_eq!(String::from_utf8(out).unwrap(), "a\\x22b\\x5Cc\\x0Ad\\xFF");
    }

    #[test]
    fn request_targets() {
        assert_eq!(request_target(&"/a?b=c".parse().unwrap()), "/a?b=c");
        assert_eq!(
            request_target(&"http://example.com/x".parse().unwrap()),
            "http://example.com/x"
        );
        assert_eq!(
            request_target(&"example.com:443".parse().unwrap()),
            "example.com:443"
        );
    }

    /// The line `format` writes (JSON or text) for a refused `GET /` from `client`.
    fn line_of(format: &str, json: bool, client: Remote, outcome: Outcome) -> String {
        let format = Format::parse(format).unwrap();
        let log = AccessLog::start(&LogTarget::Std, Some(&format), json, 1)
            .unwrap()
            .unwrap();
        let record = Record::refused(client, None, b"GET / HTTP/1.1\r\n");
        let mut out = Vec::new();
        match json {
            true => log.write_json(&mut out, &record, &outcome),
            false => log.write_text(&mut out, &record, &outcome),
        }
        String::from_utf8(out).unwrap()
    }

    fn outcome(status: u16, bytes: u64, duration: Duration, completed: bool) -> Outcome {
        Outcome {
            status,
            bytes,
            duration,
            completed,
        }
    }

    #[test]
    fn completion_is_ok_or_empty_and_a_boolean_in_json() {
        let line = |json: bool, completed: bool| {
            let done = outcome(200, 1234, Duration::ZERO, completed);
            line_of("[{completion}] {bytes}", json, Remote::Unix, done)
        };
        assert_eq!(line(false, true), "[OK] 1234");
        assert_eq!(line(false, false), "[] 1234");
        assert_eq!(line(true, true), r#"{"bytes":1234,"completion":true}"#);
        assert_eq!(line(true, false), r#"{"bytes":1234,"completion":false}"#);
    }

    #[test]
    fn durations_in_ms_us_and_gunicorns_decimal_seconds() {
        let line = |json: bool| {
            let done = outcome(200, 0, Duration::from_micros(2_001_234), true);
            line_of(
                "{duration_ms} {duration_us} {duration_s}",
                json,
                Remote::Unix,
                done,
            )
        };
        assert_eq!(line(false), "2001.234 2001234 2.001234");
        let json: serde_json::Value = serde_json::from_str(&line(true)).unwrap();
        assert_eq!(json["duration_s"], 2.001234);
        assert_eq!(json["duration_us"], 2001234);
    }

    #[test]
    fn an_unknown_client_is_a_dash_or_null() {
        let line = |json: bool, client: Remote| {
            let refused = outcome(400, 0, Duration::ZERO, true);
            line_of("{remote_addr} {status}", json, client, refused)
        };
        assert_eq!(line(false, Remote::Unknown), "- 400");
        assert_eq!(
            line(true, Remote::Unknown),
            r#"{"remote_addr":null,"status":400}"#
        );
        assert_eq!(line(false, Remote::Unix), "unix 400");
        let ip = Remote::Ip("203.0.113.9".parse().unwrap());
        assert_eq!(line(false, ip), "203.0.113.9 400");
        assert_eq!(
            line(true, ip),
            r#"{"remote_addr":"203.0.113.9","status":400}"#
        );
    }
}
