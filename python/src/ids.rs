//! The loop's tables of open requests and WebSockets, keyed by the id the server thread
//! gave each ([`ById`]), with the cheap hash such ids allow ([`IdHash`]).

use std::collections::HashMap;

/// The open requests by id, with [`IdHash`].
pub type ById<T> = HashMap<u64, T, std::hash::BuildHasherDefault<IdHash>>;

/// The hash of a request id: ids are distinct numbers counted up from 1, so one
/// multiplication by an odd constant (Fibonacci hashing) spreads them over the high
/// bits the table's probes use, where SipHash (HashMap's default, made to resist
/// chosen keys, which ids are not) cost about 60 instructions a lookup, three or more
/// per request.
#[derive(Default)]
pub struct IdHash(u64);

impl std::hash::Hasher for IdHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used by u64 keys; any bytes still hash deterministically.
        for &byte in bytes {
            self.write_u64(u64::from(byte) ^ self.0.rotate_left(8));
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}
