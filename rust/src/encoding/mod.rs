//! Canonical encoding v1: type-tagged, length-prefixed bytes (docs/run-identity.md).
//!
//! | value            | bytes                                                         |
//! |------------------|---------------------------------------------------------------|
//! | None             | `N`                                                           |
//! | True / False     | `T` / `F`                                                     |
//! | int in i64       | `i` + 8-byte big-endian two's complement                     |
//! | int outside i64  | `I` + u32 BE length + decimal ASCII (leading `-` if negative) |
//! | float (finite)   | `f` + u32 BE length + ASCII of `format!("{:e}", x)`           |
//! | str              | `s` + u32 BE length + UTF-8                                   |
//! | list / tuple     | `l` + u32 BE count + items                                    |
//! | dict (str keys)  | `d` + u32 BE count + (key as str, value) sorted by key bytes  |

//!
//! The module is split by responsibility: this file holds the value model ([`Value`]) and
//! the errors, `writer` the byte layout of each kind (the table above), `traverse` the one
//! traversal that writes any [`Input`] (a [`Value`] here, a Python object in the bindings),
//! and `text` the float and string texts shared by the bytes and the messages.

use std::fmt;

mod text;
mod traverse;
mod writer;

pub use text::{float_text, python_float_repr, quote_str};
pub use traverse::{encode_input, Failure, Input, Kind, ValueEntries};
pub use writer::{
    encode_str, put_big_int, put_bool, put_dict, put_float, put_int, put_len, put_list_header,
    put_none, put_str,
};

/// Version of the canonical encoding implemented here.
pub const ENCODING_VERSION: u32 = 1;

/// Containers nested deeper than this are rejected (also catches reference cycles).
pub const MAX_DEPTH: usize = 200;

/// A JSON-like value, the pure-Rust mirror of what the Python bindings accept.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer outside i64, as its decimal text (e.g. `"-9223372036854775809"`).
    BigInt(String),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Dict(Vec<(String, Value)>),
}

/// One step of a key path: `['key']` or `[3]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

/// Why a value has no canonical encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum EncodeErrorKind {
    /// NaN or an infinity.
    NonFinite(f64),
    /// A value whose type is not encodable; holds the type's name.
    Unsupported { type_name: String },
    /// A dict key that is not a str; holds the key's repr and type name.
    NonStrKey { key_repr: String, type_name: String },
    /// The same key twice in a dict (only possible for [`Value::Dict`]).
    DuplicateKey(String),
    /// A str that cannot be encoded as UTF-8 (lone surrogates).
    InvalidUtf8,
    /// A str, list or dict whose length does not fit the u32 prefix.
    TooLong(usize),
    /// Containers nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

/// An encoding failure with the key path of the offending value.
///
/// Path segments are pushed while unwinding, i.e. leaf first; [`EncodeError::path`]
/// renders them root first.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeError {
    pub kind: EncodeErrorKind,
    segments: Vec<PathSeg>,
}

impl EncodeError {
    pub fn new(kind: EncodeErrorKind) -> Self {
        EncodeError {
            kind,
            segments: Vec::new(),
        }
    }

    /// Adds the segment through which the failing value was reached (call while unwinding).
    pub fn within(mut self, seg: PathSeg) -> Self {
        self.segments.push(seg);
        self
    }

    /// Renders the path below `root`, e.g. `params['lr'][2]`.
    pub fn path(&self, root: &str) -> String {
        let mut s = String::from(root);
        for seg in self.segments.iter().rev() {
            match seg {
                PathSeg::Key(k) => {
                    s.push('[');
                    s.push_str(&quote_str(k));
                    s.push(']');
                }
                PathSeg::Index(i) => {
                    s.push('[');
                    s.push_str(&i.to_string());
                    s.push(']');
                }
            }
        }
        s
    }

    /// The full human-readable message, with the path rendered below `root`.
    pub fn message(&self, root: &str) -> String {
        let path = self.path(root);
        match &self.kind {
            EncodeErrorKind::NonFinite(x) => format!(
                "cannot encode float {} at {}: expected a finite float (NaN and infinity have no canonical encoding)",
                python_float_repr(*x),
                path
            ),
            EncodeErrorKind::Unsupported { type_name } => format!(
                "cannot encode value of type '{}' at {}: expected None, bool, int, float, str, list, tuple or dict with str keys \
                 (NumPy bool, integer, float up to 64 bits and str values, and arrays of them, count as those)",
                type_name, path
            ),
            EncodeErrorKind::NonStrKey {
                key_repr,
                type_name,
            } => format!(
                "cannot encode dict key {} of type '{}' at {}: expected str keys",
                key_repr, type_name, path
            ),
            EncodeErrorKind::DuplicateKey(k) => format!(
                "cannot encode dict at {}: duplicate key {}",
                path,
                quote_str(k)
            ),
            EncodeErrorKind::InvalidUtf8 => format!(
                "cannot encode str at {}: expected a str encodable as UTF-8 (lone surrogates are not)",
                path
            ),
            EncodeErrorKind::TooLong(n) => format!(
                "cannot encode value of length {} at {}: expected at most {} items/bytes",
                n,
                path,
                u32::MAX
            ),
            EncodeErrorKind::TooDeep => format!(
                "cannot encode value at {}: expected containers nested at most {} deep (is there a reference cycle?)",
                path, MAX_DEPTH
            ),
        }
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message("value"))
    }
}

