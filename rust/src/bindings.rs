//! PyO3 bindings: the only module that touches Python objects.
//!
//! Errors are instances of the classes in the Python module `metalab.errors`, bound as Rust
//! types (`import_exception!`) and checked when `_core` is imported, so a class that
//! `metalab.errors` lacks fails that import instead of some later raise. Heavy loops run
//! with the GIL released on plain Rust data.

// PyO3 0.22's macro expansion trips this lint on every `PyResult` return type.
#![allow(clippy::useless_conversion)]

use std::borrow::Cow;
use std::path::PathBuf;

use pyo3::exceptions::{PyIndexError, PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::iter::{BoundDictIterator, BoundListIterator, BoundTupleIterator};
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::encoding::{encode_input, EncodeError, EncodeErrorKind, Failure, Input, Kind};
use crate::fingerprint::{fingerprint_hex, hex_str, Hex, FINGERPRINT_HEX_CHARS};
use crate::grid::{Grid, GridError};
use crate::random::{Arg, Dist, RandomSpace, Sample};
use crate::{fingerprint, plan, records, scan, seeds, CoreError};

// ---------------------------------------------------------------------------------------
// Errors

/// The `metalab.errors` classes that Rust raises, as Rust types.
// PyO3 0.22's `import_exception!` expands a `cfg(feature = "gil-refs")` of its own crate.
#[allow(unexpected_cfgs)]
mod py_errors {
    use pyo3::prelude::*;
    use pyo3::types::PyType;

    /// Binds each named class of `metalab.errors` as a Rust exception type and defines
    /// `check_errors`, run by the module initialiser: it resolves every bound class once, so a
    /// name `metalab.errors` lacks (or a non-`MetalabError` under that name) makes importing
    /// `_core` fail with an ImportError that names it. Without that check PyO3 would resolve
    /// the class only when the first such error is raised.
    macro_rules! metalab_errors {
        ($($name:ident),+ $(,)?) => {
            $(pyo3::import_exception!(metalab.errors, $name);)+

            pub fn check_errors(py: Python<'_>) -> PyResult<()> {
                let module = py.import_bound("metalab.errors")?;
                let base = module.getattr("MetalabError")?;
                for name in [$(stringify!($name)),+] {
                    let ok = match module.getattr(name) {
                        Ok(cls) => cls
                            .downcast::<PyType>()
                            .map(|t| t.is_subclass(&base).unwrap_or(false))
                            .unwrap_or(false),
                        Err(_) => false,
                    };
                    if !ok {
                        return Err(pyo3::exceptions::PyImportError::new_err(format!(
                            "metalab._core raises metalab.errors.{name}, but metalab.errors has \
                             no such MetalabError subclass: expected the metalab.errors that \
                             ships with this build"
                        )));
                    }
                }
                // Cache the checked classes now, so no raise can hit an unresolved one later.
                $(let _ = py.get_type_bound::<$name>();)+
                Ok(())
            }
        };
    }

    metalab_errors!(EncodingError, ParamSpecError, SeedSpecError, StoreError);
}

use py_errors::{check_errors, EncodingError, ParamSpecError, SeedSpecError, StoreError};

/// The Python exception for a core error. (`_py` is unused since the classes are bound
/// statically; it stays so the many call sites need not change in one go.)
fn core_err(_py: Python<'_>, e: CoreError) -> PyErr {
    match e {
        CoreError::Encoding(m) => EncodingError::new_err(m),
        CoreError::ParamSpec(m) => ParamSpecError::new_err(m),
        CoreError::SeedSpec(m) => SeedSpecError::new_err(m),
        CoreError::Index(m) => PyIndexError::new_err(m),
        CoreError::Store(m) => StoreError::new_err(m),
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .getattr("__name__")
        .and_then(|n| n.extract::<String>())
        .unwrap_or_else(|_| "?".into())
}

fn repr_of(obj: &Bound<'_, PyAny>) -> String {
    obj.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| format!("<{} object>", type_name(obj)))
}

// ---------------------------------------------------------------------------------------
// Canonical encoding of Python objects

/// NumPy kinds whose `.item()` / `.tolist()` is exactly the value: bool, signed and unsigned
/// integers, floats up to 64 bits, str, and object arrays (their items are encoded in turn).
///
/// The others are refused rather than normalised: `.item()` of a `datetime64[ns]` or a
/// `timedelta64` is a bare int (it would alias the int param it is not), of `NaT` None, of a
/// `longdouble` the `longdouble` itself, and complex, bytes and void have no encoding.
const NUMPY_KINDS: &str = "biufUO";

/// NumPy bool/integer/float scalars and 0-d arrays -> `.item()`, n-d arrays -> `.tolist()`;
/// None for anything else (the caller reports it as unsupported).
fn numpy_normalise<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
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
fn encode_root(obj: &Bound<'_, PyAny>, root: &str) -> PyResult<Vec<u8>> {
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
fn plain_obj<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
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
fn to_plain<'py>(value: &Bound<'py, PyAny>, root: &str) -> PyResult<Bound<'py, PyAny>> {
    // Validating first keeps one rule for "encodable" and gives errors their key path.
    encode_root(value, root)?;
    Ok(plain_obj(value)?.unwrap_or_else(|| value.clone()))
}

