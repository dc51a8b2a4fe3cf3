//! The Host rules of RFC 9112 §3.2 as pure functions: whether a `Host` value (or the
//! authority of a request target) is `host [":" port]` as RFC 3986 §3.2.2-3.2.3 writes
//! it, with the port at most 65535.
//!
//! What is accepted, exactly: a reg-name (`unreserved / pct-encoded / sub-delims`, so
//! uppercase, `_`, a trailing dot, an empty name), an IPv4 address (a reg-name by its
//! characters), or an IP-literal in brackets (an IPv6 address in RFC 4291 text form, or
//! an `IPvFuture`), then optionally `:` and digits. Refused: spaces, `/`, `@`
//! (userinfo), `"`, `<`, controls, non-ASCII, a bad `%` escape, a second `:` outside
//! brackets, unbalanced brackets, a port over 65535.
//!
//! nginx (`ngx_http_validate_host`) is laxer in some ways (it refuses only `/`, `\`,
//! controls, space, `..` and the empty name, and does not read the port) and stricter
//! in one: an empty `Host`, which RFC 9112 §3.2 has clients send when the target has
//! no authority, is valid here.

use std::net::Ipv6Addr;

/// Whether `value` is `host [":" port]` (RFC 3986), port <= 65535.
pub fn valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.first() {
        Some(b'[') => {
            let Some(close) = memchr::memchr(b']', value) else {
                return false;
            };
            if !valid_ip_literal(&value[1..close]) {
                return false;
            }
            match &value[close + 1..] {
                [] => return true,
                [b':', port @ ..] => (&[][..], port),
                _ => return false,
            }
        }
        _ => match memchr::memchr(b':', value) {
            Some(colon) => (&value[..colon], &value[colon + 1..]),
            None => (value, &[][..]),
        },
    };
    valid_reg_name(host) && valid_port(port)
}

/// Whether `value` is `host ":" port` with a port (authority-form, RFC 9112 §3.2.3).
pub fn valid_host_and_port(value: &[u8]) -> bool {
    valid_host(value) && has_port(value)
}

fn has_port(value: &[u8]) -> bool {
    let after_host = match value.first() {
        Some(b'[') => memchr::memchr(b']', value).map_or(value.len(), |c| c + 1),
        _ => 0,
    };
    matches!(memchr::memchr(b':', &value[after_host..]), Some(colon) if after_host + colon + 1 < value.len())
}

/// `*DIGIT`, at most 65535 (any number of leading zeros).
fn valid_port(port: &[u8]) -> bool {
    let mut number: u32 = 0;
    for &b in port {
        if !b.is_ascii_digit() {
            return false;
        }
        number = number * 10 + u32::from(b - b'0');
        if number > 65535 {
            return false;
        }
    }
    true
}

