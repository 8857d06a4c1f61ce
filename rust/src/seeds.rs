//! Seed roots and derived seeds.
//!
//! ```text
//! seed_fingerprint(b, r)  = fingerprint({"base": b, "replicate": r, "scheme": 1})
//! seed_root(b, r)         = BLAKE2b-256(b"metalab.seed.replicate.v1\0" + encode([b, r]))
//! preprocessing_root(b)   = BLAKE2b-256(b"metalab.seed.preprocessing.v1\0" + encode([b]))
//! derive_seed(root, n)    = u32 BE of BLAKE2b-32(b"metalab.derive.v1\0" + root + encode(n))
//! derive_entropy(root, n) = u128 BE of BLAKE2b-128(b"metalab.entropy.v1\0" + root + encode(n))
//! ```

use crate::encoding::{encode, put_int, put_list_header, put_str, Value};
use crate::fingerprint::{blake2b, fingerprint_hex};
use crate::CoreError;

pub const SEED_SCHEME: i64 = 1;
pub const REPLICATE_DOMAIN: &[u8] = b"metalab.seed.replicate.v1\0";
pub const PREPROCESSING_DOMAIN: &[u8] = b"metalab.seed.preprocessing.v1\0";
pub const DERIVE_DOMAIN: &[u8] = b"metalab.derive.v1\0";
pub const ENTROPY_DOMAIN: &[u8] = b"metalab.entropy.v1\0";
/// Length of a seed root in bytes.
pub const ROOT_BYTES: usize = 32;

fn check_replicate(replicate: i64) -> Result<(), CoreError> {
    if replicate < 0 {
        return Err(CoreError::SeedSpec(format!(
            "replicate = {}: expected 0 <= replicate < 2**63",
            replicate
        )));
    }
    Ok(())
}

/// Fingerprint of the seed bundle spec `{"base": base, "replicate": replicate, "scheme": 1}`.
pub fn seed_fingerprint(base: i64, replicate: i64) -> Result<String, CoreError> {
    check_replicate(replicate)?;
    let v = Value::Dict(vec![
        ("base".into(), Value::Int(base)),
        ("replicate".into(), Value::Int(replicate)),
        ("scheme".into(), Value::Int(SEED_SCHEME)),
    ]);
    let e = encode(&v).map_err(|e| CoreError::Encoding(e.to_string()))?;
    Ok(fingerprint_hex(&e))
}

/// The 32-byte root of replicate `replicate` of base seed `base`.
pub fn seed_root(base: i64, replicate: i64) -> Result<[u8; ROOT_BYTES], CoreError> {
    check_replicate(replicate)?;
    let mut e = Vec::with_capacity(23);
    put_list_header(&mut e, 2).expect("2 fits u32");
    put_int(&mut e, base);
    put_int(&mut e, replicate);
    Ok(blake2b::<ROOT_BYTES>(&[REPLICATE_DOMAIN, &e]))
}

/// The 32-byte root for preprocessing shared by all replicates of `base`.
pub fn preprocessing_root(base: i64) -> [u8; ROOT_BYTES] {
    let mut e = Vec::with_capacity(14);
    put_list_header(&mut e, 1).expect("1 fits u32");
    put_int(&mut e, base);
    blake2b::<ROOT_BYTES>(&[PREPROCESSING_DOMAIN, &e])
}

fn named_digest<const N: usize>(
    domain: &[u8],
    root: &[u8],
    name: &str,
) -> Result<[u8; N], CoreError> {
    if root.len() != ROOT_BYTES {
        return Err(CoreError::SeedSpec(format!(
            "seed root of {} bytes: expected {} bytes (from seed_root or preprocessing_root)",
            root.len(),
            ROOT_BYTES
        )));
    }
    let mut e = Vec::with_capacity(5 + name.len());
    put_str(&mut e, name).map_err(|_| {
        CoreError::SeedSpec(format!(
            "seed name of {} bytes: expected at most {} bytes",
            name.len(),
            u32::MAX
        ))
    })?;
    Ok(blake2b::<N>(&[domain, root, &e]))
}

/// A 32-bit seed for `name` under `root`: fits `random.seed`, numpy `RandomState`,
/// scikit-learn `random_state` and `torch.manual_seed`.
pub fn derive_seed(root: &[u8], name: &str) -> Result<u32, CoreError> {
    named_digest::<4>(DERIVE_DOMAIN, root, name).map(u32::from_be_bytes)
}

/// 128 bits of entropy for `name` under `root`, for `numpy.random.default_rng`.
pub fn derive_entropy(root: &[u8], name: &str) -> Result<u128, CoreError> {
    named_digest::<16>(ENTROPY_DOMAIN, root, name).map(u128::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_distinct_and_typed() {
        let r = seed_root(-1, 0).unwrap();
        assert_ne!(r, seed_root(1, 0).unwrap());
        assert_ne!(r, seed_root(-1, 1).unwrap());
        assert_ne!(r, seed_root(u32::MAX as i64, 0).unwrap());
        assert_ne!(preprocessing_root(-1), r);
        assert_eq!(seed_root(5, 3).unwrap(), seed_root(5, 3).unwrap());
    }

    #[test]
    fn golden_vectors() {
        // Same vectors as docs/run-identity.md and tests/test_core_seeds.py.
        let root = seed_root(42, 0).unwrap();
        assert_eq!(
            crate::fingerprint::to_hex(&root),
            "313628a54a1fd5f1520548168901569975d8eccf3bcbe9f28078c8421c79dad3"
        );
        assert_eq!(
            crate::fingerprint::to_hex(&preprocessing_root(42)),
            "3ba9b9078e8c3d90b90b779f43524256953b84a9227c04d72aa25259de972623"
        );
        assert_eq!(
            seed_fingerprint(42, 0).unwrap(),
            "57c32735e06edd2a6323d938d74968b7"
        );
        assert_eq!(derive_seed(&root, "torch").unwrap(), 220852492);
        assert_eq!(
            derive_entropy(&root, "numpy").unwrap(),
            49977533823087154431904618171070037705
        );
    }

    #[test]
    fn bad_inputs() {
        let e = seed_root(0, -1).unwrap_err().to_string();
        assert!(e.contains("replicate = -1"), "{e}");
        assert!(seed_fingerprint(0, -2)
            .unwrap_err()
            .to_string()
            .contains("-2"));
        let e = derive_seed(b"short", "x").unwrap_err().to_string();
        assert!(e.contains("5 bytes"), "{e}");
    }

    #[test]
    fn derive_is_per_name_and_domain_separated() {
        let r = seed_root(0, 0).unwrap();
        assert_ne!(derive_seed(&r, "a").unwrap(), derive_seed(&r, "b").unwrap());
        let s = derive_seed(&r, "a").unwrap();
        let ent = derive_entropy(&r, "a").unwrap();
        assert_ne!(
            (ent >> 96) as u32,
            s,
            "different domains give unrelated values"
        );
        assert_eq!(seed_fingerprint(1, 2).unwrap().len(), 32);
    }
}
