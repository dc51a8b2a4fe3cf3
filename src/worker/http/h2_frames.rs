//! Follows the frame boundaries of an HTTP/2 connection's incoming bytes (as they go to
//! hyper, in whatever pieces the socket delivers them) and holds the client to budgets
//! for the frames that cost the worker work without moving a request: PING and SETTINGS
//! (which the server must answer), and every payload-free frame (WINDOW_UPDATE,
//! PRIORITY, RST_STREAM, empty DATA without END_STREAM, PING and SETTINGS ACKs, frames
//! of unknown types). A flooding client's connection ends in GOAWAY
//! `ENHANCE_YOUR_CALM`: see [`CALM`] for how h2 is made to send it.
//!
//! Two budgets, each a bucket refilled over time (frames per second beyond a burst):
//!
//! - `answered` (PING and SETTINGS without ACK): [`H2_CONTROL_BURST`] and
//!   [`H2_CONTROL_PER_SEC`], as before.
//! - `idle` (the other payload-free frames, ACKs included): [`H2_IDLE_BURST`] and
//!   [`H2_IDLE_PER_SEC`], and it also earns credit from what the client does that is
//!   not idle: each request (a HEADERS frame) earns [`H2_IDLE_PER_REQUEST`], and each
//!   [`H2_ACKED_BYTES_PER_FRAME`] bytes of response the client acknowledges (the
//!   increments of its WINDOW_UPDATEs on the connection, stream 0) earn one. That is the
//!   "per response byte" part: h2 refuses a connection window above 2^31 - 1
//!   (FLOW_CONTROL_ERROR), so the increments a client can send add up to at most the
//!   response bytes sent plus 2 GiB, and a client inflating them earns at most
//!   2^31 / 1024 = 2M frames over a connection's life (nginx lets any connection send
//!   8 MiB of frame overhead beyond 8 times its payload before "flood detected", some
//!   645k 13-byte WINDOW_UPDATEs).
//!
//! Why these numbers, against what legitimate clients send:
//! - WINDOW_UPDATE: curl and h2load (nghttp2), Chrome, Firefox, hyper/h2 and
//!   grpc-java acknowledge half a window at a time (32 KiB or more), Go's client and
//!   grpc-go at least 4 KiB at a time, one frame for the connection and one for the
//!   stream: at 1 frame earned per KiB, each pair earns 4 or more and spends 2. At
//!   gigabytes a second they never draw on the time budget.
//! - PRIORITY, RST_STREAM: browsers send at most a few per request (a cancelled
//!   navigation resets its streams); each request earns 8.
//! - PING: hyper's and gRPC's window-sizing PINGs are one per round trip at most;
//!   ACKs answer the worker's keep-alive PING, one per `header_read_timeout`.
//! - SETTINGS: one or two per connection; empty DATA without END_STREAM: h2 itself
//!   closes a connection after 100 (`too_many_data_frames`).
//!
//! The time budget, 1000 frames at once and 1000 a second (as for PING and SETTINGS),
//! is then only a margin. It is also what a client gets per connection before GOAWAY:
//! about 1 ms of a worker's time, less than accepting the connection (and a TLS
//! handshake) costs, so reconnecting buys a flood no leverage; with 10,000 a connection
//! got 7 ms. The floods measured before these budgets ran 6M frames a second on one
//! connection for as long as the client liked (bench/RESULTS.md has the numbers).

use crate::shared::scoreboard::monotonic_ms;

/// PING and SETTINGS frames an HTTP/2 client may send at once, and per second after
/// that, before its connection is closed. Clients send a handful (hyper's and gRPC's
/// window-sizing PINGs are one per round trip at most, hyper's 100 ms apart); a flood
/// sends hundreds of thousands a second, each costing the worker as much as the client.
pub(crate) const H2_CONTROL_BURST: u32 = 1000;
pub(crate) const H2_CONTROL_PER_SEC: u64 = 1000;
/// Payload-free frames (see the module doc) a client may send at once, and per second
/// after that, beyond what its requests and acknowledged response bytes earn.
pub(crate) const H2_IDLE_BURST: u32 = 1000;
pub(crate) const H2_IDLE_PER_SEC: u64 = 1000;
/// Payload-free frames each request (HEADERS frame) earns.
pub(crate) const H2_IDLE_PER_REQUEST: u32 = 8;
/// Response bytes acknowledged on the connection window that earn one payload-free frame.
pub(crate) const H2_ACKED_BYTES_PER_FRAME: u64 = 1024;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;
/// The last frame type RFC 9113 defines (CONTINUATION); h2 ignores the types above.
const LAST_KNOWN: u8 = 0x9;
/// ACK on SETTINGS and PING; END_STREAM on DATA.
const ACK_OR_END_STREAM: u8 = 0x1;

