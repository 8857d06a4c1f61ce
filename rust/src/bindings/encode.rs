//! Canonical encoding of Python objects (the encoder's [`Input`] for `Bound<PyAny>`),
//! their plain-Python form, fingerprints and run ids.

use std::borrow::Cow;

use pyo3::prelude::*;
use pyo3::types::iter::{BoundDictIterator, BoundListIterator, BoundTupleIterator};
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use super::{repr_of, type_name, EncodingError};
use crate::encoding::{encode_input, EncodeError, EncodeErrorKind, Failure, Input, Kind};
use crate::fingerprint::{self, fingerprint_hex, hex_str, Hex};

/// NumPy kinds whose `.item()` / `.tolist()` is exactly the value: bool, signed and unsigned
/// integers, floats up to 64 bits, str, and object arrays (their items are encoded in turn).
///
/// The others are refused rather than normalised: `.item()` of a `datetime64[ns]` or a
/// `timedelta64` is a bare int (it would alias the int param it is not), of `NaT` None, of a
/// `longdouble` the `longdouble` itself, and complex, bytes and void have no encoding.
const NUMPY_KINDS: &str = "biufUO";

/// NumPy bool/integer/float scalars and 0-d arrays -> `.item()`, n-d arrays -> `.tolist()`;
/// None for anything else (the caller reports it as unsupported).
pub(crate) fn numpy_normalise<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let module = obj.get_type().getattr("__module__")?;
    if module.extract::<&str>().ok() != Some("numpy") {
        return Ok(None);
    }
    let (Ok(ndim), Ok(dtype)) = (obj.getattr("ndim"), obj.getattr("dtype")) else {
        return Ok(None);
    };
    let ndim = ndim.extract::<i64>().unwrap_or(-1);
    let kind = dtype
        .getattr("kind")
        .and_then(|k| k.extract::<String>())
        .unwrap_or_default();
    let itemsize = dtype
        .getattr("itemsize")
        .and_then(|s| s.extract::<usize>())
        .unwrap_or(0);
    if kind.len() != 1 || !NUMPY_KINDS.contains(kind.as_str()) || (kind == "f" && itemsize > 8) {
        return Ok(None);
    }
    if ndim == 0 && obj.hasattr("item")? {
        Ok(Some(obj.call_method0("item")?))
    } else if ndim > 0 && obj.hasattr("tolist")? {
        Ok(Some(obj.call_method0("tolist")?))
    } else {
        Ok(None)
    }
}

impl From<PyErr> for Failure<PyErr> {
    fn from(e: PyErr) -> Self {
        Failure::Host(e)
    }
}

/// A Python object as an encoder [`Input`]: which of the encodable kinds it is, tested in
/// this order (bool before int, since bool subclasses int; the NumPy probe last, being the
/// slowest), its items and its str keys.
impl<'py> Input for Bound<'py, PyAny> {
    type HostError = PyErr;
    type Items = PyItems<'py>;
    type Key = String;
    type Entries = PyEntries<'py>;

    // Inlined into the traversal: it runs once per node, and its result is matched at once.
    #[inline(always)]
    fn kind(&self) -> Result<Kind<'_, Self>, Failure<PyErr>> {
        Ok(if self.is_none() {
            Kind::None
        } else if let Ok(b) = self.downcast::<PyBool>() {
            Kind::Bool(b.is_true())
        } else if self.is_instance_of::<PyInt>() {
            match self.extract::<i64>() {
                Ok(i) => Kind::Int(i),
                Err(_) => {
                    // `int(x)` first: an int subclass's `__str__` may say anything.
                    let exact = self.py().get_type_bound::<PyInt>().call1((self,))?;
                    Kind::BigInt(Cow::Owned(exact.str()?.to_str()?.to_owned()))
                }
            }
        } else if let Ok(f) = self.downcast::<PyFloat>() {
            Kind::Float(f.value())
        } else if let Ok(s) = self.downcast::<PyString>() {
            Kind::Str(s.to_str().map_err(|_| EncodeErrorKind::InvalidUtf8)?)
        } else if let Ok(l) = self.downcast::<PyList>() {
            Kind::List {
                len: l.len(),
                items: PyItems::List(l.iter()),
            }
        } else if let Ok(t) = self.downcast::<PyTuple>() {
            Kind::List {
                len: t.len(),
                items: PyItems::Tuple(t.iter()),
            }
        } else if let Ok(d) = self.downcast::<PyDict>() {
            Kind::Dict {
                len: d.len(),
                entries: PyEntries(d.iter()),
            }
        } else if let Some(norm) = numpy_normalise(self)? {
            Kind::Alias(norm)
        } else {
            return Err(EncodeErrorKind::Unsupported {
                type_name: type_name(self),
            }
            .into());
        })
    }
}

/// The items of a Python list or tuple.
pub enum PyItems<'py> {
    List(BoundListIterator<'py>),
    Tuple(BoundTupleIterator<'py>),
}

impl<'py> Iterator for PyItems<'py> {
    type Item = Bound<'py, PyAny>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            PyItems::List(it) => it.next(),
            PyItems::Tuple(it) => it.next(),
        }
    }
}

/// The entries of a Python dict, each key checked to be a str encodable as UTF-8.
pub struct PyEntries<'py>(BoundDictIterator<'py>);

