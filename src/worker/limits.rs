//! `[limits]` for HTTP/1: a scanner that follows the message framing of the bytes a
//! connection reads, before hyper parses them, to find where each request head starts
//! and ends and to check it against `request_line` (414), `request_fields` and
//! `request_field_size` (431) and `max_body` (413: a declared `Content-Length`, or a
//! chunked body that grows past it).
//!
//! Why not leave it to hyper: hyper answers 431 for any head larger than its buffer
//! (also for a long request line), has no per-field limit, and has no body limit. The
//! scanner sees every head before hyper does (the IO wrapper holds back an incomplete
//! head), so a head that breaks a limit never reaches hyper: the connection answers the
//! 4xx itself. It follows `Content-Length` and chunked framing to find the next head of
//! a keep-alive or pipelined connection; where it cannot follow the bytes (HTTP/2,
//! upgrades, `CONNECT`, framing hyper will reject anyway) it steps aside for the rest
//! of the connection and hyper's own limits apply.

use crate::config::Limits;
use crate::scoreboard::Rejection;

/// The limits the scanner enforces, from `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    pub request_line: usize,
    pub fields: usize,
    pub field_size: usize,
    pub max_body: u64,
}

impl HeadLimits {
    pub fn from_config(limits: &Limits) -> HeadLimits {
        HeadLimits {
            request_line: limits.request_line,
            fields: limits.request_fields,
            field_size: limits.request_field_size,
            max_body: limits.max_body,
        }
    }

    /// The most bytes a head within the limits can take (with CRLFs), for hyper's
    /// buffer, which must hold a whole head.
    pub fn max_head_bytes(&self) -> usize {
        self.request_line
            .saturating_add(2)
            .saturating_add(
                self.fields
                    .saturating_mul(self.field_size.saturating_add(2)),
            )
            .saturating_add(2)
    }
}

/// A limit a request broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    RequestLine,
    TooManyFields,
    FieldTooLarge,
    BodyTooLarge,
}

impl Violation {
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Violation::RequestLine => (414, "URI Too Long"),
            Violation::TooManyFields | Violation::FieldTooLarge => {
                (431, "Request Header Fields Too Large")
            }
            Violation::BodyTooLarge => (413, "Content Too Large"),
        }
    }

    pub fn rejection(self) -> Rejection {
        match self {
            Violation::RequestLine => Rejection::RequestLine,
            Violation::TooManyFields => Rejection::RequestFields,
            Violation::FieldTooLarge => Rejection::RequestFieldSize,
            Violation::BodyTooLarge => Rejection::MaxBody,
        }
    }

    /// The response body: which limit, and its value.
    pub fn explain(self, limits: &HeadLimits) -> String {
        match self {
            Violation::RequestLine => format!(
                "request line longer than {} bytes (limits.request_line)\n",
                limits.request_line
            ),
            Violation::TooManyFields => format!(
                "more than {} header fields (limits.request_fields)\n",
                limits.fields
            ),
            Violation::FieldTooLarge => format!(
                "a header field longer than {} bytes (limits.request_field_size)\n",
                limits.field_size
            ),
            Violation::BodyTooLarge => format!(
                "request body larger than {} bytes (limits.max_body)\n",
                limits.max_body
            ),
        }
    }
}

/// What to do with the bytes just scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Give them all to hyper.
    Clean,
    /// A head starts at this offset and is not complete yet: hold it back. The next
    /// call must pass the held bytes from that offset on, plus what arrived since.
    PartialHead { start: usize },
    /// The head starting at `start` breaks a limit: give hyper only what is before it.
    HeadViolation { start: usize, violation: Violation },
    /// A chunked body grew past `max_body` at this offset.
    BodyViolation { at: usize },
}

#[derive(Debug, Default, Clone)]
struct Framing {
    content_length: Option<u64>,
    bad_content_length: bool,
    transfer_encoding: bool,
    chunked: bool,
    upgrade: bool,
}

