//! A property test of the HTTP/2 frame follower (`H2Frames` in `h2_frames.rs`): it reads
//! the client's bytes in whatever pieces the socket delivers them, so what it counts
//! must not depend on where the pieces end.
//!
//! Each case generates a byte stream (random bytes, or a sequence of frames of random
//! kinds, flags, streams and small lengths, with runs of PING/SETTINGS and of
//! payload-free frames (WINDOW_UPDATE with small and large increments, PRIORITY,
//! RST_STREAM, empty DATA, unknown types, and HEADERS that earn) long enough to reach
//! the budgets, and random garbage mixed in), and checks against a reference reading of
//! the whole stream at once (`reference`):
//!
//! 1. `follow` never panics, however the stream is cut (random cuts, empty pieces,
//!    one byte at a time, all at once);
//! 2. its accounting is the reference's: both budgets' credit, the acknowledged bytes
//!    not yet worth a frame, the bytes left to skip and the partial frame head held are
//!    the same after the last piece, whatever the cuts;
//! 3. the flood triggers on the same frame, and the cut falls where that frame ends:
//!    `follow` answers `Cut(n)` for the piece holding the frame's last byte, `n` being
//!    that byte's end within the piece, and `Pass` for every piece before it.
//!
//! Time is frozen (the budgets are never refilled by time during a case), so the
//! trigger is exactly the frame that spends past the credit the case starts with and
//! what the frames before it earned.
//!
//! Fixed seeds run first, then random ones for `FORKD_FUZZ_SECS` (default 1);
//! `FORKD_FUZZ_SEED=N` runs only that seed (the seed of a failure is in its message).
//! The generator is the differential fuzz test's `Rng`.

use crate::worker::http::differential::{env_u64, Rng};
use crate::worker::http::h2_frames::{
    cost, Cost, Follow, H2Frames, H2_ACKED_BYTES_PER_FRAME, H2_CONTROL_BURST, H2_IDLE_BURST,
    H2_IDLE_PER_REQUEST,
};
use std::time::{Duration, Instant};

const PREFACE: usize = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".len();

/// The budgets a case starts with.
#[derive(Debug, Clone, Copy)]
struct Credit {
    answered: u32,
    idle: u32,
}

/// What the reference reading of a whole stream finds.
#[derive(Debug, PartialEq, Eq)]
struct Reading {
    /// The offset just past the frame that broke a budget (perhaps beyond the stream).
    cut: Option<usize>,
    /// Otherwise, the budgets after the stream, and the acknowledged bytes left over.
    answered: u32,
    idle: u32,
    acked: u64,
    /// Bytes of a payload (or of the preface) still to come after the stream.
    skip: usize,
    /// Bytes of a frame head at the end of the stream, still incomplete.
    partial_head: Vec<u8>,
}

/// Reads the stream whole: the preface (not checked), then frame heads and payloads,
/// spending and earning as the module doc of `h2_frames.rs` says.
fn reference(stream: &[u8], credit: Credit) -> Reading {
    let mut at = PREFACE;
    let (mut answered, mut idle, mut acked) = (credit.answered, credit.idle, 0u64);
    let earn = |idle: u32, frames: u64| (u64::from(idle) + frames).min(H2_IDLE_BURST as u64) as u32;
    while at + 9 <= stream.len() {
        let head = &stream[at..at + 9];
        let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let ok = match cost(head[3], head[4], length, stream_id) {
            Cost::Free => true,
            Cost::Request => {
                idle = earn(idle, u64::from(H2_IDLE_PER_REQUEST));
                true
            }
            Cost::Answered if answered == 0 => false,
            Cost::Answered => {
                answered -= 1;
                true
            }
            Cost::Idle | Cost::ConnectionWindow if idle == 0 => false,
            Cost::Idle => {
                idle -= 1;
                true
            }
            Cost::ConnectionWindow => {
                idle -= 1;
                if length == 4 && at + 13 <= stream.len() {
                    let increment =
                        u32::from_be_bytes(stream[at + 9..at + 13].try_into().unwrap_or_default())
                            & 0x7fff_ffff;
                    acked += u64::from(increment);
                    idle = earn(idle, acked / H2_ACKED_BYTES_PER_FRAME);
                    acked %= H2_ACKED_BYTES_PER_FRAME;
                }
                true
            }
        };
        at += 9 + length;
        if !ok {
            return Reading {
                cut: Some(at),
                answered: 0,
                idle: 0,
                acked: 0,
                skip: 0,
                partial_head: Vec::new(),
            };
        }
    }
    let (skip, partial_head) = if at >= stream.len() {
        (at - stream.len(), Vec::new())
    } else {
        (0, stream[at..].to_vec())
    };
    Reading {
        cut: None,
        answered,
        idle,
        acked,
        skip,
        partial_head,
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, payload: &[u8]) {
    frame_on(out, kind, flags, 1, payload);
}

fn frame_on(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next() as u8).collect()
}

