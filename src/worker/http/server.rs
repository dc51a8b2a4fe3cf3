//! The hyper server a worker serves its connections with: HTTP/1.1 sized to the
//! `[limits]` (forkd times header reads itself), and HTTP/2 with explicit bounds
//! against floods (`configure_http2`).

use crate::config::Config;
use crate::worker::http::send_watch::StreamExecutor;
use crate::worker::http::sniff::Builders;
use crate::worker::http::violation::HeadLimits;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioTimer;

/// hyper's own default for `max_headers`; above it hyper must be told (and then
/// allocates the header array per request, so it is set only when needed).
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// The builder every connection of a worker is served with.
pub(crate) fn builder(config: &Config, limits: &HeadLimits) -> Builders {
    // Streams h2 resets as malformed never reach the service: counted and logged by the
    // connection's IO.
    crate::shared::logging::on_h2_malformed_stream(
        crate::worker::http::h2_serving::malformed_h2_stream,
    );
    let mut http1 = http1::Builder::new();
    // forkd times header reads itself (`header_read_timeout`, conn.rs) and the limits
    // scanner hands hyper only whole heads, so hyper's buffer must fit the largest
    // head the limits allow.
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        // A client may end its side after its request (and the limits IO ends the read
        // side before a refused request): the response still goes out.
        .half_close(true)
        .keep_alive(!config.keepalive.is_zero())
        .max_buf_size((limits.max_head_bytes() + 64 * 1024).max(400 * 1024));
    if config.limits.request_fields > HYPER_DEFAULT_MAX_HEADERS {
        http1.max_headers(config.limits.request_fields);
    }
    let mut http2 = http2::Builder::new(StreamExecutor);
    configure_http2(&mut http2, config);
    Builders { http1, http2 }
}

/// Streams one HTTP/2 connection may have open at once (nginx's
/// `http2_max_concurrent_streams` is 128; hyper's default is 200). More are refused.
const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Streams the client reset before hyper accepted them, at one time, before the
/// connection gets GOAWAY ENHANCE_YOUR_CALM (rapid reset; h2's default).
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams forkd had to reset for the client's protocol errors (including refusals past
/// `H2_MAX_CONCURRENT_STREAMS`) over a connection's life before GOAWAY
/// ENHANCE_YOUR_CALM (h2's default is 1024).
const H2_MAX_LOCAL_ERROR_RESETS: usize = 2 * H2_MAX_CONCURRENT_STREAMS as usize;
/// Ceiling on the HTTP/2 header list size: a head is held per open stream, so this
/// times `H2_MAX_CONCURRENT_STREAMS` (8 MiB) is what heads can cost a connection.
pub(crate) const H2_MAX_HEADER_LIST: usize = 64 * 1024;
/// Response bytes buffered per stream (hyper's default is 400 KB); with the streams
/// limit, 8 MiB a connection.
const H2_MAX_SEND_BUF: usize = 64 * 1024;
/// Request body bytes a connection may have in flight unread (the connection window,
/// hyper's default); a stream's own window is at most this, and no more than `max_body`.
const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;

/// HTTP/2 bounds, so that floods cost a bounded amount (README, Limits):
/// - concurrency: `H2_MAX_CONCURRENT_STREAMS`; a client that keeps opening more gets
///   GOAWAY after `H2_MAX_LOCAL_ERROR_RESETS` refusals;
/// - rapid reset (CVE-2023-44487): h2's pending-accept reset limit; a slower one is
///   caught per connection in `conn.rs`;
/// - heads (and CONTINUATION floods, which h2 counts against this since 0.4.4): the
///   header list is `[limits]`' largest HTTP/1 head, up to `H2_MAX_HEADER_LIST`;
/// - SETTINGS and PING floods: h2 queues one acknowledgement of each and stops
///   reading until it is written, so a client that does not read stalls itself; one
///   that does is held to a budget of such frames in `io.rs`;
/// - a client that stops answering: after `header_read_timeout` without a frame that
///   moves a stream, it gets a PING, and is closed if it has not answered within
///   another `header_read_timeout` (forkd's own watchdog covers connections with
///   nothing in flight).
fn configure_http2(http2: &mut http2::Builder<StreamExecutor>, config: &Config) {
    let limits = &config.limits;
    let head = limits.request_line.saturating_add(
        limits
            .request_fields
            .saturating_mul(limits.request_field_size.saturating_add(32)),
    );
    let header_list = head.min(H2_MAX_HEADER_LIST) as u32;
    let stream_window = limits
        .max_body
        .clamp(64 * 1024, u64::from(H2_CONNECTION_WINDOW)) as u32;
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        .max_header_list_size(header_list)
        .max_send_buf_size(H2_MAX_SEND_BUF)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .initial_stream_window_size(stream_window)
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
}
