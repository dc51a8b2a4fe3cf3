//! Request framing end to end with the real binary: the bytes that used to
//! smuggle a request past `[limits]` (a bare LF in a chunked trailer, long chunk sizes,
//! `Upgrade`, `CONNECT`), a flood of empty lines, a pipelined request next to a too
//! large one, a stalled request body (`body_read_timeout`), trailers over the field
//! limits, and HTTP/2 request bodies over `max_body` or stalled. The app is `echo`,
//! whose JSON names the path it served, so a request that reached the app shows.
//! Real sockets on loopback, deadlines on every wait, every process killed by a guard.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const LIMITS: &str = "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n\
    [limits]\nrequest_line = 200\nrequest_fields = 10\nrequest_field_size = 100\nmax_body = 1024\n";

/// The status codes of the responses in `text`, in order.
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

/// A request nobody should see: 41 header fields (the limit is 10).
fn smuggled(method: &str) -> String {
    let fields: String = (0..41).map(|i| format!("h{i}: v\r\n")).collect();
    format!("{method} /smuggled HTTP/1.1\r\nHost: x\r\n{fields}\r\n")
}

#[test]
fn the_chunked_trailer_smuggling_bytes_reach_no_app() {
    let server = Forkd::new()
        .config(temp_config("trailer-lf", LIMITS))
        .start();
    let pid = worker_pid(&server.addr);
    let inner = smuggled("GET");
    let mut raw =
        b"POST /t1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\r\n"
            .to_vec();
    raw.extend_from_slice(
        format!(
            "POST /decoy HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{inner}",
            inner.len()
        )
        .as_bytes(),
    );
    let answer = converse(&server.addr, &raw, Duration::from_secs(10));
    assert!(!answer.contains("/smuggled"), "{answer}");
    assert!(!answer.contains("/decoy"), "{answer}");
    assert_eq!(statuses(&answer), vec![400], "{answer}");
    assert!(answer.contains("bare LF in trailer"), "{answer}");
    // Other bare-LF placements: refused, never followed differently from hyper.
    for body in [
        "0\r\nX: 1\r\n\n",
        "0\n\r\n",
        "4\nabcd\r\n0\r\n\r\n",
        "4\r\nabcd\n0\r\n\r\n",
        "4;ext\nabcd\r\n0\r\n\r\n",
        "0\r\nX: 1\rY: 2\r\n\r\n",
    ] {
        let raw = format!(
            "POST /t2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}{}",
            smuggled("GET")
        );
        let answer = converse(&server.addr, raw.as_bytes(), Duration::from_secs(10));
        assert!(!answer.contains("/smuggled"), "{body:?}: {answer}");
        assert_eq!(statuses(&answer), vec![400], "{body:?}: {answer}");
    }
    assert_eq!(worker_pid(&server.addr), pid, "the worker changed");
}

#[test]
fn long_chunk_sizes_keep_every_later_limit() {
    let server = Forkd::new()
        .config(temp_config("chunk-digits", LIMITS))
        .start();
    for digits in [17, 20, 32, 64] {
        let size = format!("{}5", "0".repeat(digits - 1));
        let raw = format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nhello\r\n0\r\n\r\n{}",
            smuggled("GET")
        );
        let answer = converse(&server.addr, raw.as_bytes(), Duration::from_secs(10));
        // The first request is served with its 5 bytes; the second is refused 431.
        assert_eq!(statuses(&answer), vec![200, 431], "{digits}: {answer}");
        assert!(answer.contains("\"body_bytes\":5"), "{digits}: {answer}");
        assert!(!answer.contains("/smuggled"), "{digits}: {answer}");
    }
    // Past 64 bits: 400, not a wrapped size.
    let raw =
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n";
    let answer = converse(&server.addr, raw.as_bytes(), Duration::from_secs(10));
    assert_eq!(statuses(&answer), vec![413], "{answer}");
}

