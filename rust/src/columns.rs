//! Run records as columns: the cell model, the check of one record, and the layout of
//! checked rows as one column per record field, per parameter key and per metric name.
//!
//! Rows are ordered by (experiment id, task index). A document that fails a record check
//! (`crate::record_checks`, the same checks as the Python loader) becomes a [`Problem`]
//! instead of a row. Metric values `"NaN"`, `"Infinity"` and `"-Infinity"` are decoded
//! to floats, as in `metalab.store.record_codec.decode_metric`. Reading record files is
//! `crate::records`; documents already in memory (PostgreSQL rows) come in through
//! [`columns_from_docs`].

use std::cmp::Ordering;
use std::collections::HashMap;

use rayon::prelude::*;
use serde_json::Value;

use crate::record_checks::{self, Checked};

/// One value of a parameter or metric column.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// The record has no such key.
    Missing,
    /// The record holds JSON `null` under the key.
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    /// A JSON array or object (kept as parsed, key order preserved).
    Json(Value),
}

impl Cell {
    fn from_value(value: Value) -> Cell {
        match value {
            Value::Null => Cell::Null,
            Value::Bool(b) => Cell::Bool(b),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Cell::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Cell::UInt(u)
                } else {
                    Cell::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => Cell::Str(s),
            other => Cell::Json(other),
        }
    }

    /// A metric value: the non-finite string encodings become floats.
    fn from_metric(value: Value) -> Cell {
        match value {
            Value::String(s) => match s.as_str() {
                "NaN" => Cell::Float(f64::NAN),
                "Infinity" => Cell::Float(f64::INFINITY),
                "-Infinity" => Cell::Float(f64::NEG_INFINITY),
                _ => Cell::Str(s),
            },
            other => Cell::from_value(other),
        }
    }
}

/// A parameter or metric column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// One cell per row.
    pub values: Vec<Cell>,
    /// The first row holding the key, and the key's position among that row's keys of the
    /// same kind (params or metrics): together they give first-appearance column order.
    pub first_row: usize,
    pub position: usize,
}

/// A record file that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub reason: String,
    /// True when the file was read but is not a valid record (its done marker must go);
    /// false when it could not be read at all.
    pub corrupt: bool,
}

/// The loaded records as columns.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Columns {
    pub run_id: Vec<String>,
    pub experiment_id: Vec<String>,
    pub status: Vec<String>,
    pub task_index: Vec<i64>,
    pub replicate: Vec<i64>,
    pub duration_s: Vec<Option<f64>>,
    pub started_at: Vec<Option<String>>,
    pub params: Vec<Column>,
    pub metrics: Vec<Column>,
    pub problems: Vec<Problem>,
}

impl Columns {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.run_id.len()
    }

    /// True when no record loaded.
    pub fn is_empty(&self) -> bool {
        self.run_id.is_empty()
    }
}

/// One checked record, its params and metrics as cells.
pub(crate) struct Row {
    run_id: String,
    experiment_id: String,
    status: String,
    task_index: i64,
    replicate: i64,
    duration_s: Option<f64>,
    started_at: Option<String>,
    params: Vec<(String, Cell)>,
    metrics: Vec<(String, Cell)>,
}

/// What became of one record document.
pub(crate) enum Loaded {
    Row(Box<Row>),
    /// A valid record of another experiment.
    Filtered,
    /// No record file.
    Missing,
    Problem(Problem),
}

fn row_of(c: Checked) -> Row {
    Row {
        run_id: c.run_id,
        experiment_id: c.experiment_id,
        status: c.status,
        task_index: c.task_index,
        replicate: c.replicate,
        duration_s: c.duration_s,
        started_at: c.started_at,
        params: c
            .params
            .into_iter()
            .map(|(k, v)| (k, Cell::from_value(v)))
            .collect(),
        metrics: c
            .metrics
            .into_iter()
            .map(|(k, v)| (k, Cell::from_metric(v)))
            .collect(),
    }
}

/// Check one record's bytes; `Err` holds the reason (prefixed with `location`).
///
/// `run_id` is the id the record is stored under (its file name), when known.
fn parse_row(data: &[u8], location: &str, run_id: Option<&str>) -> Result<Row, String> {
    record_checks::check(data, run_id)
        .map(row_of)
        .map_err(|why| format!("{location}: {why}"))
}

impl Loaded {
    /// Check one record document found at `location` (stored under `run_id` when known):
    /// a row, a valid record of another experiment than `experiment_id`, or a corrupt one.
    pub(crate) fn parse(
        data: &[u8],
        location: &str,
        run_id: Option<&str>,
        experiment_id: Option<&str>,
    ) -> Loaded {
        match parse_row(data, location, run_id) {
            Ok(row) => match experiment_id {
                Some(wanted) if row.experiment_id != wanted => Loaded::Filtered,
                _ => Loaded::Row(Box::new(row)),
            },
            Err(reason) => Loaded::Problem(Problem {
                path: location.to_string(),
                reason,
                corrupt: true,
            }),
        }
    }

