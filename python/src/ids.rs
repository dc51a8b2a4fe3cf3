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

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, BuildHasherDefault};

    fn hash(id: u64) -> u64 {
        BuildHasherDefault::<IdHash>::default().hash_one(id)
    }

    #[test]
    fn consecutive_ids_spread_over_the_high_bits() {
        let ids = 1..=1024u64;
        let mut full: Vec<u64> = ids.clone().map(hash).collect();
        full.sort_unstable();
        full.dedup();
        assert_eq!(full.len(), 1024, "an odd multiplier is a bijection");
        // The table's probes start from the top bits: 1,024 ids over 1,024 buckets
        // leave few empty (a sequential hash would put them all in one).
        let mut top: Vec<u64> = ids.map(|id| hash(id) >> 54).collect();
        top.sort_unstable();
        top.dedup();
        assert!(top.len() > 600, "{} buckets of 1024", top.len());
    }

    #[test]
    fn the_table_finds_what_it_holds() {
        let mut table: ById<u64> = ById::default();
        for id in 1..=100 {
            table.insert(id, id * 2);
        }
        assert_eq!(table.get(&42), Some(&84));
        assert_eq!(table.remove(&42), Some(84));
        assert_eq!(table.get(&42), None);
        assert_eq!(table.len(), 99);
    }
}