#[test]
fn upgrade_and_connect_do_not_switch_the_limits_off() {
    let server = Forkd::new().config(temp_config("upgrade", LIMITS)).start();
    for head in [
        "GET /u HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
        "GET /u HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        "GET /u HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade, keep-alive\r\n\r\n",
    ] {
        let raw = format!("{head}{}", smuggled("GET"));
        let answer = converse(&server.addr, raw.as_bytes(), Duration::from_secs(10));
        assert!(!answer.contains("/smuggled"), "{head:?}: {answer}");
        // echo does not switch protocols: its answer, then 431 for the next request.
        assert_eq!(statuses(&answer), vec![200, 431], "{head:?}: {answer}");
    }
    // A smuggled body behind an Upgrade header is held to max_body too.
    let raw = format!(
        "GET /u HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\nPOST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{}",
        "z".repeat(5000)
    );
    let answer = converse(&server.addr, raw.as_bytes(), Duration::from_secs(10));
    assert_eq!(statuses(&answer), vec![200, 413], "{answer}");
    // CONNECT answered 2xx hands the connection to an upgrade nobody takes: what
    // follows is never served as a request (bytes sent before the answer are still
    // scanned, and refused).
    let raw = format!(
        "CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\n\r\n{}",
        smuggled("GET")
    );
    let answer = converse(&server.addr, raw.as_bytes(), Duration::from_secs(10));
    assert!(!answer.contains("/smuggled"), "{answer}");
    assert_eq!(statuses(&answer).first(), Some(&200), "{answer}");
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\n\r\n")
        .expect("write");
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).expect("CONNECT answer");
    assert_eq!(&head, b"HTTP/1.1 200");
    let _ = stream.write_all(smuggled("GET").as_bytes());
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("/smuggled"), "{rest}");
    assert!(statuses(&rest).is_empty(), "{rest}");
}

#[test]
fn a_flood_of_empty_lines_is_refused_at_request_line() {
    let server = Forkd::new()
        .config(temp_config("empty-lines", LIMITS))
        .start();
    let began = Instant::now();
    let raw = b"\r\n".repeat(4 * 1024 * 1024);
    let answer = converse(&server.addr, &raw, Duration::from_secs(10));
    assert_eq!(statuses(&answer), vec![414], "{answer}");
    assert!(
        began.elapsed() < Duration::from_secs(9),
        "took {:?}",
        began.elapsed()
    );
    // A few empty lines within the limit are fine.
    let answer = converse(
        &server.addr,
        b"\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    assert_eq!(statuses(&answer), vec![200], "{answer}");
}

#[test]
fn a_pipelined_request_is_not_answered_for_the_next_ones_body() {
    let server = Forkd::new()
        .config(temp_config("pipelined-413", LIMITS))
        .start();
    let mut raw = b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    raw.extend_from_slice(
        b"POST /second HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..4 {
        raw.extend_from_slice(format!("190\r\n{}\r\n", "c".repeat(400)).as_bytes());
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let answer = converse(&server.addr, &raw, Duration::from_secs(10));
    assert_eq!(statuses(&answer), vec![200, 413], "{answer}");
    assert!(answer.contains("\"path\":\"/first\""), "{answer}");
    assert!(answer.contains("limits.max_body"), "{answer}");
}

#[test]
fn trailers_are_held_to_the_field_limits() {
    let server = Forkd::new().config(temp_config("trailers", LIMITS)).start();
    let ok = "POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 1\r\n\r\n";
    assert_eq!(
        statuses(&converse(
            &server.addr,
            ok.as_bytes(),
            Duration::from_secs(10)
        )),
        vec![200]
    );
    let many: String = (0..11).map(|i| format!("t{i}: v\r\n")).collect();
    let raw =
        format!("POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n{many}\r\n");
    let answer = converse(&server.addr, raw.as_bytes(), Duration::from_secs(10));
    assert_eq!(statuses(&answer), vec![431], "{answer}");
    let raw = format!(
        "POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nt: {}\r\n\r\n",
        "v".repeat(200)
    );
    let answer = converse(&server.addr, raw.as_bytes(), Duration::from_secs(10));
    assert_eq!(statuses(&answer), vec![431], "{answer}");
}

#[test]
fn a_stalled_body_gets_408_and_frees_its_slot() {
    let text = format!("{LIMITS}body_read_timeout = 1\nmax_connections = 20\n");
    let server = Forkd::new()
        .config(temp_config("body-timeout", &text))
        .start();
    // 20 slow-POST clients take every slot, each with one byte of a 10-byte body.
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|i| {
            let mut s = TcpStream::connect(&server.addr).expect("connect");
            s.write_all(
                format!("POST /slow{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nx")
                    .as_bytes(),
            )
            .expect("write");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            s
        })
        .collect();
    let began = Instant::now();
    for s in &mut slow {
        let mut data = Vec::new();
        let _ = s.read_to_end(&mut data);
        let text = String::from_utf8_lossy(&data);
        assert_eq!(statuses(&text), vec![408], "{text}");
        assert!(text.contains("limits.body_read_timeout"), "{text}");
    }
    let waited = began.elapsed();
    assert!(waited < Duration::from_secs(8), "408s took {waited:?}");
    // The slots are free again.
    let (status, _, _) = get(&server.addr, "/after").expect("request after");
    assert_eq!(status, 200);
    // A body that keeps arriving, slower than the timeout in total, is not cut.
    let mut s = TcpStream::connect(&server.addr).expect("connect");
    s.write_all(
        b"POST /steady HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\n",
    )
    .expect("write");
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(500));
        s.write_all(b"x").expect("write");
    }
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut data = Vec::new();
    let _ = s.read_to_end(&mut data);
    let text = String::from_utf8_lossy(&data);
    assert_eq!(statuses(&text), vec![200], "{text}");
    assert!(text.contains("\"body_bytes\":4"), "{text}");
}

