//! Columnar loading of FileStore run records.
//!
//! `load_columns` lists `{root}/runs/*/*.json` (or the record files of given run
//! ids), reads and parses them in parallel and returns one column per record field, per
//! parameter key and per metric name. Rows are ordered by (experiment id, task index).
//! Files that cannot be read or fail a record check (`crate::record_checks`, the same
//! checks as the Python loader, including "the `run_id` inside is the file's name") are
//! returned as problems (path + reason) instead of rows. A missing record file is
//! skipped (the run has not finished) unless the run's done marker exists: a marker
//! without its record is a problem too, so the run neither vanishes silently nor counts
//! as done. Metric values `"NaN"`, `"Infinity"` and `"-Infinity"` are decoded to floats,
//! as in `metalab.store.record_codec.decode_metric`.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::Value;

pub use crate::record_checks::STATUSES;
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

struct Row {
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

enum Loaded {
    Row(Box<Row>),
    /// A valid record of another experiment.
    Filtered,
    /// No record file.
    Missing,
    Problem(Problem),
}

/// Check one record's bytes; `Err` holds the reason (prefixed with `location`).
///
/// `run_id` is the id the record is stored under (its file name), when known.
pub fn parse_record(data: &[u8], location: &str, run_id: Option<&str>) -> Result<(), String> {
    parse_row(data, location, run_id).map(|_| ())
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

fn parse_row(data: &[u8], location: &str, run_id: Option<&str>) -> Result<Row, String> {
    record_checks::check(data, run_id)
        .map(row_of)
        .map_err(|why| format!("{location}: {why}"))
}

/// Read a file with one `read` call in the common case (no `stat`, no extra read to see
/// end-of-file); `complete` is false when that single read filled the buffer or might have
/// been short, in which case the caller re-reads with `fs::read` before trusting a failure.
fn read_quick(path: &Path, buffer: &mut Vec<u8>) -> std::io::Result<bool> {
    const FIRST_READ: usize = 64 * 1024;
    let mut file = fs::File::open(path)?;
    buffer.clear();
    buffer.resize(FIRST_READ, 0);
    let n = loop {
        match file.read(&mut buffer[..]) {
            Ok(n) => break n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    buffer.truncate(n);
    if n == FIRST_READ {
        file.read_to_end(buffer)?;
        return Ok(true);
    }
    Ok(false)
}

/// The run id a record file is stored under: its name without `.json`.
fn stored_id(path: &Path) -> Option<&str> {
    path.file_name()?.to_str()?.strip_suffix(".json")
}

fn load_one(path: &Path, experiment_id: Option<&str>, buffer: &mut Vec<u8>) -> Loaded {
    let location = path.display().to_string();
    let unreadable = |e: std::io::Error| {
        Loaded::Problem(Problem {
            path: location.clone(),
            reason: format!("unreadable: {e}"),
            corrupt: false,
        })
    };
    let complete = match read_quick(path, buffer) {
        Ok(complete) => complete,
        Err(e) if e.kind() == ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => return unreadable(e),
    };
    let run_id = stored_id(path);
    let mut parsed = parse_row(buffer, &location, run_id);
    if parsed.is_err() && !complete {
        // A single read may in principle return less than the whole file: confirm the
        // failure on the complete contents before calling the record corrupt.
        match fs::read(path) {
            Ok(data) => parsed = parse_row(&data, &location, run_id),
            Err(e) if e.kind() == ErrorKind::NotFound => return Loaded::Missing,
            Err(e) => return unreadable(e),
        }
    }
    match parsed {
        Ok(row) => match experiment_id {
            Some(wanted) if row.experiment_id != wanted => Loaded::Filtered,
            _ => Loaded::Row(Box::new(row)),
        },
        Err(reason) => Loaded::Problem(Problem {
            path: location,
            reason,
            corrupt: true,
        }),
    }
}

fn is_visible_dir(entry: &fs::DirEntry) -> bool {
    if entry.file_name().to_string_lossy().starts_with('.') {
        return false;
    }
    match entry.file_type() {
        Ok(t) if t.is_dir() => true,
        Ok(t) if t.is_symlink() => entry.path().is_dir(),
        _ => false,
    }
}

fn sorted_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(is_visible_dir)
            .map(|e| e.path())
            .collect(),
        Err(_) => Vec::new(),
    };
    found.sort();
    found
}

/// Record files (`{run_id}.json`, not hidden) directly inside one shard directory, sorted.
fn record_files(shard: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = match fs::read_dir(shard) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".json")
                    && !name.starts_with('.')
                    && e.file_type().map(|t| t.is_file()).unwrap_or(false)
            })
            .map(|e| e.path())
            .collect(),
        Err(_) => Vec::new(),
    };
    found.sort();
    found
}

