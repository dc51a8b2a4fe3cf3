//! Stopping as clients expect and seeing the master's state: after TERM (and
//! `shutdown_delay`) new connections are refused at once while requests in flight
//! finish; `forkd -s status` asks the master over its control socket.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use nix::sys::signal::Signal;
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn after_term_and_shutdown_delay_new_connections_are_refused_while_in_flight_requests_finish() {
    let path = temp_config(
        "stop-refuses",
        "app = \"echo\"\nbind = [\"127.0.0.1:0\"]\nworkers = 2\ngraceful_timeout = 20\n\
         [health]\nshutdown_delay = \"300ms\"\n",
    );
    let mut server = Forkd::new().config(&path).start();
    let addr = server.addr.clone();
    let slow_addr = addr.clone();
    let slow = std::thread::spawn(move || get(&slow_addr, "/?sleep_ms=4000"));
    // The slow request is in a worker before the stop begins.
    std::thread::sleep(Duration::from_millis(500));
    let term = Instant::now();
    server.signal(Signal::SIGTERM);
    let refused = || {
        matches!(
            TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(500)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    };
    assert!(
        poll_until(Duration::from_secs(3), refused),
        "connections were not refused after TERM:\n{}",
        server.log()
    );
    let refused_after = term.elapsed();
    assert!(
        refused_after >= Duration::from_millis(250),
        "refused during shutdown_delay ({refused_after:?})"
    );
    assert!(
        !slow.is_finished(),
        "the in-flight request ended before the refusal was seen ({refused_after:?})"
    );
    // Refused at once, not held in a queue: the attempt fails fast.
    let attempt = Instant::now();
    assert!(refused());
    assert!(attempt.elapsed() < Duration::from_millis(400));
    let (status, _, _) = slow.join().unwrap().expect("the in-flight request");
    assert_eq!(status, 200, "{}", server.log());
    assert_eq!(
        server.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        server.log()
    );
}