/// HTTP/2 with prior knowledge, with hyper's client.
mod h2 {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    type Chunks = tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>;

    /// Sends a POST whose body comes from `feed` and returns the status, or the error
    /// (a reset stream).
    async fn post(
        addr: &str,
        feed: impl FnOnce(tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>)
            + Send
            + 'static,
    ) -> Result<u16, String> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let (tx, rx): (_, Chunks) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move { feed(tx) });
        let body = StreamBody::new(tokio_stream(rx));
        let req = hyper::Request::post(format!("http://{addr}/h2"))
            .body(body)
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        Ok(status)
    }

    /// An mpsc receiver as a stream of frames (no extra crate for a few lines).
    fn tokio_stream(
        mut rx: Chunks,
    ) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, std::io::Error>> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    async fn timed<F: std::future::Future>(
        limit: Duration,
        fut: F,
    ) -> Result<F::Output, tokio::time::error::Elapsed> {
        tokio::time::timeout(limit, fut).await
    }

    #[test]
    fn a_streamed_http2_body_is_held_to_max_body_and_body_read_timeout() {
        let text = format!("{LIMITS}body_read_timeout = 1\n");
        let server = Forkd::new().config(temp_config("h2-body", &text)).start();
        let addr = server.addr.clone();
        let rt = runtime();
        // 2 KiB in 256-byte frames, no Content-Length: past max_body (1024) -> 413.
        let status = rt.block_on(timed(
            Duration::from_secs(10),
            post(&addr, |tx| {
                tokio::spawn(async move {
                    for _ in 0..8 {
                        if tx
                            .send(Ok(Frame::data(Bytes::from(vec![b'x'; 256]))))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }),
        ));
        assert_eq!(status, Ok(Ok(413)), "{}", server.log());
        // Within the limit: served.
        let status = rt.block_on(timed(
            Duration::from_secs(10),
            post(&addr, |tx| {
                tokio::spawn(async move {
                    let _ = tx
                        .send(Ok(Frame::data(Bytes::from(vec![b'x'; 1000]))))
                        .await;
                });
            }),
        ));
        assert_eq!(status, Ok(Ok(200)));
        // One frame, then silence (the sender is kept open): 408 after about 1 s.
        let began = Instant::now();
        let status = rt.block_on(timed(
            Duration::from_secs(10),
            post(&addr, |tx| {
                tokio::spawn(async move {
                    let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"x")))).await;
                    tokio::time::sleep(Duration::from_secs(8)).await;
                    drop(tx);
                });
            }),
        ));
        assert_eq!(status, Ok(Ok(408)));
        assert!(
            began.elapsed() < Duration::from_secs(6),
            "{:?}",
            began.elapsed()
        );
    }
}