/// Paths of every `runs/{shard}/{run_id}.json` under `root` (sorted).
pub fn record_paths(root: &Path) -> Vec<PathBuf> {
    let shards = sorted_dirs(&root.join("runs"));
    shards
        .par_iter()
        .map(|shard| record_files(shard))
        .collect::<Vec<_>>()
        .into_iter()
        .flatten()
        .collect()
}

/// Paths of the record files of `run_ids` (in the given order).
pub fn record_paths_of(root: &Path, run_ids: &[String]) -> Vec<PathBuf> {
    let runs = root.join("runs");
    run_ids
        .iter()
        .map(|id| {
            runs.join(crate::scan::shard_of(id))
                .join(format!("{id}.json"))
        })
        .collect()
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

/// Load the records under `root` (all of them, or those of `run_ids`), keeping those of
/// `experiment_id` when given, as columns.
///
/// A run whose done marker exists without its record file is reported as a problem
/// (`corrupt: false`, so the marker stays and the problem stays visible until the run
/// is executed again).
pub fn load_columns(
    root: &Path,
    run_ids: Option<&[String]>,
    experiment_id: Option<&str>,
) -> Columns {
    let paths = match run_ids {
        Some(ids) => record_paths_of(root, ids),
        None => record_paths(root),
    };
    let mut loaded: Vec<Loaded> = paths
        .par_iter()
        .with_min_len(64)
        .map_init(Vec::new, |buffer, p| load_one(p, experiment_id, buffer))
        .collect();
    // Markers are scanned after the records were read: a record is in place before its
    // marker is created, so a marker seen now whose record was missing then is either
    // an orphan or a run that finished in between (told apart by looking again).
    let without_record: Vec<String> = match run_ids {
        Some(ids) => ids
            .iter()
            .zip(&loaded)
            .filter(|(_, l)| matches!(l, Loaded::Missing))
            .map(|(id, _)| id.clone())
            .collect(),
        None => {
            let listed: std::collections::HashSet<&str> =
                paths.iter().filter_map(|p| stored_id(p)).collect();
            match crate::scan::list_done(&root.join("done")) {
                Ok(done) => done
                    .into_iter()
                    .filter(|id| !listed.contains(id.as_str()))
                    .collect(),
                Err(e) => {
                    loaded.push(marker_scan_problem(root, e));
                    Vec::new()
                }
            }
        }
    };
    loaded.extend(missing_records(root, &without_record));
    assemble(loaded)
}

fn marker_scan_problem(root: &Path, e: crate::CoreError) -> Loaded {
    Loaded::Problem(Problem {
        path: root.join("done").display().to_string(),
        reason: e.to_string(),
        corrupt: false,
    })
}

/// Problems for the runs among `candidates` (no record file seen) that have a done
/// marker and still no record file.
fn missing_records(root: &Path, candidates: &[String]) -> Vec<Loaded> {
    if candidates.is_empty() {
        return Vec::new();
    }
    let done_root = root.join("done");
    let marked = match crate::scan::scan_done(&done_root, candidates) {
        Ok(marked) => marked,
        Err(e) => return vec![marker_scan_problem(root, e)],
    };
    let runs = root.join("runs");
    candidates
        .iter()
        .zip(marked)
        .filter(|(_, marked)| *marked)
        .filter_map(|(id, _)| {
            let shard = crate::scan::shard_of(id);
            let record = runs.join(shard).join(format!("{id}.json"));
            match fs::symlink_metadata(&record) {
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                _ => return None,
            }
            let marker = done_root
                .join(shard)
                .join(format!("{id}{}", crate::scan::MARKER_SUFFIX));
            Some(Loaded::Problem(Problem {
                path: record.display().to_string(),
                reason: format!(
                    "{}: record missing: done marker {} says run {id} finished, but its \
                     record file is gone (deleted?); the run does not count as done and \
                     resume runs it again",
                    record.display(),
                    marker.display()
                ),
                corrupt: false,
            }))
        })
        .collect()
}

/// Parse record documents already in memory (e.g. fetched from PostgreSQL) into columns.
///
/// `docs` holds `(location, JSON text)` pairs; the location names a document in problems.
pub fn columns_from_docs(docs: &[(String, String)], experiment_id: Option<&str>) -> Columns {
    let loaded: Vec<Loaded> = docs
        .par_iter()
        .with_min_len(64)
        .map(
            |(location, text)| match parse_row(text.as_bytes(), location, None) {
                Ok(row) => match experiment_id {
                    Some(wanted) if row.experiment_id != wanted => Loaded::Filtered,
                    _ => Loaded::Row(Box::new(row)),
                },
                Err(reason) => Loaded::Problem(Problem {
                    path: location.clone(),
                    reason,
                    corrupt: true,
                }),
            },
        )
        .collect();
    assemble(loaded)
}

/// Sort parsed rows by (experiment, task) and lay them out as columns.
fn assemble(loaded: Vec<Loaded>) -> Columns {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(run_id: &str, task: i64, params: &str, metrics: &str) -> String {
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

    fn write(root: &Path, run_id: &str, body: &str) {
        let dir = root.join("runs").join(&run_id[..2]);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("{run_id}.json")), body).unwrap();
    }

    fn temp_root(name: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("metalab-records-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        root
    }

    #[test]
    fn columns_follow_task_order_with_missing_cells() {
        let root = temp_root("order");
        write(
            &root,
            "bb01",
            &record("bb01", 1, r#"{"a": 1, "b": "x"}"#, r#"{"m": "NaN"}"#),
        );
        write(
            &root,
            "aa00",
            &record("aa00", 0, r#"{"a": 2.5}"#, r#"{"m": 3}"#),
        );
        write(
            &root,
            "cc02",
            &record("cc02", 2, r#"{"a": null, "c": [1, 2]}"#, "null"),
        );
        let cols = load_columns(&root, None, None);
        assert_eq!(cols.run_id, vec!["aa00", "bb01", "cc02"]);
        assert!(cols.problems.is_empty());
        let names: Vec<_> = cols.params.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b", "c"]);
        assert_eq!(
            cols.params[0].values,
            vec![Cell::Float(2.5), Cell::Int(1), Cell::Null]
        );
        assert_eq!(cols.params[1].values[0], Cell::Missing);
        assert_eq!((cols.params[1].first_row, cols.params[1].position), (1, 1));
        assert_eq!((cols.params[2].first_row, cols.params[2].position), (2, 1));
        match &cols.metrics[0].values[1] {
            Cell::Float(f) => assert!(f.is_nan()),
            other => panic!("expected NaN, got {other:?}"),
        }
        assert_eq!(cols.metrics[0].values[2], Cell::Missing);
        assert_eq!(cols.duration_s, vec![Some(1.5); 3]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn corrupt_files_are_problems_and_filters_apply() {
        let root = temp_root("corrupt");
        write(&root, "aa00", &record("aa00", 0, "{}", "{}"));
        write(&root, "bb01", r#"{"run_id": "trunc"#);
        write(&root, "cc02", "[1, 2]");
        write(&root, "dd03", r#"{"run_id": "dd03"}"#);
        let cols = load_columns(&root, None, None);
        assert_eq!(cols.run_id, vec!["aa00"]);
        let reasons: Vec<_> = cols.problems.iter().map(|p| p.reason.clone()).collect();
        assert!(reasons[0].contains("not valid JSON"), "{reasons:?}");
        assert!(
            reasons[1].ends_with("expected a JSON object"),
            "{reasons:?}"
        );
        assert!(reasons[2].contains("not a run record"), "{reasons:?}");
        assert!(cols.problems.iter().all(|p| p.corrupt));
        let ids = vec!["aa00".to_string(), "ee04".to_string()];
        let only = load_columns(&root, Some(&ids), None);
        assert_eq!(only.run_id, vec!["aa00"]);
        assert!(only.problems.is_empty());
        assert!(load_columns(&root, None, Some("other:1")).is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn unknown_status_is_rejected() {
        let body = record("aa00", 0, "{}", "{}").replace("success", "weird");
        let err = parse_record(body.as_bytes(), "x", None).unwrap_err();
        assert!(
            err.starts_with("x: not a run record (unknown status 'weird'"),
            "{err}"
        );
    }

    #[test]
    fn a_record_under_another_runs_name_is_corrupt_not_a_duplicate() {
        let root = temp_root("copied");
        write(&root, "aa00", &record("aa00", 0, "{}", "{}"));
        write(&root, "bb01", &record("aa00", 0, "{}", "{}"));
        for cols in [
            load_columns(&root, None, None),
            load_columns(&root, Some(&["aa00".into(), "bb01".into()]), None),
        ] {
            assert_eq!(cols.run_id, vec!["aa00"]);
            let problem = &cols.problems[0];
            assert!(problem.corrupt && problem.path.ends_with("bb01.json"));
            assert!(
                problem.reason.contains("run_id 'aa00' differs"),
                "{problem:?}"
            );
        }
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_done_marker_without_its_record_is_a_problem() {
        let root = temp_root("orphan");
        write(&root, "aa00", &record("aa00", 0, "{}", "{}"));
        for id in ["aa00", "bb01"] {
            let dir = root.join("done").join(&id[..2]);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(format!("{id}.done")), b"").unwrap();
        }
        let ids: Vec<String> = vec!["aa00".into(), "bb01".into(), "cc02".into()];
        for cols in [
            load_columns(&root, None, None),
            load_columns(&root, Some(&ids), None),
        ] {
            assert_eq!(cols.run_id, vec!["aa00"]);
            assert_eq!(cols.problems.len(), 1, "{:?}", cols.problems);
            let problem = &cols.problems[0];
            assert!(!problem.corrupt && problem.path.ends_with("bb01.json"));
            assert!(problem.reason.contains("record missing"), "{problem:?}");
        }
        fs::remove_dir_all(&root).unwrap();
    }
}
