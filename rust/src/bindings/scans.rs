//! `ScanLayout` and the marker scans (`scan_done`, `list_done`, `scan_completed`,
//! `scan_states`), GIL released while the directories are listed.

use std::path::{Path, PathBuf};

use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::layout::{Layout, Parts};
use crate::scan::{self, State};

/// The FileStore layout as the scanners take it: the record, done-marker and
/// failed-marker directories, their file suffixes and the shard width.
///
/// Built once per store by `metalab.store.layout.FileLayout.scan`, the one owner of
/// those names; the Rust side knows none of them itself.
#[pyclass(module = "metalab._core", frozen)]
pub struct ScanLayout {
    pub(crate) layout: Layout,
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[pymethods]
impl ScanLayout {
    #[new]
    #[pyo3(signature = (
        *, runs_dir, done_dir, failed_dir, record_suffix, done_suffix, failed_suffix,
        shard_width
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        runs_dir: PathBuf,
        done_dir: PathBuf,
        failed_dir: PathBuf,
        record_suffix: &str,
        done_suffix: &str,
        failed_suffix: &str,
        shard_width: i64,
    ) -> PyResult<Self> {
        let layout = Layout::new(Parts {
            records: (&runs_dir, record_suffix),
            done: (&done_dir, done_suffix),
            failed: (&failed_dir, failed_suffix),
            shard_width,
        })?;
        Ok(ScanLayout { layout })
    }

    #[getter]
    fn runs_dir(&self) -> String {
        text(&self.layout.records.root)
    }

    #[getter]
    fn done_dir(&self) -> String {
        text(&self.layout.done.root)
    }

    #[getter]
    fn failed_dir(&self) -> String {
        text(&self.layout.failed.root)
    }

    #[getter]
    fn record_suffix(&self) -> &str {
        &self.layout.records.suffix
    }

    #[getter]
    fn done_suffix(&self) -> &str {
        &self.layout.done.suffix
    }

    #[getter]
    fn failed_suffix(&self) -> &str {
        &self.layout.failed.suffix
    }

    #[getter]
    fn shard_width(&self) -> usize {
        self.layout.shard_width
    }

    fn __repr__(&self) -> String {
        let l = &self.layout;
        format!(
            "ScanLayout(runs_dir={:?}, done_dir={:?}, failed_dir={:?}, record_suffix={:?}, \
             done_suffix={:?}, failed_suffix={:?}, shard_width={})",
            text(&l.records.root),
            text(&l.done.root),
            text(&l.failed.root),
            l.records.suffix,
            l.done.suffix,
            l.failed.suffix,
            l.shard_width
        )
    }
}

#[pyfunction]
pub fn scan_done(
    py: Python<'_>,
    layout: &Bound<'_, ScanLayout>,
    run_ids: Vec<String>,
) -> PyResult<Vec<bool>> {
    let layout = &layout.get().layout;
    Ok(py.allow_threads(|| scan::scan_done(layout, &run_ids))?)
}

#[pyfunction]
pub fn list_done(py: Python<'_>, layout: &Bound<'_, ScanLayout>) -> PyResult<Vec<String>> {
    let layout = &layout.get().layout;
    Ok(py.allow_threads(|| scan::list_done(layout))?)
}

/// Done flags (marker AND record present) and the ids whose marker has no record.
#[pyfunction]
pub fn scan_completed(
    py: Python<'_>,
    layout: &Bound<'_, ScanLayout>,
    run_ids: Vec<String>,
) -> PyResult<(Vec<bool>, Vec<String>)> {
    let layout = &layout.get().layout;
    let found = py.allow_threads(|| scan::scan_completed(layout, &run_ids))?;
    Ok((found.done, found.orphans))
}

/// Per run id one of the caller's `labels` (for done, failed, absent: the very objects,
/// so Python owns the state names and pays no conversion), and the orphaned ids.
#[pyfunction]
pub fn scan_states<'py>(
    py: Python<'py>,
    layout: &Bound<'py, ScanLayout>,
    run_ids: Vec<String>,
    labels: (Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>),
) -> PyResult<(Bound<'py, PyList>, Vec<String>)> {
    let layout = &layout.get().layout;
    let found = py.allow_threads(|| scan::scan_states(layout, &run_ids))?;
    let (done, failed, absent) = &labels;
    let states = PyList::new_bound(
        py,
        found.states.iter().map(|s| match s {
            State::Done => done,
            State::Failed => failed,
            State::Absent => absent,
        }),
    );
    Ok((states, found.orphans))
}