/// A stream: the preface (usually the real one), then random bytes or frames.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut out = if rng.one_in(8) {
        random_bytes(rng, PREFACE)
    } else {
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()
    };
    if rng.one_in(4) {
        let n = rng.range(0, 4096);
        out.extend(random_bytes(rng, n));
        return out;
    }
    let frames = rng.range(0, 60);
    for _ in 0..frames {
        match rng.below(10) {
            // A flood: enough PING/SETTINGS to pass the burst now and then.
            0 => {
                let n = rng.range(1, H2_CONTROL_BURST as usize + 50);
                for _ in 0..n {
                    let kind = if rng.one_in(2) { 0x6 } else { 0x4 };
                    let flags = if rng.one_in(20) { 0x1 } else { 0 };
                    let len = if kind == 0x6 { 8 } else { 6 * rng.range(0, 3) };
                    let payload = random_bytes(rng, len);
                    frame(&mut out, kind, flags, &payload);
                }
            }
            // Payload-free frames, with a few that earn.
            2 | 3 => {
                let n = rng.range(1, 1200);
                for _ in 0..n {
                    let stream = rng.below(3) as u32;
                    match rng.below(9) {
                        0 => {
                            let increment = if rng.one_in(3) {
                                rng.range(0, 9000) as u32
                            } else {
                                rng.range(0, 3) as u32
                            };
                            frame_on(&mut out, 0x8, 0, stream, &increment.to_be_bytes());
                        }
                        1 => frame_on(&mut out, 0x8, 0, 0, &1u32.to_be_bytes()),
                        2 => frame_on(&mut out, 0x2, 0, stream, &[0, 0, 0, 1, 16]),
                        3 => frame_on(&mut out, 0x3, 0, stream, &[0, 0, 0, 8]),
                        4 => frame_on(&mut out, 0x0, rng.below(2) as u8, stream, &[]),
                        5 => frame_on(&mut out, 0xa + rng.below(100) as u8, 0, stream, &[]),
                        6 if rng.one_in(20) => frame_on(&mut out, 0x1, 0x4, 1, b"\x82"),
                        _ => {
                            let kind = if rng.one_in(2) { 0x6 } else { 0x4 };
                            frame_on(&mut out, kind, 0x1, 0, &[]);
                        }
                    }
                }
            }
            // Garbage: a payload length that swallows what follows, or bytes out of
            // frame.
            1 => {
                let n = rng.range(1, 40);
                out.extend(random_bytes(rng, n));
            }
            // Any frame, with a small payload (which may itself look like frames).
            _ => {
                let kind = if rng.one_in(3) {
                    rng.next() as u8
                } else {
                    rng.range(0, 9) as u8
                };
                let flags = rng.next() as u8;
                let len = if rng.one_in(6) {
                    rng.range(0, 2000)
                } else {
                    rng.range(0, 32)
                };
                let payload = if rng.one_in(4) {
                    let mut inner = Vec::new();
                    frame(&mut inner, 0x6, 0, b"12345678");
                    inner.resize(len.max(inner.len()), 0);
                    inner
                } else {
                    random_bytes(rng, len)
                };
                frame(&mut out, kind, flags, &payload);
            }
        }
    }
    // Sometimes cut the last frame short.
    if rng.one_in(3) && !out.is_empty() {
        let cut = rng.below(out.len().min(40));
        out.truncate(out.len() - cut);
    }
    out
}

