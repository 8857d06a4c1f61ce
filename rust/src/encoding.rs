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

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;

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

/// Quotes a str the way Python's `repr` does for ordinary text: `'x'`, escaping `\` and `'`.
pub fn quote_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Python's `repr(float)` for messages: `0.1`, `1e-05`, `1e+16`, `nan`, `-inf`, `2.0`.
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let sci = float_text(x);
    let (mant, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let sign = if neg { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let body = if exp < 0 {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        } else if exp + 1 >= n {
            format!("{}{}.0", digits, "0".repeat((exp + 1 - n) as usize))
        } else {
            let (a, b) = digits.split_at((exp + 1) as usize);
            format!("{}.{}", a, b)
        };
        format!("{}{}", sign, body)
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits.clone()
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{}{}e{}{:02}", sign, m, esign, exp.abs())
    }
}

/// The text of a finite float in the encoding, in Rust's `{:e}` layout (`1e0`, `1.5e-3`,
/// `-0e0`) with the digits of Python's `repr`: the shortest digits that round-trip, the
/// nearest to `x` among those, and exact ties broken towards an even last digit.
///
/// Rust's own `format!("{:e}")` breaks such ties upwards (`8796093022208.0625` gives
/// `...063e12` where Python gives `...062`), so the digits come from Ryu, which breaks
/// them to even like Python, and are re-laid out here.
pub fn float_text(x: f64) -> String {
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(x);
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (mant, exp) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (s, 0),
    };
    let (int_part, frac_part) = mant.split_once('.').unwrap_or((mant, ""));
    let all: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).collect();
    let lead = all.iter().take_while(|&&d| d == b'0').count();
    let digits = &all[lead..];
    let end = digits.len() - digits.iter().rev().take_while(|&&d| d == b'0').count();
    let digits = &digits[..end];
    let mut out = String::with_capacity(digits.len() + 8);
    if neg {
        out.push('-');
    }
    if digits.is_empty() {
        out.push_str("0e0");
        return out;
    }
    let point_exp = int_part.len() as i32 - 1 - lead as i32 + exp;
    out.push(digits[0] as char);
    if digits.len() > 1 {
        out.push('.');
        out.extend(digits[1..].iter().map(|&d| d as char));
    }
    out.push('e');
    out.push_str(&point_exp.to_string());
    out
}

/// Writes a u32 big-endian length prefix.
pub fn put_len(out: &mut Vec<u8>, n: usize) -> Result<(), EncodeErrorKind> {
    let n32 = u32::try_from(n).map_err(|_| EncodeErrorKind::TooLong(n))?;
    out.extend_from_slice(&n32.to_be_bytes());
    Ok(())
}

pub fn put_none(out: &mut Vec<u8>) {
    out.push(b'N');
}

pub fn put_bool(out: &mut Vec<u8>, b: bool) {
    out.push(if b { b'T' } else { b'F' });
}

pub fn put_int(out: &mut Vec<u8>, i: i64) {
    out.push(b'i');
    out.extend_from_slice(&i.to_be_bytes());
}

/// An int outside i64 as decimal text (the caller guarantees it is outside i64).
pub fn put_big_int(out: &mut Vec<u8>, decimal: &str) -> Result<(), EncodeErrorKind> {
    out.push(b'I');
    put_len(out, decimal.len())?;
    out.extend_from_slice(decimal.as_bytes());
    Ok(())
}

pub fn put_float(out: &mut Vec<u8>, x: f64) -> Result<(), EncodeErrorKind> {
    if !x.is_finite() {
        return Err(EncodeErrorKind::NonFinite(x));
    }
    let t = float_text(x);
    out.push(b'f');
    put_len(out, t.len())?;
    out.extend_from_slice(t.as_bytes());
    Ok(())
}

