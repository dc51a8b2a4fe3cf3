//! `[limits]` for HTTP/1: a scanner that follows the message framing of the bytes a
//! connection reads, before hyper parses them, to find where each request head starts
//! and ends and to check it against `request_line` (414), `request_fields` and
//! `request_field_size` (431) and `max_body` (413: a declared `Content-Length`, or a
//! chunked body that grows past it), and the chunked trailer section against the same
//! field limits.
//!
//! Why not leave it to hyper: hyper answers 431 for any head larger than its buffer
//! (also for a long request line), has no per-field limit, and has no body limit. The
//! scanner sees every head before hyper does (the IO wrapper holds back an incomplete
//! head), so a head that breaks a limit never reaches hyper: the connection answers the
//! 4xx itself.
//!
//! **One framing, never two.** Two parsers that read the same bytes are a request
//! smuggling hole the moment they disagree on where a message ends. So the scanner
//! accepts a strict subset of what hyper accepts and frames it exactly as hyper does
//! (hyper 1.x `proto/h1/role.rs` for the head, `decode.rs` for chunked bodies): CRLF
//! and nothing else ends every line of chunked framing, a chunk size is hex digits
//! whose value fits in 64 bits, one `Transfer-Encoding: chunked` line or consistent
//! `Content-Length`s and never both. Anything else (a bare LF or CR in chunked
//! framing, an unknown transfer coding, a malformed length, oversized chunk
//! extensions) is [`Violation::Malformed`]: answered 400 and the connection closed,
//! never passed through. The scanner never stops following a connection, except
//! after the HTTP/2 preface (then hyper speaks HTTP/2 on it) and after the app
//! switched protocols (a 101, or a 2xx to `CONNECT`), which the connection tells it
//! ([`Scanner::stop_following`]); an `Upgrade` header on its own changes nothing, as
//! in hyper.
//!
//! A complete head is then checked by `head.rs`: hyper's own parser and `http`'s rules
//! (so that hyper never refuses a head the scanner passed, which would leave its 400
//! unlogged and uncounted) and RFC 9112's Host and target rules; what fails is
//! [`Violation::Malformed`] too.

use crate::worker::http::head::FastHead;
use crate::worker::http::sniff::{sniff, Sniff};
use crate::worker::http::violation::{HeadLimits, Violation};

/// The most bytes of one chunk-size line (digits, whitespace, extensions), and of all
/// extensions of one body; hyper's own cap on extensions is 16 KiB per body.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_CHUNK_EXTENSIONS: usize = 8 * 1024;
/// The most bytes of a trailer section; hyper refuses 16 KiB (without a set
/// `max_header_size`), so the scanner answers first, with 431.
const MAX_TRAILER_BYTES: usize = 8 * 1024;

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
    /// The body of request number `request` (1-based on this connection) breaks a
    /// limit at offset `at`: give hyper only what is before it, then a read error.
    BodyViolation {
        at: usize,
        request: u64,
        violation: Violation,
    },
}

/// What a complete head says about the body that follows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Framing {
    content_length: Option<u64>,
    /// A `Content-Length` hyper would refuse (not digits, unequal values, overflow).
    bad_content_length: bool,
    /// `Transfer-Encoding` lines seen.
    transfer_encodings: u32,
    /// The (last) `Transfer-Encoding` value is exactly `chunked`.
    chunked: bool,
    http10: bool,
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

/// Where the scanner is inside a chunked body; each state names the byte it expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// The first hex digit of a chunk size.
    SizeStart,
    /// More hex digits, or whitespace, `;` or CR.
    Size,
    /// Whitespace after the digits: more of it, `;` or CR.
    SizeSpace,
    /// Extension bytes until CR.
    Extension,
    /// The LF that ends a chunk-size line.
    SizeLf,
    /// Chunk data, this many bytes still to come.
    Data(u64),
    /// The CR, then the LF, after chunk data.
    DataCr,
    DataLf,
    /// After the last chunk: CR (the end) or the first byte of a trailer field.
    EndCr,
    EndLf,
    /// Inside a trailer field line, until its CR.
    Trailer,
    TrailerLf,
}

#[derive(Debug, Clone)]
struct Chunked {
    state: Chunk,
    /// The size of the chunk whose size line is being read.
    size: u64,
    /// Bytes of the current size line and of all extensions so far.
    line_bytes: usize,
    extension_bytes: usize,
    /// Data bytes so far.
    body_bytes: u64,
    /// Trailer fields, bytes of the current one, and of the whole section.
    trailers: usize,
    trailer_line: usize,
    trailer_bytes: usize,
}

#[derive(Debug, Clone)]
enum Phase {
    /// The connection's first bytes, while they could still be the HTTP/2 preface.
    Preface,
    Head(HeadProgress),
    Body(u64),
    Chunked(Box<Chunked>),
    /// Refused: nothing more is scanned (the connection is being closed).
    Refused,
    /// Not HTTP/1 any more: HTTP/2, or the app switched protocols.
    NotFollowing,
}

enum HeadStep {
    NeedMore,
    Complete { end: usize },
    Violation(Violation),
}

/// Follows one connection's HTTP/1 framing.
#[derive(Debug, Clone)]
pub struct Scanner {
    limits: HeadLimits,
    phase: Phase,
    /// Complete heads seen: the number of the request whose body is being read.
    requests: u64,
    http2: bool,
}

impl Scanner {
    pub fn new(limits: HeadLimits) -> Scanner {
        Scanner {
            limits,
            phase: Phase::Preface,
            requests: 0,
            http2: false,
        }
    }