/// Piece lengths summing to `len`: random cuts (some empty pieces), one byte at a time,
/// or all at once.
fn cuts(rng: &mut Rng, len: usize) -> Vec<usize> {
    match rng.below(6) {
        0 => vec![len],
        1 => vec![1; len],
        _ => {
            let mut pieces = Vec::new();
            let mut left = len;
            let most = [3, 9, 17, 100, 5000][rng.below(5)];
            while left > 0 {
                let n = if rng.one_in(10) {
                    0
                } else {
                    rng.range(1, most).min(left)
                };
                pieces.push(n);
                left -= n;
            }
            pieces
        }
    }
}

/// A follower whose budgets are `credit` and are never refilled by time (time frozen).
fn follower(credit: Credit) -> H2Frames {
    let mut frames = H2Frames::new();
    frames.answered.credit = credit.answered;
    frames.answered.refilled_ms = u64::MAX;
    frames.idle.credit = credit.idle;
    frames.idle.refilled_ms = u64::MAX;
    frames
}

/// Feeds `stream` cut into `pieces`; checks the result against `want`. The flood (if
/// any) must be answered on the piece holding the last byte of the frame that broke a
/// budget, cut just after it.
fn check(stream: &[u8], pieces: &[usize], credit: Credit, want: &Reading) -> Result<(), String> {
    let mut frames = follower(credit);
    let mut at = 0;
    for (index, &n) in pieces.iter().enumerate() {
        let piece = &stream[at..at + n];
        let end = at + n;
        let answer = frames.follow(piece);
        // The piece that holds the flood frame's last byte (an empty piece holds none).
        let expected = match want.cut {
            Some(cut) if at < cut && cut <= end => Follow::Cut(cut - at),
            _ => Follow::Pass,
        };
        if answer != expected {
            return Err(format!(
                "piece {index} (bytes {at}..{end}): follow said {answer:?}, expected {expected:?} (the flood frame ends at {:?})",
                want.cut
            ));
        }
        if answer != Follow::Pass {
            // The IO stops feeding a flooding connection.
            return Ok(());
        }
        at = end;
    }
    if let Some(cut) = want.cut {
        // The flood frame does not end within the stream.
        if cut <= stream.len() || !frames.flooded {
            return Err(format!("no flood reported, expected at {cut}"));
        }
        return Ok(());
    }
    let state = (
        frames.answered.credit,
        frames.idle.credit,
        frames.acked,
        frames.skip,
        frames.head[..frames.have].to_vec(),
    );
    let expected = (
        want.answered,
        want.idle,
        want.acked,
        want.skip,
        want.partial_head.clone(),
    );
    if state != expected {
        return Err(format!(
            "after the stream: (answered, idle, acked, skip, partial head) {state:?}, the reference says {expected:?}"
        ));
    }
    Ok(())
}

/// One case: a stream, a starting credit, and several ways to cut it; true when the
/// stream floods.
fn run_case(seed: u64) -> Result<bool, String> {
    let mut rng = Rng::new(seed);
    let stream = generate(&mut rng);
    let credit = Credit {
        answered: if rng.one_in(2) {
            H2_CONTROL_BURST
        } else {
            rng.range(0, H2_CONTROL_BURST as usize) as u32
        },
        idle: match rng.below(3) {
            0 => H2_IDLE_BURST,
            1 => rng.range(0, H2_IDLE_BURST as usize) as u32,
            _ => rng.range(0, 200) as u32,
        },
    };
    let want = reference(&stream, credit);
    for attempt in 0..4 {
        let pieces = match attempt {
            0 => vec![stream.len()],
            _ => cuts(&mut rng, stream.len()),
        };
        check(&stream, &pieces, credit, &want).map_err(|why| {
            format!(
                "{why}\n  stream of {} bytes, credit {credit:?}, pieces {:?}",
                stream.len(),
                &pieces[..pieces.len().min(40)]
            )
        })?;
    }
    Ok(want.cut.is_some())
}