/// canonical_encode(value) -> bytes
#[pyfunction]
fn canonical_encode<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let e = encode_root(value, "value")?;
    Ok(PyBytes::new_bound(value.py(), &e))
}

/// fingerprint(value) -> str
#[pyfunction(name = "fingerprint")]
fn py_fingerprint(value: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(fingerprint_hex(&encode_root(value, "value")?))
}

/// fingerprint_many(values) -> list[str]
#[pyfunction]
fn fingerprint_many(values: Vec<Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| Ok(fingerprint_hex(&encode_root(v, &format!("values[{}]", i))?)))
        .collect()
}

/// run_id(experiment_id, context_fp, params_fp, seed_fp) -> str
#[pyfunction]
fn run_id(
    experiment_id: &str,
    context_fp: &str,
    params_fp: &str,
    seed_fp: &str,
) -> PyResult<String> {
    fingerprint::run_id(experiment_id, context_fp, params_fp, seed_fp)
        .map_err(|k| EncodingError::new_err(EncodeError::new(k).message("run_id inputs")))
}

/// A Python list of str from stack-held hex ids (one PyUnicode per item, no Rust String).
fn hex_list<'py>(py: Python<'py>, items: &[Hex]) -> Bound<'py, PyList> {
    PyList::new_bound(
        py,
        items.iter().map(|h| PyString::new_bound(py, hex_str(h))),
    )
}

// ---------------------------------------------------------------------------------------
// Index arguments

/// An int index; too large to be any valid index -> IndexError (like `list[10**30]`).
fn index_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<i128> {
    match obj.extract::<i128>() {
        Ok(i) => Ok(i),
        Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => Err(PyIndexError::new_err(
            format!("{} index {} out of range", what, repr_of(obj)),
        )),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------
// GridCore

/// A grid of parameter axes with every value pre-encoded.
///
/// Subclassable: `metalab.params.GridSource` is a `GridCore`, so `grid(...)[i]` is answered
/// here with no Python frame in between (a Python wrapper cost ~1.7 µs per lookup).
#[pyclass(module = "metalab._core", frozen, subclass)]
struct GridCore {
    grid: Grid,
    /// The keys as Python strings, made once and shared by every dict built.
    keys: Vec<Py<PyString>>,
    /// Each axis's values in plain-Python form (NumPy values as what they encode as).
    values: Vec<Vec<PyObject>>,
}

/// A `ParamSource` index: an int but not a bool; negative counts from the end.
fn param_index(index: &Bound<'_, PyAny>, size: u64) -> PyResult<u64> {
    if index.is_instance_of::<PyBool>() || !index.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "parameter index must be an int, got {}",
            type_name(index)
        )));
    }
    let out_of_range = || {
        PyIndexError::new_err(format!(
            "parameter index {} out of range for {} configurations",
            repr_of(index),
            size
        ))
    };
    // Wider than any index: past i128 (e.g. 10**40) it cannot be in range either.
    let i: i128 = index.extract().map_err(|_| out_of_range())?;
    let position = if i < 0 { i + i128::from(size) } else { i };
    if position < 0 || position >= i128::from(size) {
        return Err(out_of_range());
    }
    Ok(position as u64)
}

