//! The checks a complete HTTP/1 request head passes before hyper sees it, beyond the
//! `[limits]`: everything hyper's own parser would refuse, and RFC 9112's rules for the
//! request target and `Host` (§3.2), which hyper does not enforce.
//!
//! **One parser decides.** hyper parses a head with `httparse` (default
//! `ParserConfig`, as forkd's builder leaves it), then takes the method with
//! `Method::from_bytes` and the target with `Uri::from_maybe_shared`; whatever fails
//! there it answers 400 itself, and that answer was neither access-logged nor counted.
//! So this check runs the same `httparse` (the very crate hyper links: one version in
//! `Cargo.lock`) with the same configuration, the same method parser, and for the
//! request target `http`'s own rules (the origin form, nearly every request, by a copy
//! of `http`'s byte classes, which a test holds to `Uri::try_from`; other forms by
//! `Uri::try_from` itself). A head this accepts, hyper accepts; the differential fuzz
//! test (`differential.rs`) checks that hyper never refuses a head forkd passed.
//!
//! **A fast path first.** Running httparse twice (here, then in hyper) cost ~700
//! instructions per request. [`FastHead`] reads the lines the scanner's one pass over a
//! whole head already finds and says only "certainly fine" (a narrow form every
//! ordinary request has, each rule a subset of the above) or "ask [`check`]"; a
//! property test (`limits.rs`) holds it to [`check`] over random hostile heads.
//!
//! On top of hyper's rules (RFC 9112 §3.2, RFC 9110 §7.2):
//! - an HTTP/1.1 request has exactly one `Host` line (HTTP/1.0 at most one), and its
//!   value is `host [":" port]` (`host.rs`);
//! - the target's form fits the method: `*` only with OPTIONS, `host:port` (authority
//!   form) only and always with CONNECT; an absolute-form target's authority is a
//!   valid host too (no userinfo). It then wins over `Host`: the app sees that host
//!   (`absolute_form_host`).
//!
//! HTTP/2 has no head for this to read: its `:authority` and `Host` are held to the same
//! host grammar as the request is served (`h2_hosts_valid`).

use crate::worker::http::host::{valid_host, valid_host_and_port};
use crate::worker::http::violation::Violation;
use hyper::header::{HeaderValue, HOST};
use std::mem::MaybeUninit;

/// Header slots on the stack; a `[limits] request_fields` above this gets a heap array
/// (as hyper does above its own default of 100).
const STACK_FIELDS: usize = 100;

/// hyper's limit on the target (`proto/h1/role.rs`): longer is 414.
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;

/// hyper refuses a field name this long (431).
const MAX_NAME_LEN: usize = 1 << 16;

/// Checks the complete head `head` (from its first byte, leading empty lines included,
/// through the empty line that ends it), which has at most `fields` field lines.
pub(crate) fn check(head: &[u8], fields: usize) -> Result<(), Violation> {
    if fields <= STACK_FIELDS {
        let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); STACK_FIELDS];
        check_with(head, &mut slots)
    } else {
        let mut slots = vec![MaybeUninit::<httparse::Header<'_>>::uninit(); fields];
        check_with(head, &mut slots)
    }
}

fn check_with<'h>(
    head: &'h [u8],
    slots: &mut [MaybeUninit<httparse::Header<'h>>],
) -> Result<(), Violation> {
    let malformed = |what| Err(Violation::Malformed(what));
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, slots) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        // The scanner found the end of the head elsewhere, or none: not framed as hyper
        // frames it (it never happens; refused all the same).
        Ok(_) => return malformed("request head not framed as expected"),
        Err(e) => return malformed(parse_error(e)),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return malformed("incomplete request line");
    };
    if target.len() > MAX_URI_LEN {
        return Err(Violation::RequestLine);
    }
    if hyper::Method::from_bytes(method.as_bytes()).is_err() {
        return malformed("invalid method");
    }
    let mut host = None;
    for field in req.headers.iter() {
        if field.name.len() >= MAX_NAME_LEN {
            return Err(Violation::FieldTooLarge);
        }
        if field.name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return malformed("more than one Host field");
            }
            host = Some(field.value);
        }
    }
    check_target(method, target.as_bytes())?;
    match host {
        Some(value) if !valid_host(value) => malformed("invalid Host"),
        None if version == 1 => malformed("HTTP/1.1 request without Host"),
        _ => Ok(()),
    }
}