impl std::error::Error for EncodeError {}

/// Appends the canonical encoding of `v` to `out`.
pub fn encode_into(out: &mut Vec<u8>, v: &Value, depth: usize) -> Result<(), EncodeError> {
    encode_input(out, &v, depth).map_err(|f| match f {
        Failure::Encode(e) => e,
        Failure::Host(never) => match never {},
    })
}

/// The canonical encoding of `v`.
pub fn encode(v: &Value) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(&mut out, v, 0)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: Value) -> Vec<u8> {
        encode(&v).unwrap()
    }

    #[test]
    fn scalars() {
        assert_eq!(enc(Value::None), b"N");
        assert_eq!(enc(Value::Bool(true)), b"T");
        assert_eq!(enc(Value::Bool(false)), b"F");
        assert_eq!(enc(Value::Int(1)), b"i\0\0\0\0\0\0\0\x01");
        assert_eq!(enc(Value::Int(-1)), b"i\xff\xff\xff\xff\xff\xff\xff\xff");
        assert_eq!(enc(Value::Float(1.0)), b"f\0\0\0\x031e0");
        assert_eq!(enc(Value::Str("ab".into())), b"s\0\0\0\x02ab");
        assert_eq!(
            enc(Value::BigInt("9223372036854775808".into())),
            b"I\0\0\0\x139223372036854775808"
        );
    }

    #[test]
    fn types_are_distinct() {
        let all = [
            enc(Value::Int(1)),
            enc(Value::Float(1.0)),
            enc(Value::Bool(true)),
            enc(Value::Str("1.0".into())),
            enc(Value::Str("1".into())),
        ];
        for i in 0..all.len() {
            for j in 0..i {
                assert_ne!(all[i], all[j]);
            }
        }
    }

    #[test]
    fn dict_sorted_by_key_bytes() {
        let a = Value::Dict(vec![
            ("b".into(), Value::Int(2)),
            ("a".into(), Value::Int(1)),
        ]);
        let b = Value::Dict(vec![
            ("a".into(), Value::Int(1)),
            ("b".into(), Value::Int(2)),
        ]);
        assert_eq!(enc(a.clone()), enc(b));
        let bytes = enc(a);
        assert_eq!(&bytes[..5], b"d\0\0\0\x02");
        assert_eq!(&bytes[5..11], b"s\0\0\0\x01a");
        // UTF-8 byte order, not code-point-of-UTF-16 order: "\u{ff}" < "\u{10000}".
        let c = enc(Value::Dict(vec![
            ("\u{10000}".into(), Value::None),
            ("\u{ff}".into(), Value::None),
        ]));
        assert_eq!(&c[5..11], b"s\0\0\0\x02\xc3");
    }

    #[test]
    fn duplicate_key_rejected() {
        let e = encode(&Value::Dict(vec![
            ("a".into(), Value::None),
            ("a".into(), Value::None),
        ]))
        .unwrap_err();
        assert_eq!(e.kind, EncodeErrorKind::DuplicateKey("a".into()));
    }

    #[test]
    fn nan_path() {
        let v = Value::Dict(vec![(
            "lr".into(),
            Value::List(vec![Value::Float(0.1), Value::Float(f64::NAN)]),
        )]);
        let e = encode(&v).unwrap_err();
        assert_eq!(e.path("params"), "params['lr'][1]");
        let m = e.message("params");
        assert!(m.contains("nan"), "{m}");
        assert!(m.contains("params['lr'][1]"), "{m}");
    }

    #[test]
    fn too_deep() {
        let mut v = Value::None;
        for _ in 0..(MAX_DEPTH + 1) {
            v = Value::List(vec![v]);
        }
        assert_eq!(encode(&v).unwrap_err().kind, EncodeErrorKind::TooDeep);
        let mut ok = Value::None;
        for _ in 0..MAX_DEPTH {
            ok = Value::List(vec![ok]);
        }
        assert!(encode(&ok).is_ok());
    }

    #[test]
    fn unsupported_message_lists_accepted_types() {
        let e = EncodeError::new(EncodeErrorKind::Unsupported {
            type_name: "datetime64".into(),
        })
        .within(PathSeg::Key("when".into()));
        let m = e.message("params");
        assert!(m.contains("'datetime64' at params['when']"), "{m}");
        assert!(
            m.contains("dict with str keys (NumPy bool, integer, float"),
            "{m}"
        );
    }
}
