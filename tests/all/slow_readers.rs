//! A response is delivered whole or its connection fails loudly: clients that read large responses slower than forkd writes them, over
//! HTTP/1.1, HTTPS, h2c and HTTP/2 over TLS, at several rates and with `keepalive = 0`,
//! get every byte (they used to be cut `keepalive` after hyper took the last body
//! frame); a client that stops reading is dropped after `limits.send_timeout`, its line
//! in the access log with completion empty; an abandoned download is logged with the
//! bytes actually written; an HTTP/2 client that never opens its flow-control window
//! loses its connection after `send_timeout` instead of pinning memory. The clients
//! have small receive buffers (SO_RCVBUF) so that the kernel holds little of the
//! response for them. Every wait has a deadline; every process is killed by a guard.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use http_body_util::BodyExt;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

const MIB: u64 = 1024 * 1024;
/// The client's receive buffer: the kernel holds little of the response for it.
const RCVBUF: u32 = 32 * 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Proto {
    Http1,
    Https,
    H2c,
    H2Tls,
}

/// A server of the `echo` app (`GET /?bytes=N` answers N bytes) on `proto`'s listener,
/// with `limits` appended to its config and its access log in `dir`.
fn server(dir: &Path, proto: Proto, extra: &str) -> Server {
    let tls = matches!(proto, Proto::Https | Proto::H2Tls);
    let bind = if tls {
        "tls://127.0.0.1:0"
    } else {
        "127.0.0.1:0"
    };
    let mut text = format!(
        "app = \"echo\"\nbind = [\"{bind}\"]\nworkers = 1\n{extra}\n[log]\naccess_log = {:?}\n\
         access_log_format = \"{{status}} {{bytes}} [{{completion}}] {{protocol}}\"\n",
        dir.join("access.log").to_str().unwrap()
    );
    if tls {
        write_certificate(dir);
        text.push_str(&format!(
            "[tls]\ncertfile = {:?}\nkeyfile = {:?}\n",
            dir.join("cert.pem").to_str().unwrap(),
            dir.join("key.pem").to_str().unwrap()
        ));
    }
    Forkd::new().config_in(dir, &text).start()
}

