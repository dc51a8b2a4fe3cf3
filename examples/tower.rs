//! A plain tower service under forkd, without axum: `examples/counter.rs`'s app written
//! as a `tower_service::Service` by hand, built in each worker after the fork and
//! handed to `forkd::run_service`. (bench/RESULTS.md compares the two: the same
//! instructions per request.) Run it like forkd itself:
//!
//!     cargo run --example tower -- -b 127.0.0.1:8000 -w 2
use bytes::Bytes;
use http_body_util::Full;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// The worker's count, shared by the clones forkd makes of the service per request.
#[derive(Clone)]
struct Counter(Arc<AtomicU64>);

impl tower_service::Service<forkd::app::Request> for Counter {
    type Response = hyper::Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _req: forkd::app::Request) -> Self::Future {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        let body = format!("count={n} pid={}\n", std::process::id());
        let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain"),
        );
        ready(Ok(resp))
    }
}

fn main() -> std::process::ExitCode {
    forkd::run_service(|| async { Ok(Counter(Arc::new(AtomicU64::new(0)))) })
}
