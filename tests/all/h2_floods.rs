//! HTTP/2 floods against the real binary: rapid reset
//! (CVE-2023-44487), a CONTINUATION flood, SETTINGS and PING floods from a client that
//! never reads, and far more concurrent streams than allowed. The attacker is a raw
//! HTTP/2 client written here (frames by hand, HPACK literals without Huffman coding);
//! while it runs, a well-behaved HTTP/1.1 client must keep getting answers from the same
//! worker in bounded time, the worker's RSS must stay bounded, and the attacking
//! connection must end (GOAWAY or close) within a deadline. Also: the header list
//! bound (431 past it, a 40 KiB head served). Every wait has a deadline; every process
//! is killed by a guard.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// `header_read_timeout` for these servers: the bound forkd itself puts on a connection
/// that has nothing in flight, and (see docs/configuration.md) on one that stops answering PINGs.
const HEADER_READ_TIMEOUT: u64 = 3;

fn config(name: &str) -> String {
    let path = temp_dir(&format!("h2-{name}")).join("forkd.toml");
    let text = format!(
        "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n\
         [limits]\nheader_read_timeout = {HEADER_READ_TIMEOUT}\n\
         [metrics]\nbind = \"127.0.0.1:0\"\n"
    );
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf-8 path").to_string()
}

/// Appends one frame: 24-bit length, type, flags, stream id, payload.
fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// An HPACK literal header field without indexing, its name from the static table
/// (`name_index` < 15), its value a plain string shorter than 127 bytes.
fn literal(block: &mut Vec<u8>, name_index: u8, value: &[u8]) {
    assert!(name_index < 15 && value.len() < 127);
    block.push(name_index);
    block.push(value.len() as u8);
    block.extend_from_slice(value);
}

/// An HPACK literal header field without indexing with a new name (both < 127 bytes).
fn literal_named(block: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    assert!(name.len() < 127 && value.len() < 127);
    block.push(0);
    block.push(name.len() as u8);
    block.extend_from_slice(name);
    block.push(value.len() as u8);
    block.extend_from_slice(value);
}

/// A request head: `:method` (static 2 = GET, 3 = POST), `:scheme http` (static 6),
/// then `:path` and `:authority` as literals.
fn request_head(post: bool, path: &str) -> Vec<u8> {
    let mut block = vec![if post { 0x83 } else { 0x82 }, 0x86];
    literal(&mut block, 4, path.as_bytes());
    literal(&mut block, 1, b"flood.test");
    block
}

/// What the attacker's reader saw of the server.
#[derive(Default)]
struct Seen {
    frames: AtomicU64,
    resets: AtomicU64,
    refused: AtomicU64,
    goaway: Mutex<Option<(u32, Duration)>>,
    closed: Mutex<Option<Duration>>,
}

impl Seen {
    fn ended(&self) -> bool {
        self.goaway.lock().unwrap().is_some() || self.closed.lock().unwrap().is_some()
    }
    /// When the server first said GOAWAY or closed.
    fn ended_after(&self) -> Option<Duration> {
        let goaway = self.goaway.lock().unwrap().map(|(_, at)| at);
        let closed = *self.closed.lock().unwrap();
        goaway.into_iter().chain(closed).min()
    }
    fn goaway_code(&self) -> Option<u32> {
        self.goaway.lock().unwrap().map(|(code, _)| code)
    }
}

/// Reads the server's frames until the connection ends, noting resets and GOAWAY;
/// never answers a PING.
fn watch(stream: &TcpStream, started: Instant) -> (Arc<Seen>, std::thread::JoinHandle<()>) {
    let seen = Arc::new(Seen::default());
    let mut stream = stream.try_clone().expect("clone");
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let handle = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut head = [0u8; 9];
            loop {
                if stream.read_exact(&mut head).is_err() {
                    break;
                }
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0; len];
                if stream.read_exact(&mut payload).is_err() {
                    break;
                }
                seen.frames.fetch_add(1, Relaxed);
                match head[3] {
                    RST_STREAM if len == 4 => {
                        seen.resets.fetch_add(1, Relaxed);
                        if u32::from_be_bytes(payload[..4].try_into().unwrap()) == REFUSED_STREAM {
                            seen.refused.fetch_add(1, Relaxed);
                        }
                    }
                    GOAWAY if len >= 8 => {
                        let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                        seen.goaway
                            .lock()
                            .unwrap()
                            .get_or_insert((code, started.elapsed()));
                    }
                    _ => {}
                }
            }
            *seen.closed.lock().unwrap() = Some(started.elapsed());
        })
    };
    (seen, handle)
}

/// An attacking connection: the preface and an empty SETTINGS frame are sent.
fn attacker(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    // Short write timeouts: a server that stops reading must not block the attacker
    // past its deadline.
    stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .expect("write timeout");
    let mut hello = PREFACE.to_vec();
    frame(&mut hello, SETTINGS, 0, 0, &[]);
    (&stream).write_all(&hello).expect("preface");
    stream
}

