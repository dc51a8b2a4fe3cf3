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
