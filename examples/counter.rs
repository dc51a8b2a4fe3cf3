//! An app of one's own, embedded with the forkd library: each worker builds its own
//! state after the fork (here a request counter) and forkd supplies the command line,
//! config file, signals and supervision. Run it like forkd itself:
//!
//!     cargo run --example counter -- -b 127.0.0.1:8000 -w 2
//!
//! `COUNTER_PANIC_AT_BOOT=1` makes the per-worker state refuse to build, to show (and
//! test) that forkd exits 3 when no worker can boot. A request for `/panic` panics in
//! the handler, to show (and test) that a panicking request costs its own connection
//! only: the worker keeps serving and still drains promptly.

use forkd::app::{factory, respond, Request, Response};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

struct Counter {
    served: AtomicU64,
}

fn main() -> std::process::ExitCode {
    forkd::run(factory(|| async {
        if std::env::var_os("COUNTER_PANIC_AT_BOOT").is_some() {
            panic!("counter: refusing to boot (COUNTER_PANIC_AT_BOOT is set)");
        }
        let state = Arc::new(Counter {
            served: AtomicU64::new(0),
        });
        Ok(move |req: Request| {
            let state = state.clone();
            async move {
                if req.uri().path() == "/panic" {
                    panic!("counter: /panic requested");
                }
                let n = state.served.fetch_add(1, Ordering::Relaxed) + 1;
                let body = format!("count={n} pid={}\n", std::process::id());
                respond(200, "text/plain", body) as Response
            }
        })
    }))
}
