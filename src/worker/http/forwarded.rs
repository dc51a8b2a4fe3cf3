//! Proxy headers: which peers are trusted (`forwarded_allow_ips`: addresses, CIDRs, or
//! `"*"`), which of their headers are read (`forwarded_headers`: [`ProxyHeaders`]), and
//! the real client address and scheme a trusted proxy reports in `Forwarded` (RFC 7239)
//! or `X-Forwarded-For` / `X-Forwarded-Proto`.
//!
//! Only the headers the proxy manages may be read: a proxy that sets `X-Forwarded-For`
//! (nginx's `$proxy_add_x_forwarded_for`) passes a client's own `Forwarded` through
//! untouched, so believing it would let any client pick its address. The default reads
//! the `X-Forwarded-*` pair alone, as Gunicorn and uvicorn do.
//!
//! The chain is walked from the right, as nginx's `real_ip_recursive` does: each entry
//! was appended by the hop before it, so an entry is believed only while the hop that
//! wrote it is trusted. The first address written by an untrusted hop (or the leftmost
//! one) is the client; everything to its left could have been forged by the client.
//! With `forwarded_headers = "both"`, `Forwarded` wins over the `X-Forwarded-*` pair
//! when a request carries both.
//! Connections on unix sockets count as coming from 127.0.0.1 (a local proxy).
//!
//! An entry the walk reaches but cannot read (not UTF-8, malformed, empty, `unknown`,
//! obfuscated) ends it with [`Client::Unknown`]: the trusted hop that wrote it said
//! there was a client and did not say who, so the hop itself is never the answer.
//! Entries the walk does not reach are not parsed at all, so what a client writes
//! ahead of what its proxy appends cannot change the result.

use hyper::header::{HeaderMap, HeaderName, HeaderValue, FORWARDED};
use std::net::{IpAddr, Ipv4Addr};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The peer address used for connections on unix sockets.
pub const UNIX_PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Which proxy headers a trusted peer's request is read from (`forwarded_headers`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProxyHeaders {
    /// `X-Forwarded-For` and `X-Forwarded-Proto`; `Forwarded` is ignored (the default,
    /// as Gunicorn and uvicorn: what nginx's usual configuration sets).
    #[default]
    XForwarded,
    /// `Forwarded` (RFC 7239); the `X-Forwarded-*` pair is ignored.
    Forwarded,
    /// `Forwarded` when the request carries it, else the `X-Forwarded-*` pair: only
    /// behind a proxy that sets or removes both.
    Both,
}

impl ProxyHeaders {
    /// The values `forwarded_headers` allows, as the config error lists them.
    pub const ALLOWED: &'static str = "x-forwarded | forwarded | both";

    /// Parses a `forwarded_headers` value.
    pub fn parse(text: &str) -> Option<ProxyHeaders> {
        match text {
            "x-forwarded" => Some(ProxyHeaders::XForwarded),
            "forwarded" => Some(ProxyHeaders::Forwarded),
            "both" => Some(ProxyHeaders::Both),
            _ => None,
        }
    }

    /// The value as the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyHeaders::XForwarded => "x-forwarded",
            ProxyHeaders::Forwarded => "forwarded",
            ProxyHeaders::Both => "both",
        }
    }

    fn reads_forwarded(self) -> bool {
        matches!(self, ProxyHeaders::Forwarded | ProxyHeaders::Both)
    }

    fn reads_x_forwarded(self) -> bool {
        matches!(self, ProxyHeaders::XForwarded | ProxyHeaders::Both)
    }
}

/// The parsed `forwarded_allow_ips`, and the `forwarded_headers` read from them (parsed
/// once, by the config; the workers use it as it is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    /// The entries as written (trimmed), for `--print-config`.
    entries: Vec<String>,
    any: bool,
    networks: Vec<(IpAddr, u8)>,
    /// Which of a trusted peer's headers are read.
    headers: ProxyHeaders,
}

impl TrustedProxies {
    /// Parses the entries (reading `headers` from them); errors name the bad entry.
    pub fn parse(entries: &[String], headers: ProxyHeaders) -> Result<TrustedProxies, String> {
        let mut trusted = TrustedProxies {
            headers,
            ..TrustedProxies::default()
        };
        for entry in entries {
            let entry = entry.trim();
            trusted.entries.push(entry.to_string());
            if entry == "*" {
                trusted.any = true;
                continue;
            }
            let (ip, prefix) = match entry.split_once('/') {
                Some((ip, prefix)) => (ip, Some(prefix)),
                None => (entry, None),
            };
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("{entry:?} is not an IP address or CIDR"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match prefix {
                Some(p) => {
                    let bits = p
                        .parse::<u8>()
                        .map_err(|_| format!("{entry:?}: bad prefix length"))?;
                    if bits > max {
                        return Err(format!("{entry:?}: prefix length above {max}"));
                    }
                    bits
                }
                None => max,
            };
            trusted.networks.push(canonical_network(ip, bits));
        }
        Ok(trusted)
    }

    /// The default: the loopback addresses, `["127.0.0.1", "::1"]`.
    pub fn loopback() -> TrustedProxies {
        TrustedProxies {
            entries: vec!["127.0.0.1".to_string(), "::1".to_string()],
            any: false,
            networks: vec![
                (IpAddr::V4(Ipv4Addr::LOCALHOST), 32),
                (IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 128),
            ],
            headers: ProxyHeaders::default(),
        }
    }

    /// Which headers are read.
    pub fn headers(&self) -> ProxyHeaders {
        self.headers
    }

    /// Reads `headers` from now on.
    pub fn set_headers(&mut self, headers: ProxyHeaders) {
        self.headers = headers;
    }

    /// The entries as written.
    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        if self.any {
            return true;
        }
        let ip = canonical(ip);
        self.networks
            .iter()
            .any(|(net, bits)| in_network(ip, *net, *bits))
    }
}

