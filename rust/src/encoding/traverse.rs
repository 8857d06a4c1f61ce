//! The one traversal.
//!
//! The encoder is written once, over [`Input`]: the pure-Rust [`Value`] implements it
//! here and a Python object implements it in the bindings, so the unit tests of this module
//! run the very traversal (depth limit, key paths, dict ordering, duplicate keys) that
//! `canonical_encode` and `fingerprint` run on Python values. An input only says what each
//! node is; it never writes bytes.

use std::borrow::Cow;
use std::convert::Infallible;

use super::writer::{
    put_big_int, put_bool, put_dict, put_float, put_int, put_list_header, put_none, put_str,
};
use super::{EncodeError, EncodeErrorKind, PathSeg, Value, MAX_DEPTH};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::encode;

    fn enc(v: Value) -> Vec<u8> {
        encode(&v).unwrap()
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
}