/// Progress through one head, in offsets from its first byte.
#[derive(Debug, Default, Clone)]
struct HeadProgress {
    scanned: usize,
    line_start: usize,
    request_line_seen: bool,
    fields: usize,
    framing: Framing,
}

#[derive(Debug, Clone)]
enum Chunk {
    Size {
        value: u64,
        digits: u32,
        extension: bool,
    },
    Data(u64),
    DataEnd,
    Trailer {
        line: usize,
    },
}

#[derive(Debug, Clone)]
enum Phase {
    Head(HeadProgress),
    Body(u64),
    Chunked(Chunk),
    /// Not following this connection any more (HTTP/2, upgrade, unknown framing).
    Aside,
}

enum HeadStep {
    NeedMore,
    Complete { end: usize },
    Violation(Violation),
    Http2,
}

/// Follows one connection's HTTP/1 framing.
#[derive(Debug, Clone)]
pub struct Scanner {
    limits: HeadLimits,
    phase: Phase,
    /// Data bytes of the current chunked body so far.
    body_bytes: u64,
    http2: bool,
}

impl Scanner {
    pub fn new(limits: HeadLimits) -> Scanner {
        Scanner {
            limits,
            phase: Phase::Head(HeadProgress::default()),
            body_bytes: 0,
            http2: false,
        }
    }

    /// The connection started with the HTTP/2 prior-knowledge preface.
    pub fn is_http2(&self) -> bool {
        self.http2
    }

    /// Scans `data`. In a head, `data` starts at the head's first byte (see
    /// [`Scan::PartialHead`]); otherwise it is the bytes that arrived.
    pub fn scan(&mut self, data: &[u8]) -> Scan {
        let mut pos = 0;
        loop {
            match &mut self.phase {
                Phase::Aside => return Scan::Clean,
                Phase::Body(remaining) => {
                    let available = (data.len() - pos) as u64;
                    if available < *remaining {
                        *remaining -= available;
                        return Scan::Clean;
                    }
                    pos += *remaining as usize;
                    self.phase = Phase::Head(HeadProgress::default());
                }
                Phase::Chunked(_) => match self.scan_chunked(data, &mut pos) {
                    Some(result) => return result,
                    None => continue,
                },
                Phase::Head(progress) => {
                    if pos == data.len() && progress.scanned == 0 {
                        return Scan::Clean;
                    }
                    let head = &data[pos..];
                    match scan_head(progress, head, &self.limits) {
                        HeadStep::NeedMore => return Scan::PartialHead { start: pos },
                        HeadStep::Violation(violation) => {
                            return Scan::HeadViolation {
                                start: pos,
                                violation,
                            }
                        }
                        HeadStep::Http2 => {
                            self.http2 = true;
                            self.phase = Phase::Aside;
                            return Scan::Clean;
                        }
                        HeadStep::Complete { end } => {
                            let framing = std::mem::take(&mut progress.framing);
                            match self.next_phase(&framing) {
                                Ok(phase) => self.phase = phase,
                                Err(violation) => {
                                    return Scan::HeadViolation {
                                        start: pos,
                                        violation,
                                    }
                                }
                            }
                            pos += end;
                        }
                    }
                }
            }
        }
    }

    /// What follows a complete head.
    fn next_phase(&mut self, framing: &Framing) -> Result<Phase, Violation> {
        if framing.upgrade {
            return Ok(Phase::Aside);
        }
        if framing.transfer_encoding {
            if framing.chunked {
                self.body_bytes = 0;
                return Ok(Phase::Chunked(Chunk::Size {
                    value: 0,
                    digits: 0,
                    extension: false,
                }));
            }
            return Ok(Phase::Aside);
        }
        if framing.bad_content_length {
            return Ok(Phase::Aside);
        }
        match framing.content_length {
            Some(length) if length > self.limits.max_body => Err(Violation::BodyTooLarge),
            Some(length) if length > 0 => Ok(Phase::Body(length)),
            _ => Ok(Phase::Head(HeadProgress::default())),
        }
    }