#[pymethods]
impl GridCore {
    #[new]
    fn new(keys: Vec<Bound<'_, PyAny>>, axes: Vec<Vec<Bound<'_, PyAny>>>) -> PyResult<Self> {
        let mut key_strs = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            match k.downcast::<PyString>() {
                Ok(s) => key_strs.push(s.to_str()?.to_string()),
                Err(_) => {
                    return Err(ParamSpecError::new_err(format!(
                        "grid key {} at position {} has type '{}': expected str",
                        repr_of(k),
                        i,
                        type_name(k)
                    )))
                }
            }
        }
        let grid_err = |e: GridError| -> PyErr {
            let shown = match &e {
                GridError::DuplicateValue { key, second, .. } => key_strs
                    .iter()
                    .position(|k| k == key)
                    .map(|a| repr_of(&axes[a][*second]))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            ParamSpecError::new_err(e.message(&shown))
        };
        if key_strs.len() != axes.len() {
            return Err(grid_err(GridError::LengthMismatch {
                keys: key_strs.len(),
                axes: axes.len(),
            }));
        }
        let mut encoded = Vec::with_capacity(axes.len());
        for (k, axis) in key_strs.iter().zip(&axes) {
            if axis.is_empty() {
                return Err(grid_err(GridError::EmptyAxis(k.clone())));
            }
            let mut vals = Vec::with_capacity(axis.len());
            for (i, v) in axis.iter().enumerate() {
                let root = format!("grid[{}][{}]", crate::encoding::quote_str(k), i);
                vals.push(encode_root(v, &root)?);
            }
            encoded.push(vals);
        }
        let grid = Grid::new(key_strs.clone(), encoded).map_err(grid_err)?;
        let keys = keys
            .iter()
            .zip(&key_strs)
            .map(|(k, text)| PyString::new_bound(k.py(), text).unbind())
            .collect();
        let mut values = Vec::with_capacity(axes.len());
        for axis in &axes {
            let mut plain = Vec::with_capacity(axis.len());
            for v in axis {
                plain.push(plain_obj(v)?.unwrap_or_else(|| v.clone()).unbind());
            }
            values.push(plain);
        }
        Ok(GridCore { grid, keys, values })
    }

    /// Point `index` as a fresh `{key: value}` dict in key order (plain-Python values).
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let i = param_index(index, self.grid.len())?;
        let positions = self.grid.indices(i);
        let dict = PyDict::new_bound(py);
        for ((key, axis), &p) in self.keys.iter().zip(&self.values).zip(&positions) {
            dict.set_item(key.bind(py), axis[p].bind(py))?;
        }
        Ok(dict)
    }

    fn __len__(&self) -> usize {
        self.grid.len() as usize
    }

    fn __repr__(&self) -> String {
        let keys: Vec<String> = self
            .grid
            .keys()
            .iter()
            .map(|k| crate::encoding::quote_str(k))
            .collect();
        format!(
            "GridCore(keys=[{}], len={})",
            keys.join(", "),
            self.grid.len()
        )
    }

    fn indices(&self, py: Python<'_>, index: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
        let i = self
            .grid
            .resolve(index_arg(index, "grid")?)
            .map_err(|e| core_err(py, e))?;
        Ok(self.grid.indices(i))
    }

    fn indices_range(&self, py: Python<'_>, start: i128, stop: i128) -> PyResult<Vec<Vec<usize>>> {
        let (a, b) = self
            .grid
            .check_range(start, stop)
            .map_err(|e| core_err(py, e))?;
        let grid = &self.grid;
        Ok(py.allow_threads(|| grid.indices_range(a, b)))
    }

    fn fingerprints<'py>(
        &self,
        py: Python<'py>,
        start: i128,
        stop: i128,
    ) -> PyResult<Bound<'py, PyList>> {
        let (a, b) = self
            .grid
            .check_range(start, stop)
            .map_err(|e| core_err(py, e))?;
        let grid = &self.grid;
        let fps = py.allow_threads(|| grid.fingerprints(a, b));
        Ok(hex_list(py, &fps))
    }
}

// ---------------------------------------------------------------------------------------
// RandomCore

/// An int argument in i64 (NumPy integers included); anything else -> `new_err(message)`,
/// e.g. `SeedSpecError::new_err`.
fn i64_arg(obj: &Bound<'_, PyAny>, what: &str, new_err: fn(String) -> PyErr) -> PyResult<i64> {
    let err = || {
        new_err(format!(
            "{} = {} (type '{}'): expected an int in [-2**63, 2**63)",
            what,
            repr_of(obj),
            type_name(obj)
        ))
    };
    if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
        if let Some(n) = numpy_normalise(obj)? {
            if n.is_instance_of::<PyInt>() && !n.is_instance_of::<PyBool>() {
                return n.extract::<i64>().map_err(|_| err());
            }
        }
        return Err(err());
    }
    obj.extract::<i64>().map_err(|_| err())
}