/// Runs one seed; true when its stream floods. Panics with the seed on a failure.
fn run_seed(seed: u64) -> bool {
    let outcome = std::panic::catch_unwind(|| run_case(seed));
    let why = match outcome {
        Ok(Ok(flood)) => return flood,
        Ok(Err(why)) => why,
        Err(_) => "H2Frames panicked (see above)".to_string(),
    };
    panic!(
        "seed {seed}: {why}\n  replay: FORKD_FUZZ_SEED={seed} cargo test --lib worker::h2_frames::fuzz"
    );
}

#[test]
fn h2_frames_count_the_same_however_the_stream_is_cut() {
    if let Some(seed) = env_u64("FORKD_FUZZ_SEED") {
        run_seed(seed);
        return;
    }
    let mut floods = 0;
    for seed in 0..300 {
        floods += u32::from(run_seed(seed));
    }
    // The generator reaches the flood limit often enough to test it.
    assert!(floods >= 10, "only {floods} of 300 fixed cases flood");
    let run_for = Duration::from_secs(env_u64("FORKD_FUZZ_SECS").unwrap_or(1));
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let started = Instant::now();
    let (mut cases, mut floods) = (0u64, 0u64);
    while started.elapsed() < run_for {
        floods += u64::from(run_seed(base.wrapping_add(cases)));
        cases += 1;
    }
    eprintln!("h2 frames fuzz: {cases} random cases ({floods} flooding) in {run_for:?}");
}

#[test]
fn the_reference_reads_a_known_stream() {
    let mut stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame_on(&mut stream, 0x4, 0, 0, &[0; 6]);
    frame_on(&mut stream, 0x6, 0x1, 0, b"12345678");
    frame(&mut stream, 0x0, 0, &[0x55; 20]);
    frame_on(&mut stream, 0x8, 0, 0, &3000u32.to_be_bytes());
    frame_on(&mut stream, 0x6, 0, 0, b"12345678");
    let ping_end = stream.len();
    stream.extend_from_slice(&[0, 0, 8, 0x6]);
    let plenty = Credit {
        answered: 5,
        idle: 5,
    };
    let reading = reference(&stream, plenty);
    assert_eq!(
        reading,
        Reading {
            cut: None,
            answered: 3,
            // Two spent (the ACK, the WINDOW_UPDATE), two earned by 3000 bytes
            // acknowledged.
            idle: 5,
            acked: 3000 - 2048,
            skip: 0,
            partial_head: vec![0, 0, 8, 0x6],
        }
    );
    // With one answered credit, the second PING is the flood, cut where it ends.
    let one = Credit {
        answered: 1,
        idle: 5,
    };
    let flooded = reference(&stream, one);
    assert_eq!(flooded.cut, Some(ping_end));
    // The follower agrees, in any pieces.
    for pieces in [vec![stream.len()], vec![1; stream.len()]] {
        assert_eq!(check(&stream, &pieces, plenty, &reading), Ok(()));
        assert_eq!(check(&stream, &pieces, one, &flooded), Ok(()));
    }
    // A check that cannot fail would prove nothing: a wrong reading is caught.
    let wrong = Reading {
        skip: 1,
        ..reference(&stream, plenty)
    };
    assert!(check(&stream, &[stream.len()], plenty, &wrong).is_err());
    let early = Reading {
        cut: Some(ping_end - 1),
        ..reference(&stream, one)
    };
    assert!(check(&stream, &vec![1; stream.len()], one, &early).is_err());
}