/// A test CA (`ca.pem`) and a certificate for localhost signed by it.
fn write_certificate(dir: &Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "slow readers CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("ca.der"), ca.der()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

fn tls_client(dir: &Path, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(std::fs::read(dir.join("ca.der")).unwrap().into())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// A TCP connection with a small receive buffer (set before connecting, so that the
/// window it advertises is small from the start).
async fn small_socket(addr: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(RCVBUF).unwrap();
    socket.connect(addr.parse().unwrap()).await.unwrap()
}

/// Sleeps so that `got` bytes read since `began` are read at `rate` bytes a second.
async fn pace(began: Instant, got: u64, rate: u64) {
    let due = began + Duration::from_secs_f64(got as f64 / rate as f64);
    tokio::time::sleep_until(due.into()).await;
}

/// GETs `/?bytes=N` over `io` with hyper's client (HTTP/2 when `h2`) and reads the body
/// at `rate` bytes a second; returns the body bytes that arrived before its end or an
/// error, and the error if there was one. `stop_after`: leave after this long.
async fn slow_get<I>(
    io: I,
    h2: bool,
    n: u64,
    rate: u64,
    stop_after: Option<Duration>,
) -> (u64, Option<String>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(io);
    let request = hyper::Request::get(format!("http://localhost/?bytes={n}"))
        .header("host", "localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = if h2 {
        // Small windows: the client's reading paces the server through WINDOW_UPDATEs.
        let (mut sender, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .initial_stream_window_size(64 * 1024)
                .initial_connection_window_size(128 * 1024)
                .handshake(io)
                .await
                .unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await
    };
    let response = match response {
        Ok(r) => r,
        Err(e) => return (0, Some(format!("request: {e}"))),
    };
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let began = Instant::now();
    let mut got = 0;
    loop {
        if stop_after.is_some_and(|after| began.elapsed() >= after) {
            return (got, None);
        }
        let frame = tokio::time::timeout(Duration::from_secs(20), body.frame()).await;
        match frame {
            Err(_) => return (got, Some("no body bytes for 20 s".into())),
            Ok(None) => return (got, None),
            Ok(Some(Err(e))) => return (got, Some(format!("body: {e}"))),
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    got += data.len() as u64;
                    pace(began, got, rate).await;
                }
            }
        }
    }
}

/// Downloads N bytes from `server` over `proto` at `rate`; returns (bytes, error).
fn download(
    server: &Server,
    dir: &Path,
    proto: Proto,
    n: u64,
    rate: u64,
    stop_after: Option<Duration>,
) -> (u64, Option<String>) {
    let addr = server.addr.trim_start_matches("tls://").to_string();
    let dir = dir.to_path_buf();
    runtime().block_on(async move {
        let tcp = small_socket(&addr).await;
        let h2 = matches!(proto, Proto::H2c | Proto::H2Tls);
        match proto {
            Proto::Http1 | Proto::H2c => slow_get(tcp, h2, n, rate, stop_after).await,
            Proto::Https | Proto::H2Tls => {
                let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
                let connector = tokio_rustls::TlsConnector::from(tls_client(&dir, alpn));
                let tls = connector
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await
                    .expect("TLS handshake");
                slow_get(tls, h2, n, rate, stop_after).await
            }
        }
    })
}

/// The access log's lines once `count` are there (the writer flushes every 200 ms).
fn access_lines(dir: &Path, count: usize) -> Vec<String> {
    let path = dir.join("access.log");
    let mut lines = Vec::new();
    poll_until(Duration::from_secs(5), || {
        lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        lines.len() >= count
    });
    lines
}

/// One cell of the matrix: a fresh server, one slow download, every byte expected, and
/// the access log saying the response was written whole.
fn delivered_whole(name: &str, proto: Proto, extra: &str, n: u64, rate: u64) {
    let dir = temp_dir(&format!("slow-{name}"));
    let server = server(&dir, proto, extra);
    let began = Instant::now();
    let (got, error) = download(&server, &dir, proto, n, rate, None);
    let took = began.elapsed();
    // The matrix in bench/RESULTS.md is these lines (`--nocapture`).
    eprintln!(
        "MATRIX {proto:?} {extra:?} rate={rate} size={n} got={got} took={took:?} error={error:?}"
    );
    assert_eq!(
        (got, error.as_deref()),
        (n, None),
        "{proto:?} at {rate} B/s ({extra:?}): {got} of {n} bytes in {took:?}"
    );
    let lines = access_lines(&dir, 1);
    assert!(
        lines
            .first()
            .is_some_and(|l| l.starts_with(&format!("200 {n} [OK] "))),
        "{lines:?}"
    );
}

/// `header_read_timeout = 1` makes the connection's watchdog look at the connection
/// after 1 s (its first wait): before the fix it found it idle then, the whole body
/// taken by hyper, and closed it `keepalive` later (at once with `keepalive = 0`).
const EARLY_LOOK: &str = "[limits]\nheader_read_timeout = 1\n";

#[test]
fn http1_slow_reader_gets_every_byte_at_1_mib_per_second() {
    delivered_whole("h1-1", Proto::Http1, EARLY_LOOK, 6 * MIB, MIB);
}

#[test]
fn http1_slow_reader_gets_every_byte_at_2_mib_per_second() {
    delivered_whole("h1-2", Proto::Http1, EARLY_LOOK, 8 * MIB, 2 * MIB);
}

#[test]
fn http1_slow_reader_gets_every_byte_at_4_mib_per_second() {
    delivered_whole("h1-4", Proto::Http1, EARLY_LOOK, 16 * MIB, 4 * MIB);
}

#[test]
fn http1_slow_reader_gets_every_byte_with_keepalive_0() {
    let extra = format!("keepalive = 0\n{EARLY_LOOK}");
    delivered_whole("h1-ka0", Proto::Http1, &extra, 4 * MIB, MIB);
}

#[test]
fn https_slow_reader_gets_every_byte() {
    delivered_whole("https-2", Proto::Https, EARLY_LOOK, 8 * MIB, 2 * MIB);
}

#[test]
fn https_slow_reader_gets_every_byte_with_keepalive_0() {
    let extra = format!("keepalive = 0\n{EARLY_LOOK}");
    delivered_whole("https-ka0", Proto::Https, &extra, 8 * MIB, 2 * MIB);
}

#[test]
fn h2c_slow_reader_gets_every_byte() {
    delivered_whole("h2c-2", Proto::H2c, EARLY_LOOK, 8 * MIB, 2 * MIB);
}

#[test]
fn h2c_slow_reader_gets_every_byte_at_1_mib_per_second_with_keepalive_0() {
    let extra = format!("keepalive = 0\n{EARLY_LOOK}");
    delivered_whole("h2c-ka0", Proto::H2c, &extra, 4 * MIB, MIB);
}

#[test]
fn h2_over_tls_slow_reader_gets_every_byte() {
    delivered_whole("h2tls-2", Proto::H2Tls, EARLY_LOOK, 8 * MIB, 2 * MIB);
}

#[test]
fn h2_over_tls_slow_reader_gets_every_byte_at_1_mib_per_second_with_keepalive_0() {
    let extra = format!("keepalive = 0\n{EARLY_LOOK}");
    delivered_whole("h2tls-ka0", Proto::H2Tls, &extra, 4 * MIB, MIB);
}

/// The text of `forkd_responses_incomplete_total{reason="REASON"}`'s value.
fn incomplete(metrics: &str, reason: &str) -> u64 {
    let (status, _, body) = get(metrics, "/metrics").unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body).into_owned();
    let needle = format!("forkd_responses_incomplete_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {needle} in:\n{text}"))
}

