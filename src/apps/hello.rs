//! `hello`: 200, text/plain, `Hello, world!`. The benchmark app: its body and content
//! type are static, so the response costs only hyper's own allocations (its header
//! map and the boxed body), not a copy of either (bench/allocs.py counts them).

use crate::app::{full, Request, Response};
use hyper::header::{HeaderValue, CONTENT_TYPE};

pub async fn hello(_req: Request) -> Response {
    let mut resp = hyper::Response::new(full(&b"Hello, world!"[..]));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}