pub fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), EncodeErrorKind> {
    out.push(b's');
    put_len(out, s.len())?;
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

pub fn put_list_header(out: &mut Vec<u8>, count: usize) -> Result<(), EncodeErrorKind> {
    out.push(b'l');
    put_len(out, count)
}

/// Writes a dict from (key, already-encoded value) entries, sorting them by key bytes.
pub fn put_dict<K: AsRef<str>>(
    out: &mut Vec<u8>,
    mut entries: Vec<(K, Vec<u8>)>,
) -> Result<(), EncodeErrorKind> {
    entries.sort_by(|a, b| a.0.as_ref().as_bytes().cmp(b.0.as_ref().as_bytes()));
    if let Some(w) = entries
        .windows(2)
        .find(|w| w[0].0.as_ref() == w[1].0.as_ref())
    {
        return Err(EncodeErrorKind::DuplicateKey(w[0].0.as_ref().to_string()));
    }
    out.push(b'd');
    put_len(out, entries.len())?;
    for (k, v) in &entries {
        put_str(out, k.as_ref())?;
        out.extend_from_slice(v);
    }
    Ok(())
}

/// Encodes a string on its own (`s` + len + UTF-8).
pub fn encode_str(s: &str) -> Result<Vec<u8>, EncodeErrorKind> {
    let mut out = Vec::with_capacity(5 + s.len());
    put_str(&mut out, s)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The one traversal
//
// The encoder below is written once, over [`Input`]: the pure-Rust [`Value`] implements it
// here and a Python object implements it in the bindings, so the unit tests of this module
// run the very traversal (depth limit, key paths, dict ordering, duplicate keys) that
// `canonical_encode` and `fingerprint` run on Python values. An input only says what each
// node is; it never writes bytes.

/// What one node of an [`Input`] is: a scalar to write, or a container and its children.
pub enum Kind<'s, I: Input> {
    None,
    Bool(bool),
    Int(i64),
    /// An integer outside i64, as its decimal text.
    BigInt(Cow<'s, str>),
    Float(f64),
    Str(&'s str),
    /// A list or tuple: its item count (written before the items) and the items in order.
    List {
        len: usize,
        items: I::Items,
    },
    /// A mapping: its entry count (a capacity hint) and its entries in any order.
    Dict {
        len: usize,
        entries: I::Entries,
    },
    /// Encodes exactly as this other value, one nesting level deeper (a NumPy scalar as its
    /// `.item()`, an array as its `.tolist()`); no path segment is added.
    Alias(I),
}

/// Why a traversal stopped: the value has no encoding, or the host failed while it was
/// being inspected (a Python exception raised by `__index__`, `.item()`, ...), which is
/// passed through unchanged and without a key path.
#[derive(Debug)]
pub enum Failure<H> {
    Encode(EncodeError),
    Host(H),
}

impl<H> Failure<H> {
    /// Adds the segment through which the failing value was reached (call while unwinding).
    pub fn within(self, seg: PathSeg) -> Self {
        match self {
            Failure::Encode(e) => Failure::Encode(e.within(seg)),
            host => host,
        }
    }
}

impl<H> From<EncodeErrorKind> for Failure<H> {
    fn from(kind: EncodeErrorKind) -> Self {
        Failure::Encode(EncodeError::new(kind))
    }
}

/// A value the canonical encoder can walk.
pub trait Input: Sized {
    /// What inspecting a node can fail with besides "not encodable"
    /// ([`std::convert::Infallible`] for [`Value`]).
    type HostError;
    /// The items of a list, in order.
    type Items: Iterator<Item = Self>;
    /// A dict key's text, kept until the entries are sorted.
    type Key: AsRef<str>;
    /// The entries of a dict; an entry whose key is not encodable text is an `Err`
    /// (reported at the dict's own path, like a bad value would be at its key's).
    type Entries: Iterator<Item = Result<(Self::Key, Self), Failure<Self::HostError>>>;

    /// What this node is; `Err` for a value of an unsupported type, a non-finite float is
    /// left to the encoder (it reports `NonFinite`).
    fn kind(&self) -> Result<Kind<'_, Self>, Failure<Self::HostError>>;
}

impl<'a> Input for &'a Value {
    type HostError = Infallible;
    type Items = std::slice::Iter<'a, Value>;
    type Key = &'a str;
    type Entries = ValueEntries<'a>;

    fn kind(&self) -> Result<Kind<'_, Self>, Failure<Infallible>> {
        let v: &'a Value = self;
        Ok(match v {
            Value::None => Kind::None,
            Value::Bool(b) => Kind::Bool(*b),
            Value::Int(i) => Kind::Int(*i),
            Value::BigInt(d) => Kind::BigInt(Cow::Borrowed(d)),
            Value::Float(x) => Kind::Float(*x),
            Value::Str(s) => Kind::Str(s),
            Value::List(items) => Kind::List {
                len: items.len(),
                items: items.iter(),
            },
            Value::Dict(entries) => Kind::Dict {
                len: entries.len(),
                entries: ValueEntries(entries.iter()),
            },
        })
    }
}

/// The entries of a [`Value::Dict`] as [`Input`] entries (their keys are always text).
pub struct ValueEntries<'a>(std::slice::Iter<'a, (String, Value)>);

impl<'a> Iterator for ValueEntries<'a> {
    type Item = Result<(&'a str, &'a Value), Failure<Infallible>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| Ok((k.as_str(), v)))
    }
}

