//! What the master and a zygote (`preload_app`, see [`super::zygote`]) say to each
//! other: one datagram per message over a `SOCK_SEQPACKET` socket pair, as one short
//! ASCII line. The master asks for a worker ([`Request::Spawn`]); the zygote reports
//! its import ([`Report::Ready`] or [`Report::ImportFailed`]) and each worker it forked
//! ([`Report::Spawned`] with the worker's pid, or [`Report::SpawnFailed`]). The zygote
//! runs the app's import code, so the master parses what it sends as untrusted: a
//! malformed message is an error, never a panic.

use crate::shared::scoreboard::CAPACITY;

/// The longest message either side sends (a failure's text is cut to fit).
pub const MAX_MESSAGE: usize = 4096;

/// The master to a zygote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Fork a worker on scoreboard slot `slot`, numbered `number`.
    Spawn { slot: usize, number: u64 },
}

/// A zygote to the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The app is imported: workers can be asked for.
    Ready,
    /// The app cannot be imported (or its import started threads): the zygote exits.
    ImportFailed(String),
    /// Worker `number` runs as `pid` (a child of the master by now, or soon).
    Spawned { number: u64, pid: i32 },
    /// Worker `number` could not be forked.
    SpawnFailed { number: u64, why: String },
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Spawn { slot, number } => format!("spawn {slot} {number}").into_bytes(),
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<Request, String> {
        let text = ascii_line(bytes)?;
        let mut words = text.split(' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("spawn"), Some(slot), Some(number), None) => {
                let slot = decimal(slot)?;
                if slot >= CAPACITY as u64 {
                    return Err(format!("slot {slot} is past the scoreboard"));
                }
                Ok(Request::Spawn {
                    slot: slot as usize,
                    number: decimal(number)?,
                })
            }
            _ => Err(format!("unknown request {:?}", shown(bytes))),
        }
    }
}

impl Report {
    pub fn encode(&self) -> Vec<u8> {
        let line = match self {
            Report::Ready => "ready".to_string(),
            Report::ImportFailed(why) => format!("failed {}", one_line(why)),
            Report::Spawned { number, pid } => format!("spawned {number} {pid}"),
            Report::SpawnFailed { number, why } => {
                format!("spawn-failed {number} {}", one_line(why))
            }
        };
        let mut bytes = line.into_bytes();
        bytes.truncate(MAX_MESSAGE);
        bytes
    }

    pub fn parse(bytes: &[u8]) -> Result<Report, String> {
        if bytes.len() > MAX_MESSAGE {
            return Err(format!("a message of {} bytes", bytes.len()));
        }
        // The failure texts are the app's own words (UTF-8, cut anywhere).
        let text = String::from_utf8_lossy(bytes);
        if text.contains(['\n', '\r', '\0']) {
            return Err(format!("a message with a line break: {:?}", shown(bytes)));
        }
        let (word, rest) = text.split_once(' ').unwrap_or((&text, ""));
        match word {
            "ready" if rest.is_empty() && !text.contains(' ') => Ok(Report::Ready),
            "failed" => Ok(Report::ImportFailed(rest.to_string())),
            "spawned" => {
                let (number, pid) = rest
                    .split_once(' ')
                    .ok_or_else(|| format!("spawned without a pid: {:?}", shown(bytes)))?;
                let pid = decimal(pid)?;
                if pid <= 1 || pid > i32::MAX as u64 {
                    return Err(format!("spawned: pid {pid} is no worker's"));
                }
                Ok(Report::Spawned {
                    number: decimal(number)?,
                    pid: pid as i32,
                })
            }
            "spawn-failed" => {
                let (number, why) = rest.split_once(' ').unwrap_or((rest, ""));
                Ok(Report::SpawnFailed {
                    number: decimal(number)?,
                    why: why.to_string(),
                })
            }
            _ => Err(format!("unknown report {:?}", shown(bytes))),
        }
    }
}

/// A failure's text on one line (the app's messages may have several).
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r', '\0'], " ")
}

fn ascii_line(bytes: &[u8]) -> Result<&str, String> {
    if bytes.len() > MAX_MESSAGE || !bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return Err(format!("not a request: {:?}", shown(bytes)));
    }
    std::str::from_utf8(bytes).map_err(|e| e.to_string())
}