/// The fast path of [`check`]: the scanner's one pass over a whole head
/// (`limits.rs`, `whole_head`) hands it each line, and at the end it says either
/// "certainly fine" (the head is one [`check`] accepts: httparse and hyper's rules with
/// hyper's configuration, the target's and `Host`'s rules) or "ask [`check`]". It never
/// refuses anything itself, so it can be narrower than the rules: only the heads nearly
/// every request is made of are certain.
///
/// Certain when (each a subset of what httparse, hyper and [`check`] accept):
/// - the request line is `METHOD SP /target SP HTTP/1.x`: the method only `A`-`Z`
///   and not `CONNECT`; the target an origin form of visible ASCII that `http`'s path
///   and query classes accept, without a fragment, at most hyper's length;
/// - each field line is `name ":" value`: the name httparse's token bytes (so no
///   whitespace before the colon nor a folded line, which starts with SP/HTAB), the
///   value only HTAB and visible ASCII and SP (no CR, no obs-text, no control bytes);
/// - exactly one field is `Host`, its value (after the whitespace httparse skips)
///   neither empty nor ending in whitespace, and a valid host (`host.rs`).
///
/// The lines come without their LF (and CR): httparse takes a bare LF as a line end
/// too, and a CR anywhere else is outside every byte class above. The field count and
/// line lengths are the scanner's (`fields` at most `[limits] request_fields`, which
/// [`check`] gives httparse as many slots for).
#[derive(Default)]
pub(super) struct FastHead {
    uncertain: bool,
    hosts: u32,
}

impl FastHead {
    /// The request line, without its line end.
    #[inline]
    pub(super) fn request_line(&mut self, line: &[u8]) {
        self.uncertain |= !request_line_certain(line);
    }

    /// A field line, without its line end.
    #[inline]
    pub(super) fn field(&mut self, line: &[u8]) {
        if !self.uncertain {
            match field_certain(line) {
                FastField::Other => {}
                FastField::Host => self.hosts += 1,
                FastField::Uncertain => self.uncertain = true,
            }
        }
    }

    /// After the empty line: true if [`check`] certainly accepts the head.
    #[inline]
    pub(super) fn certain(&self) -> bool {
        !self.uncertain && self.hosts == 1
    }
}

enum FastField {
    Other,
    Host,
    Uncertain,
}

#[inline]
fn request_line_certain(line: &[u8]) -> bool {
    let Some((rest, version)) = line.split_last_chunk::<9>() else {
        return false;
    };
    if version != b" HTTP/1.1" && version != b" HTTP/1.0" {
        return false;
    }
    let method_len = rest
        .iter()
        .position(|b| !b.is_ascii_uppercase())
        .unwrap_or(rest.len());
    let (method, rest) = rest.split_at(method_len);
    let Some((b' ', target)) = rest.split_first() else {
        return false;
    };
    !method.is_empty()
        && method != b"CONNECT"
        && target.first() == Some(&b'/')
        && target.len() <= MAX_URI_LEN
        && origin_form_certain(target)
}

/// [`origin_form_ok`] without a fragment or bytes above ASCII: each byte valid in the
/// path, the first `?` starting the query.
#[inline]
fn origin_form_certain(target: &[u8]) -> bool {
    let mut allowed = IN_PATH;
    for &b in target {
        if ORIGIN_FAST[b as usize] & allowed == 0 {
            if b == b'?' && allowed == IN_PATH {
                allowed = IN_QUERY;
            } else {
                return false;
            }
        }
    }
    true
}

const IN_PATH: u8 = 1;
const IN_QUERY: u8 = 2;

/// [`PATH`]'s and [`QUERY`]'s valid bytes below 0x80, as two bits.
const ORIGIN_FAST: [u8; 256] = {
    let mut t = [0; 256];
    let mut i = 0;
    while i < 0x80 {
        if PATH[i] == VALID {
            t[i] |= IN_PATH;
        }
        if QUERY[i] == VALID {
            t[i] |= IN_QUERY;
        }
        i += 1;
    }
    t
};