impl<'py> Iterator for PyEntries<'py> {
    type Item = Result<(String, Bound<'py, PyAny>), Failure<PyErr>>;

    fn next(&mut self) -> Option<Self::Item> {
        let (k, v) = self.0.next()?;
        let key = match k.downcast::<PyString>() {
            Ok(ks) => match ks.to_str() {
                Ok(text) => Ok((text.to_owned(), v)),
                Err(_) => Err(EncodeErrorKind::InvalidUtf8.into()),
            },
            Err(_) => Err(EncodeErrorKind::NonStrKey {
                key_repr: repr_of(&k),
                type_name: type_name(&k),
            }
            .into()),
        };
        Some(key)
    }
}

/// The canonical encoding of a Python value; errors name the failing value's path below
/// `root` (e.g. `grid['lr'][2]`).
pub(crate) fn encode_root(obj: &Bound<'_, PyAny>, root: &str) -> PyResult<Vec<u8>> {
    let mut out = Vec::new();
    encode_input(&mut out, obj, 0).map_err(|f| match f {
        Failure::Encode(e) => EncodingError::new_err(e.message(root)),
        Failure::Host(e) => e,
    })?;
    Ok(out)
}

/// The plain-Python form of an already validated value: NumPy values replaced by what they
/// encode as, containers rebuilt only where something inside them changed (so an ordinary
/// value comes back as the very same object). `None` means "unchanged".
///
/// The dispatch order is that of `Input::kind` above, so the result always encodes to
/// the same bytes.
pub(crate) fn plain_obj<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = obj.py();
    if obj.is_none() || obj.is_instance_of::<PyBool>() {
        return Ok(None);
    }
    if obj.is_instance_of::<PyInt>()
        || obj.is_instance_of::<PyFloat>()
        || obj.is_instance_of::<PyString>()
    {
        // `numpy.float64` and `numpy.str_` subclass float and str: made exact, so an
        // operation sees the same type in-process as after a worker's JSON round trip.
        // Other subclasses (IntEnum, ...) are the user's own types and stay.
        let module = obj.get_type().getattr("__module__")?;
        if module.extract::<&str>().ok() != Some("numpy") {
            return Ok(None);
        }
        let exact = if obj.is_instance_of::<PyInt>() {
            py.get_type_bound::<PyInt>().call1((obj,))?
        } else if obj.is_instance_of::<PyFloat>() {
            py.get_type_bound::<PyFloat>().call1((obj,))?
        } else {
            py.get_type_bound::<PyString>().call1((obj,))?
        };
        return Ok(Some(exact));
    }
    if let Ok(l) = obj.downcast::<PyList>() {
        let items = plain_items(l.iter())?;
        return Ok(items.map(|v| PyList::new_bound(py, v).into_any()));
    }
    if let Ok(t) = obj.downcast::<PyTuple>() {
        let items = plain_items(t.iter())?;
        return Ok(items.map(|v| PyTuple::new_bound(py, v).into_any()));
    }
    if let Ok(d) = obj.downcast::<PyDict>() {
        let mut changed = false;
        let mut entries = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            match plain_obj(&v)? {
                Some(p) => {
                    changed = true;
                    entries.push((k, p));
                }
                None => entries.push((k, v)),
            }
        }
        if !changed {
            return Ok(None);
        }
        let out = PyDict::new_bound(py);
        for (k, v) in entries {
            out.set_item(k, v)?;
        }
        return Ok(Some(out.into_any()));
    }
    match numpy_normalise(obj)? {
        // An object array's `.tolist()` may still hold NumPy scalars.
        Some(norm) => Ok(Some(plain_obj(&norm)?.unwrap_or(norm))),
        None => Ok(None),
    }
}

/// The items of a sequence in plain form, or `None` if none of them changed.
fn plain_items<'py>(
    items: impl Iterator<Item = Bound<'py, PyAny>>,
) -> PyResult<Option<Vec<Bound<'py, PyAny>>>> {
    let mut changed = false;
    let mut out = Vec::new();
    for item in items {
        match plain_obj(&item)? {
            Some(p) => {
                changed = true;
                out.push(p);
            }
            None => out.push(item),
        }
    }
    Ok(changed.then_some(out))
}

/// to_plain(value, root="value") -> Any
#[pyfunction]
#[pyo3(signature = (value, root = "value"))]
pub fn to_plain<'py>(value: &Bound<'py, PyAny>, root: &str) -> PyResult<Bound<'py, PyAny>> {
    // Validating first keeps one rule for "encodable" and gives errors their key path.
    encode_root(value, root)?;
    Ok(plain_obj(value)?.unwrap_or_else(|| value.clone()))
}

/// canonical_encode(value) -> bytes
#[pyfunction]
pub fn canonical_encode<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let e = encode_root(value, "value")?;
    Ok(PyBytes::new_bound(value.py(), &e))
}

/// fingerprint(value) -> str
#[pyfunction(name = "fingerprint")]
pub fn py_fingerprint(value: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(fingerprint_hex(&encode_root(value, "value")?))
}

/// fingerprint_many(values) -> list[str]
#[pyfunction]
pub fn fingerprint_many(values: Vec<Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| Ok(fingerprint_hex(&encode_root(v, &format!("values[{}]", i))?)))
        .collect()
}

/// run_id(experiment_id, context_fp, params_fp, seed_fp) -> str
#[pyfunction]
pub fn run_id(
    experiment_id: &str,
    context_fp: &str,
    params_fp: &str,
    seed_fp: &str,
) -> PyResult<String> {
    fingerprint::run_id(experiment_id, context_fp, params_fp, seed_fp)
        .map_err(|k| EncodingError::new_err(EncodeError::new(k).message("run_id inputs")))
}

/// A Python list of str from stack-held hex ids (one PyUnicode per item, no Rust String).
pub(crate) fn hex_list<'py>(py: Python<'py>, items: &[Hex]) -> Bound<'py, PyList> {
    PyList::new_bound(
        py,
        items.iter().map(|h| PyString::new_bound(py, hex_str(h))),
    )
}
