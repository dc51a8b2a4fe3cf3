//! `hello`: 200, text/plain, `Hello, world!`. The benchmark app: no allocation beyond
//! the response itself.

use crate::app::{respond, Request, Response};

pub async fn hello(_req: Request) -> Response {
    respond(200, "text/plain", &b"Hello, world!"[..])
}
