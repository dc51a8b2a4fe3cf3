//! A small direct-mapped cache of what was made from short byte strings ([`Recent`]):
//! the scope keeps the Python objects of a request's path, its client address and its
//! headers there, which repeat from request to request (the same endpoints, the same
//! keep-alive clients, the same `Host` and `User-Agent`). Each key has one slot (by its
//! hash); a miss replaces what was there, so a client sending ever-new values costs the
//! cache nothing but its fixed size, and it heals as soon as values repeat again.

/// A key is one or more parts (a header's name and value), stored joined by this byte,
/// which none of the parts holds (a header name or value never has a NUL; a path or an
/// address is one part).
const JOIN: u8 = 0;

/// Direct-mapped cache from short byte strings to `V`.
pub struct Recent<V> {
    slots: Vec<Option<(Box<[u8]>, V)>>,
    /// Longer keys are not kept (they would only take memory).
    max_key: usize,
}

impl<V> Recent<V> {
    /// `slots` is rounded up to a power of two.
    pub fn new(slots: usize, max_key: usize) -> Recent<V> {
        Recent {
            slots: (0..slots.next_power_of_two()).map(|_| None).collect(),
            max_key,
        }
    }

    fn index(&self, parts: &[&[u8]]) -> usize {
        // FxHash's step over 8-byte words, the last one of a part padded with zeros and
        // the part's length mixed in (so that "a" and "a\0" differ).
        let mut hash: u64 = 0;
        let mut step = |word: u64| {
            hash = (hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        };
        for part in parts {
            let mut words = part.chunks_exact(8);
            for word in &mut words {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(word);
                step(u64::from_le_bytes(bytes));
            }
            let tail = words.remainder();
            let mut bytes = [0u8; 8];
            bytes[..tail.len()].copy_from_slice(tail);
            step(u64::from_le_bytes(bytes) ^ ((part.len() as u64) << 56));
        }
        // The high bits are the well-mixed ones.
        (hash >> 40) as usize & (self.slots.len() - 1)
    }

    /// The value made from the key `parts`, if it is in its slot.
    pub fn get(&self, parts: &[&[u8]]) -> Option<&V> {
        let (key, value) = self.slots[self.index(parts)].as_ref()?;
        joined_equals(key, parts).then_some(value)
    }

    /// Keeps `value` for the key `parts` (in place of what its slot held), unless the
    /// key is longer than `max_key`.
    pub fn put(&mut self, parts: &[&[u8]], value: V) {
        let len = parts.iter().map(|p| p.len() + 1).sum::<usize>();
        if len > self.max_key + 1 {
            return;
        }
        let mut key = Vec::with_capacity(len);
        for part in parts {
            key.extend_from_slice(part);
            key.push(JOIN);
        }
        let index = self.index(parts);
        self.slots[index] = Some((key.into_boxed_slice(), value));
    }
}

/// `key` is `parts` joined, each followed by [`JOIN`].
fn joined_equals(key: &[u8], parts: &[&[u8]]) -> bool {
    let mut rest = key;
    for part in parts {
        match rest.split_at_checked(part.len()) {
            Some((head, tail)) if head == *part && tail.first() == Some(&JOIN) => {
                rest = &tail[1..];
            }
            _ => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_finds_only_its_own_value() {
        let mut cache = Recent::new(8, 64);
        cache.put(&[b"/"], 1);
        cache.put(&[b"host", b"example.com"], 2);
        assert_eq!(cache.get(&[b"/"]), Some(&1));
        assert_eq!(cache.get(&[b"host", b"example.com"]), Some(&2));
        for parts in [
            &[&b"/x"[..]][..],
            &[b""],
            &[b"host", b"example.co"],
            &[b"hos", b"texample.com"],
            &[b"host", b"example.com", b""],
            &[b"hostexample.com"],
        ] {
            assert_eq!(cache.get(parts), None, "{parts:?}");
        }
    }

    #[test]
    fn a_miss_replaces_the_slot_and_long_keys_are_not_kept() {
        let mut cache = Recent::new(1, 8);
        cache.put(&[b"a"], 1);
        cache.put(&[b"b"], 2);
        assert_eq!(cache.get(&[b"a"]), None);
        assert_eq!(cache.get(&[b"b"]), Some(&2));
        cache.put(&[b"123456789"], 3);
        assert_eq!(cache.get(&[b"123456789"]), None);
        assert_eq!(
            cache.get(&[b"b"]),
            Some(&2),
            "a long key leaves the slot alone"
        );
        cache.put(&[b"12345678"], 4);
        assert_eq!(cache.get(&[b"12345678"]), Some(&4));
    }

    #[test]
    fn keys_spread_over_the_slots() {
        let mut cache = Recent::new(64, 64);
        let keys: Vec<String> = (0..32).map(|i| format!("/items/{i}")).collect();
        for (i, key) in keys.iter().enumerate() {
            cache.put(&[key.as_bytes()], i);
        }
        let kept = keys
            .iter()
            .enumerate()
            .filter(|(i, key)| cache.get(&[key.as_bytes()]) == Some(i))
            .count();
        assert!(kept >= 20, "only {kept} of 32 kept in 64 slots");
    }
}