    /// The connection started with the HTTP/2 prior-knowledge preface.
    pub fn is_http2(&self) -> bool {
        self.http2
    }

    /// Whether the bytes expected next are a request body (for `body_read_timeout`).
    pub fn in_body(&self) -> bool {
        matches!(self.phase, Phase::Body(_) | Phase::Chunked(_))
    }

    /// The number of the request whose body is being read (1-based).
    pub fn current_request(&self) -> u64 {
        self.requests
    }

    /// The app switched protocols (101, or 2xx to `CONNECT`): what follows is not
    /// HTTP/1 and hyper hands it to the upgrade.
    pub fn stop_following(&mut self) {
        if !matches!(self.phase, Phase::Refused) {
            self.phase = Phase::NotFollowing;
        }
    }

    /// Scans `data`. In a head, `data` starts at the head's first byte (see
    /// [`Scan::PartialHead`]); otherwise it is the bytes that arrived.
    #[inline]
    pub fn scan(&mut self, data: &[u8]) -> Scan {
        let pos = self.whole_head_first(data);
        if pos == data.len() && pos > 0 && matches!(self.phase, Phase::Head(_)) {
            // The common case: one whole request without a body, and nothing after it.
            return Scan::Clean;
        }
        self.scan_from(data, pos)
    }

    /// [`Scanner::scan`] from `pos` on, byte-exact: the phase machine.
    #[inline(never)]
    fn scan_from(&mut self, data: &[u8], mut pos: usize) -> Scan {
        loop {
            match &mut self.phase {
                Phase::NotFollowing => return Scan::Clean,
                // The IO reads nothing after a refusal; this only keeps bytes from hyper.
                Phase::Refused => {
                    return Scan::HeadViolation {
                        start: pos,
                        violation: Violation::Malformed("data after a refused request"),
                    }
                }
                // Decided as the connection is served (`protocol.rs`), so the two agree.
                Phase::Preface => match sniff(&data[pos..], false) {
                    Sniff::Http1 => self.phase = Phase::Head(HeadProgress::default()),
                    Sniff::Http2 => {
                        self.http2 = true;
                        self.phase = Phase::NotFollowing;
                        return Scan::Clean;
                    }
                    Sniff::Undecided if pos == data.len() => return Scan::Clean,
                    Sniff::Undecided => return Scan::PartialHead { start: pos },
                },
                Phase::Body(remaining) => {
                    let available = (data.len() - pos) as u64;
                    if available < *remaining {
                        *remaining -= available;
                        return Scan::Clean;
                    }
                    pos += *remaining as usize;
                    self.phase = Phase::Head(HeadProgress::default());
                }
                Phase::Chunked(_) => {
                    if let Some(result) = self.scan_chunked(data, &mut pos) {
                        return result;
                    }
                }
                Phase::Head(progress) => {
                    if pos == data.len() && progress.scanned == 0 {
                        return Scan::Clean;
                    }
                    let head = &data[pos..];
                    match scan_head(progress, head, &self.limits) {
                        HeadStep::NeedMore => return Scan::PartialHead { start: pos },
                        HeadStep::Violation(violation) => {
                            self.phase = Phase::Refused;
                            return Scan::HeadViolation {
                                start: pos,
                                violation,
                            };
                        }
                        HeadStep::Complete { end } => {
                            let framing = std::mem::take(&mut progress.framing);
                            let checked = body_framing(&framing, &self.limits).and_then(|phase| {
                                crate::worker::http::head::check(&head[..end], self.limits.fields)
                                    .map(|()| phase)
                            });
                            match checked {
                                Ok(phase) => self.phase = phase,
                                Err(violation) => {
                                    self.phase = Phase::Refused;
                                    return Scan::HeadViolation {
                                        start: pos,
                                        violation,
                                    };
                                }
                            }
                            self.requests += 1;
                            pos += end;
                        }
                    }
                }
            }
        }
    }

    /// When a new head starts at `data`'s first byte and all of it is there within the
    /// limits, takes it in one pass ([`whole_head`]) and returns where it ends, the
    /// scanner now in the phase that follows it; else 0, the scanner untouched, and the
    /// byte-exact loop of [`Scanner::scan`] reads the head (and finds any violation).
    #[inline]
    fn whole_head_first(&mut self, data: &[u8]) -> usize {
        let Phase::Head(progress) = &self.phase else {
            return 0;
        };
        if progress.scanned != 0 {
            return 0;
        }
        let Some(WholeHead {
            end,
            framing,
            certain,
        }) = whole_head(data, &self.limits)
        else {
            return 0;
        };
        if !certain && crate::worker::http::head::check(&data[..end], self.limits.fields).is_err() {
            // The loop refuses it, with the same violation.
            return 0;
        }
        match body_framing(&framing, &self.limits) {
            Ok(phase) => {
                self.phase = phase;
                self.requests += 1;
                end
            }
            // The loop refuses it, with the same violation.
            Err(_) => 0,
        }
    }

