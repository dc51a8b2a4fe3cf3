//! The request path of one client connection in a worker: which HTTP it speaks
//! (`sniff`), hyper's server and its bounds (`server`), the connection's life and its
//! timeouts (`conn`, `conn_state`, `send_watch`), the IO under hyper with the byte-level limits (`io`,
//! `limits`, `violation`, `head`, `host`), what forkd answers itself (`health`,
//! `error_response`), the client address behind trusted proxies (`forwarded`) and the
//! access log.

pub(crate) mod access_log;
pub(crate) mod conn;
pub(crate) mod conn_state;
// The differential fuzz of HTTP/1 framing lives with the other harnesses in tests/fuzz/;
// it needs the crate's private items, so it is compiled into the unit tests from there.
#[cfg(test)]
#[path = "../../../tests/fuzz/differential.rs"]
mod differential;
pub(crate) mod error_response;
pub(crate) mod forwarded;
pub(crate) mod h2_frames;
pub(crate) mod h2_serving;
pub(crate) mod head;
pub(crate) mod health;
pub(crate) mod host;
#[allow(unsafe_code)] // Vec::set_len after a read into spare capacity
pub(crate) mod io;
pub(crate) mod limits;
pub(crate) mod send_watch;
pub(crate) mod server;
pub(crate) mod sniff;
pub(crate) mod violation;