/// httparse's `TOKEN_MAP` (header names; RFC 9110 tchar).
const TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = matches!(i as u8,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'%' | b'&'
            | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~');
        i += 1;
    }
    t
};

#[inline]
fn field_certain(line: &[u8]) -> FastField {
    let name_len = line
        .iter()
        .position(|&b| !TOKEN[b as usize])
        .unwrap_or(line.len());
    let Some((b':', value)) = line[name_len..].split_first() else {
        return FastField::Uncertain;
    };
    if name_len == 0 || name_len >= MAX_NAME_LEN || !value_certain(value) {
        return FastField::Uncertain;
    }
    if name_len != 4 || !line[..4].eq_ignore_ascii_case(b"host") {
        return FastField::Other;
    }
    // Only SP and HTAB are whitespace in a value that passed `value_certain`.
    let value = value.trim_ascii_start();
    match value.last() {
        Some(b' ' | b'\t') | None => FastField::Uncertain,
        Some(_) if host_certain(value) || valid_host(value) => FastField::Host,
        Some(_) => FastField::Uncertain,
    }
}

/// A `Host` value `valid_host` certainly accepts, cheaper than it: reg-name bytes
/// without `%` escapes, then at most `:` and up to four digits (a port below 65536).
#[inline]
fn host_certain(value: &[u8]) -> bool {
    let name_len = value
        .iter()
        .position(|&b| !REG_NAME[b as usize])
        .unwrap_or(value.len());
    match &value[name_len..] {
        [] => true,
        [b':', port @ ..] => port.len() <= 4 && port.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// RFC 3986 `unreserved / sub-delims` (a reg-name's bytes but `%`).
const REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = matches!(i as u8,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~'
            | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=');
        i += 1;
    }
    t
};

/// Every byte HTAB or `0x20..=0x7E`: eight at a time while none is below 0x20 (HTAB
/// included), 0x7F or above.
#[inline]
fn value_certain(value: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let byte_ok = |b: &u8| matches!(b, b'\t' | 0x20..=0x7E);
    let mut chunks = value.chunks_exact(8);
    for chunk in &mut chunks {
        let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
            return false;
        };
        let x = u64::from_ne_bytes(bytes);
        // A byte below 0x20 sets its high bit in `x - 0x20..`, 0x7F in `x + 0x01..`,
        // 0x80 and above in `x`; a borrow or carry only flags more (then byte by byte).
        if (x.wrapping_sub(ONES * 0x20) | x.wrapping_add(ONES) | x) & HIGH != 0
            && !chunk.iter().all(byte_ok)
        {
            return false;
        }
    }
    chunks.remainder().iter().all(byte_ok)
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header field name",
        httparse::Error::HeaderValue => "invalid byte in a header field value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Token => "invalid method or request target",
        httparse::Error::Version => "unsupported HTTP version",
        httparse::Error::TooManyHeaders => "too many header fields",
        httparse::Error::Status => "invalid request line",
    }
}

/// The request target as hyper reads it (`Uri::from_maybe_shared`), in the form the
/// method calls for.
fn check_target(method: &str, target: &[u8]) -> Result<(), Violation> {
    let malformed = |what| Err(Violation::Malformed(what));
    let connect = method == "CONNECT";
    match target {
        [b'/', ..] if !connect => {
            if origin_form_ok(target) {
                Ok(())
            } else {
                malformed("invalid byte in the request target")
            }
        }
        b"*" if method == "OPTIONS" => Ok(()),
        b"*" => malformed("\"*\" as the target of a method other than OPTIONS"),
        _ => {
            let Ok(uri) = hyper::Uri::try_from(target) else {
                return malformed("invalid request target");
            };
            match (connect, uri.scheme(), uri.authority()) {
                (true, None, Some(authority))
                    if authority.as_str().len() == target.len() && valid_host_and_port(target) =>
                {
                    Ok(())
                }
                (true, ..) => malformed("CONNECT without host:port as its target"),
                (false, Some(_), Some(authority)) if valid_host(authority.as_str().as_bytes()) => {
                    Ok(())
                }
                (false, Some(_), _) => malformed("invalid host in the request target"),
                (false, None, _) => malformed("authority-form target without CONNECT"),
            }
        }
    }
}