fn dist_arg(key: &str, kind: &str, i: usize, obj: &Bound<'_, PyAny>) -> PyResult<Arg> {
    let norm = if obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyFloat>() {
        None
    } else {
        numpy_normalise(obj)?
    };
    let v = norm.as_ref().unwrap_or(obj);
    let err = |why: &str| {
        ParamSpecError::new_err(format!(
            "random space {} ({}): argument {} = {} (type '{}') {}",
            crate::encoding::quote_str(key),
            kind,
            i,
            repr_of(obj),
            type_name(obj),
            why
        ))
    };
    if v.is_instance_of::<PyBool>() {
        Err(err("is a bool: expected an int or float"))
    } else if v.is_instance_of::<PyInt>() {
        v.extract::<i64>()
            .map(Arg::Int)
            .map_err(|_| err("does not fit: expected an int in [-2**63, 2**63)"))
    } else if let Ok(f) = v.downcast::<PyFloat>() {
        Ok(Arg::Float(f.value()))
    } else {
        Err(err("is not a number: expected an int or float"))
    }
}

/// A validated random-search space; trial values are counter-based.
///
/// Subclassable: `metalab.params.RandomSource` is a `RandomCore`, so `random(...)[i]` is
/// answered here with no Python frame in between.
#[pyclass(module = "metalab._core", frozen, subclass)]
struct RandomCore {
    space: RandomSpace,
    /// The keys as Python strings, made once and shared by every dict built.
    keys: Vec<Py<PyString>>,
    /// Per key, the options of a `choice` when given (a trial then holds the option
    /// itself, not its index), else `None`.
    options: Vec<Option<Vec<PyObject>>>,
}

/// Checks `options` against the parsed dimensions: one entry per key, a list exactly for a
/// `choice`, as long as its `n_options`.
fn choice_options(
    dims: &[(String, Dist)],
    options: Option<Vec<Option<Vec<Bound<'_, PyAny>>>>>,
) -> PyResult<Vec<Option<Vec<PyObject>>>> {
    let Some(options) = options else {
        return Ok(dims.iter().map(|_| None).collect());
    };
    if options.len() != dims.len() {
        return Err(PyValueError::new_err(format!(
            "options has {} entries for {} keys: expected one per key",
            options.len(),
            dims.len()
        )));
    }
    let mut out = Vec::with_capacity(dims.len());
    for ((key, dist), given) in dims.iter().zip(options) {
        match (dist, given) {
            (_, None) => out.push(None),
            (Dist::Choice { n }, Some(values)) if values.len() as u64 == *n => {
                out.push(Some(values.into_iter().map(Bound::unbind).collect()));
            }
            (_, Some(values)) => {
                return Err(PyValueError::new_err(format!(
                    "options[{}] lists {} values: expected them only for a choice, one per \
                     option",
                    crate::encoding::quote_str(key),
                    values.len()
                )))
            }
        }
    }
    Ok(out)
}

fn sample_to_py(py: Python<'_>, s: &Sample) -> PyObject {
    match *s {
        Sample::Float(f) => f.into_py(py),
        Sample::Int(i) => i.into_py(py),
    }
}

fn trial_to_py<'py>(py: Python<'py>, t: &[Sample]) -> Bound<'py, PyList> {
    PyList::new_bound(py, t.iter().map(|s| sample_to_py(py, s)))
}