/// `*( unreserved / pct-encoded / sub-delims )`.
fn valid_reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'%' => {
                if !(name.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && name.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 3;
                continue;
            }
            b if is_unreserved(b) || is_sub_delim(b) => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

/// The inside of `[...]`: an IPv6 address or `IPvFuture`.
fn valid_ip_literal(inside: &[u8]) -> bool {
    match inside.first() {
        Some(b'v' | b'V') => valid_ip_future(&inside[1..]),
        _ => std::str::from_utf8(inside)
            .ok()
            // RFC 4291 text form, as RFC 3986's `IPv6address` (an embedded IPv4
            // address only as the last 32 bits, without leading zeros, `::` for at
            // least one group); the property test holds it to the grammar.
            .is_some_and(|text| text.parse::<Ipv6Addr>().is_ok()),
    }
}

/// `1*HEXDIG "." 1*( unreserved / sub-delims / ":" )`, after the `v`.
fn valid_ip_future(rest: &[u8]) -> bool {
    let digits = rest.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    match rest.get(digits) {
        Some(b'.') if digits > 0 => {
            let tail = &rest[digits + 1..];
            !tail.is_empty()
                && tail
                    .iter()
                    .all(|&b| is_unreserved(b) || is_sub_delim(b) || b == b':')
        }
        _ => false,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_ordinary_clients_send_is_accepted() {
        for ok in [
            &b"example.com"[..],
            b"EXAMPLE.COM",
            b"example.com.",
            b"example.com:8080",
            b"example.com.:443",
            b"my_host-1.internal",
            b"127.0.0.1",
            b"127.0.0.1:8000",
            b"[::1]",
            b"[::1]:8000",
            b"[2001:db8::1]:443",
            b"[::ffff:192.0.2.1]",
            b"[v1.fe80::a+en1]",
            b"localhost:",
            b"x:00080",
            b"xn--bcher-kva.example",
            b"a%2Eb",
            b"",
            b"x:65535",
        ] {
            assert!(valid_host(ok), "{:?}", String::from_utf8_lossy(ok));
        }
    }

    #[test]
    fn invalid_hosts_are_refused() {
        for bad in [
            &b"a b/c@d:99999"[..],
            b"a b",
            b"a/b",
            b"user@host",
            b"x:99999",
            b"x:65536",
            b"x:8a",
            b"x:1:2",
            b"::1",
            b"[::1",
            b"::1]",
            b"[::1]x",
            b"[::1]:x",
            b"[1.2.3.4]",
            b"[::g]",
            b"[::1%25eth0]",
            b"[1:2:3:4:5:6:7:8:9]",
            b"[v.x]",
            b"[v1.]",
            b"[v1x]",
            b"a%2",
            b"a%zz",
            b"a\"b",
            b"a<b",
            b"a\tb",
            b"a\x00b",
            b"caf\xc3\xa9.example",
            b"a\\b",
            b"a, b",
        ] {
            assert!(!valid_host(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn authority_form_needs_a_port() {
        assert!(valid_host_and_port(b"x:80"));
        assert!(valid_host_and_port(b"[::1]:443"));
        assert!(!valid_host_and_port(b"x"));
        assert!(!valid_host_and_port(b"x:"));
        assert!(!valid_host_and_port(b"[::1]"));
        assert!(!valid_host_and_port(b"[::1]:"));
        assert!(!valid_host_and_port(b"x:99999"));
    }

    // -----------------------------------------------------------------------------------
    // The reference: RFC 3986's ABNF for `host [":" port]`, written as it reads, as
    // matchers that return every position a rule can end at (so alternatives and
    // repetitions need no lookahead). Slow and independent of the code above.

    type Ends = Vec<usize>;

    fn lit(s: &[u8], at: usize, b: u8) -> Ends {
        // ABNF string literals are case-insensitive.
        if s.get(at).is_some_and(|c| c.eq_ignore_ascii_case(&b)) {
            vec![at + 1]
        } else {
            vec![]
        }
    }

    fn class(s: &[u8], at: usize, f: impl Fn(u8) -> bool) -> Ends {
        if s.get(at).is_some_and(|&c| f(c)) {
            vec![at + 1]
        } else {
            vec![]
        }
    }

    fn seq(s: &[u8], starts: Ends, rule: &dyn Fn(&[u8], usize) -> Ends) -> Ends {
        let mut out: Ends = starts.into_iter().flat_map(|at| rule(s, at)).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// `min*max(rule)`.
    fn rep(
        s: &[u8],
        at: usize,
        min: usize,
        max: usize,
        rule: &dyn Fn(&[u8], usize) -> Ends,
    ) -> Ends {
        let mut out = Vec::new();
        let mut current = vec![at];
        for n in 0..=max {
            if n >= min {
                out.extend(current.iter().copied());
            }
            if n == max || current.is_empty() {
                break;
            }
            current = seq(s, current, rule);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn digit(s: &[u8], at: usize) -> Ends {
        class(s, at, |c| c.is_ascii_digit())
    }
    fn hexdig(s: &[u8], at: usize) -> Ends {
        class(s, at, |c| c.is_ascii_hexdigit())
    }
    fn unreserved(s: &[u8], at: usize) -> Ends {
        class(s, at, |c| {
            c.is_ascii_alphabetic() || c.is_ascii_digit() || b"-._~".contains(&c)
        })
    }
    fn sub_delims(s: &[u8], at: usize) -> Ends {
        class(s, at, |c| b"!$&'()*+,;=".contains(&c))
    }
    fn pct_encoded(s: &[u8], at: usize) -> Ends {
        seq(s, seq(s, lit(s, at, b'%'), &hexdig), &hexdig)
    }
    fn h16(s: &[u8], at: usize) -> Ends {
        rep(s, at, 1, 4, &hexdig)
    }
    fn dec_octet(s: &[u8], at: usize) -> Ends {
        // "0"-"9" / %x31-39 DIGIT / "1" 2DIGIT / "2" %x30-34 DIGIT / "25" %x30-35
        let mut out = digit(s, at);
        out.extend(seq(s, class(s, at, |c| (b'1'..=b'9').contains(&c)), &digit));
        out.extend(seq(s, seq(s, lit(s, at, b'1'), &digit), &digit));
        out.extend(seq(
            s,
            seq(s, lit(s, at, b'2'), &|s, a| {
                class(s, a, |c| (b'0'..=b'4').contains(&c))
            }),
            &digit,
        ));
        out.extend(seq(
            s,
            seq(s, lit(s, at, b'2'), &|s, a| lit(s, a, b'5')),
            &|s, a| class(s, a, |c| (b'0'..=b'5').contains(&c)),
        ));
        out.sort_unstable();
        out.dedup();
        out
    }
    fn ipv4(s: &[u8], at: usize) -> Ends {
        let mut ends = dec_octet(s, at);
        for _ in 0..3 {
            ends = seq(s, seq(s, ends, &|s, a| lit(s, a, b'.')), &dec_octet);
        }
        ends
    }
    fn h16_colon(s: &[u8], at: usize) -> Ends {
        seq(s, h16(s, at), &|s, a| lit(s, a, b':'))
    }
    fn ls32(s: &[u8], at: usize) -> Ends {
        let mut out = seq(s, h16_colon(s, at), &h16);
        out.extend(ipv4(s, at));
        out
    }
    fn double_colon(s: &[u8], at: usize) -> Ends {
        seq(s, lit(s, at, b':'), &|s, a| lit(s, a, b':'))
    }
    /// `[ *n( h16 ":" ) h16 ]` (n = None: the bracket is absent).
    fn head(s: &[u8], at: usize, n: Option<usize>) -> Ends {
        let mut out = vec![at];
        if let Some(n) = n {
            let before = rep(s, at, 0, n, &h16_colon);
            out.extend(seq(s, before, &h16));
        }
        out
    }
    fn ipv6(s: &[u8], at: usize) -> Ends {
        let mut out = Vec::new();
        // 6( h16 ":" ) ls32
        out.extend(seq(s, rep(s, at, 6, 6, &h16_colon), &ls32));
        // "::" 5( h16 ":" ) ls32
        out.extend(seq(
            s,
            seq(s, double_colon(s, at), &|s, a| rep(s, a, 5, 5, &h16_colon)),
            &ls32,
        ));
        // [ *k( h16 ":" ) h16 ] "::" (4-k)( h16 ":" ) ls32, for k = 0..=3 (for k = 0
        // the bracket is `[ h16 ]`)
        for k in 0..=3usize {
            let before = if k == 0 {
                let mut b = vec![at];
                b.extend(h16(s, at));
                b
            } else {
                head(s, at, Some(k))
            };
            let after = seq(s, before, &double_colon);
            let tail = seq(s, after, &|s, a| rep(s, a, 4 - k, 4 - k, &h16_colon));
            out.extend(seq(s, tail, &ls32));
        }
        // [ *4( h16 ":" ) h16 ] "::" ls32
        out.extend(seq(s, seq(s, head(s, at, Some(4)), &double_colon), &ls32));
        // [ *5( h16 ":" ) h16 ] "::" h16
        out.extend(seq(s, seq(s, head(s, at, Some(5)), &double_colon), &h16));
        // [ *6( h16 ":" ) h16 ] "::"
        out.extend(seq(s, head(s, at, Some(6)), &double_colon));
        out.sort_unstable();
        out.dedup();
        out
    }
    fn ip_future(s: &[u8], at: usize) -> Ends {
        let v = lit(s, at, b'v');
        let digits = seq(s, v, &|s, a| rep(s, a, 1, usize::MAX, &hexdig));
        let dot = seq(s, digits, &|s, a| lit(s, a, b'.'));
        seq(s, dot, &|s, a| {
            rep(s, a, 1, usize::MAX, &|s, a| {
                let mut out = unreserved(s, a);
                out.extend(sub_delims(s, a));
                out.extend(lit(s, a, b':'));
                out
            })
        })
    }
    fn ip_literal(s: &[u8], at: usize) -> Ends {
        let open = lit(s, at, b'[');
        let inside = seq(s, open, &|s, a| {
            let mut out = ipv6(s, a);
            out.extend(ip_future(s, a));
            out
        });
        seq(s, inside, &|s, a| lit(s, a, b']'))
    }
    fn reg_name(s: &[u8], at: usize) -> Ends {
        rep(s, at, 0, usize::MAX, &|s, a| {
            let mut out = unreserved(s, a);
            out.extend(pct_encoded(s, a));
            out.extend(sub_delims(s, a));
            out
        })
    }
    fn reference(s: &[u8]) -> bool {
        let mut hosts = ip_literal(s, 0);
        hosts.extend(ipv4(s, 0));
        hosts.extend(reg_name(s, 0));
        hosts.into_iter().any(|end| {
            if end == s.len() {
                return true;
            }
            let port = &s[end..];
            port[0] == b':'
                && port[1..].iter().all(u8::is_ascii_digit)
                && port[1..]
                    .iter()
                    .try_fold(0u32, |n, d| {
                        let n = n * 10 + u32::from(d - b'0');
                        (n <= 65535).then_some(n)
                    })
                    .is_some()
        })
    }

    #[test]
    fn the_reference_grammar_agrees_on_the_fixed_cases() {
        assert!(reference(b"[::1]:80"));
        assert!(reference(b"[1:2:3:4:5:6:1.2.3.4]"));
        assert!(!reference(b"[1.2.3.4::]"));
        assert!(!reference(b"[1:2:3:4:5:6:7:8::]"));
        assert!(reference(b"[1:2:3:4:5:6:7::]"));
        assert!(!reference(b"[::01.2.3.4]"));
        assert!(!reference(b"x:99999"));
        assert!(reference(b""));
    }

    /// Random strings, mostly made of the grammar's own pieces: `valid_host` never
    /// panics and accepts exactly what the ABNF accepts.
    #[test]
    fn valid_host_accepts_exactly_the_reference_grammar() {
        let pieces: &[&[u8]] = &[
            b"[",
            b"]",
            b":",
            b"::",
            b".",
            b"%",
            b"%4",
            b"%4a",
            b"1",
            b"0",
            b"25",
            b"255",
            b"256",
            b"01",
            b"ffff",
            b"FFFFF",
            b"a",
            b"Z",
            b"v",
            b"V1.",
            b"g",
            b"-",
            b"_",
            b"~",
            b"!",
            b",",
            b"=",
            b"@",
            b"/",
            b" ",
            b"\t",
            b"\x00",
            b"\xff",
            b"\"",
            b"1.2.3.4",
            b"::1",
            b"2001:db8",
            b"65535",
            b"65536",
            b"99999",
            b"8080",
            b"example.com",
            b"\\",
        ];
        let mut x: u64 = 0x1234_5678_9ABC_DEF1;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..60_000 {
            let mut s = Vec::new();
            if next(3) == 0 {
                s.push(b'[');
            }
            for _ in 0..next(12) {
                if next(10) == 0 {
                    s.push(next(256) as u8);
                } else {
                    s.extend_from_slice(pieces[next(pieces.len())]);
                }
            }
            if next(4) == 0 {
                s.push(b']');
            }
            if next(3) == 0 {
                s.push(b':');
                for _ in 0..next(7) {
                    s.push(b'0' + next(10) as u8);
                }
            }
            let want = reference(&s);
            assert_eq!(valid_host(&s), want, "{:?}", String::from_utf8_lossy(&s));
            if want {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        // Both sides of the grammar are explored.
        assert!(accepted > 5_000 && refused > 5_000, "{accepted} {refused}");
    }
}
