//! A request handler that panics (in an embedded app, built with forkd's default
//! panic = "unwind"): only that request's connection is lost, the worker keeps serving,
//! and a later graceful stop is not held up waiting for the connection that panicked.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use nix::sys::signal::Signal;
use std::time::Duration;

#[test]
fn a_panicking_request_costs_its_connection_only_and_does_not_delay_the_drain() {
    let example = counter_example();
    let mut server = Forkd::program(&example)
        .local()
        .workers(1)
        .args(["--graceful-timeout", "60"])
        .start();
    let worker = workers_of(server.pid());
    assert_eq!(worker.len(), 1, "{}", server.log());
    assert!(
        get(&server.addr, "/panic").is_err(),
        "a panicking handler must not produce a response"
    );
    let (status, _, _) = get(&server.addr, "/").expect("served after the panic");
    assert_eq!(status, 200);
    assert_eq!(workers_of(server.pid()), worker, "the worker must survive");
    // Nothing is in flight: the graceful stop must not wait for graceful_timeout (60 s).
    server.signal(Signal::SIGTERM);
    let stopped = poll_until(Duration::from_secs(15), || {
        matches!(server.child.try_wait(), Ok(Some(_)))
    });
    assert!(
        stopped,
        "forkd still draining 15 s after TERM:\n{}",
        server.log()
    );
}