/// A decimal number without sign or leading zeros, as the other side writes it.
fn decimal(word: &str) -> Result<u64, String> {
    let plain = !word.is_empty()
        && word.len() <= 19
        && word.bytes().all(|b| b.is_ascii_digit())
        && (word == "0" || !word.starts_with('0'));
    if !plain {
        return Err(format!("{word:?} is not a number"));
    }
    word.parse().map_err(|e| format!("{word:?}: {e}"))
}

/// A message's start, for an error.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let requests = [
            Request::Spawn { slot: 0, number: 1 },
            Request::Spawn {
                slot: CAPACITY - 1,
                number: u64::MAX / 10,
            },
        ];
        for r in requests {
            assert_eq!(Request::parse(&r.encode()), Ok(r));
        }
        let reports = [
            Report::Ready,
            Report::ImportFailed("ModuleNotFoundError: No module named 'app'".into()),
            Report::ImportFailed(String::new()),
            Report::Spawned {
                number: 7,
                pid: 12345,
            },
            Report::SpawnFailed {
                number: 8,
                why: "fork failed: EAGAIN".into(),
            },
        ];
        for r in reports {
            assert_eq!(Report::parse(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn a_failure_on_several_lines_is_sent_on_one_and_cut_to_fit() {
        let r = Report::ImportFailed("line 1\nline 2\r\0".into());
        assert_eq!(
            Report::parse(&r.encode()),
            Ok(Report::ImportFailed("line 1 line 2  ".into()))
        );
        let long = Report::ImportFailed("\u{e9}".repeat(MAX_MESSAGE));
        let bytes = long.encode();
        assert_eq!(bytes.len(), MAX_MESSAGE);
        assert!(matches!(Report::parse(&bytes), Ok(Report::ImportFailed(_))));
    }

    #[test]
    fn malformed_messages_are_refused() {
        for bad in [
            &b""[..],
            b"spawn",
            b"spawn 1",
            b"spawn 1 2 3",
            b"spawn -1 2",
            b"spawn 01 2",
            b"spawn 1 +2",
            b"spawn 512 2",
            b"spawn 1 99999999999999999999",
            b"spawn\t1 2",
            b"spawn 1 2\n",
            b"SPAWN 1 2",
            b"spawn  1 2",
            b"spawn 1 \xff",
        ] {
            assert!(Request::parse(bad).is_err(), "{:?}", shown(bad));
        }
        for bad in [
            &b""[..],
            b"ready now",
            b"ready ",
            b"spawned",
            b"spawned 1",
            b"spawned 1 0",
            b"spawned 1 1",
            b"spawned 1 -5",
            b"spawned 1 4294967296",
            b"spawned x 5",
            b"spawned 1 5 6",
            b"spawn-failed",
            b"spawn-failed x why",
            b"failed a\nb",
            b"hello",
        ] {
            assert!(Report::parse(bad).is_err(), "{:?}", shown(bad));
        }
        assert!(Report::parse(&vec![b'x'; MAX_MESSAGE + 1]).is_err());
    }

    /// Random bytes and random edits of good messages: the parsers never panic, and
    /// whatever they accept encodes back to a message they read the same way.
    #[test]
    fn parsing_property() {
        let good: Vec<Vec<u8>> = vec![
            Request::Spawn {
                slot: 3,
                number: 17,
            }
            .encode(),
            Report::Ready.encode(),
            Report::Spawned {
                number: 17,
                pid: 4242,
            }
            .encode(),
            Report::SpawnFailed {
                number: 1,
                why: "x".into(),
            }
            .encode(),
            Report::ImportFailed("boom".into()).encode(),
        ];
        let alphabet = b"spawnedrfilyt-0123456789 \n\xff\x00";
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..50_000 {
            let mut bytes = if round % 2 == 0 {
                good[(next() % good.len() as u64) as usize].clone()
            } else {
                Vec::new()
            };
            for _ in 0..(next() % 6) {
                let byte = alphabet[(next() % alphabet.len() as u64) as usize];
                match next() % 3 {
                    0 if !bytes.is_empty() => {
                        let at = (next() % bytes.len() as u64) as usize;
                        bytes[at] = byte;
                    }
                    1 if !bytes.is_empty() => {
                        let at = (next() % bytes.len() as u64) as usize;
                        bytes.remove(at);
                    }
                    _ => bytes.push(byte),
                }
            }
            if let Ok(request) = Request::parse(&bytes) {
                assert_eq!(Request::parse(&request.encode()), Ok(request));
            }
            if let Ok(report) = Report::parse(&bytes) {
                assert_eq!(Report::parse(&report.encode()), Ok(report));
            }
        }
    }
}
