//! Seed derivation and run planning.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use super::encode::hex_list;
use super::random::i64_arg;
use super::SeedSpecError;
use crate::{plan, seeds};
#[pyfunction]
pub fn seed_fingerprint(base: &Bound<'_, PyAny>, replicate: &Bound<'_, PyAny>) -> PyResult<String> {
    let b = i64_arg(base, "base", SeedSpecError::new_err)?;
    let r = i64_arg(replicate, "replicate", SeedSpecError::new_err)?;
    seeds::seed_fingerprint(b, r).map_err(PyErr::from)
}

#[pyfunction]
pub fn seed_root<'py>(
    py: Python<'py>,
    base: &Bound<'py, PyAny>,
    replicate: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let b = i64_arg(base, "base", SeedSpecError::new_err)?;
    let r = i64_arg(replicate, "replicate", SeedSpecError::new_err)?;
    let root = seeds::seed_root(b, r)?;
    Ok(PyBytes::new_bound(py, &root))
}

#[pyfunction]
pub fn preprocessing_root<'py>(
    py: Python<'py>,
    base: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let b = i64_arg(base, "base", SeedSpecError::new_err)?;
    Ok(PyBytes::new_bound(py, &seeds::preprocessing_root(b)))
}

#[pyfunction]
pub fn derive_seed(root: &[u8], name: &str) -> PyResult<u32> {
    seeds::derive_seed(root, name).map_err(PyErr::from)
}

#[pyfunction]
pub fn derive_entropy(root: &[u8], name: &str) -> PyResult<u128> {
    seeds::derive_entropy(root, name).map_err(PyErr::from)
}

#[pyfunction]
pub fn plan_run_ids<'py>(
    py: Python<'py>,
    experiment_id: String,
    context_fp: String,
    params_fps: Vec<String>,
    seed_fps: Vec<String>,
) -> PyResult<Bound<'py, PyList>> {
    let ids = py.allow_threads(|| {
        plan::plan_run_ids(&experiment_id, &context_fp, &params_fps, &seed_fps)
    })?;
    Ok(hex_list(py, &ids))
}
