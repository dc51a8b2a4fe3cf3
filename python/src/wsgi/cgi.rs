//! The CGI half of a WSGI environ (PEP 3333), from a request's head: pure, without
//! Python, so that every rule is unit-tested here. `environ.rs` turns it into the dict.
//!
//! The rules, and why:
//! - `PATH_INFO` is the percent-decoded path as latin-1 text (PEP 3333's "bytes as
//!   str"); with a `python.root_path` the path starts below it: a prefix the proxy left
//!   in is stripped (as Gunicorn does with `SCRIPT_NAME`), one it removed is not there.
//! - `HTTP_*`: the name upper-cased, `-` as `_`; a name with `_` in it is dropped
//!   (`X_User` would pass for `X-User`: nginx, Apache and Gunicorn drop them too);
//!   repeated fields are joined with `,` (`Cookie` with `; `, as HTTP/2 splits it);
//!   `Content-Type` and `Content-Length` without the prefix; HTTP/2's `:authority`
//!   as `HTTP_HOST` when no `Host` came.
//! - `SERVER_NAME`/`SERVER_PORT`: the host the client asked for (`Host`), else the
//!   listener's address, else `localhost`; the port is the scheme's default when the
//!   host names none.

use std::borrow::Cow;
use std::net::SocketAddr;