    /// True for a document that fails a record check.
    pub(crate) fn is_corrupt(&self) -> bool {
        matches!(self, Loaded::Problem(p) if p.corrupt)
    }
}

fn add_cells(
    columns: &mut Vec<Column>,
    index: &mut HashMap<String, usize>,
    cells: Vec<(String, Cell)>,
    row: usize,
) {
    for (position, (name, cell)) in cells.into_iter().enumerate() {
        let slot = match index.get(&name) {
            Some(&slot) => slot,
            None => {
                index.insert(name.clone(), columns.len());
                columns.push(Column {
                    name,
                    values: vec![Cell::Missing; row],
                    first_row: row,
                    position,
                });
                columns.len() - 1
            }
        };
        let column = &mut columns[slot];
        // A duplicate key within one record: the last value wins, as in Python's json.
        if column.values.len() > row {
            column.values[row] = cell;
        } else {
            column.values.push(cell);
        }
    }
    for column in columns.iter_mut() {
        if column.values.len() <= row {
            column.values.push(Cell::Missing);
        }
    }
}

/// Parse record documents already in memory (e.g. fetched from PostgreSQL) into columns.
///
/// `docs` holds `(location, JSON text)` pairs; the location names a document in problems.
pub fn columns_from_docs(docs: &[(String, String)], experiment_id: Option<&str>) -> Columns {
    let loaded: Vec<Loaded> = docs
        .par_iter()
        .with_min_len(64)
        .map(|(location, text)| Loaded::parse(text.as_bytes(), location, None, experiment_id))
        .collect();
    assemble(loaded)
}

/// Sort parsed rows by (experiment, task) and lay them out as columns.
pub(crate) fn assemble(loaded: Vec<Loaded>) -> Columns {
    let mut out = Columns::default();
    let mut rows = Vec::with_capacity(loaded.len());
    for item in loaded {
        match item {
            Loaded::Row(row) => rows.push(row),
            Loaded::Filtered | Loaded::Missing => {}
            Loaded::Problem(p) => out.problems.push(p),
        }
    }
    rows.sort_by(|a, b| match a.experiment_id.cmp(&b.experiment_id) {
        Ordering::Equal => a.task_index.cmp(&b.task_index),
        other => other,
    });
    let n = rows.len();
    out.run_id.reserve(n);
    out.experiment_id.reserve(n);
    out.status.reserve(n);
    out.task_index.reserve(n);
    out.replicate.reserve(n);
    out.duration_s.reserve(n);
    out.started_at.reserve(n);
    let mut param_index = HashMap::new();
    let mut metric_index = HashMap::new();
    for (i, row) in rows.into_iter().enumerate() {
        let row = *row;
        out.run_id.push(row.run_id);
        out.experiment_id.push(row.experiment_id);
        out.status.push(row.status);
        out.task_index.push(row.task_index);
        out.replicate.push(row.replicate);
        out.duration_s.push(row.duration_s);
        out.started_at.push(row.started_at);
        add_cells(&mut out.params, &mut param_index, row.params, i);
        add_cells(&mut out.metrics, &mut metric_index, row.metrics, i);
    }
    out
}

/// A valid record document of experiment `e:1`, for the tests of this crate.
#[cfg(test)]
pub(crate) fn test_record(run_id: &str, task: i64, params: &str, metrics: &str) -> String {
    format!(
        r#"{{"run_id": "{run_id}", "experiment_id": "e:1", "status": "success",
        "context_fingerprint": "c", "params_fingerprint": "p", "seed_fingerprint": "s",
        "params": {params}, "task_index": {task}, "replicate": 0,
        "metrics": {metrics}, "duration_s": 1.5, "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": null, "provenance": {{"code_hash": "h", "operation": "m.op",
        "python": "3.11", "metalab": "0.1", "host": "h", "pid": 1, "executor": "thread",
        "worker_id": "w"}}}}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_record as record;

    #[test]
    fn unknown_status_is_rejected() {
        let body = record("aa00", 0, "{}", "{}").replace("success", "weird");
        let err = parse_row(body.as_bytes(), "x", None).err().unwrap();
        assert!(
            err.starts_with("x: not a run record (unknown status 'weird'"),
            "{err}"
        );
    }

    #[test]
    fn documents_of_other_experiments_are_filtered() {
        let docs = vec![
            ("a".to_string(), record("aa00", 1, "{}", "{}")),
            (
                "b".to_string(),
                record("bb01", 0, "{}", "{}").replace("e:1", "e:2"),
            ),
            ("c".to_string(), "[1]".to_string()),
        ];
        let all = columns_from_docs(&docs, None);
        assert_eq!(all.run_id, vec!["aa00", "bb01"]);
        let only = columns_from_docs(&docs, Some("e:2"));
        assert_eq!(only.run_id, vec!["bb01"]);
        assert_eq!(only.problems.len(), 1);
        assert!(only.problems[0].corrupt && only.problems[0].reason.starts_with("c: "));
    }
}