/// Writes `buf` whole unless the connection fails or `deadline` passes (a server that
/// stops reading makes writes time out; the attacker keeps trying until the deadline).
/// Ok(false) when the deadline passed.
fn send(mut stream: &TcpStream, buf: &[u8], deadline: Instant) -> std::io::Result<bool> {
    let mut rest = buf;
    while !rest.is_empty() {
        if Instant::now() > deadline {
            return Ok(false);
        }
        match stream.write(rest) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The well-behaved client: GET /echo on fresh HTTP/1.1 connections until `stop`,
/// recording the slowest answer, failures, and the worker pids that answered; it also
/// samples the worker's RSS.
struct Bystander {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<BystanderReport>,
}

#[derive(Debug, Default)]
struct BystanderReport {
    ok: u64,
    failures: Vec<String>,
    slowest: Duration,
    pids: Vec<u64>,
    peak_rss_kib: u64,
}

impl Bystander {
    fn start(addr: &str, worker: i32) -> Bystander {
        let stop = Arc::new(AtomicBool::new(false));
        let addr = addr.to_string();
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut report = BystanderReport::default();
            while !flag.load(Relaxed) {
                let began = Instant::now();
                let result = get(&addr, "/echo");
                report.slowest = report.slowest.max(began.elapsed());
                report.peak_rss_kib = report.peak_rss_kib.max(rss_kib(worker));
                match result {
                    Ok((200, _, body)) => {
                        report.ok += 1;
                        let pid = serde_json::from_slice::<serde_json::Value>(&body)
                            .ok()
                            .and_then(|v| v["pid"].as_u64())
                            .unwrap_or(0);
                        if !report.pids.contains(&pid) {
                            report.pids.push(pid);
                        }
                    }
                    Ok((status, _, _)) => report.failures.push(format!("status {status}")),
                    Err(e) => report.failures.push(e),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            report
        });
        Bystander { stop, handle }
    }
    fn finish(self) -> BystanderReport {
        self.stop.store(true, Relaxed);
        self.handle.join().expect("bystander thread")
    }
}

/// One flood: a server, its worker, the bystander, and the checks after the attack.
struct Flood {
    server: Server,
    worker: i32,
    rss_before: u64,
    bystander: Option<Bystander>,
    started: Instant,
}

impl Flood {
    fn start(name: &str) -> Flood {
        let path = config(name);
        let server = Forkd::new().config(&path).start();
        let workers = workers_of(server.pid());
        assert_eq!(workers.len(), 1, "one worker: {workers:?}");
        let worker = workers[0];
        // Warm up, so that the baseline RSS includes a served request.
        for _ in 0..5 {
            let (status, _, _) = get(&server.addr, "/echo").expect("warm-up request");
            assert_eq!(status, 200);
        }
        let rss_before = rss_kib(worker);
        let bystander = Some(Bystander::start(&server.addr, worker));
        Flood {
            server,
            worker,
            rss_before,
            bystander,
            started: Instant::now(),
        }
    }

    /// Stops the bystander and checks: every request answered in time by the same
    /// worker, the worker alive and its RSS within bounds, and a proper HTTP/2 request
    /// still served.
    fn check(mut self, what: &str) {
        // The bystander runs at least 2 s, through the attack and after it.
        std::thread::sleep(Duration::from_secs(2).saturating_sub(self.started.elapsed()));
        let report = self.bystander.take().unwrap().finish();
        let growth_kib = report.peak_rss_kib.saturating_sub(self.rss_before);
        eprintln!(
            "{what}: bystander {} ok in {:?}, slowest {:?}, failures {:?}; worker RSS {} KiB \
             before, peak {} KiB (+{} KiB)",
            report.ok,
            self.started.elapsed(),
            report.slowest,
            report.failures,
            self.rss_before,
            report.peak_rss_kib,
            growth_kib
        );
        assert!(
            report.failures.is_empty(),
            "{what}: the bystander failed: {:?}\n{}",
            report.failures,
            self.server.log()
        );
        assert!(
            report.ok >= 3,
            "{what}: the bystander got {} answers",
            report.ok
        );
        assert!(
            report.slowest < Duration::from_secs(2),
            "{what}: the bystander waited {:?}",
            report.slowest
        );
        assert_eq!(
            report.pids,
            vec![self.worker as u64],
            "{what}: the worker changed"
        );
        assert_eq!(workers_of(self.server.pid()), vec![self.worker], "{what}");
        assert!(
            growth_kib < 64 * 1024,
            "{what}: the worker's RSS grew by {growth_kib} KiB"
        );
        assert!(
            !self.server.log_contains("worker exited"),
            "{what}: a worker exited:\n{}",
            self.server.log()
        );
        h2_get(&self.server.addr);
    }
}

/// Appends HEADERS opening stream 1, a POST /echo whose body never comes: a stream the
/// server must keep open.
fn open_a_post(out: &mut Vec<u8>) {
    frame(out, HEADERS, END_HEADERS, 1, &request_head(true, "/echo"));
}

/// A connection for a proper client: reads time out after 5 s.
fn client(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
}

/// The next frame from the server: its 9-byte head, its stream and its payload. A
/// SETTINGS frame that is not an ACK is acknowledged, as a proper client does.
fn next_frame(stream: &TcpStream) -> ([u8; 9], u32, Vec<u8>) {
    let mut reader = stream;
    let mut head = [0u8; 9];
    reader
        .read_exact(&mut head)
        .expect("a frame from the server");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0; len];
    reader.read_exact(&mut payload).expect("a frame's payload");
    let stream_id = u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff;
    if head[3] == SETTINGS && head[4] & ACK == 0 {
        let mut ack = Vec::new();
        frame(&mut ack, SETTINGS, ACK, 0, &[]);
        reader.write_all(&ack).expect("settings ack");
    }
    (head, stream_id, payload)
}

/// A proper HTTP/2 request with prior knowledge: GET /echo answered with 200 and a body.
fn h2_get(addr: &str) {
    let stream = client(addr);
    let mut out = PREFACE.to_vec();
    frame(&mut out, SETTINGS, 0, 0, &[]);
    frame(
        &mut out,
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &request_head(false, "/echo"),
    );
    (&stream).write_all(&out).expect("write");
    let (mut status_200, mut body) = (false, Vec::new());
    loop {
        let (head, stream_id, payload) = next_frame(&stream);
        match head[3] {
            // `:status: 200` is static table entry 8, which hyper sends indexed.
            HEADERS if stream_id == 1 => status_200 = payload.first() == Some(&0x88),
            0x0 if stream_id == 1 => body.extend_from_slice(&payload),
            GOAWAY => panic!("GOAWAY on a proper request: {payload:?}"),
            _ => {}
        }
        if stream_id == 1 && head[4] & END_STREAM != 0 && matches!(head[3], 0x0 | HEADERS) {
            break;
        }
    }
    assert!(status_200, "HTTP/2 GET /echo did not get 200");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("\"method\":\"GET\""), "{text}");
}

