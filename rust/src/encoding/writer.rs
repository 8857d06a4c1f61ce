//! The byte layout of each kind (the table in the module docs): a tag byte, then a u32
//! big-endian length or count where the kind has one. Containers are written by the
//! traversal (`super::traverse`), which calls these for their headers.

use super::text::float_text;
use super::EncodeErrorKind;

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
