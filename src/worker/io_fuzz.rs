//! A property test of the HTTP/2 frame follower (`H2Frames` in `io.rs`): it reads the
//! client's bytes in whatever pieces the socket delivers them, so what it counts must
//! not depend on where the pieces end.
//!
//! Each case generates a byte stream (random bytes, or a sequence of frames of random
//! kinds, flags and small lengths, with a run of PING/SETTINGS long enough to reach the
//! flood limit, and random garbage mixed in), and checks against a reference reading of
//! the whole stream at once (`reference`):
//!
//! 1. `follow` never panics, however the stream is cut (random cuts, empty pieces,
//!    one byte at a time, all at once);
//! 2. its frame accounting is the reference's: the credit spent, the bytes left to skip
//!    and the partial frame head held are the same after the last piece, whatever the
//!    cuts;
//! 3. the flood limit triggers on the same frame: `follow` answers false for the piece
//!    holding the last byte of the head of the first PING/SETTINGS beyond the credit,
//!    and true for every piece before it.
//!
//! Time is frozen (the budget is never refilled during a case), so the trigger is
//! exactly the frame that spends past the credit the case starts with.
//!
//! Fixed seeds run first, then random ones for `FORKD_FUZZ_SECS` (default 1);
//! `FORKD_FUZZ_SEED=N` runs only that seed (the seed of a failure is in its message).
//! The generator is the differential fuzz test's `Rng`.

use super::super::differential::{env_u64, Rng};
use super::{H2Frames, H2_CONTROL_BURST};
use std::time::{Duration, Instant};

const PREFACE: usize = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".len();

/// What the reference reading of a whole stream finds.
#[derive(Debug, PartialEq, Eq)]
struct Reading {
    /// For each PING/SETTINGS without ACK, the offset just past its 9-byte head.
    control_ends: Vec<usize>,
    /// Bytes of a payload (or of the preface) still to come after the stream.
    skip: usize,
    /// Bytes of a frame head at the end of the stream, still incomplete.
    partial_head: Vec<u8>,
}

/// Reads the stream whole: the preface (not checked), then frame heads and payloads.
fn reference(stream: &[u8]) -> Reading {
    let mut at = PREFACE;
    let mut control_ends = Vec::new();
    while at + 9 <= stream.len() {
        let head = &stream[at..at + 9];
        let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        if matches!(kind, 0x4 | 0x6) && flags & 0x1 == 0 {
            control_ends.push(at + 9);
        }
        at += 9 + length;
    }
    if at >= stream.len() {
        Reading {
            control_ends,
            skip: at - stream.len(),
            partial_head: Vec::new(),
        }
    } else {
        Reading {
            control_ends,
            skip: 0,
            partial_head: stream[at..].to_vec(),
        }
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags, 0, 0, 0, 1]);
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

/// A follower whose budget is `credit` and is never refilled (time frozen).
fn follower(credit: u32) -> H2Frames {
    let mut frames = H2Frames::new();
    frames.credit = credit;
    frames.refilled_ms = u64::MAX;
    frames
}

/// Feeds `stream` cut into `pieces`; checks the result against `want`. The flood (if
/// any) must be answered on the piece that completes the head of control frame number
/// `credit + 1`.
fn check(stream: &[u8], pieces: &[usize], credit: u32, want: &Reading) -> Result<(), String> {
    let flood_at = want.control_ends.get(credit as usize).copied();
    let mut frames = follower(credit);
    let mut at = 0;
    for (index, &n) in pieces.iter().enumerate() {
        let piece = &stream[at..at + n];
        let end = at + n;
        let answer = frames.follow(piece);
        // The piece that holds the flood frame's last head byte (an empty piece holds
        // none).
        let floods_here = flood_at.is_some_and(|f| at < f && f <= end);
        if answer == floods_here {
            return Err(format!(
                "piece {index} (bytes {at}..{end}): follow said {answer}, the flood frame's head ends at {flood_at:?}"
            ));
        }
        if !answer {
            // The IO stops feeding a flooding connection.
            return Ok(());
        }
        at = end;
    }
    if flood_at.is_some() {
        return Err(format!("no flood reported, expected at {flood_at:?}"));
    }
    let spent = want.control_ends.len() as u32;
    let state = (
        frames.credit,
        frames.skip,
        frames.head[..frames.have].to_vec(),
    );
    let expected = (credit - spent, want.skip, want.partial_head.clone());
    if state != expected {
        return Err(format!(
            "after the stream: (credit, skip, partial head) {state:?}, the reference says {expected:?}"
        ));
    }
    Ok(())
}

/// One case: a stream, a starting credit, and several ways to cut it; true when the
/// stream floods.
fn run_case(seed: u64) -> Result<bool, String> {
    let mut rng = Rng::new(seed);
    let stream = generate(&mut rng);
    let credit = if rng.one_in(2) {
        H2_CONTROL_BURST
    } else {
        rng.range(0, H2_CONTROL_BURST as usize) as u32
    };
    let want = reference(&stream);
    for attempt in 0..4 {
        let pieces = match attempt {
            0 => vec![stream.len()],
            _ => cuts(&mut rng, stream.len()),
        };
        check(&stream, &pieces, credit, &want).map_err(|why| {
            format!(
                "{why}\n  stream of {} bytes, credit {credit}, pieces {:?}",
                stream.len(),
                &pieces[..pieces.len().min(40)]
            )
        })?;
    }
    Ok(want.control_ends.len() > credit as usize)
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
        "seed {seed}: {why}\n  replay: FORKD_FUZZ_SEED={seed} cargo test --lib worker::io::fuzz"
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
    frame(&mut stream, 0x4, 0, &[0; 6]);
    frame(&mut stream, 0x6, 0x1, b"12345678");
    frame(&mut stream, 0x0, 0, &[0x55; 20]);
    frame(&mut stream, 0x6, 0, b"12345678");
    let second_end = stream.len() - 8;
    stream.extend_from_slice(&[0, 0, 8, 0x6]);
    let reading = reference(&stream);
    assert_eq!(
        reading,
        Reading {
            control_ends: vec![PREFACE + 9, second_end],
            skip: 0,
            partial_head: vec![0, 0, 8, 0x6],
        }
    );
    // The follower agrees, in any pieces, and with one credit floods on the second.
    for pieces in [vec![stream.len()], vec![1; stream.len()]] {
        assert_eq!(check(&stream, &pieces, 5, &reading), Ok(()));
        assert_eq!(check(&stream, &pieces, 1, &reading), Ok(()));
    }
    // A check that cannot fail would prove nothing: a wrong reading is caught.
    let wrong = Reading {
        skip: 1,
        ..reference(&stream)
    };
    assert!(check(&stream, &[stream.len()], 5, &wrong).is_err());
    let early = Reading {
        control_ends: vec![PREFACE + 9, PREFACE + 9],
        ..reference(&stream)
    };
    assert!(check(&stream, &vec![1; stream.len()], 1, &early).is_err());
}