/// Appends the canonical encoding of any [`Input`] to `out`; `depth` is the nesting level
/// of `v` (0 at the root), limited to [`MAX_DEPTH`].
pub fn encode_input<I: Input>(
    out: &mut Vec<u8>,
    v: &I,
    depth: usize,
) -> Result<(), Failure<I::HostError>> {
    match v.kind()? {
        Kind::None => put_none(out),
        Kind::Bool(b) => put_bool(out, b),
        Kind::Int(i) => put_int(out, i),
        Kind::BigInt(d) => put_big_int(out, &d)?,
        Kind::Float(x) => put_float(out, x)?,
        Kind::Str(s) => put_str(out, s)?,
        Kind::List { len, items } => {
            if depth >= MAX_DEPTH {
                return Err(EncodeErrorKind::TooDeep.into());
            }
            put_list_header(out, len)?;
            for (i, item) in items.enumerate() {
                encode_input(out, &item, depth + 1).map_err(|e| e.within(PathSeg::Index(i)))?;
            }
        }
        Kind::Dict { len, entries } => {
            if depth >= MAX_DEPTH {
                return Err(EncodeErrorKind::TooDeep.into());
            }
            // Each value is encoded on its own, then the entries are sorted by key bytes.
            let mut encoded = Vec::with_capacity(len);
            for entry in entries {
                let (key, item) = entry?;
                let mut buf = Vec::new();
                encode_input(&mut buf, &item, depth + 1)
                    .map_err(|e| e.within(PathSeg::Key(key.as_ref().to_string())))?;
                encoded.push((key, buf));
            }
            put_dict(out, encoded)?;
        }
        Kind::Alias(inner) => {
            if depth >= MAX_DEPTH {
                return Err(EncodeErrorKind::TooDeep.into());
            }
            encode_input(out, &inner, depth + 1)?;
        }
    }
    Ok(())
}

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
    fn float_texts() {
        assert_eq!(float_text(1.0), "1e0");
        assert_eq!(float_text(0.1), "1e-1");
        assert_eq!(float_text(-0.0), "-0e0");
        assert_eq!(float_text(0.0), "0e0");
        assert_eq!(float_text(1.5), "1.5e0");
        assert_eq!(float_text(123456.0), "1.23456e5");
        assert_eq!(float_text(5e-324), "5e-324");
        assert_eq!(float_text(f64::MAX), "1.7976931348623157e308");
        assert_eq!(float_text(1e-7), "1e-7");
        assert_eq!(float_text(1e22), "1e22");
        assert_eq!(float_text(100.0), "1e2");
        assert_eq!(float_text(0.00123), "1.23e-3");
        assert_eq!(float_text(-2.5e-300), "-2.5e-300");
        // An exact tie between two shortest candidates goes to the even digit (like
        // Python's repr), where `format!("{:e}")` would give "8.796093022208063e12".
        let tie = (1u64 << 43) as f64 + 0.0625;
        assert_eq!(float_text(tie), "8.796093022208062e12");
        for x in [
            0.1,
            1.0 / 3.0,
            123.456,
            6.02214076e23,
            5e-324,
            1e300,
            4.35e-5,
        ] {
            assert_eq!(float_text(x).parse::<f64>().unwrap(), x);
            assert_eq!(float_text(-x).parse::<f64>().unwrap(), -x);
        }
    }

    #[test]
    fn python_reprs() {
        assert_eq!(python_float_repr(1.0), "1.0");
        assert_eq!(python_float_repr(0.1), "0.1");
        assert_eq!(python_float_repr(1e-5), "1e-05");
        assert_eq!(python_float_repr(0.0001), "0.0001");
        assert_eq!(python_float_repr(1e16), "1e+16");
        assert_eq!(python_float_repr(1234.5), "1234.5");
        assert_eq!(python_float_repr(-2.5e-7), "-2.5e-07");
        assert_eq!(python_float_repr(1e15), "1000000000000000.0");
        assert_eq!(python_float_repr(-0.0), "-0.0");
        assert_eq!(python_float_repr(f64::NAN), "nan");
        assert_eq!(python_float_repr(f64::NEG_INFINITY), "-inf");
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

    /// A host value shaped like a Python object: it may fail while being inspected, stand
    /// for another value (like a NumPy scalar) or hold a dict key that is not text.
    enum Host {
        Plain(Value),
        Alias(Box<Host>),
        Fails(&'static str),
        List(Vec<Host>),
        Dict(Vec<(Result<&'static str, i64>, Host)>),
    }

    struct HostEntries<'a>(std::slice::Iter<'a, (Result<&'static str, i64>, Host)>);

    impl<'a> Iterator for HostEntries<'a> {
        type Item = Result<(&'static str, &'a Host), Failure<&'static str>>;

        fn next(&mut self) -> Option<Self::Item> {
            self.0.next().map(|(k, v)| match k {
                Ok(text) => Ok((*text, v)),
                Err(n) => Err(EncodeErrorKind::NonStrKey {
                    key_repr: n.to_string(),
                    type_name: "int".into(),
                }
                .into()),
            })
        }
    }

    impl<'a> Input for &'a Host {
        type HostError = &'static str;
        type Items = std::slice::Iter<'a, Host>;
        type Key = &'static str;
        type Entries = HostEntries<'a>;

        fn kind(&self) -> Result<Kind<'_, Self>, Failure<&'static str>> {
            let h: &'a Host = self;
            match h {
                Host::Plain(Value::Int(i)) => Ok(Kind::Int(*i)),
                Host::Plain(Value::Float(x)) => Ok(Kind::Float(*x)),
                Host::Plain(Value::None) => Ok(Kind::None),
                Host::Plain(_) => Err(EncodeErrorKind::Unsupported {
                    type_name: "other".into(),
                }
                .into()),
                Host::Alias(inner) => Ok(Kind::Alias(inner)),
                Host::Fails(why) => Err(Failure::Host(why)),
                Host::List(items) => Ok(Kind::List {
                    len: items.len(),
                    items: items.iter(),
                }),
                Host::Dict(entries) => Ok(Kind::Dict {
                    len: entries.len(),
                    entries: HostEntries(entries.iter()),
                }),
            }
        }
    }

    fn host_enc(h: &Host) -> Result<Vec<u8>, Failure<&'static str>> {
        let mut out = Vec::new();
        encode_input(&mut out, &h, 0)?;
        Ok(out)
    }

    fn encode_failure(f: Failure<&'static str>) -> EncodeError {
        match f {
            Failure::Encode(e) => e,
            Failure::Host(h) => panic!("expected an encoding error, got host error {h}"),
        }
    }

    #[test]
    fn alias_encodes_as_its_target_one_level_deeper() {
        let h = Host::Dict(vec![(
            Ok("x"),
            Host::List(vec![Host::Alias(Box::new(Host::Plain(Value::Int(3))))]),
        )]);
        let v = Value::Dict(vec![("x".into(), Value::List(vec![Value::Int(3)]))]);
        assert_eq!(host_enc(&h).unwrap(), enc(v));
        // Each alias uses one nesting level, like a container does.
        let mut deep = Host::Plain(Value::None);
        for _ in 0..MAX_DEPTH {
            deep = Host::Alias(Box::new(deep));
        }
        assert!(host_enc(&deep).is_ok());
        let too_deep = Host::List(vec![deep]);
        let e = encode_failure(host_enc(&too_deep).unwrap_err());
        assert_eq!(e.kind, EncodeErrorKind::TooDeep);
        // No path segment for the aliases themselves, only the list index.
        assert_eq!(e.path("v"), "v[0]");
    }

    #[test]
    fn alias_failure_keeps_the_outer_path() {
        let h = Host::Dict(vec![(
            Ok("lr"),
            Host::Alias(Box::new(Host::Plain(Value::Float(f64::INFINITY)))),
        )]);
        let e = encode_failure(host_enc(&h).unwrap_err());
        assert_eq!(e.kind, EncodeErrorKind::NonFinite(f64::INFINITY));
        assert_eq!(e.path("params"), "params['lr']");
    }

    #[test]
    fn host_errors_pass_through_without_a_path() {
        let h = Host::List(vec![
            Host::Plain(Value::Int(1)),
            Host::Dict(vec![(Ok("k"), Host::Fails("boom"))]),
        ]);
        match host_enc(&h) {
            Err(Failure::Host(why)) => assert_eq!(why, "boom"),
            other => panic!("expected the host error, got {other:?}"),
        }
    }

    #[test]
    fn bad_key_is_reported_at_the_dict() {
        let h = Host::List(vec![Host::Dict(vec![
            (Ok("a"), Host::Plain(Value::None)),
            (Err(7), Host::Plain(Value::None)),
        ])]);
        let e = encode_failure(host_enc(&h).unwrap_err());
        assert!(matches!(e.kind, EncodeErrorKind::NonStrKey { .. }), "{e:?}");
        assert_eq!(e.path("v"), "v[0]");
        assert!(e.message("v").contains("dict key 7 of type 'int'"), "{}", e);
    }

    #[test]
    fn host_dict_sorted_and_duplicates_rejected_like_value() {
        let h = Host::Dict(vec![
            (Ok("b"), Host::Plain(Value::Int(2))),
            (Ok("a"), Host::Plain(Value::Int(1))),
        ]);
        let v = Value::Dict(vec![
            ("a".into(), Value::Int(1)),
            ("b".into(), Value::Int(2)),
        ]);
        assert_eq!(host_enc(&h).unwrap(), enc(v));
        let dup = Host::Dict(vec![
            (Ok("a"), Host::Plain(Value::None)),
            (Ok("a"), Host::Plain(Value::None)),
        ]);
        let e = encode_failure(host_enc(&dup).unwrap_err());
        assert_eq!(e.kind, EncodeErrorKind::DuplicateKey("a".into()));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_str("a'b\\c"), "'a\\'b\\\\c'");
        assert_eq!(quote_str("x\ny"), "'x\\ny'");
    }
}
