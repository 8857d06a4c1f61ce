//! Record columns for Python: `load_record_columns` (FileStore record files) and
//! `record_columns_from_docs` (documents already in memory), parsed with the GIL
//! released and handed over as one dict of lists.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use super::scans::ScanLayout;
use crate::columns::{self, Cell, Column, Columns};
use crate::index::frame;
use crate::{index, records};

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

fn cell_to_py(py: Python<'_>, cell: &Cell) -> PyObject {
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

/// Python strings for a column of texts, one object per run of equal neighbours: an
/// experiment id, a status or a categorical param repeats down its column, and building
/// one str per row was a visible share of handing 300,000 rows to Python.
fn texts_to_py<'a, 'py>(
    py: Python<'py>,
    texts: impl ExactSizeIterator<Item = &'a str>,
) -> Bound<'py, PyList> {
    let mut last: Option<(&str, PyObject)> = None;
    let items: Vec<PyObject> = texts
        .map(|text| match &last {
            Some((seen, object)) if *seen == text => object.clone_ref(py),
            _ => {
                let object: PyObject = text.into_py(py);
                last = Some((text, object.clone_ref(py)));
                object
            }
        })
        .collect();
    PyList::new_bound(py, items)
}

fn cells_to_py<'py>(py: Python<'py>, cells: &[Cell]) -> Bound<'py, PyList> {
    let mut last: Option<(&str, PyObject)> = None;
    let items: Vec<PyObject> = cells
        .iter()
        .map(|cell| match (cell, &last) {
            (Cell::Str(text), Some((seen, object))) if seen == text => object.clone_ref(py),
            (Cell::Str(text), _) => {
                let object: PyObject = text.into_py(py);
                last = Some((text, object.clone_ref(py)));
                object
            }
            _ => cell_to_py(py, cell),
        })
        .collect();
    PyList::new_bound(py, items)
}

fn columns_to_py<'py>(py: Python<'py>, columns: &[Column]) -> Bound<'py, PyList> {
    let out = PyList::empty_bound(py);
    for column in columns {
        let values = cells_to_py(py, &column.values);
        let nulls: Vec<usize> = column
            .values
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, Cell::Null))
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

/// The native-dtype array pandas builds from a column's values, as `(dtype, bytes)` for
/// `numpy.frombuffer`, or `None` where pandas would infer something else (see
/// [`frame::of_cells`]); `to_dataframe()` hands these to pandas instead of the lists.
fn frames_to_py<'py>(py: Python<'py>, columns: &[Column]) -> Bound<'py, PyList> {
    let frames: Vec<PyObject> = columns
        .iter()
        .map(|column| match frame::of_cells(&column.values) {
            Some(found) => (found.dtype, PyBytes::new_bound(py, &found.data)).into_py(py),
            None => py.None(),
        })
        .collect();
    PyList::new_bound(py, frames)
}

#[pyfunction]
#[pyo3(signature = (layout, run_ids=None, experiment_id=None))]
pub fn load_record_columns<'py>(
    py: Python<'py>,
    layout: &Bound<'py, ScanLayout>,
    run_ids: Option<Vec<String>>,
    experiment_id: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    let layout = &layout.get().layout;
    let cols = py.allow_threads(|| {
        records::load_columns(layout, run_ids.as_deref(), experiment_id.as_deref())
    });
    columns_to_dict(py, &cols)
}

