//! Grid sweeps: mixed-radix decoding of a flat index and params fingerprints composed
//! from pre-encoded axis values.
//!
//! Index `t` of a grid with axes `a_0 .. a_{K-1}` (user order) decodes like
//! `itertools.product`: the LAST axis varies fastest.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::encoding::{encode_str, put_len, quote_str};
use crate::fingerprint::{hex_digest, Hasher, Hex, FINGERPRINT_BYTES, FP_DOMAIN};
use crate::CoreError;

/// Structural problems with a grid spec. `DuplicateValue` carries positions; the caller
/// renders the value itself (it knows how to show it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GridError {
    NoAxes,
    LengthMismatch {
        keys: usize,
        axes: usize,
    },
    DuplicateKey(String),
    EmptyAxis(String),
    DuplicateValue {
        key: String,
        first: usize,
        second: usize,
    },
    TooLarge,
    KeyTooLong(String),
}

impl GridError {
    /// The message, with `value_repr` used to show a duplicate value.
    pub fn message(&self, value_repr: &str) -> String {
        match self {
            GridError::NoAxes => "grid needs at least one axis, got none".into(),
            GridError::LengthMismatch { keys, axes } => format!(
                "grid has {} keys but {} axes: expected one list of values per key",
                keys, axes
            ),
            GridError::DuplicateKey(k) => {
                format!("grid key {} appears twice: expected distinct keys", quote_str(k))
            }
            GridError::EmptyAxis(k) => format!(
                "grid axis {} is empty: expected at least one value",
                quote_str(k)
            ),
            GridError::DuplicateValue { key, first, second } => format!(
                "grid axis {} has duplicate value {} at positions {} and {}: expected distinct values (compared by canonical encoding)",
                quote_str(key),
                value_repr,
                first,
                second
            ),
            GridError::TooLarge => {
                "grid has more than 2**63 - 1 points: expected fewer".into()
            }
            GridError::KeyTooLong(k) => format!(
                "grid key of {} bytes is too long: expected at most {} bytes",
                k.len(),
                u32::MAX
            ),
        }
    }
}

/// A validated grid with every axis value already canonically encoded.
#[derive(Debug, Clone)]
pub struct Grid {
    keys: Vec<String>,
    /// `values[k][i]`: encoding of value `i` of axis `k` (user order).
    values: Vec<Vec<Vec<u8>>>,
    /// Axis numbers sorted by key UTF-8 bytes: the order of the dict encoding.
    sorted_axes: Vec<usize>,
    /// Encoded keys (`s` + len + bytes), by axis number.
    key_enc: Vec<Vec<u8>>,
    /// `'d' + u32 count`, the head of every params dict encoding.
    dict_head: Vec<u8>,
    len: u64,
}