/// What a frame does to the budgets, by its head alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cost {
    /// Request data and heads (DATA with payload or END_STREAM, CONTINUATION, GOAWAY,
    /// PUSH_PROMISE, which h2 refuses).
    Free,
    /// A new request head (or trailers): earns idle credit.
    Request,
    /// PING or SETTINGS without ACK: the server must answer; the `answered` budget.
    Answered,
    /// A payload-free frame: the idle budget.
    Idle,
    /// WINDOW_UPDATE on the connection: the idle budget, and its increment earns.
    ConnectionWindow,
}

/// The cost of a frame with this head (type, flags, payload length, stream).
pub(crate) fn cost(kind: u8, flags: u8, length: usize, stream: u32) -> Cost {
    match kind {
        DATA if length == 0 && flags & ACK_OR_END_STREAM == 0 => Cost::Idle,
        HEADERS => Cost::Request,
        SETTINGS | PING if flags & ACK_OR_END_STREAM == 0 => Cost::Answered,
        SETTINGS | PING | PRIORITY | RST_STREAM => Cost::Idle,
        WINDOW_UPDATE if stream == 0 => Cost::ConnectionWindow,
        WINDOW_UPDATE => Cost::Idle,
        kind if kind > LAST_KNOWN => Cost::Idle,
        _ => Cost::Free,
    }
}

/// Frames allowed at once, refilled over time up to the burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bucket {
    pub(crate) credit: u32,
    pub(crate) refilled_ms: u64,
}

impl Bucket {
    fn full(burst: u32) -> Bucket {
        Bucket {
            credit: burst,
            refilled_ms: monotonic_ms(),
        }
    }

    /// Spends one frame; false when none is left, even after a refill for the time
    /// since the last one. The clock is read only when the credit is spent.
    fn spend(&mut self, burst: u32, per_sec: u64) -> bool {
        if self.credit == 0 {
            let now = monotonic_ms();
            let earned = now.saturating_sub(self.refilled_ms) * per_sec / 1000;
            if earned == 0 {
                return false;
            }
            self.credit = earned.min(u64::from(burst)) as u32;
            self.refilled_ms = now;
        }
        self.credit -= 1;
        true
    }

    fn earn(&mut self, frames: u64, burst: u32) {
        self.credit = (u64::from(self.credit) + frames).min(u64::from(burst)) as u32;
    }
}

/// What the IO does with a piece of the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    /// All of it goes to hyper.
    Pass,
    /// The client floods: the first `n` bytes go to hyper, ending the frame that broke
    /// the budget (a frame boundary), then [`CALM`], then the end.
    Cut(usize),
}

/// The frame follower of one HTTP/2 connection (see the module doc).
pub(crate) struct H2Frames {
    /// Bytes left of the connection preface or of the current frame's payload.
    pub(crate) skip: usize,
    pub(crate) head: [u8; 9],
    pub(crate) have: usize,
    pub(crate) answered: Bucket,
    pub(crate) idle: Bucket,
    /// A connection WINDOW_UPDATE's increment as it is read (`window_have` bytes of 4),
    /// and acknowledged bytes not yet worth a frame.
    window: [u8; 4],
    window_have: u8,
    reading_window: bool,
    pub(crate) acked: u64,
    /// A frame broke a budget: the rest of it passes, then the connection is cut.
    pub(crate) flooded: bool,
}

impl H2Frames {
    pub(crate) fn new() -> H2Frames {
        H2Frames {
            skip: crate::worker::http::sniff::H2_PREFACE.len(),
            head: [0; 9],
            have: 0,
            answered: Bucket::full(H2_CONTROL_BURST),
            idle: Bucket::full(H2_IDLE_BURST),
            window: [0; 4],
            window_have: 0,
            reading_window: false,
            acked: 0,
            flooded: false,
        }
    }