    /// Follows chunked framing from `*pos`; `Some` ends this scan call, `None` means the
    /// body ended and the next head starts at `*pos`.
    fn scan_chunked(&mut self, data: &[u8], pos: &mut usize) -> Option<Scan> {
        let request = self.requests;
        let Phase::Chunked(body) = &mut self.phase else {
            return Some(Scan::Clean);
        };
        let max_body = self.limits.max_body;
        let refuse = |phase: &mut Phase, at: usize, violation: Violation| {
            *phase = Phase::Refused;
            Some(Scan::BodyViolation {
                at,
                request,
                violation,
            })
        };
        while *pos < data.len() {
            let at = *pos;
            let byte = data[at];
            if !matches!(body.state, Chunk::Data(_)) {
                *pos = at + 1;
            }
            if matches!(
                body.state,
                Chunk::SizeStart | Chunk::Size | Chunk::SizeSpace | Chunk::Extension
            ) {
                body.line_bytes += 1;
                if body.line_bytes > MAX_CHUNK_LINE {
                    return refuse(
                        &mut self.phase,
                        at,
                        Violation::Malformed("chunk size line too long"),
                    );
                }
            }
            let bad = |what| Err(Violation::Malformed(what));
            let next: Result<Chunk, Violation> = match body.state {
                Chunk::Data(remaining) => {
                    let take = ((data.len() - at) as u64).min(remaining);
                    *pos = at + take as usize;
                    Ok(if take == remaining {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(remaining - take)
                    })
                }
                Chunk::SizeStart | Chunk::Size => match hex_value(byte) {
                    Some(digit) => {
                        match body.size.checked_mul(16).and_then(|s| s.checked_add(digit)) {
                            None => bad("chunk size does not fit in 64 bits"),
                            // Known to be too large before its data arrives.
                            Some(size) if size > max_body - body.body_bytes => {
                                Err(Violation::BodyTooLarge)
                            }
                            Some(size) => {
                                body.size = size;
                                Ok(Chunk::Size)
                            }
                        }
                    }
                    None if body.state == Chunk::SizeStart => bad("chunk size without digits"),
                    None => match byte {
                        b' ' | b'\t' => Ok(Chunk::SizeSpace),
                        b';' => Ok(Chunk::Extension),
                        b'\r' => Ok(Chunk::SizeLf),
                        _ => bad("invalid byte in chunk size"),
                    },
                },
                Chunk::SizeSpace => match byte {
                    b' ' | b'\t' => Ok(Chunk::SizeSpace),
                    b';' => Ok(Chunk::Extension),
                    b'\r' => Ok(Chunk::SizeLf),
                    _ => bad("invalid byte after chunk size"),
                },
                Chunk::Extension => match byte {
                    b'\r' => Ok(Chunk::SizeLf),
                    b'\n' => bad("bare LF in chunk extension"),
                    _ => {
                        body.extension_bytes += 1;
                        if body.extension_bytes > MAX_CHUNK_EXTENSIONS {
                            bad("chunk extensions too long")
                        } else {
                            Ok(Chunk::Extension)
                        }
                    }
                },
                Chunk::SizeLf => match byte {
                    b'\n' => {
                        let size = std::mem::take(&mut body.size);
                        body.line_bytes = 0;
                        body.body_bytes += size;
                        Ok(if size == 0 {
                            Chunk::EndCr
                        } else {
                            Chunk::Data(size)
                        })
                    }
                    _ => bad("chunk size line not ended by CRLF"),
                },
                Chunk::DataCr => match byte {
                    b'\r' => Ok(Chunk::DataLf),
                    _ => bad("chunk data not followed by CRLF"),
                },
                Chunk::DataLf => match byte {
                    b'\n' => Ok(Chunk::SizeStart),
                    _ => bad("chunk data not followed by CRLF"),
                },
                Chunk::EndCr => match byte {
                    b'\r' => Ok(Chunk::EndLf),
                    b'\n' => bad("bare LF in trailer section"),
                    _ => {
                        body.trailers += 1;
                        body.trailer_line = 1;
                        body.trailer_bytes += 1;
                        if body.trailers > self.limits.fields {
                            Err(Violation::TooManyFields)
                        } else {
                            Ok(Chunk::Trailer)
                        }
                    }
                },
                Chunk::EndLf => match byte {
                    b'\n' => {
                        self.phase = Phase::Head(HeadProgress::default());
                        return None;
                    }
                    _ => bad("trailer section not ended by CRLF"),
                },
                Chunk::Trailer => {
                    body.trailer_bytes += 1;
                    match byte {
                        b'\n' => bad("bare LF in trailer field"),
                        b'\r' => Ok(Chunk::TrailerLf),
                        _ => {
                            // The line without its CR, as for header fields.
                            body.trailer_line += 1;
                            if body.trailer_line > self.limits.field_size
                                || body.trailer_bytes > MAX_TRAILER_BYTES
                            {
                                Err(Violation::FieldTooLarge)
                            } else {
                                Ok(Chunk::Trailer)
                            }
                        }
                    }
                }
                Chunk::TrailerLf => match byte {
                    b'\n' => {
                        body.trailer_bytes += 1;
                        Ok(Chunk::EndCr)
                    }
                    _ => bad("bare CR in trailer field"),
                },
            };
            match next {
                Ok(state) => body.state = state,
                Err(violation) => return refuse(&mut self.phase, at, violation),
            }
        }
        Some(Scan::Clean)
    }
}

fn hex_value(byte: u8) -> Option<u64> {
    (byte as char).to_digit(16).map(u64::from)
}