impl Grid {
    /// Validates and builds a grid from keys (user order) and encoded axis values.
    pub fn new(keys: Vec<String>, values: Vec<Vec<Vec<u8>>>) -> Result<Grid, GridError> {
        if keys.len() != values.len() {
            return Err(GridError::LengthMismatch {
                keys: keys.len(),
                axes: values.len(),
            });
        }
        if keys.is_empty() {
            return Err(GridError::NoAxes);
        }
        let mut seen = HashMap::new();
        for k in &keys {
            if seen.insert(k.as_str(), ()).is_some() {
                return Err(GridError::DuplicateKey(k.clone()));
            }
        }
        let mut len: u64 = 1;
        for (k, axis) in keys.iter().zip(&values) {
            if axis.is_empty() {
                return Err(GridError::EmptyAxis(k.clone()));
            }
            let mut first_pos: HashMap<&[u8], usize> = HashMap::with_capacity(axis.len());
            for (i, v) in axis.iter().enumerate() {
                if let Some(&first) = first_pos.get(v.as_slice()) {
                    return Err(GridError::DuplicateValue {
                        key: k.clone(),
                        first,
                        second: i,
                    });
                }
                first_pos.insert(v.as_slice(), i);
            }
            len = len
                .checked_mul(axis.len() as u64)
                .filter(|n| *n <= i64::MAX as u64)
                .ok_or(GridError::TooLarge)?;
        }
        let mut sorted_axes: Vec<usize> = (0..keys.len()).collect();
        sorted_axes.sort_by(|&a, &b| keys[a].as_bytes().cmp(keys[b].as_bytes()));
        let key_enc = keys
            .iter()
            .map(|k| encode_str(k).map_err(|_| GridError::KeyTooLong(k.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let mut dict_head = vec![b'd'];
        put_len(&mut dict_head, keys.len()).map_err(|_| GridError::TooLarge)?;
        Ok(Grid {
            keys,
            values,
            sorted_axes,
            key_enc,
            dict_head,
            len,
        })
    }

    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Number of points: the product of the axis lengths.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: a grid has at least one point.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Resolves a possibly negative index; `Err` past either end.
    pub fn resolve(&self, index: i128) -> Result<u64, CoreError> {
        resolve_index("grid", self.len, index)
    }

    /// Checks `0 <= start <= stop <= len`.
    pub fn check_range(&self, start: i128, stop: i128) -> Result<(u64, u64), CoreError> {
        check_range("grid", self.len, start, stop)
    }

    /// Writes the per-axis value positions of point `index` (user axis order) into `out`.
    pub fn decode_into(&self, mut index: u64, out: &mut [usize]) {
        for k in (0..self.values.len()).rev() {
            let r = self.values[k].len() as u64;
            out[k] = (index % r) as usize;
            index /= r;
        }
    }

    /// Per-axis value positions of point `index` (must be `< len`).
    pub fn indices(&self, index: u64) -> Vec<usize> {
        let mut out = vec![0; self.values.len()];
        self.decode_into(index, &mut out);
        out
    }

    pub fn indices_range(&self, start: u64, stop: u64) -> Vec<Vec<usize>> {
        (start..stop).map(|i| self.indices(i)).collect()
    }

    /// The canonical encoding of point `index`'s params dict (for tests and debugging).
    pub fn encode_point(&self, index: u64) -> Vec<u8> {
        let pos = self.indices(index);
        let mut out = self.dict_head.clone();
        for &k in &self.sorted_axes {
            out.extend_from_slice(&self.key_enc[k]);
            out.extend_from_slice(&self.values[k][pos[k]]);
        }
        out
    }

    /// Raw params fingerprint of point `index`, hashing the pieces without copying them.
    pub fn fingerprint_raw(&self, index: u64, scratch: &mut [usize]) -> [u8; FINGERPRINT_BYTES] {
        self.decode_into(index, scratch);
        let mut h = Hasher::<FINGERPRINT_BYTES>::new();
        h.update(FP_DOMAIN).update(&self.dict_head);
        for &k in &self.sorted_axes {
            h.update(&self.key_enc[k]);
            h.update(&self.values[k][scratch[k]]);
        }
        h.finish()
    }

    /// Hex params fingerprints of points `start..stop`, in parallel.
    pub fn fingerprints(&self, start: u64, stop: u64) -> Vec<Hex> {
        let k = self.values.len();
        (start..stop)
            .into_par_iter()
            .map_init(
                || vec![0usize; k],
                |scratch, i| hex_digest(&self.fingerprint_raw(i, scratch)),
            )
            .collect()
    }
}

/// Resolves a possibly negative `index` into a `what` of `len` items (`-1` is the last);
/// `Err` past either end.
pub fn resolve_index(what: &str, len: u64, index: i128) -> Result<u64, CoreError> {
    let n = len as i128;
    let i = if index < 0 { index + n } else { index };
    if i < 0 || i >= n {
        return Err(CoreError::Index(format!(
            "{what} index {index} out of range: expected -{n} <= index < {n}"
        )));
    }
    Ok(i as u64)
}

/// Checks `0 <= start <= stop <= len` for a `what` of `len` items.
pub fn check_range(what: &str, len: u64, start: i128, stop: i128) -> Result<(u64, u64), CoreError> {
    let n = len as i128;
    if start < 0 || stop < start || stop > n {
        return Err(CoreError::Index(format!(
            "{} range [{}, {}) out of range: expected 0 <= start <= stop <= {}",
            what, start, stop, n
        )));
    }
    Ok((start as u64, stop as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{encode, Value};
    use crate::fingerprint::{fingerprint_hex, hex_str};

    fn enc(v: Value) -> Vec<u8> {
        encode(&v).unwrap()
    }

    fn sample() -> Grid {
        Grid::new(
            vec!["lr".into(), "bs".into(), "opt".into()],
            vec![
                vec![enc(Value::Float(0.1)), enc(Value::Float(0.01))],
                vec![
                    enc(Value::Int(16)),
                    enc(Value::Int(32)),
                    enc(Value::Int(64)),
                ],
                vec![enc(Value::Str("sgd".into()))],
            ],
        )
        .unwrap()
    }

    #[test]
    fn product_order_last_axis_fastest() {
        let g = sample();
        assert_eq!(g.len(), 6);
        let all: Vec<Vec<usize>> = (0..6).map(|i| g.indices(i)).collect();
        assert_eq!(
            all,
            vec![
                vec![0, 0, 0],
                vec![0, 1, 0],
                vec![0, 2, 0],
                vec![1, 0, 0],
                vec![1, 1, 0],
                vec![1, 2, 0],
            ]
        );
        assert_eq!(g.indices_range(2, 4), all[2..4].to_vec());
    }

    #[test]
    fn fingerprints_equal_fingerprint_of_dict() {
        let g = sample();
        let fps = g.fingerprints(0, 6);
        let lrs = [0.1, 0.01];
        let bss = [16, 32, 64];
        for (i, fp) in fps.iter().enumerate() {
            let d = Value::Dict(vec![
                ("lr".into(), Value::Float(lrs[i / 3])),
                ("bs".into(), Value::Int(bss[i % 3])),
                ("opt".into(), Value::Str("sgd".into())),
            ]);
            let e = enc(d);
            assert_eq!(g.encode_point(i as u64), e);
            assert_eq!(hex_str(fp), fingerprint_hex(&e));
        }
        assert_eq!(g.fingerprints(2, 4), fps[2..4].to_vec());
        assert!(g.fingerprints(3, 3).is_empty());
    }

    #[test]
    fn negative_and_out_of_range() {
        let g = sample();
        assert_eq!(g.resolve(-1).unwrap(), 5);
        assert_eq!(g.resolve(-6).unwrap(), 0);
        assert!(g.resolve(6).is_err());
        assert!(g.resolve(-7).is_err());
        assert!(g.check_range(0, 7).is_err());
        assert!(g.check_range(3, 2).is_err());
        assert!(g.check_range(-1, 2).is_err());
        assert_eq!(g.check_range(6, 6).unwrap(), (6, 6));
    }

    #[test]
    fn validation() {
        let one = || vec![enc(Value::Int(1))];
        assert_eq!(Grid::new(vec![], vec![]).unwrap_err(), GridError::NoAxes);
        assert_eq!(
            Grid::new(vec!["a".into()], vec![vec![]]).unwrap_err(),
            GridError::EmptyAxis("a".into())
        );
        assert_eq!(
            Grid::new(vec!["a".into(), "a".into()], vec![one(), one()]).unwrap_err(),
            GridError::DuplicateKey("a".into())
        );
        let dup = Grid::new(
            vec!["a".into()],
            vec![vec![
                enc(Value::Int(1)),
                enc(Value::Float(1.0)),
                enc(Value::Int(1)),
            ]],
        )
        .unwrap_err();
        assert_eq!(
            dup,
            GridError::DuplicateValue {
                key: "a".into(),
                first: 0,
                second: 2
            }
        );
        assert!(dup.message("1").contains("duplicate value 1"));
        let big: Vec<Vec<u8>> = (0..1 << 16).map(|i| enc(Value::Int(i))).collect();
        let keys: Vec<String> = (0..4).map(|i| format!("k{i}")).collect();
        assert_eq!(
            Grid::new(keys, vec![big.clone(), big.clone(), big.clone(), big]).unwrap_err(),
            GridError::TooLarge
        );
    }
}
