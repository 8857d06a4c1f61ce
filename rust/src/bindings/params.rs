//! The parameter-source cores: `GridCore` and `ManualCore` (and the index arguments they
//! share with `RandomCore`).

use pyo3::exceptions::{PyIndexError, PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use super::encode::{encode_root, hex_list, plain_obj};
use super::{repr_of, type_name, ParamSpecError};
use crate::grid::{Grid, GridError};
// ---------------------------------------------------------------------------------------
// Index arguments

/// An int index; too large to be any valid index -> IndexError (like `list[10**30]`).
pub(crate) fn index_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<i128> {
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
pub struct GridCore {
    grid: Grid,
    /// The keys as Python strings, made once and shared by every dict built.
    keys: Vec<Py<PyString>>,
    /// Each axis's values in plain-Python form (NumPy values as what they encode as).
    values: Vec<Vec<PyObject>>,
}

/// A `ParamSource` index: an int but not a bool; negative counts from the end.
pub(crate) fn param_index(index: &Bound<'_, PyAny>, size: u64) -> PyResult<u64> {
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

    fn indices(&self, index: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
        let i = self.grid.resolve(index_arg(index, "grid")?)?;
        Ok(self.grid.indices(i))
    }

    fn indices_range(&self, py: Python<'_>, start: i128, stop: i128) -> PyResult<Vec<Vec<usize>>> {
        let (a, b) = self.grid.check_range(start, stop)?;
        let grid = &self.grid;
        Ok(py.allow_threads(|| grid.indices_range(a, b)))
    }

    fn fingerprints<'py>(
        &self,
        py: Python<'py>,
        start: i128,
        stop: i128,
    ) -> PyResult<Bound<'py, PyList>> {
        let (a, b) = self.grid.check_range(start, stop)?;
        let grid = &self.grid;
        let fps = py.allow_threads(|| grid.fingerprints(a, b));
        Ok(hex_list(py, &fps))
    }
}

// ---------------------------------------------------------------------------------------
// ManualCore

/// Explicit parameter dicts, each handed out as a fresh copy.
///
/// Subclassable: `metalab.params.ManualSource` is a `ManualCore`, so `manual(...)[i]` is
/// answered here (`copy.deepcopy` of a small dict cost ~3 µs, mostly its memo bookkeeping).
#[pyclass(module = "metalab._core", frozen, subclass)]
pub struct ManualCore {
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