    /// Follows `data`, the next bytes for hyper.
    pub(crate) fn follow(&mut self, data: &[u8]) -> Follow {
        let mut at = 0;
        loop {
            if self.flooded && self.skip == 0 {
                return Follow::Cut(at);
            }
            if at == data.len() {
                return Follow::Pass;
            }
            if self.skip > 0 {
                let n = self.skip.min(data.len() - at);
                if self.reading_window {
                    self.read_window(&data[at..at + n]);
                }
                self.skip -= n;
                at += n;
                continue;
            }
            let n = (self.head.len() - self.have).min(data.len() - at);
            self.head[self.have..self.have + n].copy_from_slice(&data[at..at + n]);
            self.have += n;
            at += n;
            if self.have < self.head.len() {
                continue;
            }
            self.have = 0;
            let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = self.head;
            self.skip = u32::from_be_bytes([0, l0, l1, l2]) as usize;
            let stream = u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff;
            if !self.charge(cost(kind, flags, self.skip, stream)) {
                self.flooded = true;
            }
        }
    }

    /// Applies a frame's cost; false when a budget is exhausted.
    fn charge(&mut self, cost: Cost) -> bool {
        match cost {
            Cost::Free => true,
            Cost::Request => {
                self.idle
                    .earn(u64::from(H2_IDLE_PER_REQUEST), H2_IDLE_BURST);
                true
            }
            Cost::Answered => self.answered.spend(H2_CONTROL_BURST, H2_CONTROL_PER_SEC),
            Cost::Idle => self.idle.spend(H2_IDLE_BURST, H2_IDLE_PER_SEC),
            Cost::ConnectionWindow => {
                // A WINDOW_UPDATE has 4 bytes; h2 refuses others (FRAME_SIZE_ERROR).
                self.reading_window = self.skip == 4;
                self.window_have = 0;
                self.idle.spend(H2_IDLE_BURST, H2_IDLE_PER_SEC)
            }
        }
    }

    /// Collects a connection WINDOW_UPDATE's increment; once whole, it earns.
    fn read_window(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.window[usize::from(self.window_have)] = byte;
            self.window_have += 1;
            if usize::from(self.window_have) == self.window.len() {
                self.reading_window = false;
                let increment = u32::from_be_bytes(self.window) & 0x7fff_ffff;
                self.acked += u64::from(increment);
                let frames = self.acked / H2_ACKED_BYTES_PER_FRAME;
                self.acked %= H2_ACKED_BYTES_PER_FRAME;
                self.idle.earn(frames, H2_IDLE_BURST);
                return;
            }
        }
    }
}

/// Payload bytes of [`CALM`]: 16 KiB, the largest frame hyper's HTTP/2 server takes
/// (`SETTINGS_MAX_FRAME_SIZE`'s default, which forkd keeps).
const CALM_PAYLOAD: usize = 16 * 1024;

/// What hyper reads after a flooding client's last frame, so that h2 itself answers
/// GOAWAY `ENHANCE_YOUR_CALM` (with the right last stream id, at a frame boundary of
/// its own output) and ends the connection: hyper's server offers no way to send
/// GOAWAY with a reason, and only h2 knows where its output frames end.
///
/// It is a HEADERS frame whose block is 16,384 times the HPACK static table's entry 16
/// (`accept-encoding: gzip, deflate`, 60 bytes decoded): 983,040 bytes, more than 4
/// times any header list forkd allows (64 KiB at most, `http.rs`), which h2 takes for
/// abuse (`header_list_way_too_large`) and answers with GOAWAY `ENHANCE_YOUR_CALM`
/// while decoding, before the stream id matters (an indexed field from the static
/// table leaves the HPACK state as it is). `tests/all/h2_floods.rs` checks the GOAWAY's
/// code for every flood; if h2 ever answered otherwise, the read side ends right after
/// this frame all the same.
pub(crate) static CALM: [u8; 9 + CALM_PAYLOAD] = calm();

