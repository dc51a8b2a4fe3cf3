//! The HTTP/2 graceful drain: h2c clients that honour GOAWAY, with
//! several streams in flight on each connection, across HUPs. A stream the server
//! refused as never processed (REFUSED_STREAM, or above the GOAWAY's last stream id,
//! RFC 9113 §6.8) is retried, as a client may; every other failure is counted and must
//! be 0. The real binary, real sockets, real signals; every wait has a deadline and
//! every process is killed by a guard.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the clients saw.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    /// Never processed by the server: retried.
    refused_stream: AtomicU64,
    above_goaway: AtomicU64,
    /// Never sent: the connection had closed before hyper dispatched the request.
    not_sent: AtomicU64,
    /// Anything else: a stream the server may have processed and did not answer.
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
}

/// Why a request failed, as far as retrying goes.
enum Failure {
    RefusedStream,
    AboveGoaway,
    NotSent,
    Other(String),
}

fn classify(error: &hyper::Error) -> Failure {
    if error.is_canceled() {
        return Failure::NotSent;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Failure::RefusedStream;
            }
            // h2 fails a client's streams above the last stream id of the server's
            // GOAWAY with the GOAWAY's error; those below it are answered or fail
            // otherwise (a reset, the connection's end).
            if h2.is_go_away() && h2.is_remote() {
                return Failure::AboveGoaway;
            }
        }
        source = cause.source();
    }
    Failure::Other(format!("{error:?}"))
}

/// One client connection after another, `streams` requests in flight on each, until
/// `stop`; a new connection when the server's GOAWAY closed the last one.
async fn client(addr: String, streams: usize, stop: Arc<AtomicBool>, counts: Arc<Counts>) {
    while !stop.load(Relaxed) {
        let Ok(tcp) = tokio::net::TcpStream::connect(&addr).await else {
            counts.failed.fetch_add(1, Relaxed);
            counts.errors.lock().unwrap().push("connect".into());
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok((sender, conn)) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        else {
            // Accepted by a worker that then drained before the handshake: nothing
            // was asked.
            continue;
        };
        tokio::spawn(conn);
        let lanes: Vec<_> = (0..streams)
            .map(|_| {
                let mut sender = sender.clone();
                let (stop, counts) = (stop.clone(), counts.clone());
                tokio::spawn(async move {
                    while !stop.load(Relaxed) {
                        if sender.ready().await.is_err() {
                            // The connection is gone (GOAWAY honoured): a new one.
                            return;
                        }
                        let request = hyper::Request::get("http://localhost/")
                            .body(http_body_util::Empty::<bytes::Bytes>::new())
                            .unwrap();
                        let outcome = match sender.send_request(request).await {
                            Ok(response) => {
                                let status = response.status();
                                match response.into_body().collect().await {
                                    Ok(_) if status == 200 => Ok(()),
                                    Ok(_) => Err(Failure::Other(format!("status {status}"))),
                                    Err(e) => Err(Failure::Other(format!("body: {e:?}"))),
                                }
                            }
                            Err(e) => Err(classify(&e)),
                        };
                        let counter = match outcome {
                            Ok(()) => &counts.ok,
                            Err(Failure::RefusedStream) => &counts.refused_stream,
                            Err(Failure::AboveGoaway) => &counts.above_goaway,
                            Err(Failure::NotSent) => &counts.not_sent,
                            Err(Failure::Other(why)) => {
                                counts.errors.lock().unwrap().push(why);
                                &counts.failed
                            }
                        };
                        counter.fetch_add(1, Relaxed);
                    }
                })
            })
            .collect();
        for lane in lanes {
            let _ = lane.await;
        }
    }
}

/// `connections` h2c clients with `streams` streams in flight each, across `rounds`
/// HUPs of a 2-worker server.
fn h2c_across_hups(connections: usize, streams: usize, rounds: usize) {
    let server = Forkd::new().local().workers(2).app("hello").start();
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let load = {
        let (addr, stop, counts) = (server.addr.clone(), stop.clone(), counts.clone());
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async move {
                    let clients: Vec<_> = (0..connections)
                        .map(|_| {
                            tokio::spawn(client(
                                addr.clone(),
                                streams,
                                stop.clone(),
                                counts.clone(),
                            ))
                        })
                        .collect();
                    for c in clients {
                        let _ = c.await;
                    }
                })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    for round in 1..=rounds {
        server.signal(nix::sys::signal::Signal::SIGHUP);
        server.expect_log(
            &format!("generation={}", round + 1),
            Duration::from_secs(10),
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let settled = poll_until(Duration::from_secs(10), || {
        workers_of(server.pid()).len() == 2
            && server.log().matches("reason=\"reload\"").count() >= rounds * 2
    });
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Relaxed);
    let _ = poll_until(Duration::from_secs(10), || load.is_finished());
    assert!(load.is_finished(), "the clients did not stop");
    let _ = load.join();
    let (ok, failed) = (counts.ok.load(Relaxed), counts.failed.load(Relaxed));
    eprintln!(
        "h2c, {connections} connections x {streams} streams, {rounds} HUPs in {:?}: {ok} ok, \
         retried: {} REFUSED_STREAM, {} above GOAWAY's last stream id, {} never sent; \
         {failed} failed",
        started.elapsed(),
        counts.refused_stream.load(Relaxed),
        counts.above_goaway.load(Relaxed),
        counts.not_sent.load(Relaxed),
    );
    assert!(settled, "workers did not settle:\n{}", server.log());
    assert!(ok > 500, "too little traffic got through ({ok})");
    assert_eq!(
        failed,
        0,
        "failures: {:?}\nlog:\n{}",
        &counts.errors.lock().unwrap()[..],
        server.log()
    );
}

#[test]
fn h2c_streams_across_hups_fail_only_as_never_processed() {
    h2c_across_hups(8, 4, 5);
}

#[test]
fn h2c_one_stream_per_connection_across_hups_fails_none() {
    // As h2load -m1 does.
    h2c_across_hups(16, 1, 5);
}