/// An IPv4-mapped network (`::ffff:10.0.0.0/104`) as the IPv4 network it covers
/// (`10.0.0.0/8`), so that it matches peers as [`canonical`] presents them. Its prefix
/// must shrink with it: an IPv4 mask of 104 bits would match every address. A prefix
/// shorter than the mapped range's 96 bits stays an IPv6 network.
fn canonical_network(ip: IpAddr, bits: u8) -> (IpAddr, u8) {
    match ip {
        IpAddr::V6(v6) if bits >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), bits - 96),
            None => (ip, bits),
        },
        _ => (ip, bits),
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The most chain entries one request's walk looks at. A longer trusted chain than
/// this is not a real deployment; reaching the limit makes the client unknown.
pub const MAX_HOPS: usize = 64;

/// Who the client is, by a trusted proxy's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// The headers name no address (`X-Forwarded-Proto` alone): the peer is the client.
    Peer,
    /// The nearest address that is not a trusted proxy (or the leftmost of an
    /// all-trusted chain).
    Ip(IpAddr),
    /// The walk reached an entry that names no usable address: malformed, not UTF-8,
    /// empty, `unknown`, obfuscated, or past [`MAX_HOPS`]. Never the proxy's address:
    /// the proxy said there was a client before it, and who that is cannot be told.
    Unknown,
}

/// What a trusted proxy told us about the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub client: Client,
    /// `http` or `https`, when a trusted proxy said.
    pub scheme: Option<&'static str>,
}

/// The client behind the proxies, if `peer` is trusted and the request carries proxy
/// headers that `forwarded_headers` reads; `None` means "the peer is the client" (no
/// such header, or an untrusted peer).
///
/// Works on the raw bytes of every field line, from the right, and looks only at the
/// entries the walk reaches: whatever the client wrote left of the first untrusted
/// address (garbage, bytes that are not UTF-8, an unclosed quote) is never parsed.
pub fn resolve(proxies: &TrustedProxies, peer: IpAddr, headers: &HeaderMap) -> Option<Forwarded> {
    // The names first: a request without proxy headers (most) skips the trust check,
    // which the connection has made already when it calls this.
    if !names_a_proxy_header(headers) || !proxies.trusts(peer) {
        return None;
    }
    let mode = proxies.headers;
    if mode.reads_forwarded() && headers.contains_key(FORWARDED) {
        // It wins even when malformed: a proxy that writes `Forwarded` may pass the
        // client's own `X-Forwarded-For` through untouched, so no fallback to it.
        let lines = headers.get_all(FORWARDED).iter().rev();
        let elements = FromRight::new(lines, true);
        let (client, scheme) = walk(proxies, peer, elements, parse_forwarded_element);
        return Some(Forwarded { client, scheme });
    }
    if !mode.reads_x_forwarded() {
        return None;
    }
    // The rightmost entry was written by the peer, which is trusted.
    let scheme = FromRight::new(headers.get_all(&X_FORWARDED_PROTO).iter().rev(), false)
        .next()
        .and_then(Result::ok)
        .and_then(scheme_of);
    if !headers.contains_key(&X_FORWARDED_FOR) {
        return scheme.map(|scheme| Forwarded {
            client: Client::Peer,
            scheme: Some(scheme),
        });
    }
    let lines = headers.get_all(&X_FORWARDED_FOR).iter().rev();
    let (client, _) = walk(proxies, peer, FromRight::new(lines, false), |entry| {
        Some(Hop {
            ip: parse_node(entry),
            scheme: None,
        })
    });
    Some(Forwarded { client, scheme })
}

/// Whether any of the three proxy headers is present: one pass over the header names
/// (a few compares each), cheaper than the three hashed lookups `resolve` makes, which a
/// request from a trusted peer without proxy headers (the loopback default) would
/// otherwise pay on every request.
#[inline]
fn names_a_proxy_header(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| *name == FORWARDED || *name == X_FORWARDED_FOR || *name == X_FORWARDED_PROTO)
}

/// What one chain entry says, once parsed.
#[derive(Debug, PartialEq, Eq)]
struct Hop {
    /// None: no usable address (`unknown`, obfuscated, absent, not an address).
    ip: Option<IpAddr>,
    scheme: Option<&'static str>,
}

/// An entry that cannot even be cut out of its field line (an unclosed quote).
#[derive(Debug, PartialEq, Eq)]
struct Unclosed;

/// Walks the chain from the right: `current` starts as the peer, and each entry was
/// written by `current`, so it is believed while `current` is trusted. `parse` returns
/// None for an entry that is malformed.
fn walk<'a>(
    proxies: &TrustedProxies,
    peer: IpAddr,
    mut entries: impl Iterator<Item = Result<&'a [u8], Unclosed>>,
    parse: impl Fn(&[u8]) -> Option<Hop>,
) -> (Client, Option<&'static str>) {
    let mut current = peer;
    let mut scheme = None;
    let mut walked = 0;
    while proxies.trusts(current) {
        let Some(entry) = entries.next() else {
            // Every entry was written by a trusted hop: the leftmost is the client.
            break;
        };
        if walked == MAX_HOPS {
            return (Client::Unknown, scheme);
        }
        walked += 1;
        let Some(hop) = entry.ok().and_then(&parse) else {
            return (Client::Unknown, scheme);
        };
        // `current` is trusted, so what it wrote is believed.
        if hop.scheme.is_some() {
            scheme = hop.scheme;
        }
        match hop.ip {
            Some(ip) => current = ip,
            None => return (Client::Unknown, scheme),
        }
    }
    (Client::Ip(current), scheme)
}

