//! `hello`: 200, text/plain, `Hello, world!`. The benchmark app: its body and content
//! type are static, so the response costs only hyper's own allocations (its header
//! map and the boxed body), not a copy of either (bench/allocs.py counts them).
//!
//! It implements [`App`] itself rather than as an `async fn`: it does not read the
//! request, so its future holds nothing, and boxing a future of no size allocates
//! nothing (an `async fn` taking the request would box the request with it). That is
//! what a plain hyper hello server does per request, which the benchmarks compare with.

use crate::app::{full, App, BoxFuture, Request, Response};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The `hello` app.
pub struct Hello;

impl App for Hello {
    fn call(&self, _req: Request) -> BoxFuture<Response> {
        Box::pin(Answer)
    }
}

/// The answer, made when polled.
struct Answer;

impl Future for Answer {
    type Output = Response;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Response> {
        Poll::Ready(hello())
    }
}

fn hello() -> Response {
    let mut resp = hyper::Response::new(full(&b"Hello, world!"[..]));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}