/// Load every run as columns through the results index's `segments` (GIL released),
/// answered by the column snapshot at `snapshot` when it is current (and saved there by
/// a load of at least `snapshot_min_records` records that was not); the dict of
/// `load_record_columns` plus `index_stats` (counts, for diagnostics).
#[pyfunction]
#[pyo3(signature = (
    layout, segments, experiment_id=None, run_ids=None, snapshot=None, snapshot_min_records=0
))]
#[allow(clippy::too_many_arguments)]
pub fn load_index_columns<'py>(
    py: Python<'py>,
    layout: &Bound<'py, ScanLayout>,
    segments: Vec<std::path::PathBuf>,
    experiment_id: Option<String>,
    run_ids: Option<Vec<String>>,
    snapshot: Option<std::path::PathBuf>,
    snapshot_min_records: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let layout = &layout.get().layout;
    let plan = snapshot.as_deref().map(|path| index::SnapshotPlan {
        path,
        min_records: snapshot_min_records,
    });
    let (cols, stats) = py.allow_threads(|| match &run_ids {
        Some(ids) => index::load_columns_of(layout, &segments, ids, experiment_id.as_deref()),
        None => index::load_columns(layout, &segments, experiment_id.as_deref(), plan),
    });
    let mut stats = stats;
    let mut clock = index::Clock::start();
    let out = columns_to_dict(py, &cols)?;
    index::drop_later(cols);
    stats.lap("to_python", &mut clock);
    let counts = PyDict::new_bound(py);
    let seconds = PyDict::new_bound(py);
    for (stage, wall, cpu) in &stats.seconds {
        seconds.set_item(stage, (wall, cpu))?;
    }
    counts.set_item("seconds", seconds)?;
    counts.set_item("segments", stats.segments)?;
    counts.set_item("unreadable_segments", stats.unreadable)?;
    counts.set_item("lines", stats.lines)?;
    counts.set_item("bad_lines", stats.bad_lines)?;
    counts.set_item("indexed", stats.indexed)?;
    counts.set_item("from_records", stats.from_records)?;
    counts.set_item("from_snapshot", stats.from_snapshot)?;
    counts.set_item("snapshot_written", stats.snapshot_written)?;
    out.set_item("index_stats", counts)?;
    Ok(out)
}

/// The results index's checksum of a line body (hex BLAKE2b-8), and the parse of one
/// segment's bytes: `(entries, bad_lines)` with entries `(run_id, ino, mtime_ns, size,
/// summary_json)`; exposed for the differential tests of the Python writer.
#[pyfunction]
pub fn index_checksum(body: &[u8]) -> String {
    index::checksum(body)
}

#[pyfunction]
#[allow(clippy::type_complexity)]
pub fn parse_index_segment(data: &[u8]) -> (Vec<(String, u64, i128, u64, String)>, usize) {
    let (entries, bad) = index::parse_segment(data);
    let rows = entries
        .into_iter()
        .map(|e| {
            let file = e.file;
            (
                e.run_id.to_string(),
                file.ino,
                file.mtime_ns,
                file.size,
                e.doc.to_string(),
            )
        })
        .collect();
    (rows, bad)
}

/// Parse in-memory record documents `(location, json_text)` into columns (GIL released).
#[pyfunction]
#[pyo3(signature = (docs, experiment_id=None))]
pub fn record_columns_from_docs<'py>(
    py: Python<'py>,
    docs: Vec<(String, String)>,
    experiment_id: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    let cols = py.allow_threads(|| columns::columns_from_docs(&docs, experiment_id.as_deref()));
    columns_to_dict(py, &cols)
}

fn columns_to_dict<'py>(py: Python<'py>, cols: &Columns) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new_bound(py);
    out.set_item("run_id", PyList::new_bound(py, &cols.run_id))?;
    let texts = |column: &[String]| texts_to_py(py, column.iter().map(String::as_str));
    out.set_item("experiment_id", texts(&cols.experiment_id))?;
    out.set_item("status", texts(&cols.status))?;
    out.set_item("task_index", PyList::new_bound(py, &cols.task_index))?;
    out.set_item("replicate", PyList::new_bound(py, &cols.replicate))?;
    out.set_item("duration_s", PyList::new_bound(py, &cols.duration_s))?;
    out.set_item("started_at", PyList::new_bound(py, &cols.started_at))?;
    out.set_item("duration_frame", duration_frame(py, &cols.duration_s))?;
    out.set_item("params", columns_to_py(py, &cols.params))?;
    out.set_item("metrics", columns_to_py(py, &cols.metrics))?;
    out.set_item("param_frames", frames_to_py(py, &cols.params))?;
    out.set_item("metric_frames", frames_to_py(py, &cols.metrics))?;
    let problems = PyList::empty_bound(py);
    for p in &cols.problems {
        problems.append((p.path.as_str(), p.reason.as_str(), p.corrupt))?;
    }
    out.set_item("problems", problems)?;
    Ok(out)
}

/// `duration_s` as the float64 array pandas builds from its list (`None` as NaN), or
/// `None` when no row has a duration (pandas keeps such a column as objects).
fn duration_frame(py: Python<'_>, durations: &[Option<f64>]) -> PyObject {
    if durations.iter().all(Option::is_none) {
        return py.None();
    }
    let data: Vec<u8> = durations
        .iter()
        .flat_map(|d| d.unwrap_or(f64::NAN).to_ne_bytes())
        .collect();
    PyBytes::new_bound(py, &data).into_py(py)
}
