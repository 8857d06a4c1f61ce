//! PyO3 bindings: the only modules that touch Python objects, one per area of the API
//! (`encode`: canonical encoding and fingerprints; `params`: the grid and manual cores;
//! `random`: the random-search core; `seeds`: seeds and run planning; `scans`: the store
//! layout and marker scans; `columns`: record columns).
//!
//! Errors are instances of the classes in the Python module `metalab.errors`, bound as Rust
//! types (`import_exception!`) and checked when `_core` is imported, so a class that
//! `metalab.errors` lacks fails that import instead of some later raise. Heavy loops run
//! with the GIL released on plain Rust data.

// PyO3 0.22's macro expansion trips this lint on every `PyResult` return type.
#![allow(clippy::useless_conversion)]

use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::fingerprint::FINGERPRINT_HEX_CHARS;
use crate::CoreError;

mod columns;
mod encode;
mod params;
mod random;
mod scans;
mod seeds;

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

use py_errors::check_errors;
pub(crate) use py_errors::{EncodingError, ParamSpecError, SeedSpecError, StoreError};

/// A core error as the Python exception of its class.
impl From<CoreError> for PyErr {
    fn from(e: CoreError) -> PyErr {
        match e {
            CoreError::Encoding(m) => EncodingError::new_err(m),
            CoreError::ParamSpec(m) => ParamSpecError::new_err(m),
            CoreError::SeedSpec(m) => SeedSpecError::new_err(m),
            CoreError::Index(m) => PyIndexError::new_err(m),
            CoreError::Store(m) => StoreError::new_err(m),
        }
    }
}

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .getattr("__name__")
        .and_then(|n| n.extract::<String>())
        .unwrap_or_else(|_| "?".into())
}

pub(crate) fn repr_of(obj: &Bound<'_, PyAny>) -> String {
    obj.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| format!("<{} object>", type_name(obj)))
}
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    check_errors(m.py())?;
    m.add("ENCODING_VERSION", crate::encoding::ENCODING_VERSION)?;
    m.add("FINGERPRINT_HEX_CHARS", FINGERPRINT_HEX_CHARS)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    let statuses = PyTuple::new_bound(m.py(), crate::record_checks::STATUSES);
    m.add("RECORD_STATUSES", statuses)?;
    m.add_function(wrap_pyfunction!(encode::canonical_encode, m)?)?;
    m.add_function(wrap_pyfunction!(encode::py_fingerprint, m)?)?;
    m.add_function(wrap_pyfunction!(encode::fingerprint_many, m)?)?;
    m.add_function(wrap_pyfunction!(encode::to_plain, m)?)?;
    m.add_function(wrap_pyfunction!(encode::run_id, m)?)?;
    m.add_class::<params::GridCore>()?;
    m.add_class::<random::RandomCore>()?;
    m.add_class::<params::ManualCore>()?;
    m.add_function(wrap_pyfunction!(seeds::seed_fingerprint, m)?)?;
    m.add_function(wrap_pyfunction!(seeds::seed_root, m)?)?;
    m.add_function(wrap_pyfunction!(seeds::preprocessing_root, m)?)?;
    m.add_function(wrap_pyfunction!(seeds::derive_seed, m)?)?;
    m.add_function(wrap_pyfunction!(seeds::derive_entropy, m)?)?;
    m.add_function(wrap_pyfunction!(seeds::plan_run_ids, m)?)?;
    m.add_class::<scans::ScanLayout>()?;
    m.add_function(wrap_pyfunction!(scans::scan_done, m)?)?;
    m.add_function(wrap_pyfunction!(scans::list_done, m)?)?;
    m.add_function(wrap_pyfunction!(scans::scan_completed, m)?)?;
    m.add_function(wrap_pyfunction!(scans::scan_states, m)?)?;
    m.add_function(wrap_pyfunction!(columns::load_record_columns, m)?)?;
    m.add_function(wrap_pyfunction!(columns::record_columns_from_docs, m)?)?;
    m.add_function(wrap_pyfunction!(columns::load_index_columns, m)?)?;
    m.add_function(wrap_pyfunction!(columns::index_checksum, m)?)?;
    m.add_function(wrap_pyfunction!(columns::parse_index_segment, m)?)?;
    Ok(())
}
