//! Rust core of metalab: canonical encoding, fingerprints, run ids, grid and random-search
//! decoding, seed derivation, run planning, marker scans and columnar record loading.
//!
//! The specification of every byte produced here is `docs/run-identity.md`.
//!
//! Layout: every module except `bindings` is pure Rust with its own unit tests; all PyO3
//! code lives in `bindings` (one submodule per area of the Python API) behind the default
//! cargo feature `python`.
//!
//! - `encoding` (value model, byte writer, the one traversal, texts), `fingerprint`,
//!   `plan`, `seeds`: run identity.
//! - `grid`, `random`: sweep decoding.
//! - `layout`, `ids`, `scan`: marker scans over a FileStore layout that Python owns
//!   (`metalab.store.layout.FileLayout.scan`); no directory name, suffix or shard rule
//!   is spelled here.
//! - `record_fields`, `record_checks`, `record_optional`, `record_fast`: the checks of a
//!   stored record; `columns` (records as columns), `records` (reading record files) and
//!   `index` (the same columns from the results index's segments).
//!
//! Commands (from the repository root):
//!
//! ```text
//! cargo fmt --check
//! cargo clippy --all-targets -- -D warnings                      # with the bindings
//! cargo clippy --all-targets --no-default-features -- -D warnings
//! cargo test                                                     # links libpython3.11
//! cargo test --no-default-features                              # pure core, no libpython
//! uv sync && uv run pytest tests/test_core_*.py -q              # Python differential tests
//! HYPOTHESIS_PROFILE=slow uv run pytest tests/test_core_*.py -q # many more examples
//! ```
//!
//! The Rust unit tests cover only the pure modules, so both `cargo test` variants run the
//! same tests; `--no-default-features` is the one to use where libpython cannot be linked.

pub mod columns;
pub mod encoding;
pub mod fingerprint;
pub mod grid;
pub mod idhash;
pub mod ids;
pub mod index;
pub mod layout;
pub mod plan;
pub mod random;
pub mod record_checks;
pub mod record_fast;
pub mod record_fields;
pub mod record_optional;
pub mod records;
pub mod scan;
pub mod seeds;

#[cfg(feature = "python")]
mod bindings;

use std::fmt;

/// An error of the pure core, tagged with the `metalab.errors` class it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// -> `metalab.errors.EncodingError`
    Encoding(String),
    /// -> `metalab.errors.ParamSpecError`
    ParamSpec(String),
    /// -> `metalab.errors.SeedSpecError`
    SeedSpec(String),
    /// -> `IndexError`
    Index(String),
    /// -> `metalab.errors.StoreError`
    Store(String),
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Encoding(m)
            | CoreError::ParamSpec(m)
            | CoreError::SeedSpec(m)
            | CoreError::Index(m)
            | CoreError::Store(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CoreError {}
