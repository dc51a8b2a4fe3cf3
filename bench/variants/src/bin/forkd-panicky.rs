//! An embedded app for the panic-strategy experiment: answers like `hello`, but panics
//! on `/panic` while holding the connection, so that one can see whether a worker
//! survives the panic (unwind), dies and is replaced (abort), and whether it still
//! drains promptly afterwards.

use forkd::app::{factory, respond, Request, Response};

fn main() -> std::process::ExitCode {
    forkd::run(factory(|| async {
        Ok(|req: Request| async move {
            if req.uri().path() == "/panic" {
                panic!("forkd-panicky: /panic requested");
            }
            respond(200, "text/plain", "Hello, world!") as Response
        })
    }))
}