#[test]
fn a_client_that_stops_reading_is_dropped_after_send_timeout() {
    let dir = temp_dir("slow-stalled");
    let extra = "[limits]\nsend_timeout = \"1s\"\n[metrics]\nbind = \"127.0.0.1:0\"\n";
    let server = server(&dir, Proto::Http1, extra);
    let metrics = metrics_addr(&server);
    let n = 32 * MIB;
    // A client that asks and then reads nothing: the socket fills and forkd's writes
    // stop making progress.
    let stream = runtime().block_on(async {
        let tcp = small_socket(&server.addr).await;
        tcp.into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    let mut stream = stream;
    write!(stream, "GET /?bytes={n} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let asked = Instant::now();
    // Not cut before send_timeout has passed without progress, nor kept long after: read
    // nothing for 3 s (send_timeout is 1 s), then everything that is left must end.
    std::thread::sleep(Duration::from_secs(3));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = 0u64;
    let mut chunk = vec![0u8; 256 * 1024];
    let ended = loop {
        match stream.read(&mut chunk) {
            Ok(0) => break true,
            Ok(read) => got += read as u64,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(ended, "still open {:?} after asking", asked.elapsed());
    assert!(got < n, "the stalled client got all {got} bytes");
    let lines = access_lines(&dir, 1);
    let line = lines.first().expect("an access log line");
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[0], "200", "{line}");
    let logged: u64 = fields[1].parse().unwrap();
    assert!(
        logged < n && logged + 200 >= got,
        "{line}: client got {got}"
    );
    assert_eq!(fields[2], "[]", "completion empty: {line}");
    assert_eq!(incomplete(&metrics, "send_timeout"), 1);
}

#[test]
fn an_abandoned_download_is_logged_with_the_bytes_sent() {
    let dir = temp_dir("slow-abandoned");
    let extra = "[metrics]\nbind = \"127.0.0.1:0\"\n";
    let server = server(&dir, Proto::Http1, extra);
    let metrics = metrics_addr(&server);
    let n = 16 * MIB;
    // Reads at 1 MiB/s for 2 s, then leaves.
    let (got, error) = download(
        &server,
        &dir,
        Proto::Http1,
        n,
        MIB,
        Some(Duration::from_secs(2)),
    );
    assert_eq!(error, None);
    assert!(got > MIB && got < 4 * MIB, "read {got}");
    let lines = access_lines(&dir, 1);
    let line = lines.first().expect("an access log line");
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[0], "200", "{line}");
    let logged: u64 = fields[1].parse().unwrap();
    // What was written to the socket: at least what the client read, at most that plus
    // what the kernel's buffers held.
    assert!(logged >= got && logged < n / 2, "{line}: client read {got}");
    assert_eq!(fields[2], "[]", "completion empty: {line}");
    assert_eq!(incomplete(&metrics, "client_closed"), 1);
}

// ---- HTTP/2: a client that never opens its flow-control window -------------------------

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

#[test]
fn an_h2_client_with_a_shut_window_is_closed_after_send_timeout() {
    let dir = temp_dir("slow-h2-zero-window");
    let extra = "[limits]\nsend_timeout = \"1s\"\n[metrics]\nbind = \"127.0.0.1:0\"\n";
    let server = server(&dir, Proto::H2c, extra);
    let metrics = metrics_addr(&server);
    let mut stream = std::net::TcpStream::connect(&server.addr).unwrap();
    // SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 0, then 32 streams asking for 1 MiB each,
    // and never a WINDOW_UPDATE.
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(&mut out, 0x4, 0, 0, &[0, 4, 0, 0, 0, 0]);
    for i in 0..32u32 {
        let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
        let path = b"/?bytes=1048576";
        block.extend_from_slice(&[0x04, path.len() as u8]); // :path, literal
        block.extend_from_slice(path);
        block.extend_from_slice(&[0x01, 1, b't']); // :authority t
        frame(&mut out, 0x1, 0x5, 1 + 2 * i, &block); // END_STREAM | END_HEADERS
    }
    stream.write_all(&out).unwrap();
    let began = Instant::now();
    // Read (and answer PINGs, as a live client would) until the server closes.
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut data_bytes = 0u64;
    let closed = loop {
        if began.elapsed() > Duration::from_secs(8) {
            break false;
        }
        match stream.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => {}
        }
        // Frames: answer PINGs, count DATA.
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            if kind == 0x6 && flags & 1 == 0 {
                let mut ack = Vec::new();
                frame(&mut ack, 0x6, 1, 0, &buf[9..9 + len]);
                let _ = stream.write_all(&ack);
            }
            if kind == 0x0 {
                data_bytes += len as u64;
            }
            if kind == 0x4 && flags & 1 == 0 {
                let mut ack = Vec::new();
                frame(&mut ack, 0x4, 1, 0, &[]);
                let _ = stream.write_all(&ack);
            }
            buf.drain(..9 + len);
        }
    };
    let took = began.elapsed();
    assert!(
        closed,
        "the stalled HTTP/2 connection is still open after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(900),
        "closed after {took:?}, before send_timeout"
    );
    assert_eq!(data_bytes, 0, "a window of 0 lets no DATA through");
    // Every stream's response is logged, cut short.
    let lines = access_lines(&dir, 32);
    assert_eq!(lines.len(), 32, "{lines:?}");
    for line in &lines {
        assert!(line.starts_with("200 0 [] "), "{line}");
    }
    assert_eq!(incomplete(&metrics, "send_timeout"), 32);
    // The worker still serves.
    let (status, _, body) = get(&server.addr, "/?bytes=10").unwrap();
    assert_eq!((status, body.len()), (200, 10));
}

/// An HTTP/2 request (GET `path`, END_STREAM) on `stream`, as a HEADERS frame.
fn h2_get(out: &mut Vec<u8>, stream: u32, path: &[u8]) {
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
    block.extend_from_slice(&[0x04, path.len() as u8]); // :path, literal
    block.extend_from_slice(path);
    block.extend_from_slice(&[0x01, 1, b't']); // :authority t
    frame(out, 0x1, 0x5, stream, &block); // END_STREAM | END_HEADERS
}

fn window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    frame(out, 0x8, 0, stream, &increment.to_be_bytes());
}

