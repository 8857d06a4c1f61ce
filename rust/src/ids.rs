//! Sets of run ids for the scans: 32-digit lower-case hex ids (every real run id) are kept
//! as `u128`s hashed with one multiply, anything else as strings.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// A set of run ids.
#[derive(Default)]
pub struct IdSet {
    hex: HashSet<u128, BuildIdHasher>,
    other: HashSet<String>,
}

impl IdSet {
    /// Add one id.
    pub fn insert(&mut self, id: String) {
        match hex_key(&id) {
            Some(k) => {
                self.hex.insert(k);
            }
            None => {
                self.other.insert(id);
            }
        }
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: &str) -> bool {
        match hex_key(id) {
            Some(k) => self.hex.contains(&k),
            None => self.other.contains(id),
        }
    }

    /// True when the set holds no id.
    pub fn is_empty(&self) -> bool {
        self.hex.is_empty() && self.other.is_empty()
    }
}

impl FromIterator<String> for IdSet {
    fn from_iter<I: IntoIterator<Item = String>>(ids: I) -> Self {
        let mut set = IdSet::default();
        set.extend(ids);
        set
    }
}

impl Extend<String> for IdSet {
    fn extend<I: IntoIterator<Item = String>>(&mut self, ids: I) {
        for id in ids {
            self.insert(id);
        }
    }
}

/// Hashes the u128 keys of hex run ids (BLAKE2 outputs, already uniform) with one
/// multiply instead of SipHash; other input falls back to FNV-1a.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u128(&mut self, v: u128) {
        let x = (v as u64) ^ ((v >> 64) as u64).rotate_left(32);
        self.0 = x.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
}

type BuildIdHasher = BuildHasherDefault<IdHasher>;

/// The value of a 32-digit lower-case hex id (the run-id format); `None` for anything
/// else. Injective on the ids it accepts, so comparing keys equals comparing strings.
pub fn hex_key(id: &str) -> Option<u128> {
    if id.len() != 32 {
        return None;
    }
    let mut v: u128 = 0;
    for b in id.bytes() {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u128;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_other_ids() {
        let hex = "0123456789abcdef0123456789abcdef";
        assert_eq!(hex_key(hex), Some(0x0123456789abcdef0123456789abcdef));
        assert_eq!(hex_key("0123456789ABCDEF0123456789abcdef"), None);
        assert_eq!(hex_key("abc"), None);
        let set: IdSet = [hex.to_string(), "zz".to_string()].into_iter().collect();
        assert!(set.contains(hex) && set.contains("zz") && !set.is_empty());
        assert!(!set.contains("0123456789ABCDEF0123456789ABCDEF") && !set.contains("z"));
        assert!(IdSet::default().is_empty());
    }
}