#[pymethods]
impl RandomCore {
    #[new]
    #[pyo3(signature = (seed, space, n_trials, options = None))]
    fn new(
        py: Python<'_>,
        seed: &Bound<'_, PyAny>,
        space: Vec<(String, String, Vec<Bound<'_, PyAny>>)>,
        n_trials: &Bound<'_, PyAny>,
        options: Option<Vec<Option<Vec<Bound<'_, PyAny>>>>>,
    ) -> PyResult<Self> {
        let seed = i64_arg(seed, "seed", ParamSpecError::new_err)?;
        let n_trials = i64_arg(n_trials, "n_trials", ParamSpecError::new_err)?;
        let mut dims = Vec::with_capacity(space.len());
        for (key, kind, args) in &space {
            let args = args
                .iter()
                .enumerate()
                .map(|(i, a)| dist_arg(key, kind, i, a))
                .collect::<PyResult<Vec<_>>>()?;
            let d = Dist::parse(key, kind, &args).map_err(|e| core_err(py, e))?;
            dims.push((key.clone(), d));
        }
        let options = choice_options(&dims, options)?;
        let keys = dims
            .iter()
            .map(|(k, _)| PyString::new_bound(py, k).unbind())
            .collect();
        let space = RandomSpace::new(seed, dims, n_trials).map_err(|e| core_err(py, e))?;
        Ok(RandomCore {
            space,
            keys,
            options,
        })
    }

    /// Trial `index` as a fresh `{key: value}` dict in key order (a choice's option itself
    /// when its options were given).
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let i = param_index(index, self.space.len())?;
        let dict = PyDict::new_bound(py);
        let trial = self.space.trial(i);
        for ((key, options), sample) in self.keys.iter().zip(&self.options).zip(&trial) {
            let value = match (options, *sample) {
                (Some(values), Sample::Int(at)) => values[at as usize].clone_ref(py),
                _ => sample_to_py(py, sample),
            };
            dict.set_item(key.bind(py), value)?;
        }
        Ok(dict)
    }

    fn __len__(&self) -> usize {
        self.space.len() as usize
    }

    fn trial<'py>(
        &self,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let i = self
            .space
            .resolve(index_arg(index, "trial")?)
            .map_err(|e| core_err(py, e))?;
        Ok(trial_to_py(py, &self.space.trial(i)))
    }

    fn trials<'py>(
        &self,
        py: Python<'py>,
        start: i128,
        stop: i128,
    ) -> PyResult<Bound<'py, PyList>> {
        let (a, b) = self
            .space
            .check_range(start, stop)
            .map_err(|e| core_err(py, e))?;
        let space = &self.space;
        let ts = py.allow_threads(|| space.trials(a, b));
        Ok(PyList::new_bound(py, ts.iter().map(|t| trial_to_py(py, t))))
    }
}

// ---------------------------------------------------------------------------------------
// ManualCore

/// Explicit parameter dicts, each handed out as a fresh copy.
///
/// Subclassable: `metalab.params.ManualSource` is a `ManualCore`, so `manual(...)[i]` is
/// answered here (`copy.deepcopy` of a small dict cost ~3 µs, mostly its memo bookkeeping).
#[pyclass(module = "metalab._core", frozen, subclass)]
struct ManualCore {
    cases: Vec<Py<PyDict>>,
}

/// A copy of `obj` in which every dict, list and tuple is new and the immutable scalars
/// (None, bool, int, float, str) are shared: what `copy.deepcopy` returns for plain data.
/// Anything else (a dict subclass, a user's object) goes to `copy.deepcopy` itself.
fn fresh_copy<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    if obj.is_none()
        || obj.is_exact_instance_of::<PyBool>()
        || obj.is_exact_instance_of::<PyInt>()
        || obj.is_exact_instance_of::<PyFloat>()
        || obj.is_exact_instance_of::<PyString>()
    {
        return Ok(obj.clone());
    }
    if let Ok(d) = obj.downcast_exact::<PyDict>() {
        let out = PyDict::new_bound(py);
        for (k, v) in d.iter() {
            out.set_item(k, fresh_copy(&v)?)?;
        }
        return Ok(out.into_any());
    }
    if let Ok(l) = obj.downcast_exact::<PyList>() {
        let items = l
            .iter()
            .map(|v| fresh_copy(&v))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(PyList::new_bound(py, items).into_any());
    }
    if let Ok(t) = obj.downcast_exact::<PyTuple>() {
        let items = t
            .iter()
            .map(|v| fresh_copy(&v))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(PyTuple::new_bound(py, items).into_any());
    }
    py.import_bound("copy")?.call_method1("deepcopy", (obj,))
}

#[pymethods]
impl ManualCore {
    #[new]
    fn new(cases: Vec<Bound<'_, PyDict>>) -> Self {
        ManualCore {
            cases: cases.into_iter().map(Bound::unbind).collect(),
        }
    }

    fn __len__(&self) -> usize {
        self.cases.len()
    }

    /// Case `index` as a fresh copy (its dicts and lists are new; see `fresh_copy`).
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let i = param_index(index, self.cases.len() as u64)?;
        fresh_copy(self.cases[i as usize].bind(py))
    }
}

// ---------------------------------------------------------------------------------------
// Seeds