#[test]
fn an_h2_stream_whose_window_stays_shut_is_reset_while_the_others_move() {
    let dir = temp_dir("slow-h2-one-stream");
    let extra = "[limits]\nsend_timeout = \"1s\"\n[metrics]\nbind = \"127.0.0.1:0\"\n";
    let server = server(&dir, Proto::H2c, extra);
    let metrics = metrics_addr(&server);
    let mut stream = std::net::TcpStream::connect(&server.addr).unwrap();
    // Every stream's window starts at 0; stream 1's is opened as its data arrives, at a
    // pace that makes it last longer than send_timeout; stream 3's never is.
    let n: u64 = 1024 * 1024;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(&mut out, 0x4, 0, 0, &[0, 4, 0, 0, 0, 0]);
    h2_get(&mut out, 1, b"/?bytes=1048576");
    h2_get(&mut out, 3, b"/?bytes=1048576");
    window_update(&mut out, 1, 64 * 1024);
    stream.write_all(&out).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let began = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let (mut got_1, mut got_3) = (0u64, 0u64);
    let mut ended_1 = false;
    let mut reset_3: Option<Duration> = None;
    while !(ended_1 && reset_3.is_some()) && began.elapsed() < Duration::from_secs(20) {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(_) => {}
        }
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let id = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let mut reply = Vec::new();
            match kind {
                0x0 if id == 1 => {
                    got_1 += len as u64;
                    ended_1 |= flags & 1 == 1;
                    // About 3 s for the MiB: 16 KiB every 45 ms.
                    std::thread::sleep(Duration::from_millis(45 * len as u64 / 16384));
                    if len > 0 {
                        window_update(&mut reply, 1, len as u32);
                        window_update(&mut reply, 0, len as u32);
                    }
                }
                0x0 if id == 3 => got_3 += len as u64,
                0x3 if id == 3 => reset_3 = reset_3.or(Some(began.elapsed())),
                0x6 if flags & 1 == 0 => frame(&mut reply, 0x6, 1, 0, &buf[9..9 + len]),
                0x4 if flags & 1 == 0 => frame(&mut reply, 0x4, 1, 0, &[]),
                _ => {}
            }
            if !reply.is_empty() {
                let _ = stream.write_all(&reply);
            }
            buf.drain(..9 + len);
        }
    }
    let reset_after = reset_3.unwrap_or_else(|| {
        panic!(
            "stream 3 was not reset ({:?}; stream 1: {got_1} bytes)",
            began.elapsed()
        )
    });
    assert!(
        reset_after >= Duration::from_millis(900),
        "reset after {reset_after:?}, before send_timeout"
    );
    assert_eq!(got_3, 0, "a window of 0 lets no DATA through");
    assert!(
        ended_1 && got_1 == n,
        "stream 1 got {got_1} of {n} (ended: {ended_1})"
    );
    assert!(
        began.elapsed() > Duration::from_secs(2),
        "stream 1 was meant to outlast send_timeout"
    );
    let mut lines = access_lines(&dir, 2);
    lines.sort();
    assert_eq!(
        lines,
        ["200 0 [] HTTP/2.0", "200 1048576 [OK] HTTP/2.0"],
        "the reset stream is logged cut short, the other whole"
    );
    assert_eq!(incomplete(&metrics, "send_timeout"), 1);
}