/// The entries of a comma list spread over several field lines (one list, RFC 9110
/// 5.3), from the right: `lines` come last line first, and each line is cut from its
/// end, only as far as the caller asks. Entries are trimmed of spaces and tabs; an
/// empty entry is yielded as empty (the walk does not skip it: whoever wrote it named
/// no client). With `quoted` (`Forwarded`), commas inside double-quoted strings do not
/// separate, and a line's quote left open yields [`Unclosed`] for the rest of it.
/// Quotes are matched per line and from the right, so a quote the client left open
/// further left cannot swallow the entries a proxy appended after it.
struct FromRight<'a, I> {
    lines: I,
    /// What is left of the current line, left of the entries already yielded.
    rest: Option<&'a [u8]>,
    quoted: bool,
}

impl<'a, I: Iterator<Item = &'a HeaderValue>> FromRight<'a, I> {
    fn new(lines: I, quoted: bool) -> Self {
        FromRight {
            lines,
            rest: None,
            quoted,
        }
    }
}

impl<'a, I: Iterator<Item = &'a HeaderValue>> Iterator for FromRight<'a, I> {
    type Item = Result<&'a [u8], Unclosed>;

    fn next(&mut self) -> Option<Self::Item> {
        let line = match self.rest.take() {
            Some(line) => line,
            None => self.lines.next()?.as_bytes(),
        };
        let (rest, entry) = split_last(line, self.quoted);
        self.rest = rest;
        Some(entry)
    }
}

/// Cuts the last entry off `line`: (what is left of its comma, if there is one; the
/// entry). Scanning from the right, a `"` opens a quoted string, and within one a `"`
/// closes it unless an odd run of backslashes escapes it.
fn split_last(line: &[u8], quoted: bool) -> (Option<&[u8]>, Result<&[u8], Unclosed>) {
    let mut inside = false;
    for index in (0..line.len()).rev() {
        match line[index] {
            b',' if !inside => return (Some(&line[..index]), Ok(trim(&line[index + 1..]))),
            b'"' if quoted && !inside => inside = true,
            b'"' if quoted => {
                let backslashes = line[..index]
                    .iter()
                    .rev()
                    .take_while(|b| **b == b'\\')
                    .count();
                inside = backslashes % 2 == 1;
            }
            _ => {}
        }
    }
    (
        None,
        if inside {
            Err(Unclosed)
        } else {
            Ok(trim(line))
        },
    )
}

/// Without leading and trailing spaces and tabs (OWS).
fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

fn scheme_of(text: &[u8]) -> Option<&'static str> {
    let text = trim(text);
    if text.eq_ignore_ascii_case(b"https") {
        Some("https")
    } else if text.eq_ignore_ascii_case(b"http") {
        Some("http")
    } else {
        None
    }
}

/// A token character (RFC 9110 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// One `Forwarded` element, `for=...;proto=...;by=...` (RFC 7239 4), strictly: pairs
/// of a token, `=`, and a token or quoted string, separated by `;` (spaces around them
/// are tolerated); parameter names are case-insensitive and may not repeat. A value
/// that is not a token may still be written unquoted when it has no `"`, `;`, space or
/// control byte (`for=[2001:db8::1]:80`, which some proxies send). None: malformed.
fn parse_forwarded_element(element: &[u8]) -> Option<Hop> {
    let mut hop = Hop {
        ip: None,
        scheme: None,
    };
    let (mut seen_for, mut seen_proto) = (false, false);
    let mut rest = element;
    loop {
        let name_len = rest.iter().take_while(|b| is_tchar(**b)).count();
        if name_len == 0 {
            return None;
        }
        let (name, after) = rest.split_at(name_len);
        let after = trim(after).strip_prefix(b"=")?;
        let (value, after) = parse_value(trim(after))?;
        if name.eq_ignore_ascii_case(b"for") {
            if std::mem::replace(&mut seen_for, true) {
                return None;
            }
            hop.ip = parse_node(&value);
        } else if name.eq_ignore_ascii_case(b"proto") {
            if std::mem::replace(&mut seen_proto, true) {
                return None;
            }
            // A proto that is not http or https is ignored, not believed.
            hop.scheme = scheme_of(&value);
        }
        let after = trim(after);
        if after.is_empty() {
            return Some(hop);
        }
        rest = trim(after.strip_prefix(b";")?);
    }
}

/// A parameter value at the start of `text`, unescaped: (value, what follows it).
fn parse_value(text: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let Some(inner) = text.strip_prefix(b"\"") else {
        let len = text
            .iter()
            .take_while(|b| matches!(b, 0x21..=0x7e) && !matches!(b, b'"' | b';' | b','))
            .count();
        return (len > 0).then(|| (text[..len].to_vec(), &text[len..]));
    };
    let mut value = Vec::new();
    let mut bytes = inner.iter().enumerate();
    while let Some((index, &b)) = bytes.next() {
        match b {
            b'"' => return Some((value, &inner[index + 1..])),
            b'\\' => {
                let (_, &escaped) = bytes.next()?;
                if !is_text(escaped) {
                    return None;
                }
                value.push(escaped);
            }
            b if is_text(b) => value.push(b),
            _ => return None,
        }
    }
    None
}