#[pyfunction]
fn seed_fingerprint(
    py: Python<'_>,
    base: &Bound<'_, PyAny>,
    replicate: &Bound<'_, PyAny>,
) -> PyResult<String> {
    let b = i64_arg(base, "base", SeedSpecError::new_err)?;
    let r = i64_arg(replicate, "replicate", SeedSpecError::new_err)?;
    seeds::seed_fingerprint(b, r).map_err(|e| core_err(py, e))
}

#[pyfunction]
fn seed_root<'py>(
    py: Python<'py>,
    base: &Bound<'py, PyAny>,
    replicate: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let b = i64_arg(base, "base", SeedSpecError::new_err)?;
    let r = i64_arg(replicate, "replicate", SeedSpecError::new_err)?;
    let root = seeds::seed_root(b, r).map_err(|e| core_err(py, e))?;
    Ok(PyBytes::new_bound(py, &root))
}

#[pyfunction]
fn preprocessing_root<'py>(
    py: Python<'py>,
    base: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let b = i64_arg(base, "base", SeedSpecError::new_err)?;
    Ok(PyBytes::new_bound(py, &seeds::preprocessing_root(b)))
}

#[pyfunction]
fn derive_seed(py: Python<'_>, root: &[u8], name: &str) -> PyResult<u32> {
    seeds::derive_seed(root, name).map_err(|e| core_err(py, e))
}

#[pyfunction]
fn derive_entropy(py: Python<'_>, root: &[u8], name: &str) -> PyResult<u128> {
    seeds::derive_entropy(root, name).map_err(|e| core_err(py, e))
}

// ---------------------------------------------------------------------------------------
// Planning and scans

#[pyfunction]
fn plan_run_ids<'py>(
    py: Python<'py>,
    experiment_id: String,
    context_fp: String,
    params_fps: Vec<String>,
    seed_fps: Vec<String>,
) -> PyResult<Bound<'py, PyList>> {
    let ids = py
        .allow_threads(|| plan::plan_run_ids(&experiment_id, &context_fp, &params_fps, &seed_fps))
        .map_err(|e| core_err(py, e))?;
    Ok(hex_list(py, &ids))
}

#[pyfunction]
fn scan_done(py: Python<'_>, done_root: PathBuf, run_ids: Vec<String>) -> PyResult<Vec<bool>> {
    py.allow_threads(|| scan::scan_done(&done_root, &run_ids))
        .map_err(|e| core_err(py, e))
}

#[pyfunction]
fn list_done(py: Python<'_>, done_root: PathBuf) -> PyResult<Vec<String>> {
    py.allow_threads(|| scan::list_done(&done_root))
        .map_err(|e| core_err(py, e))
}

/// Done flags (marker AND record present) and the ids whose marker has no record.
#[pyfunction]
fn scan_completed(
    py: Python<'_>,
    done_root: PathBuf,
    runs_root: PathBuf,
    run_ids: Vec<String>,
) -> PyResult<(Vec<bool>, Vec<String>)> {
    let found = py
        .allow_threads(|| scan::scan_completed(&done_root, &runs_root, &run_ids))
        .map_err(|e| core_err(py, e))?;
    Ok((found.done, found.orphans))
}

// ---------------------------------------------------------------------------------------
// Columnar record loading

fn json_to_py(py: Python<'_>, value: &serde_json::Value) -> PyObject {
    use serde_json::Value;
    match value {
        Value::Null => py.None(),
        Value::Bool(b) => b.into_py(py),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_py(py)
            } else if let Some(u) = n.as_u64() {
                u.into_py(py)
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_py(py)
            }
        }
        Value::String(s) => s.into_py(py),
        Value::Array(items) => {
            PyList::new_bound(py, items.iter().map(|v| json_to_py(py, v))).into_py(py)
        }
        Value::Object(map) => {
            let dict = PyDict::new_bound(py);
            for (k, v) in map {
                // Setting a str key on a fresh dict cannot fail.
                let _ = dict.set_item(k, json_to_py(py, v));
            }
            dict.into_py(py)
        }
    }
}

fn cell_to_py(py: Python<'_>, cell: &records::Cell) -> PyObject {
    use records::Cell;
    match cell {
        Cell::Missing | Cell::Null => py.None(),
        Cell::Bool(b) => b.into_py(py),
        Cell::Int(i) => i.into_py(py),
        Cell::UInt(u) => u.into_py(py),
        Cell::Float(f) => f.into_py(py),
        Cell::Str(s) => s.into_py(py),
        Cell::Json(v) => json_to_py(py, v),
    }
}

