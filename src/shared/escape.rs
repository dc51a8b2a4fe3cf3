//! Untrusted text (a worker's boot-failure message, an exec worker's output, a
//! worker's status string) made safe for one log line: [`escape_untrusted`].

/// Text from a worker (its boot-failure message, an exec worker's output) made safe for
/// one error log line: a worker may be compromised, and must not forge the master's
/// lines (a newline and a made-up line, a journal priority such as `<0>`) or send the
/// reader's terminal escape sequences. Control characters (newlines included) and bytes
/// that are not UTF-8 become `\xHH`, a backslash `\\`, so the result is one unambiguous
/// line; longer than `max` bytes, it is cut and ends with `...`.
pub fn escape_untrusted(bytes: &[u8], max: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len().min(max) + 8);
    let mut pieces = bytes.utf8_chunks().flat_map(|chunk| {
        let valid = chunk.valid().chars().map(Ok);
        valid.chain(chunk.invalid().iter().map(|b| Err(*b)))
    });
    for piece in pieces.by_ref() {
        match piece {
            Ok('\\') => out.push_str("\\\\"),
            Ok(c) if c.is_control() => {
                let mut utf8 = [0u8; 4];
                for b in c.encode_utf8(&mut utf8).bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
            Ok(c) => out.push(c),
            Err(b) => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
        if out.len() >= max {
            break;
        }
    }
    if pieces.next().is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_untrusted;

    #[test]
    fn untrusted_text_stays_one_plain_line() {
        assert_eq!(escape_untrusted(b"plain text: ok", 100), "plain text: ok");
        assert_eq!(
            escape_untrusted(b"a\n<0>forged\r\x1b[2J\\x", 100),
            "a\\x0a<0>forged\\x0d\\x1b[2J\\\\x"
        );
        assert_eq!(
            escape_untrusted("caf\u{e9} \u{85}".as_bytes(), 100),
            "caf\u{e9} \\xc2\\x85"
        );
        assert_eq!(
            escape_untrusted(b"bad \xff\xfe utf-8", 100),
            "bad \\xff\\xfe utf-8"
        );
        assert_eq!(escape_untrusted(&[b'x'; 50], 10), "xxxxxxxxxx...");
    }
}