/// What a quoted string may hold: tab, visible ASCII, space, and obs-text.
fn is_text(b: u8) -> bool {
    b == b'\t' || b >= 0x20 && b != 0x7f
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:80`; a port may be obfuscated (`_x`). Anything else
/// (`unknown`, an obfuscated name `_x`, bytes that are not UTF-8) is None.
fn parse_node(bytes: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(bytes).ok()?;
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, port) = rest.split_once(']')?;
        if !port.is_empty() && !is_port(port.strip_prefix(':')?) {
            return None;
        }
        return ip.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    match text.split_once(':') {
        Some((ip, port)) if is_port(port) => ip.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        _ => None,
    }
}

/// A port number, or an obfuscated port (RFC 7239 6.3: `_` then letters, digits, `.`,
/// `_`, `-`).
fn is_port(text: &str) -> bool {
    match text.strip_prefix('_') {
        Some(obfuscated) => {
            !obfuscated.is_empty()
                && obfuscated
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        }
        None => {
            !text.is_empty()
                && text.bytes().all(|b| b.is_ascii_digit())
                && text.parse::<u16>().is_ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trusted proxies whose headers are all read (`forwarded_headers = "both"`), so the
    /// parsers of both kinds are under test.
    fn proxies(entries: &[&str]) -> TrustedProxies {
        proxies_reading(entries, ProxyHeaders::Both)
    }

    fn proxies_reading(entries: &[&str], headers: ProxyHeaders) -> TrustedProxies {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        TrustedProxies::parse(&entries, headers).expect("valid entries")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let pairs: Vec<(&str, &[u8])> = pairs.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        raw_headers(&pairs)
    }

    /// Header lines as raw bytes, in order (several lines of a name stay several).
    fn raw_headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    /// The client a trusted 127.0.0.1 reports with these raw header lines.
    fn client_via_localhost(pairs: &[(&str, &[u8])]) -> Client {
        let p = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        resolve(&p, ip("127.0.0.1"), &raw_headers(pairs))
            .expect("a trusted peer with a header")
            .client
    }

    fn at(text: &str) -> Client {
        Client::Ip(ip(text))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn cidrs_and_mapped_addresses() {
        let p = proxies(&["10.0.0.0/8", "2001:db8::/32", "192.168.1.7"]);
        assert!(p.trusts(ip("10.200.3.4")));
        assert!(!p.trusts(ip("11.0.0.1")));
        assert!(p.trusts(ip("2001:db8:1::5")));
        assert!(!p.trusts(ip("2001:db9::1")));
        assert!(p.trusts(ip("::ffff:10.1.2.3")));
        assert!(p.trusts(ip("192.168.1.7")));
        assert!(!p.trusts(ip("192.168.1.8")));
        assert!(proxies(&["*"]).trusts(ip("8.8.8.8")));
        assert!(proxies(&["0.0.0.0/0"]).trusts(ip("8.8.8.8")));
        assert!(
            TrustedProxies::parse(&["10.0.0.0/33".to_string()], ProxyHeaders::default()).is_err()
        );
        assert!(TrustedProxies::parse(&["ten".to_string()], ProxyHeaders::default()).is_err());
        let loopback = ["127.0.0.1".to_string(), "::1".to_string()];
        assert_eq!(
            TrustedProxies::parse(&loopback, ProxyHeaders::default()),
            Ok(TrustedProxies::loopback())
        );
    }

    #[test]
    fn mapped_networks_keep_their_width() {
        let p = proxies(&["::ffff:10.0.0.0/104", "::ffff:192.0.2.7"]);
        assert!(p.trusts(ip("10.9.8.7")));
        assert!(p.trusts(ip("::ffff:10.9.8.7")));
        assert!(p.trusts(ip("192.0.2.7")));
        assert!(
            !p.trusts(ip("11.0.0.1")),
            "a mapped /104 is 10.0.0.0/8, not everything"
        );
        assert!(
            !p.trusts(ip("192.0.2.8")),
            "a mapped address is that one address"
        );
    }

    #[test]
    fn untrusted_peers_are_the_client() {
        let p = proxies(&["127.0.0.1"]);
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(resolve(&p, ip("198.51.100.1"), &h), None);
    }

    #[test]
    fn the_chain_is_believed_only_through_trusted_hops() {
        let p = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.1.1")]);
        // 127.0.0.1 (trusted) says 10.1.1.1 (trusted) says 203.0.113.9: the client.
        // 6.6.6.6 was written by the client itself and is ignored.
        let got = resolve(&p, ip("127.0.0.1"), &h).unwrap();
        assert_eq!(got.client, at("203.0.113.9"));
        // Several header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "10.1.1.1:5555"),
            ("x-forwarded-proto", "https"),
        ]);
        let got = resolve(&p, ip("127.0.0.1"), &h).unwrap();
        assert_eq!(got.client, at("203.0.113.9"));
        assert_eq!(got.scheme, Some("https"));
        // All trusted: the leftmost address.
        let h = headers(&[("x-forwarded-for", "10.0.0.2, 10.0.0.3")]);
        assert_eq!(
            resolve(&p, ip("127.0.0.1"), &h).unwrap().client,
            at("10.0.0.2")
        );
    }

    #[test]
    fn forwarded_header_wins_and_carries_the_scheme() {
        let p = proxies(&["127.0.0.1"]);
        let h = headers(&[
            (
                "forwarded",
                "for=\"[2001:db8::7]:4711\";proto=https;by=_edge",
            ),
            ("x-forwarded-for", "198.51.100.3"),
        ]);
        let got = resolve(&p, ip("127.0.0.1"), &h).unwrap();
        assert_eq!(got.client, at("2001:db8::7"));
        assert_eq!(got.scheme, Some("https"));
        let h = headers(&[("forwarded", "for=unknown, for=192.0.2.43")]);
        assert_eq!(
            resolve(&p, ip("127.0.0.1"), &h).unwrap().client,
            at("192.0.2.43")
        );
        let h = headers(&[("forwarded", "For=192.0.2.60;Proto=http")]);
        let got = resolve(&p, ip("127.0.0.1"), &h).unwrap();
        assert_eq!((got.client, got.scheme), (at("192.0.2.60"), Some("http")));
    }

    #[test]
    fn proto_alone_changes_only_the_scheme() {
        let p = proxies(&["::1"]);
        let h = headers(&[("x-forwarded-proto", "HTTPS")]);
        let got = resolve(&p, ip("::1"), &h).unwrap();
        assert_eq!((got.client, got.scheme), (Client::Peer, Some("https")));
        let h = headers(&[("x-forwarded-proto", "gopher")]);
        assert_eq!(resolve(&p, ip("::1"), &h), None);
    }

    #[test]
    fn a_malformed_entry_the_client_wrote_left_of_the_proxy_is_never_read() {
        // nginx's `$proxy_add_x_forwarded_for` appends `, <client>` to what the client
        // sent: the first untrusted address ends the walk before the garbage.
        for line in [
            &b"\xff, 203.0.113.9"[..],
            b"\xff,203.0.113.9",
            b"garbage, 203.0.113.9",
            b", 203.0.113.9",
            b"unknown, 203.0.113.9:5555",
            b"\"\xff\\, 203.0.113.9",
            b"127.0.0.1, 203.0.113.9",
        ] {
            assert_eq!(
                client_via_localhost(&[("x-forwarded-for", line)]),
                at("203.0.113.9"),
                "{line:?}"
            );
        }
        for line in [
            &b"for=\", for=203.0.113.9"[..],
            b"for=\"\xff, for=203.0.113.9",
            b"\xff, for=203.0.113.9",
            b"for=\"[::1, For=\"203.0.113.9\"",
            b"for=127.0.0.1, for=203.0.113.9",
        ] {
            assert_eq!(
                client_via_localhost(&[("forwarded", line)]),
                at("203.0.113.9"),
                "{line:?}"
            );
        }
    }

    #[test]
    fn a_malformed_entry_a_trusted_hop_wrote_makes_the_client_unknown() {
        // Reached through trusted hops only (the peer, then 10.0.0.0/8): the client is
        // not the peer, and not any hop, but unknown.
        for line in [
            &b"\xff"[..],
            b"\xff\xfe",
            b"",
            b" ",
            b"garbage",
            b"\xff, 10.0.0.5",
            b"garbage, 10.0.0.5:80",
            b"203.0.113.9, , 10.0.0.5",
            b"10.0.0.5,",
            b"unknown",
            b"unknown, 10.0.0.5",
            b"_hidden",
            b"\"203.0.113.9\"",
            b"203.0.113.9:99999",
            b"203.0.113.9:",
            b"[2001:db8::1",
            b"[203.0.113.9]",
            b"2001:db8::1]:80",
            b"1.2.3.4.5",
        ] {
            assert_eq!(
                client_via_localhost(&[("x-forwarded-for", line)]),
                Client::Unknown,
                "{line:?}"
            );
        }
        for line in [
            &b"for=\""[..],
            b"for=\"203.0.113.9",
            b"for=\"203.0.113.9\\\"",
            b"for=203.0.113.9, for=\"",
            b"for=\xff",
            b"\xff",
            b"for=\"\xff\"",
            b"for=unknown",
            b"for=\"unknown\"",
            b"for=unknown, for=10.0.0.5",
            b"for=_hidden",
            b"for=\"_hidden:80\"",
            b"for=203.0.113.9, for=_gateway",
            b"for=203.0.113.9, , for=10.0.0.5",
            b"for=203.0.113.9,",
            b"",
            b"for=",
            b"for=\"\"",
            b"203.0.113.9",
            b"for",
            b"=203.0.113.9",
            b"for=203.0.113.9;",
            b"for=203.0.113.9;;proto=https",
            b"for=203.0.113.9;for=198.51.100.1",
            b"for=203.0.113.9 proto=https",
            b"for=203.0.113.9\"x\"",
            b"for=\"203.0.113.9\"x",
            b"f\xffr=203.0.113.9",
            b"proto=https",
            b"by=10.0.0.9",
            b"for=\"[2001:db8::1\"",
        ] {
            assert_eq!(
                client_via_localhost(&[("forwarded", line)]),
                Client::Unknown,
                "{line:?}"
            );
        }
    }

    #[test]
    fn forwarded_values_quoting_escapes_case_and_ports() {
        for (line, want) in [
            (&b"for=\"[2001:db8::1]:4711\""[..], "2001:db8::1"),
            (b"for=\"[2001:db8::1]\"", "2001:db8::1"),
            (b"for=[2001:db8::1]:4711", "2001:db8::1"),
            (b"for=\"2001:db8::1\"", "2001:db8::1"),
            (b"for=\"[2001:db8::1]:_port\"", "2001:db8::1"),
            (b"for=203.0.113.9", "203.0.113.9"),
            (b"for=\"203.0.113.9:8080\"", "203.0.113.9"),
            (b"for=203.0.113.9:_p.x-1", "203.0.113.9"),
            (b"FOR=203.0.113.9", "203.0.113.9"),
            (b"fOr = 203.0.113.9 ; by=_x", "203.0.113.9"),
            (b"for=\"\\2\\03.0.113.9\"", "203.0.113.9"),
            (
                b"by=\"a\\\"b, c\";for=203.0.113.9;host=\"x\xffy\"",
                "203.0.113.9",
            ),
            (b"for=203.0.113.9;by=\"a\\\\\"", "203.0.113.9"),
            (b"for=203.0.113.9;ext=\"a;b=c,d\"", "203.0.113.9"),
            (
                b"for=198.51.100.1, for=203.0.113.9;by=\"x, for=10.0.0.1\"",
                "203.0.113.9",
            ),
            (b" \tfor=203.0.113.9\t ", "203.0.113.9"),
        ] {
            assert_eq!(
                client_via_localhost(&[("forwarded", line)]),
                at(want),
                "{line:?}"
            );
        }
        for (line, want) in [
            (&b"[2001:db8::1]:80"[..], "2001:db8::1"),
            (b"2001:db8::1", "2001:db8::1"),
            (b"[2001:db8::1]", "2001:db8::1"),
            (b"  203.0.113.9:443\t", "203.0.113.9"),
            (b"198.51.100.1,203.0.113.9", "203.0.113.9"),
        ] {
            assert_eq!(
                client_via_localhost(&[("x-forwarded-for", line)]),
                at(want),
                "{line:?}"
            );
        }
    }

    #[test]
    fn several_lines_are_one_list_and_quotes_do_not_cross_lines() {
        let line = |v: &'static str| v.as_bytes();
        assert_eq!(
            client_via_localhost(&[
                ("x-forwarded-for", b"\xff"),
                ("x-forwarded-for", line("203.0.113.9")),
            ]),
            at("203.0.113.9")
        );
        assert_eq!(
            client_via_localhost(&[
                ("x-forwarded-for", line("198.51.100.1, 203.0.113.9")),
                ("x-forwarded-for", line("10.0.0.5")),
                ("x-forwarded-for", line("10.0.0.6:1234")),
            ]),
            at("203.0.113.9")
        );
        // The trusted 10.0.0.5 wrote `\xff`, the end of the line before.
        assert_eq!(
            client_via_localhost(&[
                ("x-forwarded-for", b"203.0.113.9, \xff"),
                ("x-forwarded-for", line("10.0.0.5")),
            ]),
            Client::Unknown
        );
        // An empty last line is an empty last entry (`a` and `` are `a, `).
        assert_eq!(
            client_via_localhost(&[
                ("x-forwarded-for", line("203.0.113.9")),
                ("x-forwarded-for", line("")),
            ]),
            Client::Unknown
        );
        assert_eq!(
            client_via_localhost(&[
                ("forwarded", line("for=\"")),
                ("forwarded", line("for=203.0.113.9")),
            ]),
            at("203.0.113.9")
        );
        assert_eq!(
            client_via_localhost(&[
                ("forwarded", line("for=203.0.113.9")),
                ("forwarded", line("for=\"10.0.0.5")),
            ]),
            Client::Unknown
        );
        assert_eq!(
            client_via_localhost(&[
                ("forwarded", line("for=198.51.100.1;proto=http")),
                ("forwarded", line("for=\"[2001:db8::1]:4711\";proto=https")),
                ("forwarded", line("for=10.0.0.5")),
            ]),
            at("2001:db8::1")
        );
    }

    #[test]
    fn forwarded_wins_and_never_falls_back() {
        // A valid Forwarded: XFF (and XFP) are not looked at.
        let got = resolve(
            &proxies(&["127.0.0.1"]),
            ip("127.0.0.1"),
            &raw_headers(&[
                ("x-forwarded-for", b"198.51.100.1"),
                ("forwarded", b"for=203.0.113.9"),
                ("x-forwarded-proto", b"https"),
            ]),
        )
        .unwrap();
        assert_eq!((got.client, got.scheme), (at("203.0.113.9"), None));
        // A malformed Forwarded is not a reason to believe XFF instead.
        for forwarded in [&b"for=\""[..], b"\xff", b"for=unknown", b""] {
            assert_eq!(
                client_via_localhost(&[
                    ("forwarded", forwarded),
                    ("x-forwarded-for", b"203.0.113.9"),
                ]),
                Client::Unknown,
                "{forwarded:?}"
            );
        }
        // And a malformed XFF does not matter beside a valid Forwarded.
        assert_eq!(
            client_via_localhost(&[
                ("x-forwarded-for", b"\xff"),
                ("forwarded", b"for=203.0.113.9"),
            ]),
            at("203.0.113.9")
        );
    }

    #[test]
    fn the_scheme_comes_from_entries_the_walk_reached_and_must_be_valid() {
        let p = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let scheme = |pairs: &[(&str, &[u8])]| {
            resolve(&p, ip("127.0.0.1"), &raw_headers(pairs)).and_then(|f| f.scheme)
        };
        // The proto nearest the client among the reached entries.
        let both = b"for=203.0.113.9;proto=https, for=10.0.0.5;proto=http";
        assert_eq!(scheme(&[("forwarded", both)]), Some("https"));
        // Written by the client (left of the first untrusted address): not believed.
        let forged = b"for=6.6.6.6;proto=https, for=203.0.113.9;proto=http";
        assert_eq!(scheme(&[("forwarded", forged)]), Some("http"));
        let forged = b"for=6.6.6.6;proto=https, for=203.0.113.9";
        assert_eq!(scheme(&[("forwarded", forged)]), None);
        // A malformed proto is ignored; an entry with a valid one still counts.
        assert_eq!(
            scheme(&[("forwarded", b"for=203.0.113.9;proto=gopher")]),
            None
        );
        assert_eq!(
            scheme(&[("forwarded", b"for=203.0.113.9;proto=\"HTTPS\"")]),
            Some("https")
        );
        let got = resolve(
            &p,
            ip("127.0.0.1"),
            &raw_headers(&[("forwarded", b"for=unknown;proto=https")]),
        )
        .unwrap();
        assert_eq!((got.client, got.scheme), (Client::Unknown, Some("https")));
        // A malformed entry's proto is not believed.
        assert_eq!(
            scheme(&[("forwarded", b"for=\"203.0.113.9;proto=https")]),
            None
        );
        // X-Forwarded-Proto: the rightmost entry, the one the peer wrote.
        assert_eq!(
            scheme(&[("x-forwarded-proto", b"\xff, https")]),
            Some("https")
        );
        assert_eq!(scheme(&[("x-forwarded-proto", b"https, \xff")]), None);
        assert_eq!(scheme(&[("x-forwarded-proto", b"https, gopher")]), None);
        assert_eq!(
            scheme(&[
                ("x-forwarded-proto", b"http"),
                ("x-forwarded-proto", b" Https "),
                ("x-forwarded-for", b"\xff"),
            ]),
            Some("https")
        );
        assert_eq!(
            resolve(
                &p,
                ip("127.0.0.1"),
                &raw_headers(&[("x-forwarded-proto", b"\xff")])
            ),
            None
        );
    }

    #[test]
    fn the_walk_is_bounded() {
        let started = std::time::Instant::now();
        // 100,000 trusted hops: the limit ends the walk, unknown.
        let trusted = vec!["10.0.0.1"; 100_000].join(", ");
        assert_eq!(
            client_via_localhost(&[("x-forwarded-for", trusted.as_bytes())]),
            Client::Unknown
        );
        let trusted = vec!["for=\"10.0.0.1:80\";proto=https"; 100_000].join(", ");
        assert_eq!(
            client_via_localhost(&[("forwarded", trusted.as_bytes())]),
            Client::Unknown
        );
        // 100,000 entries of garbage left of the real client: never read.
        let mut garbage = vec![&b"\"\xff"[..]; 100_000].join(&b","[..]);
        garbage.extend_from_slice(b", for=203.0.113.9");
        assert_eq!(
            client_via_localhost(&[("forwarded", &garbage)]),
            at("203.0.113.9")
        );
        garbage.truncate(garbage.len() - b", for=203.0.113.9".len());
        garbage.extend_from_slice(b", 203.0.113.9");
        assert_eq!(
            client_via_localhost(&[("x-forwarded-for", &garbage)]),
            at("203.0.113.9")
        );
        // Many lines count as many entries.
        let many: Vec<(&str, &[u8])> = vec![("x-forwarded-for", &b"10.0.0.1"[..]); 1000];
        assert_eq!(client_via_localhost(&many), Client::Unknown);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // Exactly MAX_HOPS entries, all trusted: the leftmost is the client; one more
        // is past the limit.
        let mut chain = vec!["10.0.0.2".to_string()];
        chain.extend((1..MAX_HOPS).map(|i| format!("10.0.1.{i}")));
        let line = chain.join(", ");
        assert_eq!(
            client_via_localhost(&[("x-forwarded-for", line.as_bytes())]),
            at("10.0.0.2")
        );
        let line = format!("203.0.113.9, {line}");
        assert_eq!(
            client_via_localhost(&[("x-forwarded-for", line.as_bytes())]),
            Client::Unknown
        );
    }

    #[test]
    fn entries_are_cut_from_the_right() {
        let cut = |line: &'static [u8]| split_last(line, true);
        assert_eq!(cut(b"a, b"), (Some(&b"a"[..]), Ok(&b"b"[..])));
        assert_eq!(cut(b"b"), (None, Ok(&b"b"[..])));
        assert_eq!(cut(b"a,\"x,y\""), (Some(&b"a"[..]), Ok(&b"\"x,y\""[..])));
        assert_eq!(
            cut(b"a,\"x\\\",y\""),
            (Some(&b"a"[..]), Ok(&b"\"x\\\",y\""[..]))
        );
        assert_eq!(
            cut(b"a,\"x\\\\\",y"),
            (Some(&b"a,\"x\\\\\""[..]), Ok(&b"y"[..]))
        );
        assert_eq!(cut(b"a,x\""), (None, Err(Unclosed)));
        assert_eq!(
            split_last(b"a,x\"", false),
            (Some(&b"a"[..]), Ok(&b"x\""[..]))
        );
    }

    /// A small deterministic generator (SplitMix64), so that a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
    }

    /// Bytes a header value may hold (what `HeaderValue::from_bytes` accepts), with the
    /// list syntax's own bytes often.
    fn random_bytes(rng: &mut Rng) -> Vec<u8> {
        let len = rng.below(12);
        (0..len)
            .map(|_| match rng.below(4) {
                0 => rng.pick(b",;=\"\\ \t[]:_"),
                1 => 0x80 + rng.below(0x80) as u8,
                2 => rng.pick(b"0123456789.af"),
                _ => 0x20 + rng.below(0x5f) as u8,
            })
            .collect()
    }

    const XFF_ATOMS: &[&[u8]] = &[
        b"203.0.113.9",
        b"198.51.100.7:8080",
        b"10.0.0.5",
        b"10.0.0.6:1",
        b"127.0.0.1",
        b"127.0.0.1:80",
        b"[2001:db8::1]:80",
        b"::1",
        b"unknown",
        b"_obf",
        b"",
        b" ",
        b"\xff",
        b"1.2.3.4.5",
        b"\"",
    ];

    const FORWARDED_ATOMS: &[&[u8]] = &[
        b"for=203.0.113.9",
        b"for=10.0.0.5;proto=https",
        b"for=\"[2001:db8::1]:4711\"",
        b"for=127.0.0.1",
        b"For=\"127.0.0.1:80\";Proto=http",
        b"for=\"10.0.0.7\"",
        b"for=unknown",
        b"for=_x",
        b"for=\"",
        b"\"",
        b"proto=http",
        b"by=\"a,b\\\"c\";for=10.0.0.8",
        b"for=\"\\\"",
        b"",
        b"\xff",
    ];

    /// Lines made of atoms (and now and then random bytes), or of random bytes alone.
    fn random_lines(rng: &mut Rng, atoms: &[&[u8]]) -> Vec<Vec<u8>> {
        let count = 1 + rng.below(3);
        (0..count)
            .map(|_| {
                if rng.below(8) == 0 {
                    return random_bytes(rng);
                }
                let entries = 1 + rng.below(6);
                let mut line = Vec::new();
                for i in 0..entries {
                    if i > 0 {
                        let separator: &[u8] = rng.pick(&[&b","[..], b", ", b" ,\t"]);
                        line.extend_from_slice(separator);
                    }
                    if rng.below(10) == 0 {
                        line.extend(random_bytes(rng));
                    } else {
                        let atom: &[u8] = rng.pick(atoms);
                        line.extend_from_slice(atom);
                    }
                }
                line
            })
            .collect()
    }

    /// The XFF walk done the obvious way: every entry cut out first.
    fn reference_xff(p: &TrustedProxies, peer: IpAddr, lines: &[Vec<u8>]) -> Client {
        let joined = lines.join(&b","[..]);
        let entries: Vec<&[u8]> = joined.split(|b| *b == b',').collect();
        let mut current = peer;
        for (walked, entry) in entries.iter().rev().enumerate() {
            if !p.trusts(current) {
                break;
            }
            if walked == MAX_HOPS {
                return Client::Unknown;
            }
            match parse_node(trim(entry)) {
                Some(ip) => current = ip,
                None => return Client::Unknown,
            }
        }
        Client::Ip(current)
    }

    #[test]
    fn random_headers_never_panic_and_never_yield_the_proxy() {
        let p = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let peer = ip("127.0.0.1");
        let mut rng = Rng(0x5eed_f0d2_2026_0007);
        for round in 0..20_000 {
            let xff = (rng.below(3) != 0).then(|| random_lines(&mut rng, XFF_ATOMS));
            let forwarded = (rng.below(2) == 0).then(|| random_lines(&mut rng, FORWARDED_ATOMS));
            let proto = (rng.below(4) == 0).then(|| random_lines(&mut rng, &[b"https", b"http"]));
            let mut map = HeaderMap::new();
            for (name, lines) in [
                (&X_FORWARDED_FOR, &xff),
                (&FORWARDED, &forwarded),
                (&X_FORWARDED_PROTO, &proto),
            ] {
                for line in lines.iter().flatten() {
                    map.append(name, HeaderValue::from_bytes(line).expect("valid bytes"));
                }
            }
            let context = format!("round {round}: {map:?}");
            let got = resolve(&p, peer, &map);
            if xff.is_none() && forwarded.is_none() {
                assert!(got.is_none_or(|f| f.client == Client::Peer), "{context}");
                continue;
            }
            let got = got.unwrap_or_else(|| panic!("{context}: no answer"));
            assert_ne!(got.client, Client::Peer, "{context}");
            let used = forwarded.as_ref().or(xff.as_ref()).unwrap();
            if got.client == Client::Ip(peer) {
                // Only when the walk stopped on an entry naming that very address.
                let named = used
                    .iter()
                    .any(|line| line.windows(9).any(|w| w == b"127.0.0.1"));
                assert!(named, "{context}: the peer's address came from nowhere");
            }
            match &forwarded {
                Some(_) => {
                    // Forwarded alone decides.
                    let mut only = map.clone();
                    only.remove(&X_FORWARDED_FOR);
                    only.remove(&X_FORWARDED_PROTO);
                    assert_eq!(
                        resolve(&p, peer, &only).map(|f| f.client),
                        Some(got.client),
                        "{context}"
                    );
                }
                None => assert_eq!(
                    got.client,
                    reference_xff(&p, peer, xff.as_ref().unwrap()),
                    "{context}"
                ),
            }
        }
    }

    #[test]
    fn each_mode_reads_only_its_headers() {
        let spoof = [
            ("x-forwarded-for", &b"203.0.113.9"[..]),
            ("forwarded", b"for=1.2.3.4;proto=https"),
            ("x-forwarded-proto", b"http"),
        ];
        let read = |mode: ProxyHeaders, pairs: &[(&str, &[u8])]| {
            let p = proxies_reading(&["127.0.0.1"], mode);
            resolve(&p, ip("127.0.0.1"), &raw_headers(pairs)).map(|f| (f.client, f.scheme))
        };
        // The default is the X-Forwarded pair: a client's own Forwarded, passed through
        // by a proxy that manages X-Forwarded-For only, is not believed.
        assert_eq!(ProxyHeaders::default(), ProxyHeaders::XForwarded);
        assert_eq!(
            read(ProxyHeaders::XForwarded, &spoof),
            Some((at("203.0.113.9"), Some("http")))
        );
        assert_eq!(read(ProxyHeaders::XForwarded, &spoof[1..2]), None);
        assert_eq!(
            read(ProxyHeaders::Forwarded, &spoof),
            Some((at("1.2.3.4"), Some("https")))
        );
        assert_eq!(read(ProxyHeaders::Forwarded, &[spoof[0], spoof[2]]), None);
        assert_eq!(
            read(ProxyHeaders::Both, &spoof),
            Some((at("1.2.3.4"), Some("https")))
        );
        assert_eq!(
            read(ProxyHeaders::Both, &[spoof[0], spoof[2]]),
            Some((at("203.0.113.9"), Some("http")))
        );
        for mode in [
            ProxyHeaders::XForwarded,
            ProxyHeaders::Forwarded,
            ProxyHeaders::Both,
        ] {
            assert_eq!(ProxyHeaders::parse(mode.as_str()), Some(mode));
            assert!(ProxyHeaders::ALLOWED.contains(mode.as_str()));
        }
        assert_eq!(ProxyHeaders::parse("auto"), None);
        assert_eq!(ProxyHeaders::parse("X-Forwarded"), None);
    }
}