fn columns_to_py<'py>(py: Python<'py>, columns: &[records::Column]) -> Bound<'py, PyList> {
    let out = PyList::empty_bound(py);
    for column in columns {
        let values = PyList::new_bound(py, column.values.iter().map(|c| cell_to_py(py, c)));
        let nulls: Vec<usize> = column
            .values
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, records::Cell::Null))
            .map(|(i, _)| i)
            .collect();
        let entry = PyTuple::new_bound(
            py,
            [
                column.name.as_str().into_py(py),
                values.into_py(py),
                nulls.into_py(py),
                column.first_row.into_py(py),
                column.position.into_py(py),
            ],
        );
        // Appending to a fresh list cannot fail.
        let _ = out.append(entry);
    }
    out
}

#[pyfunction]
#[pyo3(signature = (root, run_ids=None, experiment_id=None))]
fn load_record_columns<'py>(
    py: Python<'py>,
    root: PathBuf,
    run_ids: Option<Vec<String>>,
    experiment_id: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    let cols = py.allow_threads(|| {
        records::load_columns(&root, run_ids.as_deref(), experiment_id.as_deref())
    });
    columns_to_dict(py, &cols)
}

/// Parse in-memory record documents `(location, json_text)` into columns (GIL released).
#[pyfunction]
#[pyo3(signature = (docs, experiment_id=None))]
fn record_columns_from_docs<'py>(
    py: Python<'py>,
    docs: Vec<(String, String)>,
    experiment_id: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    let cols = py.allow_threads(|| records::columns_from_docs(&docs, experiment_id.as_deref()));
    columns_to_dict(py, &cols)
}

fn columns_to_dict<'py>(py: Python<'py>, cols: &records::Columns) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new_bound(py);
    out.set_item("run_id", PyList::new_bound(py, &cols.run_id))?;
    out.set_item("experiment_id", PyList::new_bound(py, &cols.experiment_id))?;
    out.set_item("status", PyList::new_bound(py, &cols.status))?;
    out.set_item("task_index", PyList::new_bound(py, &cols.task_index))?;
    out.set_item("replicate", PyList::new_bound(py, &cols.replicate))?;
    out.set_item("duration_s", PyList::new_bound(py, &cols.duration_s))?;
    out.set_item("started_at", PyList::new_bound(py, &cols.started_at))?;
    out.set_item("params", columns_to_py(py, &cols.params))?;
    out.set_item("metrics", columns_to_py(py, &cols.metrics))?;
    let problems = PyList::empty_bound(py);
    for p in &cols.problems {
        problems.append((p.path.as_str(), p.reason.as_str(), p.corrupt))?;
    }
    out.set_item("problems", problems)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Module

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    check_errors(m.py())?;
    m.add("ENCODING_VERSION", crate::encoding::ENCODING_VERSION)?;
    m.add("FINGERPRINT_HEX_CHARS", FINGERPRINT_HEX_CHARS)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(canonical_encode, m)?)?;
    m.add_function(wrap_pyfunction!(py_fingerprint, m)?)?;
    m.add_function(wrap_pyfunction!(fingerprint_many, m)?)?;
    m.add_function(wrap_pyfunction!(to_plain, m)?)?;
    m.add_function(wrap_pyfunction!(run_id, m)?)?;
    m.add_class::<GridCore>()?;
    m.add_class::<RandomCore>()?;
    m.add_class::<ManualCore>()?;
    m.add_function(wrap_pyfunction!(seed_fingerprint, m)?)?;
    m.add_function(wrap_pyfunction!(seed_root, m)?)?;
    m.add_function(wrap_pyfunction!(preprocessing_root, m)?)?;
    m.add_function(wrap_pyfunction!(derive_seed, m)?)?;
    m.add_function(wrap_pyfunction!(derive_entropy, m)?)?;
    m.add_function(wrap_pyfunction!(plan_run_ids, m)?)?;
    m.add_function(wrap_pyfunction!(scan_done, m)?)?;
    m.add_function(wrap_pyfunction!(list_done, m)?)?;
    m.add_function(wrap_pyfunction!(scan_completed, m)?)?;
    m.add_function(wrap_pyfunction!(load_record_columns, m)?)?;
    m.add_function(wrap_pyfunction!(record_columns_from_docs, m)?)?;
    Ok(())
}