/// The environ's text values, each a Python `str` of the latin-1 decoding of the
/// bytes (PEP 3333): a key, then its value.
pub type Items = Vec<(Cow<'static, str>, String)>;

/// What the environ needs of a request besides its head.
pub struct Context<'a> {
    /// `python.root_path` (`SCRIPT_NAME`): `""` or `/prefix`.
    pub root_path: &'a str,
    pub https: bool,
    /// The client's address as forkd's `ClientAddr` has it, parsed.
    pub client: Option<(Cow<'a, str>, u16)>,
    pub server: Option<SocketAddr>,
}

/// Bytes as PEP 3333's "native string": each byte one code point (latin-1).
pub fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// The CGI name of a request header (`HTTP_X_TOKEN`, `CONTENT_TYPE`); None for a name
/// with `_` in it (see the module docs).
pub fn cgi_name(name: &str) -> Option<Cow<'static, str>> {
    match name {
        "content-type" => return Some(Cow::Borrowed("CONTENT_TYPE")),
        "content-length" => return Some(Cow::Borrowed("CONTENT_LENGTH")),
        "host" => return Some(Cow::Borrowed("HTTP_HOST")),
        "user-agent" => return Some(Cow::Borrowed("HTTP_USER_AGENT")),
        "accept" => return Some(Cow::Borrowed("HTTP_ACCEPT")),
        "cookie" => return Some(Cow::Borrowed("HTTP_COOKIE")),
        _ => {}
    }
    if name.contains('_') {
        return None;
    }
    let mut cgi = String::with_capacity(5 + name.len());
    cgi.push_str("HTTP_");
    cgi.extend(name.chars().map(|c| match c {
        '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    Some(Cow::Owned(cgi))
}

/// `PATH_INFO`: the decoded path below `root_path` (see the module docs), as bytes.
pub fn path_info(raw_path: &str, root_path: &str) -> Vec<u8> {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(raw_path).collect();
    let root = root_path.as_bytes();
    if !root.is_empty() && decoded.starts_with(root) {
        let rest = &decoded[root.len()..];
        if rest.is_empty() || rest.starts_with(b"/") {
            return rest.to_vec();
        }
    }
    decoded
}

/// A `Host` value as (name, port); None if it is not `host[:port]` with a usable host
/// (a reg-name, an IPv4 address, or an IPv6 address in brackets) and a decimal port.
pub fn parse_host(value: &[u8]) -> Option<(&str, Option<u16>)> {
    let text = std::str::from_utf8(value).ok()?;
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let end = rest.find(']')?;
        let inner = &rest[..end];
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        let after = &rest[end + 1..];
        let host = &text[..end + 2];
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let reg_name = |h: &str| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    };
    if !host.starts_with('[') && !reg_name(host) {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

/// `SERVER_NAME` and `SERVER_PORT` (see the module docs).
pub fn server_name_port(
    host: Option<&[u8]>,
    server: Option<SocketAddr>,
    https: bool,
) -> (String, String) {
    let default_port = if https { 443 } else { 80 };
    if let Some((name, port)) = host.and_then(parse_host) {
        let name = name.trim_start_matches('[').trim_end_matches(']');
        return (
            name.to_ascii_lowercase(),
            port.unwrap_or(default_port).to_string(),
        );
    }
    match server {
        Some(addr) => (addr.ip().to_string(), addr.port().to_string()),
        None => ("localhost".to_string(), default_port.to_string()),
    }
}

/// The environ's CGI variables of a request (not the `wsgi.*` ones).
pub fn cgi_items(parts: &hyper::http::request::Parts, context: &Context<'_>) -> Items {
    let mut items: Items = Vec::with_capacity(12 + parts.headers.len());
    items.push((
        Cow::Borrowed("REQUEST_METHOD"),
        parts.method.as_str().to_string(),
    ));
    items.push((Cow::Borrowed("SCRIPT_NAME"), context.root_path.to_string()));
    items.push((
        Cow::Borrowed("PATH_INFO"),
        latin1(&path_info(parts.uri.path(), context.root_path)),
    ));
    items.push((
        Cow::Borrowed("QUERY_STRING"),
        parts.uri.query().unwrap_or("").to_string(),
    ));
    let protocol = match parts.version {
        hyper::Version::HTTP_10 => "HTTP/1.0",
        hyper::Version::HTTP_2 => "HTTP/2",
        hyper::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    };
    items.push((Cow::Borrowed("SERVER_PROTOCOL"), protocol.to_string()));
    let authority = parts.uri.authority().map(|a| a.as_str().as_bytes());
    let host = parts
        .headers
        .get(hyper::header::HOST)
        .map(|v| v.as_bytes())
        .or(authority);
    let (name, port) = server_name_port(host, context.server, context.https);
    items.push((Cow::Borrowed("SERVER_NAME"), name));
    items.push((Cow::Borrowed("SERVER_PORT"), port));
    if let Some((addr, port)) = &context.client {
        items.push((Cow::Borrowed("REMOTE_ADDR"), addr.to_string()));
        if *port != 0 {
            items.push((Cow::Borrowed("REMOTE_PORT"), port.to_string()));
        }
    }
    if !parts.headers.contains_key(hyper::header::HOST) {
        if let Some(authority) = authority {
            items.push((Cow::Borrowed("HTTP_HOST"), latin1(authority)));
        }
    }
    for name in parts.headers.keys() {
        let Some(cgi) = cgi_name(name.as_str()) else {
            continue;
        };
        let separator: &[u8] = if name == hyper::header::COOKIE {
            b"; "
        } else {
            b","
        };
        let mut joined = Vec::new();
        for (i, value) in parts.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                joined.extend_from_slice(separator);
            }
            joined.extend_from_slice(value.as_bytes());
        }
        items.push((cgi, latin1(&joined)));
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(request: hyper::Request<()>) -> hyper::http::request::Parts {
        request.into_parts().0
    }

    fn get<'a>(items: &'a Items, key: &str) -> Option<&'a str> {
        items
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn context(root_path: &str) -> Context<'_> {
        Context {
            root_path,
            https: false,
            client: Some((Cow::Borrowed("10.0.0.7"), 51234)),
            server: Some("127.0.0.1:8000".parse().unwrap()),
        }
    }

    #[test]
    fn the_cgi_variables_of_a_request() {
        let request = hyper::Request::post("/caf%C3%A9/a%2Fb?x=1&y=%20")
            .header("host", "Example.COM:8443")
            .header("content-type", "application/json")
            .header("content-length", "2")
            .header("x-token", "t1")
            .header("x-token", "t2")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("x_forged", "nope")
            .header(
                "x-latin",
                hyper::header::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
            )
            .body(())
            .unwrap();
        let items = cgi_items(&parts(request), &context(""));
        assert_eq!(get(&items, "REQUEST_METHOD"), Some("POST"));
        assert_eq!(get(&items, "SCRIPT_NAME"), Some(""));
        // UTF-8 bytes of the decoded path, each as one latin-1 code point.
        assert_eq!(get(&items, "PATH_INFO"), Some("/caf\u{c3}\u{a9}/a/b"));
        assert_eq!(get(&items, "QUERY_STRING"), Some("x=1&y=%20"));
        assert_eq!(get(&items, "SERVER_PROTOCOL"), Some("HTTP/1.1"));
        assert_eq!(get(&items, "SERVER_NAME"), Some("example.com"));
        assert_eq!(get(&items, "SERVER_PORT"), Some("8443"));
        assert_eq!(get(&items, "REMOTE_ADDR"), Some("10.0.0.7"));
        assert_eq!(get(&items, "REMOTE_PORT"), Some("51234"));
        assert_eq!(get(&items, "CONTENT_TYPE"), Some("application/json"));
        assert_eq!(get(&items, "CONTENT_LENGTH"), Some("2"));
        assert_eq!(get(&items, "HTTP_CONTENT_TYPE"), None);
        assert_eq!(get(&items, "HTTP_HOST"), Some("Example.COM:8443"));
        assert_eq!(get(&items, "HTTP_X_TOKEN"), Some("t1,t2"));
        assert_eq!(get(&items, "HTTP_COOKIE"), Some("a=1; b=2"));
        assert_eq!(get(&items, "HTTP_X_FORGED"), None);
        assert_eq!(get(&items, "HTTP_X_LATIN"), Some("caf\u{e9}"));
    }

    #[test]
    fn http2_authority_and_no_client() {
        let mut request = hyper::Request::get("https://h2.example:9443/x")
            .body(())
            .unwrap();
        *request.version_mut() = hyper::Version::HTTP_2;
        let mut context = context("");
        context.client = None;
        context.https = true;
        let items = cgi_items(&parts(request), &context);
        assert_eq!(get(&items, "HTTP_HOST"), Some("h2.example:9443"));
        assert_eq!(get(&items, "SERVER_NAME"), Some("h2.example"));
        assert_eq!(get(&items, "SERVER_PORT"), Some("9443"));
        assert_eq!(get(&items, "SERVER_PROTOCOL"), Some("HTTP/2"));
        assert_eq!(get(&items, "REMOTE_ADDR"), None);
        assert_eq!(get(&items, "CONTENT_LENGTH"), None);
    }

    #[test]
    fn root_path_is_script_name_and_stripped_from_path_info_when_present() {
        assert_eq!(path_info("/api/users", "/api"), b"/users");
        assert_eq!(path_info("/api", "/api"), b"");
        assert_eq!(path_info("/users", "/api"), b"/users");
        assert_eq!(path_info("/apix/users", "/api"), b"/apix/users");
        assert_eq!(path_info("/%61pi/x", "/api"), b"/x");
        assert_eq!(path_info("/a%00b%ff", ""), b"/a\0b\xff");
        let request = hyper::Request::get("/api/v1").body(()).unwrap();
        let items = cgi_items(&parts(request), &context("/api"));
        assert_eq!(get(&items, "SCRIPT_NAME"), Some("/api"));
        assert_eq!(get(&items, "PATH_INFO"), Some("/v1"));
    }

    #[test]
    fn header_names_as_cgi() {
        assert_eq!(cgi_name("x-request-id").unwrap(), "HTTP_X_REQUEST_ID");
        assert_eq!(cgi_name("content-type").unwrap(), "CONTENT_TYPE");
        assert_eq!(cgi_name("content-length").unwrap(), "CONTENT_LENGTH");
        assert_eq!(cgi_name("accept-encoding").unwrap(), "HTTP_ACCEPT_ENCODING");
        assert!(cgi_name("x_real_ip").is_none());
    }

    #[test]
    fn server_name_and_port() {
        let server: SocketAddr = "[::1]:8000".parse().unwrap();
        let ours = |host: &[u8]| server_name_port(Some(host), Some(server), false);
        assert_eq!(ours(b"example.com"), ("example.com".into(), "80".into()));
        assert_eq!(
            server_name_port(Some(b"example.com"), None, true),
            ("example.com".into(), "443".into())
        );
        assert_eq!(ours(b"[::1]:9000"), ("::1".into(), "9000".into()));
        assert_eq!(ours(b"10.0.0.1:1"), ("10.0.0.1".into(), "1".into()));
        // Malformed hosts fall back to the listener's address.
        for bad in [
            &b""[..],
            b":80",
            b"a:",
            b"a:x",
            b"a:65536",
            b"a:+80",
            b"a:80:81",
            b"a b",
            b"a/b",
            b"[::1",
            b"[::1]x",
            b"[nothex]:80",
            b"[::1]:",
            b"a@b",
            b"\xff",
            b"a:123456",
        ] {
            assert_eq!(
                ours(bad),
                ("::1".into(), "8000".into()),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert!(parse_host(bad).is_none(), "{bad:?}");
        }
        assert_eq!(
            server_name_port(None, None, false),
            ("localhost".into(), "80".into())
        );
    }

    /// Any bytes as a Host: never a panic, and what is accepted is well formed (a port
    /// that round-trips, a name of host characters or a bracketed IPv6 address).
    #[test]
    fn random_hosts_parse_or_are_refused() {
        const ALPHABET: &[u8] = b"0123456789abcdef:.[]-_ /@\xff\x00%";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..50_000 {
            let len = (next() % 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            let Some((name, port)) = parse_host(&bytes) else {
                continue;
            };
            let text = std::str::from_utf8(&bytes).unwrap();
            match port {
                Some(p) => {
                    let written = text.rsplit_once(':').unwrap().1;
                    assert_eq!(written.parse::<u16>().ok(), Some(p), "{text:?}");
                }
                None => assert_eq!(name, text),
            }
            if let Some(inner) = name.strip_prefix('[') {
                assert!(inner
                    .trim_end_matches(']')
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok());
            } else {
                assert!(!name.is_empty() && !name.contains([':', ' ', '/', '@', '[', ']']));
            }
            let (server_name, server_port) = server_name_port(Some(&bytes), None, false);
            assert!(!server_name.is_empty() && server_port.parse::<u16>().is_ok());
        }
    }
}