/// Issue 20 (10): a chunked request body the app does not read is drained, as plain
/// hyper drains it, so the keep-alive connection serves the request pipelined behind
/// it; within `max_body` only (a body past it is refused and the connection closed).
#[test]
fn an_unread_chunked_body_is_drained_and_the_next_request_served() {
    let server = Forkd::new()
        .config(temp_config(
            "unread-chunked",
            "app = \"hello\"\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n[limits]\nmax_body = 1024\n",
        ))
        .start();
    let next = "GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for (what, body) in [
        ("one chunk", "5\r\nhello\r\n0\r\n\r\n".to_string()),
        (
            "many chunks and a trailer",
            format!("{}0\r\nX-T: 1\r\n\r\n", "3;e=1\r\nabc\r\n".repeat(50)),
        ),
    ] {
        let raw = format!(
            "POST /unread HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}{next}"
        );
        let answer = converse(&server.addr, raw.as_bytes(), Duration::from_secs(10));
        assert_eq!(statuses(&answer), vec![200, 200], "{what}: {answer}");
        // Sent in pieces: the body arrives after the app answered.
        let mut stream = TcpStream::connect(&server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"POST /unread HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        let mut first = [0u8; 12];
        stream.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.1 200", "{what}");
        std::thread::sleep(Duration::from_millis(50));
        for piece in body.as_bytes().chunks(7) {
            stream.write_all(piece).unwrap();
        }
        stream.write_all(next.as_bytes()).unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        let rest = String::from_utf8_lossy(&rest);
        assert_eq!(statuses(&rest), vec![200], "{what}, in pieces: {rest}");
    }
}

/// Issue 20 (7), HTTP/2: the host the app would see (`:authority`, a `Host` field) is
/// held to the same grammar as HTTP/1's `Host`: 400, counted as `malformed`.
#[test]
fn http2_authority_and_host_are_validated_as_http1_host() {
    let server = Forkd::new()
        .config(temp_config(
            "h2-host",
            "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n[metrics]\nbind = \"127.0.0.1:0\"\n",
        ))
        .start();
    let metrics = metrics_addr(&server);
    let addr = server.addr.clone();
    let rt = runtime();
    let statuses = rt.block_on(async {
        let mut sender = h2_client::<http_body_util::Empty<bytes::Bytes>>(&addr).await;
        let mut out = Vec::new();
        for (uri, host) in [
            (format!("http://{addr}/ok"), None),
            (format!("http://{addr}/ok"), Some("[::1]:8000")),
            ("http://x:99999/bad".to_string(), None),
            (format!("http://{addr}/bad"), Some("a b/c@d:99999")),
        ] {
            let mut req = hyper::Request::get(uri);
            if let Some(host) = host {
                req = req.header("host", host);
            }
            let req = req.body(http_body_util::Empty::new()).unwrap();
            let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
                .await
                .unwrap()
                .unwrap();
            out.push(resp.status().as_u16());
        }
        out
    });
    assert_eq!(statuses, vec![200, 200, 400, 400]);
    let (_, _, body) = get(&metrics, "/metrics").unwrap();
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("forkd_requests_rejected_total{limit=\"malformed\"} 2"),
        "{body}"
    );
}
