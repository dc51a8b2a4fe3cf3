//! `[health]`: the liveness and readiness paths, answered by the worker before the app
//! sees the request. Liveness is 200 whenever the worker answers at all. Readiness is
//! 200 until the whole server is stopping (TERM, INT or QUIT to the master, which sets
//! the scoreboard's stop flag when `shutdown_delay` begins), then 503 so that load
//! balancers stop sending traffic while requests are still served. A reload or a
//! worker's own recycling never flips it: the server as a whole stays ready.

use crate::app::{respond, Response};
use crate::config::Health;
use crate::shared::scoreboard::Header;
use hyper::header::{HeaderValue, CACHE_CONTROL};

pub(crate) struct HealthPaths {
    live: Option<String>,
    ready: Option<String>,
}

impl HealthPaths {
    pub(crate) fn from_config(health: &Health) -> HealthPaths {
        HealthPaths {
            live: health.live_path.clone(),
            ready: health.ready_path.clone(),
        }
    }

    /// The answer for `path` if it is a health path, else None (the app answers).
    pub(crate) fn answer(&self, path: &str, header: &Header) -> Option<Response> {
        let mut resp = if self.live.as_deref() == Some(path) {
            respond(200, "text/plain", "live\n")
        } else if self.ready.as_deref() == Some(path) {
            if header.server_stopping() {
                respond(503, "text/plain", "stopping\n")
            } else {
                respond(200, "text/plain", "ready\n")
            }
        } else {
            return None;
        };
        resp.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Some(resp)
    }
}
