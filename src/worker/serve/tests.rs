//! The serving core driven in-process through its library API: a listener on
//! 127.0.0.1:0, a small app, a scoreboard the test owns, a shutdown the test triggers,
//! real requests over TCP. Every wait is bounded by a deadline.

use crate::app::{respond, App, Request};
use crate::config::Config;
use crate::shared::scoreboard::{Board, Rejection, Scoreboard, Slot, WorkerState};
use crate::worker::serve::{serve, Listening, Outcome, Settings, Shutdown};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The longest any single wait of these tests may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// `/slow` answers after this long, `/slower` after `SLOWER`; anything else at once.
const SLOW: Duration = Duration::from_millis(600);
const SLOWER: Duration = Duration::from_secs(5);

fn app() -> Arc<dyn App> {
    Arc::new(|req: Request| async move {
        match req.uri().path() {
            "/slow" => {
                tokio::time::sleep(SLOW).await;
                respond(200, "text/plain", "slow\n")
            }
            "/slower" => {
                tokio::time::sleep(SLOWER).await;
                respond(200, "text/plain", "slower\n")
            }
            _ => respond(200, "text/plain", "hello\n"),
        }
    })
}

/// A core serving on its own thread and runtime.
struct Running {
    addr: SocketAddr,
    slot: &'static Slot,
    board: &'static Board,
    stop: Option<tokio::sync::oneshot::Sender<Shutdown>>,
    done: mpsc::Receiver<Result<Outcome, String>>,
}

impl Running {
    fn start(config: Config) -> Running {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut scoreboard = Scoreboard::new().unwrap();
        let index = scoreboard.claim().unwrap();
        let (slot, board) = (scoreboard.slot(index), scoreboard.board());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (finished, done) = mpsc::channel();
        let settings = Settings::new(Arc::new(config)).scoreboard(slot, board);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let outcome = runtime.block_on(serve(
                vec![Listening::tcp(listener)],
                app(),
                settings,
                async move { stopped.await.unwrap_or(Shutdown::Graceful) },
            ));
            let _ = finished.send(outcome);
            // The runtime goes on after the core returns, as a library caller's may:
            // whatever the core left running would go on too.
            std::thread::sleep(DEADLINE);
            drop(runtime);
        });
        let running = Running {
            addr,
            slot,
            board,
            stop: Some(stop),
            done,
        };
        running.wait_for(|slot| slot.state() == WorkerState::Ready, "ready");
        running
    }

    fn shutdown(&mut self, how: Shutdown) {
        self.stop.take().unwrap().send(how).unwrap();
    }

    /// The core's outcome, once it has returned.
    fn outcome(&self) -> Outcome {
        self.done
            .recv_timeout(DEADLINE)
            .expect("the core returns within the deadline")
            .expect("the core started")
    }

    fn wait_for(&self, what: impl Fn(&Slot) -> bool, name: &str) {
        let until = Instant::now() + DEADLINE;
        while !what(self.slot) {
            assert!(Instant::now() < until, "waited too long for: {name}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.set_write_timeout(Some(DEADLINE)).unwrap();
        stream
    }
}

/// An HTTP/1.1 response: status, head (lowercased), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn closes(&self) -> bool {
        self.head.contains("\r\nconnection: close\r\n")
    }
}

fn send(stream: &mut TcpStream, path: &str) {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
}

/// Reads one response with a `Content-Length` body.
fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end + 4]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if bytes.len() >= end + 4 + length {
                let status = head[9..12].parse().unwrap();
                let body = String::from_utf8_lossy(&bytes[end + 4..end + 4 + length]).into();
                return Answer { status, head, body };
            }
        }
        let n = stream
            .read(&mut chunk)
            .expect("a response within the deadline");
        assert!(n > 0, "closed before a whole response: {bytes:?}");
        bytes.extend_from_slice(&chunk[..n]);
    }
}

fn get(stream: &mut TcpStream, path: &str) -> Answer {
    send(stream, path);
    read_answer(stream)
}

/// Waits for the server to close `stream` (EOF or a reset); returns how long it took.
fn closed_within(stream: &mut TcpStream) -> Duration {
    let began = Instant::now();
    let mut chunk = [0u8; 64];
    match stream.read(&mut chunk) {
        Ok(0) => began.elapsed(),
        Ok(n) => panic!("unexpected bytes: {:?}", &chunk[..n]),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => began.elapsed(),
        Err(e) => panic!("not closed within the deadline: {e}"),
    }
}

fn config() -> Config {
    Config {
        keepalive: Duration::from_secs(2),
        graceful_timeout: Duration::from_secs(8),
        ..Config::default()
    }
}