/// What follows a complete head: hyper's rules (RFC 9112, 6.3), or a refusal where
/// hyper would refuse too or where the request is ambiguous.
fn body_framing(framing: &Framing, limits: &HeadLimits) -> Result<Phase, Violation> {
    let malformed = |what| Err(Violation::Malformed(what));
    if framing.transfer_encodings > 0 {
        if framing.http10 {
            return malformed("Transfer-Encoding in an HTTP/1.0 request");
        }
        if framing.content_length.is_some() || framing.bad_content_length {
            return malformed("both Transfer-Encoding and Content-Length");
        }
        if framing.transfer_encodings > 1 || !framing.chunked {
            return malformed("Transfer-Encoding other than one \"chunked\"");
        }
        return Ok(Phase::Chunked(Box::new(Chunked {
            state: Chunk::SizeStart,
            size: 0,
            line_bytes: 0,
            extension_bytes: 0,
            body_bytes: 0,
            trailers: 0,
            trailer_line: 0,
            trailer_bytes: 0,
        })));
    }
    if framing.bad_content_length {
        return malformed("invalid Content-Length");
    }
    match framing.content_length {
        Some(length) if length > limits.max_body => Err(Violation::BodyTooLarge),
        Some(length) if length > 0 => Ok(Phase::Body(length)),
        _ => Ok(Phase::Head(HeadProgress::default())),
    }
}

/// A head read in one pass, when all of it is in `head` (which starts at its first
/// byte), it breaks no limit and has no empty line before its request line: where it
/// ends and its framing, exactly as [`scan_head`] finds them (the tests compare the
/// two); otherwise None. It keeps its counts in locals rather than in a
/// [`HeadProgress`], which is what makes it cheaper than `scan_head` on the whole
/// heads nearly every request arrives as. The same pass hands each line to the head
/// check's fast path ([`FastHead`]): `certain` says the head is one
/// `head::check` accepts, so it need not run (false: it must).
#[inline(never)]
fn whole_head(head: &[u8], limits: &HeadLimits) -> Option<WholeHead> {
    let mut framing = Framing::default();
    let mut fast = FastHead::default();
    let mut fields = 0;
    let mut line_start = 0;
    let lf = LineEnds::new();
    while let Some(found) = lf.find(&head[line_start..]) {
        let newline = line_start + found;
        let mut line = &head[line_start..newline];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        if line_start == 0 {
            // The request line; empty lines before it take the byte-exact path.
            if line.is_empty() || line.len() > limits.request_line {
                return None;
            }
            framing.http10 = line.ends_with(b" HTTP/1.0");
            fast.request_line(line);
        } else if line.is_empty() {
            return Some(WholeHead {
                end: newline + 1,
                framing,
                certain: fast.certain(),
            });
        } else {
            fields += 1;
            if fields > limits.fields || line.len() > limits.field_size {
                return None;
            }
            inspect_field(line, &mut framing);
            fast.field(line);
        }
        line_start = newline + 1;
    }
    None
}

/// A head [`whole_head`] read.
struct WholeHead {
    /// Just after its empty line.
    end: usize,
    framing: Framing,
    /// `head::check` certainly accepts it ([`FastHead`]).
    certain: bool,
}

/// A search for LF, made once per head: on x86_64 with AVX2 memchr's AVX2 searcher
/// itself, without `memchr::memchr`'s dispatch on every call (a head is a few short
/// searches); elsewhere `memchr::memchr`.
struct LineEnds {
    #[cfg(target_arch = "x86_64")]
    avx2: Option<memchr::arch::x86_64::avx2::memchr::One>,
}

impl LineEnds {
    #[inline]
    fn new() -> LineEnds {
        LineEnds {
            #[cfg(target_arch = "x86_64")]
            avx2: memchr::arch::x86_64::avx2::memchr::One::new(b'\n'),
        }
    }

    #[inline]
    fn find(&self, haystack: &[u8]) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = &self.avx2 {
            return avx2.find(haystack);
        }
        memchr::memchr(b'\n', haystack)
    }
}

