//! A hasher for run ids in hash maps and sets: they are random hex already, so mixing 8
//! bytes at a time is enough (SipHash of every id was a visible share of a
//! 300,000-run load).

use std::hash::{BuildHasherDefault, Hasher};

/// The hasher (see the module).
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // A final avalanche: the maps take their bucket from the low bits, which the
        // multiplications above leave depending on few input bits.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
}

/// Build [`IdHasher`]s: `HashMap<&str, V, IdBuild>`.
pub type IdBuild = BuildHasherDefault<IdHasher>;
