//! The random-search core `RandomCore`, and the int arguments of the seed functions.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};

use super::encode::numpy_normalise;
use super::params::{index_arg, param_index};
use super::{repr_of, type_name, ParamSpecError};
use crate::random::{Arg, Dist, RandomSpace, Sample};
/// An int argument in i64 (NumPy integers included); anything else -> `new_err(message)`,
/// e.g. `SeedSpecError::new_err`.
pub(crate) fn i64_arg(
    obj: &Bound<'_, PyAny>,
    what: &str,
    new_err: fn(String) -> PyErr,
) -> PyResult<i64> {
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
pub struct RandomCore {
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
            let d = Dist::parse(key, kind, &args)?;
            dims.push((key.clone(), d));
        }
        let options = choice_options(&dims, options)?;
        let keys = dims
            .iter()
            .map(|(k, _)| PyString::new_bound(py, k).unbind())
            .collect();
        let space = RandomSpace::new(seed, dims, n_trials)?;
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
        let i = self.space.resolve(index_arg(index, "trial")?)?;
        Ok(trial_to_py(py, &self.space.trial(i)))
    }

    fn trials<'py>(
        &self,
        py: Python<'py>,
        start: i128,
        stop: i128,
    ) -> PyResult<Bound<'py, PyList>> {
        let (a, b) = self.space.check_range(start, stop)?;
        let space = &self.space;
        let ts = py.allow_threads(|| space.trials(a, b));
        Ok(PyList::new_bound(py, ts.iter().map(|t| trial_to_py(py, t))))
    }
}