    /// Follows chunked framing from `*pos`; `Some` ends this scan call.
    fn scan_chunked(&mut self, data: &[u8], pos: &mut usize) -> Option<Scan> {
        let Phase::Chunked(chunk) = &mut self.phase else {
            return Some(Scan::Clean);
        };
        while *pos < data.len() {
            match chunk {
                Chunk::Data(remaining) => {
                    let available = (data.len() - *pos) as u64;
                    let take = available.min(*remaining);
                    self.body_bytes += take;
                    if self.body_bytes > self.limits.max_body {
                        let over = (self.body_bytes - self.limits.max_body) as usize;
                        return Some(Scan::BodyViolation {
                            at: *pos + take as usize - over,
                        });
                    }
                    *pos += take as usize;
                    *remaining -= take;
                    if *remaining == 0 {
                        *chunk = Chunk::DataEnd;
                    }
                }
                Chunk::Size {
                    value,
                    digits,
                    extension,
                } => {
                    let byte = data[*pos];
                    *pos += 1;
                    match byte {
                        b'\n' => {
                            if *digits == 0 {
                                self.phase = Phase::Aside;
                                return Some(Scan::Clean);
                            }
                            *chunk = if *value == 0 {
                                Chunk::Trailer { line: 0 }
                            } else {
                                Chunk::Data(*value)
                            };
                        }
                        b'\r' => {}
                        _ if *extension => {}
                        b';' | b' ' | b'\t' => *extension = true,
                        _ => match (byte as char).to_digit(16) {
                            Some(d) if *digits < 16 => {
                                *value = *value * 16 + u64::from(d);
                                *digits += 1;
                            }
                            _ => {
                                self.phase = Phase::Aside;
                                return Some(Scan::Clean);
                            }
                        },
                    }
                }
                Chunk::DataEnd => {
                    let byte = data[*pos];
                    *pos += 1;
                    match byte {
                        b'\r' => {}
                        b'\n' => {
                            *chunk = Chunk::Size {
                                value: 0,
                                digits: 0,
                                extension: false,
                            }
                        }
                        _ => {
                            self.phase = Phase::Aside;
                            return Some(Scan::Clean);
                        }
                    }
                }
                Chunk::Trailer { line } => {
                    let byte = data[*pos];
                    *pos += 1;
                    match byte {
                        b'\n' if *line == 0 => {
                            self.phase = Phase::Head(HeadProgress::default());
                            return None;
                        }
                        b'\n' => *line = 0,
                        b'\r' => {}
                        _ => *line += 1,
                    }
                }
            }
        }
        Some(Scan::Clean)
    }
}

/// Scans a head from `progress` on; `head` starts at the head's first byte.
fn scan_head(progress: &mut HeadProgress, head: &[u8], limits: &HeadLimits) -> HeadStep {
    loop {
        let Some(found) = memchr::memchr(b'\n', &head[progress.scanned..]) else {
            progress.scanned = head.len();
            // An unfinished line already over its limit (with room for its CR) fails now,
            // without waiting for the rest.
            let length = head.len() - progress.line_start;
            return if !progress.request_line_seen && length > limits.request_line + 1 {
                if head[progress.line_start..].starts_with(b"PRI * HTTP/2.0") {
                    HeadStep::Http2
                } else {
                    HeadStep::Violation(Violation::RequestLine)
                }
            } else if progress.request_line_seen && length > limits.field_size + 1 {
                HeadStep::Violation(Violation::FieldTooLarge)
            } else {
                HeadStep::NeedMore
            };
        };
        let newline = progress.scanned + found;
        let mut line = &head[progress.line_start..newline];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        progress.scanned = newline + 1;
        let next_line = newline + 1;
        if !progress.request_line_seen {
            progress.line_start = next_line;
            if line.is_empty() {
                // Empty lines before a request line are ignored (RFC 9112, 2.2).
                continue;
            }
            if line == b"PRI * HTTP/2.0" {
                return HeadStep::Http2;
            }
            if line.len() > limits.request_line {
                return HeadStep::Violation(Violation::RequestLine);
            }
            if line.starts_with(b"CONNECT ") {
                progress.framing.upgrade = true;
            }
            progress.request_line_seen = true;
            continue;
        }
        if line.is_empty() {
            return HeadStep::Complete { end: next_line };
        }
        progress.fields += 1;
        if progress.fields > limits.fields {
            return HeadStep::Violation(Violation::TooManyFields);
        }
        if line.len() > limits.field_size {
            return HeadStep::Violation(Violation::FieldTooLarge);
        }
        inspect_field(line, &mut progress.framing);
        progress.line_start = next_line;
    }
}

