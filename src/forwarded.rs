//! Proxy headers: which peers are trusted (`forwarded_allow_ips`: addresses, CIDRs, or
//! `"*"`), and the real client address and scheme a trusted proxy reports in
//! `Forwarded` (RFC 7239) or `X-Forwarded-For` / `X-Forwarded-Proto`.
//!
//! The chain is walked from the right, as nginx's `real_ip_recursive` does: each entry
//! was appended by the hop before it, so an entry is believed only while the hop that
//! wrote it is trusted. The first address written by an untrusted hop (or the leftmost
//! one) is the client; everything to its left could have been forged by the client.
//! `Forwarded` wins over the `X-Forwarded-*` pair when a request carries both.
//! Connections on unix sockets count as coming from 127.0.0.1 (a local proxy).

use hyper::header::{HeaderMap, HeaderName, FORWARDED};
use std::net::{IpAddr, Ipv4Addr};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The peer address used for connections on unix sockets.
pub const UNIX_PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The parsed `forwarded_allow_ips`.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    any: bool,
    networks: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Parses the entries; errors name the bad entry.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        let mut trusted = TrustedProxies::default();
        for entry in entries {
            let entry = entry.trim();
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
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("{entry:?}: bad prefix length (0 to {max})"))?,
                None => max,
            };
            trusted.networks.push(canonical_network(ip, bits));
        }
        Ok(trusted)
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

/// What a trusted proxy told us about the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub client: IpAddr,
    /// `http` or `https`, when a trusted proxy said.
    pub scheme: Option<&'static str>,
}

/// The client behind the proxies, if `peer` is trusted and the request carries proxy
/// headers; `None` means "the peer is the client" (no header, or an untrusted peer).
pub fn resolve(proxies: &TrustedProxies, peer: IpAddr, headers: &HeaderMap) -> Option<Forwarded> {
    if !proxies.trusts(peer) {
        return None;
    }
    let mut forwarded = headers.get_all(&FORWARDED).iter().peekable();
    if forwarded.peek().is_some() {
        let mut hops = Vec::new();
        for value in forwarded {
            let Ok(text) = value.to_str() else {
                return None;
            };
            for element in split_unquoted(text, ',') {
                hops.push(parse_forwarded_element(element));
            }
        }
        return walk(proxies, peer, &hops);
    }
    let mut hops: Vec<Hop> = Vec::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        let Ok(text) = value.to_str() else {
            return None;
        };
        hops.extend(
            text.split(',')
                .map(|entry| entry.trim())
                .filter(|entry| !entry.is_empty())
                .map(|entry| Hop {
                    ip: parse_node(entry),
                    scheme: None,
                }),
        );
    }
    let scheme = headers
        .get_all(&X_FORWARDED_PROTO)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(scheme_of)
        .next_back();
    if hops.is_empty() {
        return scheme.map(|scheme| Forwarded {
            client: peer,
            scheme: Some(scheme),
        });
    }
    let mut result = walk(proxies, peer, &hops)?;
    if result.scheme.is_none() {
        result.scheme = scheme;
    }
    Some(result)
}

struct Hop {
    ip: Option<IpAddr>,
    scheme: Option<&'static str>,
}

fn walk(proxies: &TrustedProxies, peer: IpAddr, hops: &[Hop]) -> Option<Forwarded> {
    let mut current = peer;
    let mut scheme = None;
    for hop in hops.iter().rev() {
        if !proxies.trusts(current) {
            break;
        }
        // `current` is trusted, so what it appended is believed.
        if hop.scheme.is_some() {
            scheme = hop.scheme;
        }
        match hop.ip {
            Some(ip) => current = ip,
            None => break,
        }
    }
    Some(Forwarded {
        client: current,
        scheme,
    })
}

fn scheme_of(text: &str) -> Option<&'static str> {
    let text = text.trim().trim_matches('"');
    if text.eq_ignore_ascii_case("https") {
        Some("https")
    } else if text.eq_ignore_ascii_case("http") {
        Some("http")
    } else {
        None
    }
}

/// One `Forwarded` element: `for=...;proto=...;by=...`.
fn parse_forwarded_element(element: &str) -> Hop {
    let mut hop = Hop {
        ip: None,
        scheme: None,
    };
    for pair in split_unquoted(element, ';') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        match key.trim().to_ascii_lowercase().as_str() {
            "for" => hop.ip = parse_node(&value),
            "proto" => hop.scheme = scheme_of(&value),
            _ => {}
        }
    }
    hop
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:80`. Obfuscated names (`unknown`, `_x`) are None.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return ip.parse().ok();
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    match text.split_once(':') {
        Some((ip, port)) if port.parse::<u16>().is_ok() => {
            ip.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
        }
        _ => None,
    }
}

fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => value.to_string(),
    }
}

/// Splits on `separator` outside double-quoted strings.
fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (index, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..index]);
                start = index + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn proxies(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("valid entries")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
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
        assert!(TrustedProxies::parse(&["10.0.0.0/33".to_string()]).is_err());
        assert!(TrustedProxies::parse(&["ten".to_string()]).is_err());
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
        assert_eq!(got.client, ip("203.0.113.9"));
        // Several header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "10.1.1.1:5555"),
            ("x-forwarded-proto", "https"),
        ]);
        let got = resolve(&p, ip("127.0.0.1"), &h).unwrap();
        assert_eq!(got.client, ip("203.0.113.9"));
        assert_eq!(got.scheme, Some("https"));
        // All trusted: the leftmost address.
        let h = headers(&[("x-forwarded-for", "10.0.0.2, 10.0.0.3")]);
        assert_eq!(
            resolve(&p, ip("127.0.0.1"), &h).unwrap().client,
            ip("10.0.0.2")
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
        assert_eq!(got.client, ip("2001:db8::7"));
        assert_eq!(got.scheme, Some("https"));
        let h = headers(&[("forwarded", "for=unknown, for=192.0.2.43")]);
        assert_eq!(
            resolve(&p, ip("127.0.0.1"), &h).unwrap().client,
            ip("192.0.2.43")
        );
        let h = headers(&[("forwarded", "For=192.0.2.60;Proto=http")]);
        let got = resolve(&p, ip("127.0.0.1"), &h).unwrap();
        assert_eq!((got.client, got.scheme), (ip("192.0.2.60"), Some("http")));
    }

    #[test]
    fn proto_alone_changes_only_the_scheme() {
        let p = proxies(&["::1"]);
        let h = headers(&[("x-forwarded-proto", "HTTPS")]);
        let got = resolve(&p, ip("::1"), &h).unwrap();
        assert_eq!((got.client, got.scheme), (ip("::1"), Some("https")));
        let h = headers(&[("x-forwarded-proto", "gopher")]);
        assert_eq!(resolve(&p, ip("::1"), &h), None);
    }
}