/// Rapid reset on one connection: HEADERS then RST_STREAM(CANCEL) for stream after
/// stream, as fast as the socket takes them, until the server says GOAWAY or closes.
/// Returns the streams sent, when the connection ended (GOAWAY or close) and when it
/// was closed.
fn rapid_reset(
    addr: &str,
    burst: usize,
    pause: Duration,
) -> (u64, Option<Duration>, Option<Duration>) {
    let stream = attacker(addr);
    let started = Instant::now();
    let (seen, reader) = watch(&stream, started);
    let deadline = started + Duration::from_secs(10);
    let head = request_head(false, "/echo");
    let mut id = 1u32;
    let mut sent = 0u64;
    while !seen.ended() && Instant::now() < deadline && id < 0x7fff_0000 {
        let mut batch = Vec::new();
        for _ in 0..burst {
            frame(&mut batch, HEADERS, END_HEADERS | END_STREAM, id, &head);
            frame(&mut batch, RST_STREAM, 0, id, &CANCEL.to_be_bytes());
            id += 2;
        }
        match send(&stream, &batch, deadline) {
            Ok(true) => sent += burst as u64,
            _ => break,
        }
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    let _ = poll_until(Duration::from_secs(5), || {
        seen.closed.lock().unwrap().is_some()
    });
    let (ended, closed) = (seen.ended_after(), *seen.closed.lock().unwrap());
    eprintln!(
        "rapid reset ({burst} a write, pause {pause:?}): {sent} streams opened and reset; \
         server sent {} frames, GOAWAY {:?}, closed after {closed:?}",
        seen.frames.load(Relaxed),
        seen.goaway.lock().unwrap()
    );
    let _ = stream.shutdown(Shutdown::Both);
    let _ = reader.join();
    (sent, ended, closed)
}

/// Rapid reset in bursts of 100 streams a write, on one connection after another for a
/// few seconds.
#[test]
fn rapid_reset_is_cut_off_and_others_are_served() {
    let flood = Flood::start("rapid-reset");
    let mut connections = 0;
    while connections == 0 || flood.started.elapsed() < Duration::from_secs(3) {
        let (sent, ended, _) = rapid_reset(&flood.server.addr, 100, Duration::ZERO);
        connections += 1;
        assert!(
            ended.is_some_and(|at| at < Duration::from_secs(10)),
            "the rapid-reset connection was not cut off ({sent} streams in 10 s)"
        );
    }
    eprintln!("rapid reset: {connections} connections");
    flood.check("rapid reset");
}

/// Rapid reset paced to stay under h2's limit of reset streams waiting to be accepted:
/// one stream a write, a millisecond apart, so that the server accepts (and starts)
/// each before its reset; forkd's own count of streams abandoned early ends it.
#[test]
fn paced_rapid_reset_is_cut_off_and_others_are_served() {
    let flood = Flood::start("paced-reset");
    let (sent, _, closed) = rapid_reset(&flood.server.addr, 1, Duration::from_millis(1));
    assert!(
        closed.is_some_and(|at| at < Duration::from_secs(10)),
        "the paced rapid-reset connection was not closed ({sent} streams in 10 s)"
    );
    flood.check("paced rapid reset");
}

/// CONTINUATION flood on one connection: one HEADERS without END_HEADERS, then
/// CONTINUATION frames full of header fields, endlessly. Returns the bytes the socket
/// took and when the connection ended.
fn continuation_flood(addr: &str) -> (u64, Option<Duration>) {
    let stream = attacker(addr);
    let started = Instant::now();
    let (seen, reader) = watch(&stream, started);
    let deadline = started + Duration::from_secs(10);
    let mut first = Vec::new();
    frame(&mut first, HEADERS, 0, 1, &request_head(false, "/echo"));
    let mut fields = Vec::new();
    let mut n = 0;
    while fields.len() < 16_000 {
        literal_named(
            &mut fields,
            format!("x-flood-{n:06}").as_bytes(),
            &[b'v'; 90],
        );
        n += 1;
    }
    let mut continuation = Vec::new();
    frame(&mut continuation, CONTINUATION, 0, 1, &fields);
    let mut bytes = 0u64;
    if send(&stream, &first, deadline).is_ok() {
        bytes += first.len() as u64;
        // Up to 256 MiB: far past any header list limit.
        while !seen.ended() && bytes < 256 << 20 {
            match send(&stream, &continuation, deadline) {
                Ok(true) => bytes += continuation.len() as u64,
                _ => break,
            }
        }
    }
    let _ = poll_until(Duration::from_secs(5), || seen.ended());
    let ended = seen.ended_after();
    eprintln!(
        "CONTINUATION flood: {} KiB taken by the socket in {} frames; GOAWAY {:?}, ended \
         after {ended:?}",
        bytes / 1024,
        bytes / continuation.len() as u64,
        seen.goaway.lock().unwrap()
    );
    let _ = stream.shutdown(Shutdown::Both);
    let _ = reader.join();
    (bytes, ended)
}

/// CONTINUATION floods, on one connection after another for a few seconds.
#[test]
fn continuation_flood_is_cut_off_and_others_are_served() {
    let flood = Flood::start("continuation");
    let mut connections = 0;
    while connections == 0 || flood.started.elapsed() < Duration::from_secs(3) {
        let (bytes, ended) = continuation_flood(&flood.server.addr);
        connections += 1;
        assert!(
            ended.is_some_and(|at| at < Duration::from_secs(10)),
            "the CONTINUATION flood was not cut off ({} KiB sent)",
            bytes / 1024
        );
        // What the socket took includes what the kernel buffers on loopback (a few MiB).
        assert!(
            bytes < 32 << 20,
            "the server read {} KiB of one header block",
            bytes / 1024
        );
    }
    eprintln!("CONTINUATION flood: {connections} connections");
    flood.check("CONTINUATION flood");
}

/// A flood of `kind` frames (SETTINGS or PING) from a client that never reads: each
/// one asks for an acknowledgement that the server cannot send once its socket buffer
/// is full.
/// With `hold_stream`, the client first opens a stream whose body never ends, so that
/// the connection is never idle in forkd's eyes (before forkd's budget for PING and
/// SETTINGS frames, only hyper's keep-alive PING ended it, after 8 s here).
fn ack_flood(name: &str, kind: u8, payload: &[u8], hold_stream: bool) {
    let flood = Flood::start(name);
    let stream = attacker(&flood.server.addr);
    if hold_stream {
        let mut open = Vec::new();
        open_a_post(&mut open);
        (&stream).write_all(&open).expect("open a stream");
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(HEADER_READ_TIMEOUT * 3 + 5);
    let mut batch = Vec::new();
    for _ in 0..1000 {
        frame(&mut batch, kind, 0, 0, payload);
    }
    let (mut sent, mut stalled_at) = (0u64, None);
    let mut closed = None;
    while Instant::now() < deadline {
        let before = Instant::now();
        match send(&stream, &batch, deadline) {
            Ok(true) => sent += 1000,
            Ok(false) => break,
            Err(_) => {
                closed = Some(started.elapsed());
                break;
            }
        }
        // A batch that took long: the server stopped reading (the first time).
        if before.elapsed() > Duration::from_millis(150) && stalled_at.is_none() {
            stalled_at = Some((started.elapsed(), sent));
        }
    }
    // The client never read: the server's close shows as a failed write (above), or as
    // a reset when reading now.
    if closed.is_none() {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
        let mut sink = vec![0u8; 1 << 16];
        let gone = poll_until(Duration::from_secs(2), || match (&stream).read(&mut sink) {
            Ok(0) => true,
            Err(e) => e.kind() == ErrorKind::ConnectionReset,
            Ok(_) => false,
        });
        if gone {
            closed = Some(started.elapsed());
        }
    }
    eprintln!(
        "{name}: {sent} frames sent; writes first stalled at {stalled_at:?}; \
         connection closed after {closed:?}"
    );
    assert!(
        closed.is_some(),
        "{name}: the connection was still open after {:?} ({sent} frames)",
        started.elapsed()
    );
    drop(stream);
    flood.check(name);
}

#[test]
fn settings_flood_from_a_client_that_never_reads_is_bounded() {
    // Each SETTINGS frame sets INITIAL_WINDOW_SIZE (0x4) to 65535.
    ack_flood("settings flood", SETTINGS, &[0, 4, 0, 0, 0xff, 0xff], false);
}

#[test]
fn settings_flood_beside_an_open_stream_is_bounded() {
    ack_flood(
        "settings flood, stream open",
        SETTINGS,
        &[0, 4, 0, 0, 0xff, 0xff],
        true,
    );
}

#[test]
fn ping_flood_from_a_client_that_never_reads_is_bounded() {
    ack_flood("ping flood", PING, b"floodpng", false);
}

#[test]
fn ping_flood_beside_an_open_stream_is_bounded() {
    ack_flood("ping flood, stream open", PING, b"floodpng", true);
}

/// forkd's `max_concurrent_streams` (see docs/configuration.md).
const MAX_STREAMS: u64 = 128;

/// What a connection opening streams saw.
struct Streams {
    opened: u64,
    refused: u64,
    goaway: Option<u32>,
    ended: Option<Duration>,
}

/// Opens up to `count` streams, each a POST whose body never ends, in bursts of 100
/// with a short pause (so the server accepts streams in between); then waits up to
/// `wait` for the connection to end, never answering a PING.
fn open_streams(addr: &str, count: u64, wait: Duration) -> Streams {
    let stream = attacker(addr);
    let started = Instant::now();
    let (seen, reader) = watch(&stream, started);
    let deadline = started + Duration::from_secs(10);
    let head = request_head(true, "/echo");
    let mut id = 1u32;
    let mut opened = 0u64;
    while !seen.ended() && Instant::now() < deadline && opened < count {
        let mut batch = Vec::new();
        for _ in 0..(count - opened).min(100) {
            frame(&mut batch, HEADERS, END_HEADERS, id, &head);
            id += 2;
        }
        let n = (count - opened).min(100);
        match send(&stream, &batch, deadline) {
            Ok(true) => opened += n,
            _ => break,
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let opened_in = started.elapsed();
    let _ = poll_until(wait, || seen.ended());
    let result = Streams {
        opened,
        refused: seen.refused.load(Relaxed),
        goaway: seen.goaway_code(),
        ended: seen.ended_after(),
    };
    eprintln!(
        "streams: {opened} opened in {opened_in:?}; {} refused, {} reset in all; GOAWAY {:?}, \
         ended after {:?}",
        result.refused,
        seen.resets.load(Relaxed),
        seen.goaway.lock().unwrap(),
        result.ended
    );
    let _ = stream.shutdown(Shutdown::Both);
    let _ = reader.join();
    result
}

/// Far more streams than `max_concurrent_streams`: the excess is refused, and a client
/// that goes on opening streams gets GOAWAY ENHANCE_YOUR_CALM.
#[test]
fn far_too_many_concurrent_streams_are_refused_then_cut_off() {
    let flood = Flood::start("streams");
    let seen = open_streams(&flood.server.addr, 20_000, Duration::from_secs(5));
    assert!(seen.refused > 0, "no stream was refused of {}", seen.opened);
    assert_eq!(seen.goaway, Some(ENHANCE_YOUR_CALM), "no GOAWAY");
    assert!(
        seen.ended.is_some_and(|at| at < Duration::from_secs(10)),
        "not cut off"
    );
    flood.check("far too many streams");
}

/// Streams up to (and a little over) the limit, held open with bodies that never end,
/// by a client that never answers a PING: the excess is refused, the rest costs a
/// bounded amount, and the connection is closed once it stops answering PINGs.
#[test]
fn streams_held_open_by_a_silent_client_are_bounded_and_closed() {
    let flood = Flood::start("held-streams");
    let wait = Duration::from_secs(HEADER_READ_TIMEOUT * 2 + 10);
    let seen = open_streams(&flood.server.addr, MAX_STREAMS + 50, wait);
    assert!(
        seen.refused >= 50,
        "only {} of {} streams refused",
        seen.refused,
        seen.opened
    );
    assert!(
        seen.ended.is_some(),
        "the connection holding {} streams was not closed within {wait:?}",
        seen.opened
    );
    flood.check("streams held open");
}

/// Appends a request head of about `size` bytes on `stream` (HEADERS, then CONTINUATION
/// frames of 16 KiB).
fn big_head(out: &mut Vec<u8>, stream: u32, size: usize) {
    let mut block = request_head(false, "/echo");
    let mut n = 0;
    while block.len() < size {
        literal_named(&mut block, format!("x-big-{n:06}").as_bytes(), &[b'v'; 100]);
        n += 1;
    }
    let pieces: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let last = if i + 1 == pieces.len() {
            END_HEADERS
        } else {
            0
        };
        if i == 0 {
            frame(out, HEADERS, END_STREAM | last, stream, piece);
        } else {
            frame(out, CONTINUATION, last, stream, piece);
        }
    }
}

/// A head over the header list size (64 KiB at most), sent in HEADERS and CONTINUATION
/// frames, gets 431 on its stream; a 40 KiB one is served, on the same connection.
#[test]
fn an_oversized_head_gets_431_and_the_connection_goes_on() {
    let flood = Flood::start("big-head");
    let stream = client(&flood.server.addr);
    let mut out = PREFACE.to_vec();
    frame(&mut out, SETTINGS, 0, 0, &[]);
    big_head(&mut out, 1, 80 * 1024);
    // Within the limit, though over hyper's default of 16 KiB.
    big_head(&mut out, 3, 40 * 1024);
    (&stream).write_all(&out).expect("write");
    let (mut status_1, mut status_3) = (None, None);
    while status_1.is_none() || status_3.is_none() {
        let (head, stream_id, payload) = next_frame(&stream);
        match head[3] {
            // "431" Huffman-coded is 0x69 0x90 0xff (length byte 0x83); 200 is indexed
            // (0x88).
            HEADERS if stream_id == 1 => {
                status_1 = Some(payload.windows(4).any(|w| w == [0x83, 0x69, 0x90, 0xff]));
            }
            HEADERS if stream_id == 3 => status_3 = Some(payload.first() == Some(&0x88)),
            RST_STREAM | GOAWAY => panic!("frame {} on stream {stream_id}: {payload:?}", head[3]),
            _ => {}
        }
    }
    assert_eq!(status_1, Some(true), "the oversized head did not get 431");
    assert_eq!(status_3, Some(true), "the 40 KiB head did not get 200");
    flood.check("oversized head");
}

/// A PING flood from a client that reads the acknowledgements and answers the server's
/// keep-alive PINGs, beside a stream held open (so that nothing else would end it):
/// forkd's budget for PING and SETTINGS frames closes the connection.
#[test]
fn ping_flood_from_a_client_that_reads_and_answers_is_cut_off() {
    let flood = Flood::start("reading-ping");
    let stream = attacker(&flood.server.addr);
    let mut open = Vec::new();
    frame(&mut open, SETTINGS, ACK, 0, &[]);
    open_a_post(&mut open);
    (&stream).write_all(&open).expect("open a stream");
    let started = Instant::now();
    // Reads everything; the server's own PINGs are queued to be acknowledged.
    let to_ack: Arc<Mutex<Vec<[u8; 8]>>> = Arc::default();
    let ended: Arc<Mutex<Option<Duration>>> = Arc::default();
    let sink = {
        let mut stream = stream.try_clone().expect("clone");
        let (to_ack, ended) = (to_ack.clone(), ended.clone());
        std::thread::spawn(move || {
            let mut head = [0u8; 9];
            while stream.read_exact(&mut head).is_ok() {
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0; len];
                if stream.read_exact(&mut payload).is_err() {
                    break;
                }
                if head[3] == PING && head[4] & ACK == 0 {
                    to_ack
                        .lock()
                        .unwrap()
                        .push(payload[..8].try_into().unwrap());
                }
            }
            *ended.lock().unwrap() = Some(started.elapsed());
        })
    };
    let deadline = started + Duration::from_secs(10);
    let mut pings = Vec::new();
    for _ in 0..100 {
        frame(&mut pings, PING, 0, 0, b"floodpng");
    }
    let mut sent = 0u64;
    while Instant::now() < deadline && ended.lock().unwrap().is_none() {
        let mut batch = Vec::new();
        for payload in to_ack.lock().unwrap().drain(..) {
            frame(&mut batch, PING, ACK, 0, &payload);
        }
        batch.extend_from_slice(&pings);
        match send(&stream, &batch, deadline) {
            Ok(true) => sent += 100,
            _ => break,
        }
    }
    let _ = poll_until(Duration::from_secs(5), || ended.lock().unwrap().is_some());
    let closed = *ended.lock().unwrap();
    eprintln!("reading ping flood: {sent} PINGs sent; closed after {closed:?}");
    let _ = stream.shutdown(Shutdown::Both);
    let _ = sink.join();
    assert!(
        closed.is_some_and(|at| at < Duration::from_secs(5)),
        "a PING flood answered in full was not cut off ({sent} PINGs)"
    );
    flood.check("reading ping flood");
}

/// The value of one sample line of /metrics (`name{labels}`), 0 if absent.
fn metric(server: &Server, sample: &str) -> f64 {
    let (status, _, body) = get(&metrics_addr(server), "/metrics").expect("scrape");
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A flood of frames that carry no request, beside a stream held
/// open (so that nothing else ends the connection) from a client that reads what the
/// server sends: `setup` is sent first, then `flood` (one frame) over and over. The
/// connection must end in GOAWAY ENHANCE_YOUR_CALM within 2 s, counted as
/// `limit="http2_flood"` (unless h2 ends it first: `counted` false); before the frame
/// budgets, ~100M such frames ran in 17 s.
fn idle_flood(name: &str, setup: &[u8], flood: &[u8], counted: bool) {
    let flood_test = Flood::start(name);
    let stream = attacker(&flood_test.server.addr);
    let started = Instant::now();
    let (seen, reader) = watch(&stream, started);
    let mut open = Vec::new();
    frame(&mut open, SETTINGS, ACK, 0, &[]);
    open_a_post(&mut open);
    open.extend_from_slice(setup);
    (&stream).write_all(&open).expect("open a stream");
    let mut batch = Vec::new();
    while batch.len() < 64 * 1024 {
        batch.extend_from_slice(flood);
    }
    let per_batch = (batch.len() / flood.len()) as u64;
    let deadline = started + Duration::from_secs(10);
    let mut sent = 0u64;
    while Instant::now() < deadline && !seen.ended() {
        match send(&stream, &batch, deadline) {
            Ok(true) => sent += per_batch,
            _ => break,
        }
    }
    let _ = poll_until(Duration::from_secs(3), || seen.ended());
    let ended = seen.ended_after();
    let code = seen.goaway_code();
    eprintln!("{name}: {sent} frames sent; GOAWAY {code:?}, ended after {ended:?}");
    let _ = stream.shutdown(Shutdown::Both);
    let _ = reader.join();
    assert_eq!(
        code,
        Some(ENHANCE_YOUR_CALM),
        "{name}: no GOAWAY ENHANCE_YOUR_CALM after {sent} frames ({ended:?})\n{}",
        flood_test.server.log()
    );
    assert!(
        ended.is_some_and(|at| at < Duration::from_secs(2)),
        "{name}: the flood ran {ended:?}"
    );
    assert_eq!(
        metric(
            &flood_test.server,
            "forkd_requests_rejected_total{limit=\"http2_flood\"}"
        ),
        if counted { 1.0 } else { 0.0 },
        "{name}"
    );
    flood_test.check(name);
}

#[test]
fn window_update_flood_gets_goaway() {
    let mut one = Vec::new();
    frame(&mut one, WINDOW_UPDATE, 0, 1, &1u32.to_be_bytes());
    idle_flood("window update flood", &[], &one, true);
}

#[test]
fn connection_window_update_flood_gets_goaway() {
    let mut one = Vec::new();
    frame(&mut one, WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes());
    idle_flood("connection window update flood", &[], &one, true);
}

#[test]
fn priority_flood_gets_goaway() {
    let mut one = Vec::new();
    frame(&mut one, PRIORITY, 0, 3, &[0, 0, 0, 1, 16]);
    idle_flood("priority flood", &[], &one, true);
}

#[test]
fn rst_stream_flood_on_a_closed_stream_gets_goaway() {
    // Stream 3 is a GET, answered and closed; then reset again and again.
    let mut get = Vec::new();
    frame(
        &mut get,
        HEADERS,
        END_HEADERS | END_STREAM,
        3,
        &request_head(false, "/echo"),
    );
    let mut one = Vec::new();
    frame(&mut one, RST_STREAM, 0, 3, &CANCEL.to_be_bytes());
    idle_flood("closed stream reset flood", &get, &one, true);
}

#[test]
fn unsolicited_ping_ack_flood_gets_goaway() {
    let mut one = Vec::new();
    frame(&mut one, PING, ACK, 0, b"notasked");
    idle_flood("ping ack flood", &[], &one, true);
}

#[test]
fn unknown_frame_type_flood_gets_goaway() {
    let mut one = Vec::new();
    frame(&mut one, 0xfa, 0, 0, &[]);
    idle_flood("unknown frame flood", &[], &one, true);
}

#[test]
fn empty_data_flood_gets_goaway() {
    let mut one = Vec::new();
    frame(&mut one, DATA, 0, 1, &[]);
    // h2 itself ends a connection after 100 empty DATA frames (`too_many_data_frames`),
    // before forkd's budget: GOAWAY all the same, not counted by forkd.
    idle_flood("empty data flood", &[], &one, false);
}

/// Unsolicited PING ACKs under the budget: h2 warns once per frame
/// ("recv PING ack that we never sent"), which reached the error log at one line per
/// frame. None may reach it now; the connection goes on.
#[test]
fn unsolicited_ping_acks_do_not_flood_the_error_log() {
    let path = config("ping-ack-log");
    let server = Forkd::new().config(&path).start();
    let stream = client(&server.addr);
    let mut out = PREFACE.to_vec();
    frame(&mut out, SETTINGS, 0, 0, &[]);
    // Under the budget for payload-free frames (1000).
    for _ in 0..900 {
        frame(&mut out, PING, ACK, 0, b"notasked");
    }
    frame(
        &mut out,
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &request_head(false, "/echo"),
    );
    (&stream).write_all(&out).expect("write");
    loop {
        let (head, stream_id, payload) = next_frame(&stream);
        assert_ne!(head[3], GOAWAY, "GOAWAY: {payload:?}");
        if stream_id == 1 && head[4] & END_STREAM != 0 {
            break;
        }
    }
    // The log is read after a line written later than any of h2's would be.
    let (status, _, _) = get(&server.addr, "/echo").expect("a request after");
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let log = server.log();
    let lines = log.matches("PING ack").count();
    assert_eq!(lines, 0, "{lines} lines of PING acks in the error log");
}

/// h2spec 3.5/2: a preface that starts as HTTP/2's but goes on wrong
/// is a connection error, GOAWAY PROTOCOL_ERROR, not an HTTP/1.1 400.
#[test]
fn an_invalid_preface_gets_goaway_protocol_error() {
    let path = config("bad-preface");
    let server = Forkd::new().config(&path).start();
    for preface in [
        &b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r\0\0\0\x04\0\0\0\0\0",
    ] {
        let stream = client(&server.addr);
        (&stream).write_all(preface).expect("write");
        let mut answer = Vec::new();
        let _ = (&stream).read_to_end(&mut answer);
        assert!(
            !answer.starts_with(b"HTTP/1"),
            "{preface:?}: {}",
            String::from_utf8_lossy(&answer)
        );
        // An empty SETTINGS, then GOAWAY(last stream 0, PROTOCOL_ERROR).
        assert_eq!(
            answer,
            [
                &[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0][..],
                &[0, 0, 8, GOAWAY, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            ]
            .concat(),
            "{preface:?}"
        );
    }
    // The real preface is served.
    h2_get(&server.addr);
}

/// Streams h2 resets as malformed before the service sees them:
/// a connection-specific field, `te` other than `trailers`, a request without `:path`.
/// Each is counted as `limit="malformed"` and access-logged as 400 (not 499, not
/// silently), and the connection goes on.
#[test]
fn malformed_streams_are_counted_and_logged_as_400() {
    let dir = temp_dir("h2-malformed");
    let access = dir.join("access.log");
    let path = write_config(
        &dir,
        &format!(
            "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n\
             [log]\naccess_log = {access:?}\n[metrics]\nbind = \"127.0.0.1:0\"\n"
        ),
    );
    let server = Forkd::new().config(&path).start();
    let stream = client(&server.addr);
    let mut out = PREFACE.to_vec();
    frame(&mut out, SETTINGS, 0, 0, &[]);
    let mut connection = request_head(false, "/echo");
    literal_named(&mut connection, b"connection", b"close");
    let mut te = request_head(false, "/echo");
    literal_named(&mut te, b"te", b"gzip");
    // GET, http, :authority, no :path.
    let mut no_path = vec![0x82, 0x86];
    literal(&mut no_path, 1, b"flood.test");
    for (id, block) in [(1, connection), (3, te), (5, no_path)] {
        frame(&mut out, HEADERS, END_HEADERS | END_STREAM, id, &block);
    }
    frame(
        &mut out,
        HEADERS,
        END_HEADERS | END_STREAM,
        7,
        &request_head(false, "/echo"),
    );
    (&stream).write_all(&out).expect("write");
    let mut resets = Vec::new();
    loop {
        let (head, stream_id, payload) = next_frame(&stream);
        assert_ne!(head[3], GOAWAY, "GOAWAY: {payload:?}");
        if head[3] == RST_STREAM {
            resets.push((
                stream_id,
                u32::from_be_bytes(payload[..4].try_into().unwrap()),
            ));
        }
        if stream_id == 7 && head[4] & END_STREAM != 0 {
            break;
        }
    }
    assert_eq!(
        resets,
        vec![(1, 1), (3, 1), (5, 1)],
        "PROTOCOL_ERROR resets"
    );
    drop(stream);
    let malformed = "forkd_requests_rejected_total{limit=\"malformed\"}";
    assert!(
        poll_until(Duration::from_secs(3), || metric(&server, malformed) == 3.0),
        "{malformed} is {}",
        metric(&server, malformed)
    );
    let read = || std::fs::read_to_string(&access).unwrap_or_default();
    let _ = poll_until(Duration::from_secs(3), || read().lines().count() >= 4);
    let log = read();
    assert_eq!(log.matches("\" 400 ").count(), 3, "{log}");
    assert_eq!(log.matches("\" 200 ").count(), 1, "{log}");
    assert!(!log.contains(" 499 "), "{log}");
}
