//! The plain-text responses forkd writes itself, before or instead of hyper (a limit
//! broken, a full worker, HTTP/2 refused): [`error_response`].

use crate::shared::timefmt::Utc;
use std::time::SystemTime;

/// A complete `Connection: close` response with a plain-text body.
pub(crate) fn error_response(
    status: u16,
    reason: &str,
    body: &str,
    extra_headers: &str,
) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\ndate: {}\r\n{extra_headers}\r\n{body}",
        body.len(),
        Utc::from_system(SystemTime::now()).http_date()
    )
    .into_bytes()
}