// Decoded, it is more than 4 times the largest header list forkd allows.
const _: () = assert!(CALM_PAYLOAD * 60 > 4 * crate::worker::http::server::H2_MAX_HEADER_LIST);

const fn calm() -> [u8; 9 + CALM_PAYLOAD] {
    let mut frame = [0x80 | 16; 9 + CALM_PAYLOAD];
    let length = (CALM_PAYLOAD as u32).to_be_bytes();
    frame[0] = length[1];
    frame[1] = length[2];
    frame[2] = length[3];
    frame[3] = HEADERS;
    // END_HEADERS | END_STREAM, stream 2^31 - 1.
    frame[4] = 0x4 | 0x1;
    frame[5] = 0x7f;
    frame[6] = 0xff;
    frame[7] = 0xff;
    frame[8] = 0xff;
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    /// A follower past the preface whose time budget is frozen.
    fn frozen() -> H2Frames {
        let mut frames = H2Frames::new();
        frames.skip = 0;
        frames.answered.refilled_ms = u64::MAX;
        frames.idle.refilled_ms = u64::MAX;
        frames
    }

    #[test]
    fn costs_by_frame_head() {
        assert_eq!(cost(DATA, 0, 0, 1), Cost::Idle);
        assert_eq!(cost(DATA, 0x1, 0, 1), Cost::Free);
        assert_eq!(cost(DATA, 0x8, 0, 1), Cost::Idle);
        assert_eq!(cost(DATA, 0, 1, 1), Cost::Free);
        assert_eq!(cost(HEADERS, 0x4, 20, 1), Cost::Request);
        assert_eq!(cost(PRIORITY, 0, 5, 3), Cost::Idle);
        assert_eq!(cost(RST_STREAM, 0, 4, 3), Cost::Idle);
        assert_eq!(cost(SETTINGS, 0, 6, 0), Cost::Answered);
        assert_eq!(cost(SETTINGS, 0x1, 0, 0), Cost::Idle);
        assert_eq!(cost(PING, 0, 8, 0), Cost::Answered);
        assert_eq!(cost(PING, 0x1, 8, 0), Cost::Idle);
        assert_eq!(cost(0x7, 0, 8, 0), Cost::Free);
        assert_eq!(cost(WINDOW_UPDATE, 0, 4, 0), Cost::ConnectionWindow);
        assert_eq!(cost(WINDOW_UPDATE, 0, 4, 1), Cost::Idle);
        assert_eq!(cost(0x9, 0, 4, 1), Cost::Free);
        assert_eq!(cost(0xa, 0, 4, 1), Cost::Idle);
        assert_eq!(cost(0xff, 0, 0, 0), Cost::Idle);
    }

    #[test]
    fn pings_and_settings_are_counted_across_reads() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]));
        // A DATA frame whose payload looks like PING frames counts for nothing.
        let fake: Vec<u8> = (0..50)
            .flat_map(|_| frame(PING, 0, 0, b"12345678"))
            .collect();
        bytes.extend(frame(DATA, 0, 1, &fake));
        // Acknowledgements are not answered: only the idle budget pays for them.
        for _ in 0..900 {
            bytes.extend(frame(PING, 0x1, 0, b"12345678"));
        }
        for _ in 0..H2_CONTROL_BURST - 1 {
            bytes.extend(frame(PING, 0, 0, b"12345678"));
        }
        let mut frames = H2Frames::new();
        // Fed in uneven pieces, cutting frame heads.
        for piece in bytes.chunks(7) {
            assert_eq!(frames.follow(piece), Follow::Pass);
        }
        // The SETTINGS frame and the PINGs spent the burst.
        assert_eq!(frames.answered.credit, 0);
        assert_eq!(frames.idle.credit, H2_IDLE_BURST - 900);
        let one = frame(PING, 0, 0, b"12345678");
        // One more with no time passed is one too many: it passes whole, then the cut.
        frames.answered.refilled_ms = monotonic_ms() + 60_000;
        assert_eq!(frames.follow(&one), Follow::Cut(one.len()));
        assert_eq!(frames.follow(&one), Follow::Cut(0));
        // ...but time pays for more: 2 s earn 2000, of which a burst is kept.
        let mut later = H2Frames::new();
        later.skip = 0;
        later.answered.credit = 0;
        later.answered.refilled_ms = monotonic_ms() - 2000;
        assert_eq!(later.follow(&one), Follow::Pass);
        assert_eq!(later.answered.credit, H2_CONTROL_BURST - 1);
    }

    #[test]
    fn payload_free_frames_spend_the_idle_budget_and_the_cut_ends_the_frame() {
        let mut frames = frozen();
        frames.idle.credit = 3;
        let mut bytes = frame(PRIORITY, 0, 3, &[0, 0, 0, 1, 16]);
        bytes.extend(frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]));
        bytes.extend(frame(WINDOW_UPDATE, 0, 1, &[0, 0, 0, 1]));
        assert_eq!(frames.follow(&bytes), Follow::Pass);
        assert_eq!(frames.idle.credit, 0);
        // The fourth: its head and payload pass, then the cut, whatever the pieces.
        let fourth = frame(0xfa, 0, 0, b"abc");
        let mut cut = frozen();
        cut.idle.credit = 0;
        assert_eq!(cut.follow(&fourth[..9]), Follow::Pass);
        assert_eq!(cut.follow(&fourth[9..10]), Follow::Pass);
        let mut rest = fourth[10..].to_vec();
        rest.extend(frame(PING, 0, 0, b"12345678"));
        assert_eq!(cut.follow(&rest), Follow::Cut(2));
        // Empty DATA ends at its head.
        let mut empty = frozen();
        empty.idle.credit = 0;
        let mut two = frame(DATA, 0, 1, &[]);
        two.extend(frame(DATA, 0, 1, &[]));
        assert_eq!(empty.follow(&two), Follow::Cut(9));
    }

    #[test]
    fn requests_and_acknowledged_bytes_earn_idle_credit() {
        let mut frames = frozen();
        frames.idle.credit = 0;
        // A request earns its few frames.
        assert_eq!(
            frames.follow(&frame(HEADERS, 0x4, 1, b"\x82")),
            Follow::Pass
        );
        assert_eq!(frames.idle.credit, H2_IDLE_PER_REQUEST);
        // A connection WINDOW_UPDATE of 4 KiB (cut in the middle of its increment)
        // spends one and earns four, a stream's earns nothing.
        frames.idle.credit = 1;
        let mut acks = frame(WINDOW_UPDATE, 0, 0, &4096u32.to_be_bytes());
        acks.extend(frame(WINDOW_UPDATE, 0, 1, &4096u32.to_be_bytes()));
        for piece in acks.chunks(11) {
            assert_eq!(frames.follow(piece), Follow::Pass);
        }
        assert_eq!(frames.idle.credit, 3);
        // Small increments add up.
        let mut small = Vec::new();
        for _ in 0..2 {
            small.extend(frame(WINDOW_UPDATE, 0, 0, &600u32.to_be_bytes()));
        }
        assert_eq!(frames.follow(&small), Follow::Pass);
        assert_eq!((frames.idle.credit, frames.acked), (2, 1200 - 1024));
        // Earned credit is capped at the burst.
        frames.follow(&frame(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes()));
        assert_eq!(frames.idle.credit, H2_IDLE_BURST);
        // A WINDOW_UPDATE flood of +1 on a stream runs out.
        let flood: Vec<u8> = (0..H2_IDLE_BURST + 1)
            .flat_map(|_| frame(WINDOW_UPDATE, 0, 1, &1u32.to_be_bytes()))
            .collect();
        assert_eq!(frames.follow(&flood), Follow::Cut(flood.len()));
    }

    #[test]
    fn the_calm_frame_is_one_whole_headers_frame() {
        let length = u32::from_be_bytes([0, CALM[0], CALM[1], CALM[2]]) as usize;
        assert_eq!(length + 9, CALM.len());
        assert_eq!((CALM[3], CALM[4]), (HEADERS, 0x5));
        assert!(CALM[9..].iter().all(|&b| b == 0x90));
    }
}

#[cfg(test)]
// The property test of the frame follower lives with the other harnesses in tests/fuzz/.
#[path = "../../../tests/fuzz/h2_frames.rs"]
mod fuzz;