/// Scans a head from `progress` on; `head` starts at the head's first byte.
fn scan_head(progress: &mut HeadProgress, head: &[u8], limits: &HeadLimits) -> HeadStep {
    loop {
        let Some(found) = memchr::memchr(b'\n', &head[progress.scanned..]) else {
            progress.scanned = head.len();
            // An unfinished line already over its limit (with room for its CR) fails now,
            // without waiting for the rest. Empty lines before the request line count
            // against its limit: the request line is measured from the head's start.
            return if !progress.request_line_seen && head.len() > limits.request_line + 1 {
                HeadStep::Violation(Violation::RequestLine)
            } else if progress.request_line_seen
                && head.len() - progress.line_start > limits.field_size + 1
            {
                // Not the empty line that ends the head: one more field, and a long one.
                HeadStep::Violation(if progress.fields >= limits.fields {
                    Violation::TooManyFields
                } else {
                    Violation::FieldTooLarge
                })
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
            let with_leading = newline - usize::from(head[..newline].ends_with(b"\r"));
            if with_leading > limits.request_line {
                return HeadStep::Violation(Violation::RequestLine);
            }
            progress.line_start = next_line;
            if line.is_empty() {
                // Empty lines before a request line are ignored (RFC 9112, 2.2), as
                // httparse does, but they count against `request_line`.
                continue;
            }
            progress.framing.http10 = line.ends_with(b" HTTP/1.0");
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

/// Notes the fields that decide where the body ends, as hyper reads them (httparse
/// gives hyper the name exactly as the bytes before the colon, and the value with
/// surrounding whitespace trimmed; a head httparse refuses never frames a body).
fn inspect_field(line: &[u8], framing: &mut Framing) {
    // Only `Content-Length:` and `Transfer-Encoding:` lines matter: any other field
    // (most of them: `Host`, `User-Agent`, `Accept`...) is passed over without looking
    // for its colon.
    if line.len() < b"content-length:".len() || !matches!(line[0] | 0x20, b'c' | b't') {
        return;
    }
    let Some(colon) = memchr::memchr(b':', line) else {
        return;
    };
    let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
    if name.eq_ignore_ascii_case(b"content-length") {
        // Digits only, one number per line, as hyper's server reads it (a list such as
        // "5, 5" it refuses); several lines must agree. Anything else hyper refuses, and
        // so does the scanner.
        let number = Some(value)
            .filter(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit))
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.parse::<u64>().ok())
            // hyper's DecodedLength reserves the two largest values.
            .filter(|n| *n < u64::MAX - 1);
        match (number, framing.content_length) {
            (Some(n), None) => framing.content_length = Some(n),
            (Some(n), Some(previous)) if n == previous => {}
            _ => framing.bad_content_length = true,
        }
    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
        framing.transfer_encodings += 1;
        framing.chunked = value.eq_ignore_ascii_case(b"chunked");
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
    fn feed_with(limits: HeadLimits, input: &[u8], step: usize) -> (Vec<u8>, Scan) {
        let mut scanner = Scanner::new(limits);
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
                Scan::BodyViolation { at, .. } => {
                    delivered.extend_from_slice(&data[..at]);
                    return (delivered, last);
                }
            }
        }
        (delivered, last)
    }

    fn feed(input: &[u8], step: usize) -> (Vec<u8>, Scan) {
        feed_with(LIMITS, input, step)
    }

    fn violation(scan: Scan) -> Option<Violation> {
        match scan {
            Scan::HeadViolation { violation, .. } | Scan::BodyViolation { violation, .. } => {
                Some(violation)
            }
            _ => None,
        }
    }

    /// Limits that framing tests do not run into.
    const ROOMY: HeadLimits = HeadLimits {
        request_line: 200,
        fields: 10,
        field_size: 200,
        max_body: 1000,
    };

    /// Every split of `input` ends in the same verdict.
    fn verdict(input: &[u8]) -> Option<Violation> {
        verdict_with(LIMITS, input)
    }

    fn verdict_with(limits: HeadLimits, input: &[u8]) -> Option<Violation> {
        let whole = violation(feed_with(limits, input, input.len().max(1)).1);
        for step in [1, 2, 3, 5, 7, 13] {
            assert_eq!(
                violation(feed_with(limits, input, step).1),
                whole,
                "step {step}: {:?}",
                String::from_utf8_lossy(input)
            );
        }
        whole
    }

    fn is_malformed(v: Option<Violation>) -> bool {
        matches!(v, Some(Violation::Malformed(_)))
    }

    #[test]
    fn pipelined_requests_within_limits_pass_whole() {
        let input: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        for step in [1, 2, 3, 7, 64, 1000] {
            let (delivered, last) = feed(input, step);
            assert_eq!(delivered, input, "step {step}");
            assert_eq!(last, Scan::Clean, "step {step}");
        }
    }

    #[test]
    fn an_incomplete_head_is_held() {
        assert_eq!(
            scan_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /x HT"),
            Scan::PartialHead { start: 27 }
        );
        assert_eq!(scan_all(b""), Scan::Clean);
    }

    #[test]
    fn long_request_line_is_414_even_before_its_end() {
        let line = b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: x\r\n\r\n";
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
        assert_eq!(
            scan_all(b"GET /aaaaaa HTTP/1.1\r\nHost: x\r\n\r\n"),
            Scan::Clean
        );
        assert!(scan_all(b"GET /aaaaaaa HTTP/1.1\r\nHost: x\r\n\r\n").is_violation());
    }

    #[test]
    fn empty_lines_before_the_request_line_count_against_it() {
        // Within the limit with its empty lines: fine.
        assert_eq!(
            scan_all(b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Scan::Clean
        );
        assert_eq!(
            scan_all(b"\n\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Scan::Clean
        );
        // 14 bytes of request line after 8 bytes of empty lines: over 20.
        assert_eq!(
            verdict(b"\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Violation::RequestLine)
        );
        // A flood of empty lines is refused once it passes the limit, not buffered.
        let flood = b"\r\n".repeat(100_000);
        let (delivered, last) = feed(&flood, 4096);
        assert!(delivered.is_empty());
        assert_eq!(violation(last), Some(Violation::RequestLine));
    }

    #[test]
    fn too_many_or_too_large_fields_are_431() {
        let many = b"GET / HTTP/1.1\r\nHost: x\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\n";
        assert_eq!(
            scan_all(many),
            Scan::HeadViolation {
                start: 0,
                violation: Violation::TooManyFields
            }
        );
        let large = b"GET / HTTP/1.1\r\nHost: x\r\nx-long: 012345678901234567890123\r\n\r\n";
        assert_eq!(
            scan_all(large),
            Scan::HeadViolation {
                start: 0,
                violation: Violation::FieldTooLarge
            }
        );
        // The second request of a pipeline breaks the limit: the first passes.
        let mut pipeline = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        pipeline.extend_from_slice(large);
        assert_eq!(
            feed(&pipeline, 5),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
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
            scan_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n"),
            Scan::HeadViolation {
                start: 0,
                violation: Violation::BodyTooLarge
            }
        );
        assert_eq!(
            scan_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"),
            Scan::Clean
        );
    }

    #[test]
    fn content_length_is_read_as_hyper_reads_it_or_refused() {
        assert_eq!(
            verdict_with(
                ROOMY,
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"
            ),
            None
        );
        for bad in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabc"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3,\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        ] {
            assert!(
                is_malformed(verdict_with(ROOMY, bad)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn transfer_encoding_must_be_exactly_one_chunked_without_content_length() {
        assert_eq!(
            verdict(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n"),
            None
        );
        for bad in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(
                is_malformed(verdict_with(ROOMY, bad)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    const CHUNKED: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";

    fn chunked(body: &[u8]) -> Vec<u8> {
        [CHUNKED, body].concat()
    }

    #[test]
    fn chunked_bodies_are_followed_and_limited() {
        let ok: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nabcd\r\n6 \t;x\r\nefghij\r\n0\r\nx-t: 1\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for step in [1, 4, 9, 200] {
            assert_eq!(feed(ok, step), (ok.to_vec(), Scan::Clean), "step {step}");
        }
        let over: &[u8] =
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nabcdefgh\r\n8\r\nijklmnop\r\n0\r\n\r\n";
        for step in [1, 5, 200] {
            let (delivered, last) = feed(over, step);
            assert_eq!(
                violation(last),
                Some(Violation::BodyTooLarge),
                "step {step}"
            );
            // Refused at the size line of the chunk that would pass the limit.
            let before_second_size = CHUNKED.len() + b"8\r\nabcdefgh\r\n".len();
            assert_eq!(delivered.len(), before_second_size, "step {step}");
        }
    }

    #[test]
    fn chunk_sizes_with_many_digits_are_followed_or_refused_never_skipped() {
        for digits in 17..=64 {
            // Leading zeros, as hyper accepts: a 4-byte chunk, then the next request,
            // whose header breaks the field limit, must still be checked.
            let size = format!("{}4", "0".repeat(digits - 1));
            let input = chunked(
                format!("{size}\r\nabcd\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nx: 0123456789012345678901234567890\r\n\r\n")
                    .as_bytes(),
            );
            assert_eq!(
                verdict(&input),
                Some(Violation::FieldTooLarge),
                "{digits} digits"
            );
        }
        // A value past 64 bits is refused, never wrapped.
        let big = chunked(b"1ffffffffffffffff\r\n");
        let limits = HeadLimits {
            max_body: u64::MAX,
            ..LIMITS
        };
        assert!(matches!(
            violation(feed_with(limits, &big, 3).1),
            Some(Violation::Malformed(_))
        ));
        // A size over max_body is refused as soon as it is known.
        assert_eq!(verdict(&chunked(b"ff")), Some(Violation::BodyTooLarge));
    }

    #[test]
    fn bare_lf_or_cr_anywhere_in_chunked_framing_is_refused() {
        for body in [
            &b"4\nabcd\r\n0\r\n\r\n"[..],
            b"4\r\nabcd\n0\r\n\r\n",
            b"4\r\nabcd\r0\r\n\r\n",
            b"4;a\nabcd\r\n0\r\n\r\n",
            b"4\r\nabcd\r\n0\n\r\n",
            b"4\r\nabcd\r\n0\r\n\n",
            b"0\r\nX: 1\n\r\n",
            b"0\r\nX: 1\r\n\n",
            b"0\r\nX: 1\rY: 2\r\n\r\n",
            b"0\r\n\rX",
            b"4\rabcd\r\n0\r\n\r\n",
            b"\r\n4\r\nabcd\r\n0\r\n\r\n",
            b" 4\r\nabcd\r\n0\r\n\r\n",
            b"4 x\r\nabcd\r\n0\r\n\r\n",
            b"0x4\r\nabcd\r\n0\r\n\r\n",
            b"4\r\nabcdX\r\n0\r\n\r\n",
        ] {
            let input = chunked(body);
            assert!(
                is_malformed(verdict(&input)),
                "{:?} -> {:?}",
                String::from_utf8_lossy(body),
                verdict(&input)
            );
        }
    }

    #[test]
    fn the_trailer_smuggling_bytes_from_the_issue_are_refused() {
        let mut input =
            b"POST /t1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\r\n"
                .to_vec();
        let smuggled = format!(
            "GET /smuggled HTTP/1.1\r\nHost: x\r\n{}\r\n",
            (0..41).map(|i| format!("h{i}: v\r\n")).collect::<String>()
        );
        input.extend_from_slice(
            format!(
                "POST /decoy HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            )
            .as_bytes(),
        );
        let limits = HeadLimits {
            request_line: 8190,
            fields: 10,
            field_size: 8190,
            max_body: 1024,
        };
        let (delivered, last) = feed_with(limits, &input, 7);
        assert!(
            matches!(
                last,
                Scan::BodyViolation {
                    request: 1,
                    violation: Violation::Malformed(_),
                    ..
                }
            ),
            "{last:?}"
        );
        // hyper got the first request's head and the body up to the bad LF only.
        let bad_lf = input.windows(2).position(|w| w == b"1\n").unwrap() + 1;
        assert_eq!(delivered, &input[..bad_lf]);
    }

    #[test]
    fn trailers_count_against_the_field_limits() {
        assert_eq!(
            verdict(&chunked(b"0\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n")),
            None
        );
        assert_eq!(
            verdict(&chunked(b"0\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\n")),
            Some(Violation::TooManyFields)
        );
        assert_eq!(
            verdict(&chunked(b"0\r\nx: 012345678901234567890123456\r\n\r\n")),
            None
        );
        assert_eq!(
            verdict(&chunked(b"0\r\nx: 0123456789012345678901234567\r\n\r\n")),
            Some(Violation::FieldTooLarge)
        );
        let big = HeadLimits {
            fields: 1000,
            field_size: 100_000,
            ..LIMITS
        };
        let many = [
            CHUNKED,
            b"0\r\n",
            &b"x: 0123456789\r\n".repeat(600),
            b"\r\n",
        ]
        .concat();
        assert_eq!(
            violation(feed_with(big, &many, 100).1),
            Some(Violation::FieldTooLarge)
        );
    }

    #[test]
    fn body_violations_name_the_request_they_belong_to() {
        // The first request is fine; the second one's chunked body is too large.
        let mut input =
            b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".to_vec();
        input.extend_from_slice(&chunked(b"8\r\nabcdefgh\r\n8\r\nijklmnop\r\n0\r\n\r\n"));
        let (_, last) = feed(&input, input.len());
        assert!(
            matches!(
                last,
                Scan::BodyViolation {
                    request: 2,
                    violation: Violation::BodyTooLarge,
                    ..
                }
            ),
            "{last:?}"
        );
    }

    #[test]
    fn upgrade_and_connect_are_framed_as_usual_until_the_protocol_switches() {
        // An Upgrade header alone changes nothing: the next head is still checked.
        for head in [
            &b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: ws\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: ws\r\nConnection: upgrade\r\n\r\n",
            b"GET / HTTP/1.0\r\nUpgrade: ws\r\nConnection: upgrade\r\n\r\n",
            b"CONNECT a:1 HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let input = [
                head,
                b"GET / HTTP/1.1\r\nHost: x\r\nx: 0123456789012345678901234567890\r\n\r\n",
            ]
            .concat();
            assert_eq!(verdict(&input), Some(Violation::FieldTooLarge));
        }
        // After the app switched protocols, nothing is scanned.
        let mut scanner = Scanner::new(LIMITS);
        assert_eq!(
            scanner.scan(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: ws\r\n\r\n"),
            Scan::Clean
        );
        scanner.stop_following();
        assert_eq!(scanner.scan(&[b'x'; 500]), Scan::Clean);
    }

    #[test]
    fn http2_only_with_the_exact_preface_at_the_start() {
        let preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00";
        let mut scanner = Scanner::new(LIMITS);
        assert_eq!(scanner.scan(&preface[..10]), Scan::PartialHead { start: 0 });
        assert_eq!(scanner.scan(preface), Scan::Clean);
        assert!(scanner.is_http2());
        assert_eq!(scanner.scan(&[0u8; 100]), Scan::Clean);
        // Not at the start: an ordinary HTTP/1 head, refused for its version as hyper
        // would refuse it.
        let mut scanner = Scanner::new(LIMITS);
        assert_eq!(
            scanner.scan(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Scan::Clean
        );
        assert_eq!(
            violation(scanner.scan(
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nx: 0123456789012345678901234567890\r\n\r\n"
            )),
            Some(Violation::Malformed("unsupported HTTP version"))
        );
        assert!(!scanner.is_http2());
    }

    #[test]
    fn random_bytes_never_panic_and_splits_agree() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let alphabet: &[u8] = b"\r\n:;, 0123456789abcdefABCDEF\tGETPOSTHTP/1.chunkedContent-LengthTransfer-Encoding\x00\xff";
        for _ in 0..3000 {
            let mut input = chunked(b"");
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 200) as usize;
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                input.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            verdict(&input);
        }
    }

    /// Where `whole_head` takes a head, `scan_head` reads it the same: same end, same
    /// framing. Heads made of random field lines (framing fields spelled every way,
    /// bare LF and CR, long lines, many lines), under several limits.
    #[test]
    fn the_one_pass_head_reads_as_the_byte_exact_one() {
        let pieces: [&[u8]; 24] = [
            b"Host: x",
            b"content-length: 5",
            b"Content-Length: 05",
            b"Content-Length:5 ",
            b"Content-Length: 5, 5",
            b"CONTENT-LENGTH: 99999999999999999999999",
            b"Content-Length : 5",
            b"Transfer-Encoding: chunked",
            b"transfer-encoding:  Chunked ",
            b"Transfer-Encoding: gzip",
            b"x-long-field: 0123456789012345678901234567890123456789",
            b"c",
            b"t:",
            b"Content-Lengthx: 3",
            b"User-Agent: test",
            b"a: \r b",
            b"",
            b"\r",
            b" ",
            b":",
            b"\x00",
            b"Connection: close",
            b"Transfer-Encoding: chunked, gzip",
            b"Content-Length: +3",
        ];
        let starts: [&[u8]; 5] = [
            b"GET / HTTP/1.1",
            b"POST /upload HTTP/1.0",
            b"",
            b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1",
            b"X HTTP/1.0 ",
        ];
        let ends: [&[u8]; 3] = [b"\r\n", b"\n", b"\r\r\n"];
        let all_limits = [
            LIMITS,
            ROOMY,
            HeadLimits {
                request_line: 8190,
                fields: 100,
                field_size: 8190,
                max_body: 1 << 20,
            },
        ];
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let mut taken = 0;
        for _ in 0..20_000 {
            let mut head = starts[next(starts.len())].to_vec();
            head.extend_from_slice(ends[next(ends.len())]);
            for _ in 0..next(7) {
                head.extend_from_slice(pieces[next(pieces.len())]);
                head.extend_from_slice(ends[next(ends.len())]);
            }
            head.extend_from_slice(ends[next(ends.len())]);
            head.extend_from_slice(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..next(19)]);
            let limits = all_limits[next(all_limits.len())];
            let Some(WholeHead { end, framing, .. }) = whole_head(&head, &limits) else {
                continue;
            };
            taken += 1;
            let mut progress = HeadProgress::default();
            let step = scan_head(&mut progress, &head, &limits);
            assert!(
                matches!(step, HeadStep::Complete { end: e } if e == end),
                "{:?}",
                String::from_utf8_lossy(&head)
            );
            assert_eq!(
                progress.framing,
                framing,
                "{:?}",
                String::from_utf8_lossy(&head)
            );
        }
        // Most random heads break a limit or start with an empty line; enough do not.
        assert!(taken > 2000, "{taken}");
        // The heads most requests are take it.
        assert!(whole_head(b"GET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n", &ROOMY).is_some());
    }

    /// The head check's fast path may only say "certainly fine" of a head
    /// `head::check` accepts: random heads (valid, near-valid and hostile bytes) read by
    /// `whole_head`, each one it calls certain checked by httparse and the rules.
    #[test]
    fn the_fast_path_never_accepts_a_head_the_check_refuses() {
        let methods: [&[u8]; 12] = [
            b"GET",
            b"POST",
            b"PURGE",
            b"CONNECT",
            b"OPTIONS",
            b"get",
            b"G(T",
            b"",
            b"M-SEARCH",
            b"G\x00T",
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            b"GE T",
        ];
        let targets: [&[u8]; 18] = [
            b"/",
            b"/a/b?c=d&e",
            b"/?",
            b"/a?b?c",
            b"/a#f",
            b"/caf\xc3\xa9",
            b"/\xff",
            b"*",
            b"x:80",
            b"http://h/p",
            b"/a<b",
            b"/a\"b",
            b"/{}",
            b"/a b",
            b"",
            b"/%zz",
            b"//",
            b"/a|b^c`d",
        ];
        let versions: [&[u8]; 8] = [
            b"HTTP/1.1",
            b"HTTP/1.0",
            b"HTTP/2.0",
            b"http/1.1",
            b"HTTP/1.1 ",
            b"HTTP/1.",
            b"HTTP/1.12",
            b" HTTP/1.1",
        ];
        let names: [&[u8]; 14] = [
            b"X-A",
            b"Content-Type",
            b"Hos",
            b"Hostt",
            b"a!#$%&'*+-.^_`|~z",
            b"Host",
            b"host",
            b"HOST",
            b" Host",
            b"Host ",
            b"Bad Name",
            b"",
            b"a(b",
            b"H\x00st",
        ];
        let values: [&[u8]; 16] = [
            b" x",
            b"x",
            b" text/html; q=0.9, */*",
            b"\tx\t",
            b" a b",
            b"",
            b" ",
            b" x ",
            b" example.com:8080",
            b" [::1]:80",
            b" a/b",
            b" x:99999",
            b" \x01",
            b" a\x7fb",
            b" \xc3\xa9",
            b" u@x",
        ];
        let ends: [&[u8]; 5] = [b"\r\n", b"\r\n", b"\n", b"\r\r\n", b"\r"];
        let hostile: [u8; 14] = [
            0, 1, b'\t', b'\r', b'\n', b' ', b':', b'#', b'?', b'"', 0x7f, 0x80, 0xff, b'@',
        ];
        let limits = HeadLimits {
            request_line: 8190,
            fields: 100,
            field_size: 8190,
            max_body: 1 << 20,
        };
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        // Three times in four one of the first `valid` entries (the ones the fast path can
        // take), else any.
        let mut pick = |len: usize, valid: usize| {
            if next(4) != 0 {
                next(valid)
            } else {
                next(len)
            }
        };
        let (mut certain, mut refused_uncertain) = (0, 0);
        for _ in 0..200_000 {
            let mut head = methods[pick(methods.len(), 3)].to_vec();
            head.push(b' ');
            head.extend_from_slice(targets[pick(targets.len(), 4)]);
            head.push(b' ');
            head.extend_from_slice(versions[pick(versions.len(), 2)]);
            head.extend_from_slice(ends[pick(ends.len(), 3)]);
            let fields = pick(5, 5);
            let host_at = pick(4, 4);
            for field in 0..fields {
                if field == host_at {
                    head.extend_from_slice(b"Host: x.example");
                    head.extend_from_slice(ends[pick(ends.len(), 3)]);
                }
                head.extend_from_slice(names[pick(names.len(), 5)]);
                head.push(b':');
                head.extend_from_slice(values[pick(values.len(), 5)]);
                head.extend_from_slice(ends[pick(ends.len(), 3)]);
            }
            head.extend_from_slice(ends[pick(ends.len(), 3)]);
            // Near-valid and hostile: a few bytes replaced, inserted or removed.
            for _ in 0..pick(4, 1) {
                let at = pick(head.len(), head.len());
                let byte = if pick(2, 2) == 0 {
                    hostile[pick(hostile.len(), hostile.len())]
                } else {
                    pick(256, 256) as u8
                };
                match pick(3, 3) {
                    0 => head[at] = byte,
                    1 => head.insert(at, byte),
                    _ => {
                        head.remove(at);
                    }
                }
            }
            let Some(whole) = whole_head(&head, &limits) else {
                continue;
            };
            let verdict = super::super::head::check(&head[..whole.end], limits.fields);
            if whole.certain {
                certain += 1;
                assert_eq!(verdict, Ok(()), "{:?}", String::from_utf8_lossy(&head));
            } else if verdict.is_err() {
                refused_uncertain += 1;
            }
        }
        // Enough of both sides for the test to say something.
        assert!(certain > 5_000, "{certain}");
        assert!(refused_uncertain > 20_000, "{refused_uncertain}");
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