/// What `http`'s `PathAndQuery` accepts of an origin-form target (`uri/path.rs`,
/// `scan_path_and_query`), without the allocation `Uri::try_from` makes: path bytes,
/// then after `?` query bytes, and after `#` anything (httparse has already checked
/// that those are visible ASCII or UTF-8).
fn origin_form_ok(target: &[u8]) -> bool {
    let mut query = false;
    for &b in target {
        let class = if query {
            QUERY[b as usize]
        } else {
            PATH[b as usize]
        };
        match class {
            VALID => {}
            START_QUERY => query = true,
            FRAGMENT => return true,
            _ => return false,
        }
    }
    true
}

const INVALID: u8 = 0;
const VALID: u8 = 1;
const START_QUERY: u8 = 2;
const FRAGMENT: u8 = 3;

/// `http`'s path class (`build_path_map`): `?` starts the query, `#` the fragment.
const PATH: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = match i as u8 {
            b'?' => START_QUERY,
            b'#' => FRAGMENT,
            0x21 | 0x24..=0x3B | 0x3D | 0x40..=0x5F | 0x61..=0x7A | 0x7C | 0x7E => VALID,
            0x80..=0xFF | b'"' | b'{' | b'}' => VALID,
            _ => INVALID,
        };
        i += 1;
    }
    t
};

/// `http`'s query class (`build_query_map`).
const QUERY: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = match i as u8 {
            b'#' => FRAGMENT,
            0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x7E | 0x80..=0xFF => VALID,
            _ => INVALID,
        };
        i += 1;
    }
    t
};

/// HTTP/1 with an absolute-form target: the app sees the target's authority as `Host`
/// (RFC 9112 §3.2.2: the server ignores the `Host` field then). The scanner has checked
/// both already. HTTP/2's `:authority` is the URI's authority too, and is left alone.
#[inline]
pub(crate) fn absolute_form_host(parts: &mut hyper::http::request::Parts) {
    if parts.uri.scheme().is_none() || parts.version == hyper::Version::HTTP_2 {
        return;
    }
    if let Some(authority) = parts.uri.authority() {
        if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(HOST, value);
        }
    }
}