#[test]
fn serves_requests_then_drains_and_returns() {
    let mut core = Running::start(config());
    let mut stream = core.connect();
    for _ in 0..2 {
        let answer = get(&mut stream, "/");
        assert_eq!((answer.status, answer.body.as_str()), (200, "hello\n"));
        assert!(!answer.closes(), "kept alive: {answer:?}");
    }
    assert_eq!(core.slot.requests(), 2);
    assert_eq!(core.slot.connections(), 1);
    drop(stream);
    core.shutdown(Shutdown::Graceful);
    assert_eq!(core.outcome(), Outcome::Drained);
    assert_eq!(core.slot.state(), WorkerState::Draining);
    // The listener is closed: nothing accepts any more.
    let refused = TcpStream::connect(core.addr).map(|_| ()).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn graceful_shutdown_lets_a_request_in_flight_finish() {
    let mut core = Running::start(config());
    let mut stream = core.connect();
    send(&mut stream, "/slow");
    core.wait_for(|slot| slot.in_flight() == 1, "the request in the app");
    core.shutdown(Shutdown::Graceful);
    core.wait_for(|slot| slot.state() == WorkerState::Draining, "draining");
    assert!(
        core.done.try_recv().is_err(),
        "the core returned with a request in flight"
    );
    let answer = read_answer(&mut stream);
    assert_eq!((answer.status, answer.body.as_str()), (200, "slow\n"));
    assert!(answer.closes(), "a draining core closes: {answer:?}");
    assert!(closed_within(&mut stream) < Duration::from_secs(1));
    assert_eq!(core.outcome(), Outcome::Drained);
}

#[test]
fn drain_closes_idle_connections_and_answers_late_requests_with_close() {
    let mut core = Running::start(config());
    let (mut idle, mut late) = (core.connect(), core.connect());
    assert_eq!(get(&mut idle, "/").status, 200);
    assert_eq!(get(&mut late, "/").status, 200);
    let began = Instant::now();
    core.shutdown(Shutdown::Graceful);
    core.wait_for(|slot| slot.state() == WorkerState::Draining, "draining");
    // A request written on a kept-alive connection once the drain began is served,
    // and its answer says the connection closes.
    let answer = get(&mut late, "/");
    assert_eq!((answer.status, answer.body.as_str()), (200, "hello\n"));
    assert!(answer.closes(), "{answer:?}");
    assert!(closed_within(&mut late) < Duration::from_secs(1));
    // The idle one is closed once it has been idle for `keepalive` (2 s), not cut at
    // once (a request may be on its way) and not kept until `graceful_timeout` (8 s).
    let idle_for = closed_within(&mut idle);
    assert!(
        idle_for < Duration::from_secs(4),
        "closed after {idle_for:?}"
    );
    assert_eq!(core.outcome(), Outcome::Drained);
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
}

#[test]
fn connections_past_max_connections_get_503() {
    let mut config = config();
    config.limits.max_connections = 1;
    let mut core = Running::start(config);
    let mut first = core.connect();
    assert_eq!(get(&mut first, "/").status, 200);
    let mut second = core.connect();
    let answer = read_answer(&mut second);
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.head.contains("\r\nretry-after: 1\r\n"), "{answer:?}");
    assert!(answer.body.contains("limits.max_connections"), "{answer:?}");
    assert_eq!(core.board.header().rejections(Rejection::MaxConnections), 1);
    // The place is the first connection's: it is served still.
    assert_eq!(get(&mut first, "/").status, 200);
    drop(first);
    core.shutdown(Shutdown::Graceful);
    assert_eq!(core.outcome(), Outcome::Drained);
}

#[test]
fn immediate_shutdown_returns_without_waiting_for_requests() {
    let mut core = Running::start(config());
    let mut stream = core.connect();
    send(&mut stream, "/slower");
    core.wait_for(|slot| slot.in_flight() == 1, "the request in the app");
    let began = Instant::now();
    core.shutdown(Shutdown::Immediate);
    assert_eq!(core.outcome(), Outcome::Immediate);
    assert!(began.elapsed() < SLOWER / 2, "{:?}", began.elapsed());
    // The connection ends with the core, though the runtime goes on: no answer.
    assert!(closed_within(&mut stream) < SLOWER / 2);
    core.wait_for(|slot| slot.connections() == 0, "no connection counted");
}

#[test]
fn graceful_timeout_bounds_the_drain() {
    let mut config = config();
    config.graceful_timeout = Duration::from_secs(1);
    let mut core = Running::start(config);
    let mut stream = core.connect();
    send(&mut stream, "/slower");
    core.wait_for(|slot| slot.in_flight() == 1, "the request in the app");
    let began = Instant::now();
    core.shutdown(Shutdown::Graceful);
    assert_eq!(core.outcome(), Outcome::GracefulTimeout { open: 1 });
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < SLOWER,
        "{took:?}"
    );
    // The connection still open ends with the core, though the runtime goes on.
    assert!(closed_within(&mut stream) < SLOWER / 2);
    core.wait_for(|slot| slot.connections() == 0, "no connection counted");
}

#[test]
fn a_tls_listener_without_a_tls_config_is_an_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let served = runtime.block_on(serve(
        vec![Listening::tcp(listener).with_tls()],
        app(),
        Settings::new(Arc::new(config())),
        std::future::pending(),
    ));
    let error = served.unwrap_err();
    assert!(error.contains("a tls:// listener without [tls]"), "{error}");
}
