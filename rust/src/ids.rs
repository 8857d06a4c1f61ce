//! Sets of run ids for the scans: 32-digit lower-case hex ids (every real run id) are kept
//! as `u128`s hashed with one multiply, anything else as strings. [`IdFlags`] keeps a few
//! bits per id, so that a scan classifying a run against several listings parses its id
//! once and looks it up once.

use std::collections::{HashMap, HashSet};
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

/// Bits per id: what each of a shard's listings holds of it (the caller names the bits).
#[derive(Default)]
pub struct IdFlags {
    hex: HashMap<u128, u8, BuildIdHasher>,
    other: HashMap<String, u8>,
}

impl IdFlags {
    /// Set `bit` of `id` (adding the id when new).
    pub fn set(&mut self, id: String, bit: u8) {
        match hex_key(&id) {
            Some(k) => *self.hex.entry(k).or_default() |= bit,
            None => *self.other.entry(id).or_default() |= bit,
        }
    }

    /// Set `bit` of `id` only when it already has one of the bits of `having`: a record
    /// listing marks the runs that have a done marker and adds no entry for the others.
    pub fn set_if(&mut self, id: &str, bit: u8, having: u8) {
        let flags = match hex_key(id) {
            Some(k) => self.hex.get_mut(&k),
            None => self.other.get_mut(id),
        };
        if let Some(f) = flags.filter(|f| **f & having != 0) {
            *f |= bit;
        }
    }

    /// The bits of `id` (0 when absent).
    pub fn get(&self, id: &str) -> u8 {
        self.get_keyed(hex_key(id), id)
    }

    /// [`IdFlags::get`] of an id whose [`hex_key`] the caller already has.
    pub fn get_keyed(&self, key: Option<u128>, id: &str) -> u8 {
        let found = match key {
            Some(k) => self.hex.get(&k),
            None => self.other.get(id),
        };
        found.copied().unwrap_or(0)
    }

    /// True when no id has a bit set.
    pub fn is_empty(&self) -> bool {
        self.hex.is_empty() && self.other.is_empty()
    }
}

/// Digit values of lower-case hex characters; 0x80 for every other byte.
const HEX_DIGIT: [u8; 256] = {
    let mut table = [0x80u8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Sixteen hex digits as a u64, or `None` when one is no lower-case hex digit.
#[inline]
fn hex_half(digits: &[u8]) -> Option<u64> {
    // Table look-ups OR-ed into one "bad" byte instead of a branch per character: the
    // scans parse every asked id (300,000 per status scan), and the branchy version was
    // a third of such a scan's CPU time.
    let mut v = 0u64;
    let mut bad = 0u8;
    for &b in digits {
        let d = HEX_DIGIT[b as usize];
        bad |= d;
        v = (v << 4) | u64::from(d);
    }
    (bad & 0x80 == 0).then_some(v)
}

/// The value of a 32-digit lower-case hex id (the run-id format); `None` for anything
/// else. Injective on the ids it accepts, so comparing keys equals comparing strings.
pub fn hex_key(id: &str) -> Option<u128> {
    let b = id.as_bytes();
    if b.len() != 32 {
        return None;
    }
    let hi = hex_half(&b[..16])?;
    let lo = hex_half(&b[16..])?;
    Some(u128::from(hi) << 64 | u128::from(lo))
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

    #[test]
    fn hex_key_rejects_every_non_digit() {
        let base = *b"0123456789abcdef0123456789abcdef";
        for at in [0, 15, 16, 31] {
            for b in 0..=255u8 {
                let mut id = base;
                id[at] = b;
                let Ok(text) = std::str::from_utf8(&id) else {
                    continue;
                };
                let digit = b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
                assert_eq!(hex_key(text).is_some(), digit, "byte {b} at {at}");
                if digit {
                    assert_eq!(hex_key(text), u128::from_str_radix(text, 16).ok());
                }
            }
        }
    }

    #[test]
    fn flags_per_id() {
        let hex = "0123456789abcdef0123456789abcdef".to_string();
        let mut flags = IdFlags::default();
        assert!(flags.is_empty());
        flags.set(hex.clone(), 2);
        flags.set("zz".to_string(), 1);
        flags.set(hex.clone(), 1);
        flags.set_if(&hex, 4, 2);
        flags.set_if("zz", 4, 2);
        flags.set_if("absent", 4, 0xff);
        assert_eq!(
            (flags.get(&hex), flags.get("zz"), flags.get("absent")),
            (7, 1, 0)
        );
        assert!(!flags.is_empty());
    }
}
