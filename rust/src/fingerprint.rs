//! Fingerprints and run ids: domain-separated BLAKE2b over canonical encodings.
//!
//! * fingerprint(v) = hex(BLAKE2b-128(b"metalab.fp.v1\0" + encode(v)))
//! * run_id(e, c, p, s) = hex(BLAKE2b-128(b"metalab.run.v1\0" + encode([e, c, p, s])))
//!
//! 128 bits: the probability of any collision among 1e8 fingerprints is about
//! n^2 / 2^129 ~= 1.5e-23.

use blake2::digest::{Update, VariableOutput};
use blake2::Blake2bVar;

use crate::encoding::{put_list_header, put_str, EncodeErrorKind};

pub const FP_DOMAIN: &[u8] = b"metalab.fp.v1\0";
pub const RUN_DOMAIN: &[u8] = b"metalab.run.v1\0";
/// Digest size of fingerprints and run ids in bytes.
pub const FINGERPRINT_BYTES: usize = 16;
/// Length of a fingerprint or run id in hex characters.
pub const FINGERPRINT_HEX_CHARS: usize = 2 * FINGERPRINT_BYTES;

/// A BLAKE2b hasher with output size `N` bytes (1..=64, checked at compile time).
#[derive(Clone)]
pub struct Hasher<const N: usize>(Blake2bVar);

impl<const N: usize> Hasher<N> {
    const VALID: () = assert!(N >= 1 && N <= 64);

    pub fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::VALID;
        // Cannot fail: N is in 1..=64 (checked above at compile time).
        Hasher(Blake2bVar::new(N).expect("digest size in 1..=64"))
    }

    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        self.0.update(data);
        self
    }

    pub fn finish(self) -> [u8; N] {
        let mut out = [0u8; N];
        // Cannot fail: the buffer has exactly the configured size.
        self.0
            .finalize_variable(&mut out)
            .expect("buffer size equals digest size");
        out
    }
}

impl<const N: usize> Default for Hasher<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// BLAKE2b-`N` of the concatenation of `parts`.
pub fn blake2b<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut h = Hasher::<N>::new();
    for p in parts {
        h.update(p);
    }
    h.finish()
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// A fingerprint or run id as 32 lower-case hex ASCII bytes, kept on the stack so bulk
/// results need no allocation per item.
pub type Hex = [u8; FINGERPRINT_HEX_CHARS];

/// The hex form of a 16-byte digest.
pub fn hex_digest(digest: &[u8; FINGERPRINT_BYTES]) -> Hex {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; FINGERPRINT_HEX_CHARS];
    for (i, b) in digest.iter().enumerate() {
        out[2 * i] = DIGITS[(b >> 4) as usize];
        out[2 * i + 1] = DIGITS[(b & 15) as usize];
    }
    out
}

/// A [`Hex`] as `&str` (always valid: it only holds ASCII hex digits).
pub fn hex_str(h: &Hex) -> &str {
    std::str::from_utf8(h).unwrap_or_default()
}

/// Raw fingerprint of an already-encoded value.
pub fn fingerprint_raw(encoding: &[u8]) -> [u8; FINGERPRINT_BYTES] {
    blake2b::<FINGERPRINT_BYTES>(&[FP_DOMAIN, encoding])
}

/// Hex fingerprint of an already-encoded value.
pub fn fingerprint_hex(encoding: &[u8]) -> String {
    to_hex(&fingerprint_raw(encoding))
}

/// A hasher already fed with `RUN_DOMAIN + 'l' + count 4 + encode(experiment_id) +
/// encode(context_fp)`, to be completed with the encodings of params_fp and seed_fp.
pub fn run_id_prefix(
    experiment_id: &str,
    context_fp: &str,
) -> Result<Hasher<FINGERPRINT_BYTES>, EncodeErrorKind> {
    let mut head = Vec::with_capacity(64 + experiment_id.len() + context_fp.len());
    put_list_header(&mut head, 4)?;
    put_str(&mut head, experiment_id)?;
    put_str(&mut head, context_fp)?;
    let mut h = Hasher::new();
    h.update(RUN_DOMAIN).update(&head);
    Ok(h)
}

/// The run id of one (experiment, context, params, seed) fingerprint quadruple.
pub fn run_id(
    experiment_id: &str,
    context_fp: &str,
    params_fp: &str,
    seed_fp: &str,
) -> Result<String, EncodeErrorKind> {
    let mut h = run_id_prefix(experiment_id, context_fp)?;
    let mut tail = Vec::with_capacity(16 + params_fp.len() + seed_fp.len());
    put_str(&mut tail, params_fp)?;
    put_str(&mut tail, seed_fp)?;
    h.update(&tail);
    Ok(to_hex(&h.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{encode, Value};

    #[test]
    fn blake2b_matches_known_vector() {
        // BLAKE2b-512("abc") from RFC 7693, appendix A.
        let d = blake2b::<64>(&[b"abc"]);
        assert_eq!(
            to_hex(&d),
            "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1\
             7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923"
        );
    }

    #[test]
    fn golden_vectors() {
        // Same vectors as docs/run-identity.md and tests/test_core_encoding.py.
        let d = Value::Dict(vec![
            ("lr".into(), Value::Float(0.1)),
            (
                "layers".into(),
                Value::List(vec![Value::Int(64), Value::Int(64)]),
            ),
            ("act".into(), Value::Str("relu".into())),
            ("dropout".into(), Value::None),
        ]);
        assert_eq!(
            fingerprint_hex(&encode(&d).unwrap()),
            "6ca284325362d6a8e13b926d0c527865"
        );
        assert_eq!(
            fingerprint_hex(&encode(&Value::None).unwrap()),
            "a12301538aeef45bfd8b781ed8b2b255"
        );
        assert_eq!(
            run_id(
                "exp1",
                "3ca24cd42a9182c035389262f9d64b5b",
                "ee798fca16cca60c9b0a0ede9fd6c2ce",
                "57c32735e06edd2a6323d938d74968b7"
            )
            .unwrap(),
            "94183226a8c801a4849633c4cf237a4f"
        );
    }

    #[test]
    fn split_updates_equal_one_shot() {
        assert_eq!(blake2b::<16>(&[b"ab", b"c"]), blake2b::<16>(&[b"abc"]));
    }

    #[test]
    fn run_id_equals_fingerprint_scheme_over_list() {
        let v = Value::List(vec![
            Value::Str("exp".into()),
            Value::Str("ctx".into()),
            Value::Str("p".into()),
            Value::Str("s".into()),
        ]);
        let enc = encode(&v).unwrap();
        let expected = to_hex(&blake2b::<16>(&[RUN_DOMAIN, &enc]));
        assert_eq!(run_id("exp", "ctx", "p", "s").unwrap(), expected);
        assert_eq!(expected.len(), FINGERPRINT_HEX_CHARS);
    }

    #[test]
    fn hex_digest_matches_hex_crate() {
        let d = blake2b::<16>(&[b"x"]);
        assert_eq!(hex_str(&hex_digest(&d)), to_hex(&d));
    }

    #[test]
    fn fingerprint_is_domain_separated() {
        let enc = encode(&Value::None).unwrap();
        assert_ne!(
            fingerprint_raw(&enc),
            blake2b::<16>(&[RUN_DOMAIN, &enc]),
            "domains must differ"
        );
        assert_eq!(fingerprint_hex(&enc).len(), 32);
    }
}