/// Notes the fields that decide where the body ends.
fn inspect_field(line: &[u8], framing: &mut Framing) {
    let Some(colon) = memchr::memchr(b':', line) else {
        return;
    };
    let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
    if name.eq_ignore_ascii_case(b"content-length") {
        // "5" or a list of equal values ("5, 5"), as hyper accepts; anything else hyper
        // rejects, so the scanner steps aside.
        let mut parsed = None;
        for part in value.split(|b| *b == b',') {
            let part = part.trim_ascii();
            let number = std::str::from_utf8(part)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok());
            match (number, parsed) {
                (Some(n), None) => parsed = Some(n),
                (Some(n), Some(previous)) if n == previous => {}
                _ => {
                    framing.bad_content_length = true;
                    return;
                }
            }
        }
        match (parsed, framing.content_length) {
            (Some(n), None) => framing.content_length = Some(n),
            (Some(n), Some(previous)) if n == previous => {}
            _ => framing.bad_content_length = true,
        }
    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
        framing.transfer_encoding = true;
        framing.chunked = value
            .rsplit(|b| *b == b',')
            .next()
            .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    } else if name.eq_ignore_ascii_case(b"upgrade") {
        framing.upgrade = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        request_line: 20,
        fields: 3,
        field_size: 30,
        max_body: 10,
    };

    fn scan_all(input: &[u8]) -> Scan {
        Scanner::new(LIMITS).scan(input)
    }

    /// Feeds `input` in pieces of `step` bytes the way the IO wrapper does (holding an
    /// incomplete head) and returns the bytes given to hyper and the final result.
    fn feed(input: &[u8], step: usize) -> (Vec<u8>, Scan) {
        let mut scanner = Scanner::new(LIMITS);
        let (mut delivered, mut held) = (Vec::new(), Vec::new());
        let mut last = Scan::Clean;
        for piece in input.chunks(step) {
            let mut data = std::mem::take(&mut held);
            data.extend_from_slice(piece);
            last = scanner.scan(&data);
            match last {
                Scan::Clean => delivered.extend_from_slice(&data),
                Scan::PartialHead { start } => {
                    delivered.extend_from_slice(&data[..start]);
                    held = data[start..].to_vec();
                }
                Scan::HeadViolation { start, .. } => {
                    delivered.extend_from_slice(&data[..start]);
                    return (delivered, last);
                }
                Scan::BodyViolation { at } => {
                    delivered.extend_from_slice(&data[..at]);
                    return (delivered, last);
                }
            }
        }
        (delivered, last)
    }

    #[test]
    fn pipelined_requests_within_limits_pass_whole() {
        let input: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\n\r\n";
        for step in [1, 2, 3, 7, 64, 1000] {
            let (delivered, last) = feed(input, step);
            assert_eq!(delivered, input, "step {step}");
            assert_eq!(last, Scan::Clean, "step {step}");
        }
    }

    #[test]
    fn an_incomplete_head_is_held() {
        assert_eq!(
            scan_all(b"GET / HTTP/1.1\r\n\r\nGET /x HT"),
            Scan::PartialHead { start: 18 }
        );
        assert_eq!(scan_all(b""), Scan::Clean);
    }

    #[test]
    fn long_request_line_is_414_even_before_its_end() {
        let line = b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n";
        assert_eq!(
            scan_all(line),
            Scan::HeadViolation {
                start: 0,
                violation: Violation::RequestLine
            }
        );
        // No newline yet, but already too long.
        assert_eq!(
            scan_all(&line[..30]),
            Scan::HeadViolation {
                start: 0,
                violation: Violation::RequestLine
            }
        );
        // Exactly at the limit is fine.
        assert_eq!(scan_all(b"GET /aaaaaa HTTP/1.1\r\n\r\n"), Scan::Clean);
        assert!(scan_all(b"GET /aaaaaaa HTTP/1.1\r\n\r\n").is_violation());
    }

    #[test]
    fn too_many_or_too_large_fields_are_431() {
        let many = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\n";
        assert_eq!(
            scan_all(many),
            Scan::HeadViolation {
                start: 0,
                violation: Violation::TooManyFields
            }
        );
        let large = b"GET / HTTP/1.1\r\nx-long: 012345678901234567890123\r\n\r\n";
        assert_eq!(
            scan_all(large),
            Scan::HeadViolation {
                start: 0,
                violation: Violation::FieldTooLarge
            }
        );
        // The second request of a pipeline breaks the limit: the first passes.
        let mut pipeline = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        pipeline.extend_from_slice(large);
        assert_eq!(
            feed(&pipeline, 5),
            (
                b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                Scan::HeadViolation {
                    start: 0,
                    violation: Violation::FieldTooLarge
                }
            )
        );
    }

    #[test]
    fn declared_body_over_max_body_is_413_before_the_body() {
        assert_eq!(
            scan_all(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n"),
            Scan::HeadViolation {
                start: 0,
                violation: Violation::BodyTooLarge
            }
        );
        assert_eq!(
            scan_all(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789"),
            Scan::Clean
        );
    }

    #[test]
    fn chunked_bodies_are_followed_and_limited() {
        let ok: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nabcd\r\n6\r\nefghij\r\n0\r\nx-t: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        for step in [1, 4, 9, 200] {
            assert_eq!(feed(ok, step), (ok.to_vec(), Scan::Clean), "step {step}");
        }
        let over: &[u8] =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nabcdefgh\r\n8\r\nijklmnop\r\n0\r\n\r\n";
        for step in [1, 5, 200] {
            let (delivered, last) = feed(over, step);
            assert!(matches!(last, Scan::BodyViolation { .. }), "step {step}");
            // Everything up to the 10th data byte reached hyper, nothing after.
            let head_and_first = over.len() - b"klmnop\r\n0\r\n\r\n".len();
            assert_eq!(delivered.len(), head_and_first, "step {step}");
        }
    }

    #[test]
    fn http2_and_upgrades_step_aside() {
        let preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00";
        let mut scanner = Scanner::new(LIMITS);
        assert_eq!(scanner.scan(preface), Scan::Clean);
        assert!(scanner.is_http2());
        assert_eq!(scanner.scan(&[0u8; 100]), Scan::Clean);
        let mut scanner = Scanner::new(LIMITS);
        assert_eq!(
            scanner.scan(b"GET / HTTP/1.1\r\nUpgrade: ws\r\n\r\n\xff\xff\xff"),
            Scan::Clean
        );
        assert_eq!(scanner.scan(&[b'x'; 500]), Scan::Clean);
    }

    #[test]
    fn leading_empty_lines_are_ignored() {
        assert_eq!(scan_all(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"), Scan::Clean);
    }

    impl Scan {
        fn is_violation(&self) -> bool {
            matches!(
                self,
                Scan::HeadViolation { .. } | Scan::BodyViolation { .. }
            )
        }
    }
}