/// HTTP/2: the host the app sees (`:authority`, and any `Host` field) is a valid
/// `host [":" port]` too; h2 checks neither. False: forkd answers 400 (`malformed`).
#[inline]
pub(crate) fn h2_hosts_valid(parts: &hyper::http::request::Parts) -> bool {
    if parts.version != hyper::Version::HTTP_2 {
        return true;
    }
    parts
        .uri
        .authority()
        .is_none_or(|a| valid_host(a.as_str().as_bytes()))
        && parts
            .headers
            .get_all(HOST)
            .iter()
            .all(|v| valid_host(v.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(head: &[u8]) -> Result<(), Violation> {
        check(head, 100)
    }

    fn malformed(head: &[u8]) -> bool {
        matches!(verdict(head), Err(Violation::Malformed(_)))
    }

    #[test]
    fn ordinary_heads_pass() {
        for ok in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"\r\nGET /a?b=c#d HTTP/1.1\nHost: example.com:8080\n\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"POST /p HTTP/1.1\r\nHost: [::1]:80\r\nContent-Length: 0\r\nX-Empty:\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
            b"CONNECT x.example:443 HTTP/1.1\r\nHost: x.example:443\r\n\r\n",
            b"GET http://x.example/p HTTP/1.1\r\nHost: other\r\n\r\n",
            b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\nX-Obs: \xff\xfe\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
            b"PURGE /x HTTP/1.1\r\nHost: EXAMPLE.COM.\r\n\r\n",
        ] {
            assert_eq!(verdict(ok), Ok(()), "{:?}", String::from_utf8_lossy(ok));
        }
    }

    #[test]
    fn what_hyper_refuses_is_refused() {
        for bad in [
            &b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nBad Name: x\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x7fb\r\n\r\n",
            b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            b"GET / http/1.1\r\nHost: x\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n Y: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n",
            b"GET /a<b HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET http:///x HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert!(malformed(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// The fast path over a head's lines, as `whole_head` hands them over.
    fn fast(head: &[u8]) -> bool {
        let mut fast = FastHead::default();
        let mut lines = head
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        fast.request_line(lines.next().unwrap_or_default());
        for line in lines.take_while(|l| !l.is_empty()) {
            fast.field(line);
        }
        fast.certain()
    }

    #[test]
    fn the_fast_path_takes_common_heads_and_leaves_the_rest_to_httparse() {
        for common in [
            &b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: instructions.py\r\n\r\n"[..],
            b"POST /a/b?c=d&e=f HTTP/1.1\r\nHost: x.example:8080\r\nContent-Length: 5\r\n\r\n",
            b"GET /p HTTP/1.0\r\nhost: [::1]:80\r\nAccept: text/html;\tq=0.9, */*\r\n\r\n",
        ] {
            assert!(fast(common), "{:?}", String::from_utf8_lossy(common));
            assert_eq!(verdict(common), Ok(()));
        }
        // Accepted by the check, but not certain: httparse decides.
        for rare in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /a#f HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: \xc3\xa9\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x \r\n\r\n",
        ] {
            assert!(!fast(rare), "{:?}", String::from_utf8_lossy(rare));
            assert_eq!(verdict(rare), Ok(()));
        }
    }

    /// The fast Host check only says yes where `valid_host` does.
    #[test]
    fn the_fast_host_check_is_within_valid_host() {
        let mut x: u64 = 0x1234_5678_9ABC_DEF1;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let alphabet = b"aZ09-._~!$&'()*+,;=%:[]@/ \x7f\x80";
        let mut certain = 0;
        for _ in 0..100_000 {
            let value: Vec<u8> = (0..next(12))
                .map(|_| alphabet[next(alphabet.len())])
                .collect();
            if host_certain(&value) {
                certain += 1;
                assert!(valid_host(&value), "{:?}", String::from_utf8_lossy(&value));
            }
        }
        assert!(certain > 1000, "{certain}");
        assert!(host_certain(b"x.example:8080") && !host_certain(b"x:65536"));
    }

    #[test]
    fn host_rules_of_rfc_9112() {
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a b/c@d:99999\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: a/b\r\n\r\n",
            b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET x:80 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"CONNECT x HTTP/1.1\r\nHost: x\r\n\r\n",
            b"CONNECT http://x:80/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET http://u@x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET http://x:99999/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET http://x.example/ HTTP/1.1\r\n\r\n",
        ] {
            assert!(malformed(bad), "{:?}", String::from_utf8_lossy(bad));
            assert!(!fast(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_head_the_scanner_framed_differently_is_refused() {
        // httparse ends this head earlier than the slice given (never happens in the
        // scanner; refused rather than trusted).
        assert!(malformed(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n"
        ));
        assert!(malformed(b"GET / HTTP/1.1\r\nHost: x\r\n"));
    }

    #[test]
    fn more_fields_than_the_stack_holds() {
        let mut head = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..150 {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert_eq!(check(&head, 151), Ok(()));
    }

    /// The origin-form check accepts exactly what `Uri::try_from` does, on random
    /// targets starting with `/` that httparse accepts (visible ASCII and UTF-8).
    #[test]
    fn origin_form_matches_the_http_crate() {
        let mut x: u64 = 0xDEAD_BEEF_1234_5678;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let extras: &[&str] = &["é", "?", "#", "%", "\"", "{", "<", ">", "`", "\\", "^", "|"];
        let mut refused = 0;
        for _ in 0..50_000 {
            let mut target = String::from("/");
            for _ in 0..next(10) {
                if next(3) == 0 {
                    target.push_str(extras[next(extras.len())]);
                } else {
                    target.push((0x21 + next(0x7e - 0x21 + 1) as u8) as char);
                }
            }
            let ours = origin_form_ok(target.as_bytes());
            let http = hyper::Uri::try_from(target.as_bytes()).is_ok();
            assert_eq!(ours, http, "{target:?}");
            refused += usize::from(!ours);
        }
        assert!(refused > 1000, "{refused}");
    }

    #[test]
    fn absolute_form_wins_over_host() {
        let req = hyper::Request::builder()
            .uri("http://target.example:8080/p")
            .header(HOST, "other")
            .body(())
            .unwrap_or_default();
        let (mut parts, ()) = req.into_parts();
        absolute_form_host(&mut parts);
        let hosts: Vec<_> = parts.headers.get_all(HOST).iter().collect();
        assert_eq!(hosts, ["target.example:8080"]);
    }
}
