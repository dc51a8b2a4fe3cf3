//! What a WSGI app passes to `start_response`, checked (pure, unit-tested): the status
//! line (`"200 OK"`: three digits, then a space and a reason without control
//! characters) and each header (a token name, a latin-1 value without CR, LF or other
//! control characters but tab). A malformed one is the app's error, answered 500, never
//! bytes on the wire. Hop-by-hop headers are forkd's (PEP 3333 forbids them to the
//! app): dropped, but `Connection: close` closes an HTTP/1 connection after the response.

use hyper::header::{HeaderName, HeaderValue};
use hyper::StatusCode;

/// The status of a `start_response` status line.
pub fn parse_status(line: &str) -> Result<StatusCode, String> {
    let bytes = line.as_bytes();
    let digits = bytes.get(..3).filter(|d| d.iter().all(u8::is_ascii_digit));
    let Some(digits) = digits else {
        return Err(format!(
            "status {line:?} does not start with a 3-digit code"
        ));
    };
    match bytes.get(3) {
        None | Some(b' ') => {}
        Some(_) => return Err(format!("status {line:?}: no space after the code")),
    }
    if let Some(bad) = line.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(format!(
            "status {line:?} contains the control character {bad:?}"
        ));
    }
    let code = StatusCode::from_bytes(digits)
        .map_err(|_| format!("status {line:?}: no HTTP status code"))?;
    if code.is_informational() {
        return Err(format!(
            "status {line:?}: a 1xx status is no final response"
        ));
    }
    Ok(code)
}

/// A header the app set, as forkd sends it.
#[derive(Debug, PartialEq)]
pub enum Header {
    Send(HeaderName, HeaderValue),
    /// Hop-by-hop: not sent (see the module docs).
    Drop,
    /// `Connection: close`: not sent, but the connection closes after the response.
    Close,
}

/// Hop-by-hop header names (RFC 9110 7.6.1, and those HTTP/2 forbids).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

/// Checks one `(name, value)` pair from `start_response`.
pub fn check_header(name: &str, value: &str) -> Result<Header, String> {
    let header_name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("header name {name:?} is not an HTTP token"))?;
    let mut bytes = Vec::with_capacity(value.len());
    for c in value.chars() {
        match u8::try_from(u32::from(c)) {
            Ok(b) => bytes.push(b),
            Err(_) => {
                return Err(format!(
                    "header {name}: value {value:?} is not latin-1 (PEP 3333: encode it yourself)"
                ))
            }
        }
    }
    let header_value = HeaderValue::from_bytes(&bytes)
        .map_err(|_| format!("header {name}: value {value:?} contains a control character"))?;
    if HOP_BY_HOP.contains(&header_name.as_str()) {
        let close = header_name == hyper::header::CONNECTION
            && value
                .split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("close"));
        return Ok(if close { Header::Close } else { Header::Drop });
    }
    if header_name == hyper::header::CONTENT_LENGTH {
        content_length(&header_value)?;
    }
    Ok(Header::Send(header_name, header_value))
}

/// A `Content-Length` value as a number (decimal digits only).
pub fn content_length(value: &HeaderValue) -> Result<u64, String> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 19 || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(format!("Content-Length {value:?} is not a length"));
    }
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("Content-Length {value:?} is not a length"))
}

/// Whether a response to `method` with `status` carries the body its `Content-Length`
/// announces (not HEAD, 204 or 304), so that a shorter one is an error.
pub fn body_expected(method: &hyper::Method, status: StatusCode) -> bool {
    method != hyper::Method::HEAD
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status("200 OK").unwrap(), StatusCode::OK);
        assert_eq!(
            parse_status("404 Not Found").unwrap(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(parse_status("599 Whatever").unwrap().as_u16(), 599);
        assert_eq!(parse_status("204").unwrap(), StatusCode::NO_CONTENT);
        assert_eq!(parse_status("200 ").unwrap(), StatusCode::OK);
        for bad in [
            "",
            "OK",
            "20 OK",
            "2000 OK",
            "200OK",
            "200\tOK",
            "200 OK\r\nX-Injected: 1",
            "200 OK\n",
            "200 O\0K",
            "099 Low",
            "000 Zero",
            "100 Continue",
            "101 Switching Protocols",
            " 200 OK",
            "２００ OK",
            "-20 OK",
        ] {
            assert!(parse_status(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn headers() {
        assert_eq!(
            check_header("Content-Type", "text/plain; charset=utf-8").unwrap(),
            Header::Send(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8")
            )
        );
        // latin-1 text as its bytes.
        match check_header("X-Name", "caf\u{e9}").unwrap() {
            Header::Send(_, value) => assert_eq!(value.as_bytes(), b"caf\xe9"),
            other => panic!("{other:?}"),
        }
        assert_eq!(check_header("Connection", "close").unwrap(), Header::Close);
        assert_eq!(
            check_header("connection", "Keep-Alive, Close").unwrap(),
            Header::Close
        );
        assert_eq!(
            check_header("Connection", "keep-alive").unwrap(),
            Header::Drop
        );
        assert_eq!(
            check_header("Transfer-Encoding", "chunked").unwrap(),
            Header::Drop
        );
        assert_eq!(
            check_header("Keep-Alive", "timeout=5").unwrap(),
            Header::Drop
        );
        for (name, value) in [
            ("", "x"),
            ("X Bad", "x"),
            ("X:Bad", "x"),
            ("X-Bad\r\n", "x"),
            ("X-Smuggle", "a\r\nX-Injected: 1"),
            ("X-Nul", "a\0b"),
            ("X-Lf", "a\nb"),
            ("X-Wide", "\u{20ac}"),
            ("Content-Length", "12x"),
            ("Content-Length", "-1"),
            ("Content-Length", ""),
            ("Content-Length", "1, 1"),
            ("Content-Length", "99999999999999999999"),
            ("Caf\u{e9}", "x"),
        ] {
            assert!(check_header(name, value).is_err(), "{name:?}: {value:?}");
        }
    }

    /// Random status lines and headers: never a panic; an accepted status is its three
    /// digits, an accepted header value has no CR, LF or NUL.
    #[test]
    fn random_status_lines_and_headers() {
        const ALPHABET: &[char] = &[
            '0', '1', '2', '5', '9', ' ', 'O', 'K', '\r', '\n', '\0', '\t', ':', '-', 'a',
            '\u{e9}', '\u{20ac}', ',', '\x7f',
        ];
        let mut state: u64 = 0x243f_6a88_85a3_08d3;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut text = |n: u64| -> String {
            let len = (next() % n) as usize;
            (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect()
        };
        for _ in 0..50_000 {
            let line = text(12);
            if let Ok(code) = parse_status(&line) {
                assert_eq!(line[..3], code.as_u16().to_string());
                assert!(!line.contains(['\r', '\n', '\0']));
                assert!(code.as_u16() >= 200);
            }
            let (name, value) = (text(6), text(10));
            if let Ok(Header::Send(n, v)) = check_header(&name, &value) {
                assert!(!n.as_str().is_empty());
                assert!(!v.as_bytes().iter().any(|b| matches!(b, b'\r' | b'\n' | 0)));
            }
        }
    }
}
