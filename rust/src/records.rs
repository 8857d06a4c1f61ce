//! Columnar loading of FileStore run records.
//!
//! `load_columns` lists every record file of the layout's record tree (or the record
//! files of given run ids), reads and checks them in parallel (`crate::columns`) and
//! returns them as columns. Files that cannot be read or fail a record check (including
//! "the `run_id` inside is the file's name") are returned as problems (path + reason)
//! instead of rows. A missing record file is skipped (the run has not finished) unless
//! the run's done marker exists: a marker without its record is a problem too, so the
//! run neither vanishes silently nor counts as done. Every path comes from the
//! [`Layout`] (owned by `python/metalab/store/layout.py`).

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::columns::{assemble, Columns, Loaded, Problem};
use crate::idhash::IdBuild;
use crate::layout::Layout;
use crate::scan;

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

/// The run id a record file is stored under: its name without the record suffix.
pub(crate) fn stored_id<'a>(layout: &Layout, path: &'a Path) -> Option<&'a str> {
    layout.records.id_of(path.file_name()?.to_str()?)
}

pub(crate) fn load_one(
    layout: &Layout,
    path: &Path,
    experiment_id: Option<&str>,
    buffer: &mut Vec<u8>,
) -> Loaded {
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
    let run_id = stored_id(layout, path);
    let loaded = Loaded::parse(buffer, &location, run_id, experiment_id);
    if loaded.is_corrupt() && !complete {
        // A single read may in principle return less than the whole file: confirm the
        // failure on the complete contents before calling the record corrupt.
        return match fs::read(path) {
            Ok(data) => Loaded::parse(&data, &location, run_id, experiment_id),
            Err(e) if e.kind() == ErrorKind::NotFound => Loaded::Missing,
            Err(e) => unreadable(e),
        };
    }
    loaded
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

pub(crate) fn sorted_dirs(dir: &Path) -> Vec<PathBuf> {
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

/// Record files (`{run_id}{suffix}`, not hidden) directly inside one shard directory,
/// sorted.
fn record_files(layout: &Layout, shard: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = match fs::read_dir(shard) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|name| layout.records.id_of(name).is_some())
                    && e.file_type().map(|t| t.is_file()).unwrap_or(false)
            })
            .map(|e| e.path())
            .collect(),
        Err(_) => Vec::new(),
    };
    found.sort();
    found
}

/// Paths of every record file in the layout's record tree (sorted).
pub fn record_paths(layout: &Layout) -> Vec<PathBuf> {
    let shards = sorted_dirs(&layout.records.root);
    shards
        .par_iter()
        .map(|shard| record_files(layout, shard))
        .collect::<Vec<_>>()
        .into_iter()
        .flatten()
        .collect()
}

/// Load the records of the layout (all of them, or those of `run_ids`), keeping those of
/// `experiment_id` when given, as columns.
///
/// A run whose done marker exists without its record file is reported as a problem
/// (`corrupt: false`, so the marker stays and the problem stays visible until the run
/// is executed again).
pub fn load_columns(
    layout: &Layout,
    run_ids: Option<&[String]>,
    experiment_id: Option<&str>,
) -> Columns {
    let paths = match run_ids {
        Some(ids) => ids.iter().map(|id| layout.record(id)).collect(),
        None => record_paths(layout),
    };
    let mut loaded: Vec<Loaded> = paths
        .par_iter()
        .with_min_len(64)
        .map_init(Vec::new, |buffer, p| {
            load_one(layout, p, experiment_id, buffer)
        })
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
            loaded.extend(orphan_markers(layout, &paths));
            Vec::new()
        }
    };
    loaded.extend(missing_records(layout, &without_record));
    assemble(loaded)
}

/// Problems for the done markers (all of them, listed now) whose run has no record file
/// among `paths` (the record files listed before) and still none.
pub(crate) fn orphan_markers(layout: &Layout, paths: &[PathBuf]) -> Vec<Loaded> {
    let listed: HashSet<&str, IdBuild> =
        paths.iter().filter_map(|p| stored_id(layout, p)).collect();
    match scan::list_done(layout) {
        Ok(done) => {
            let candidates: Vec<String> = done
                .into_iter()
                .filter(|id| !listed.contains(id.as_str()))
                .collect();
            missing_records(layout, &candidates)
        }
        Err(e) => vec![marker_scan_problem(layout, e)],
    }
}

fn marker_scan_problem(layout: &Layout, e: crate::CoreError) -> Loaded {
    Loaded::Problem(Problem {
        path: layout.done.root.display().to_string(),
        reason: e.to_string(),
        corrupt: false,
    })
}

/// Problems for the runs among `candidates` (no record file seen) that have a done
/// marker and still no record file.
pub(crate) fn missing_records(layout: &Layout, candidates: &[String]) -> Vec<Loaded> {
    if candidates.is_empty() {
        return Vec::new();
    }
    let marked = match scan::scan_done(layout, candidates) {
        Ok(marked) => marked,
        Err(e) => return vec![marker_scan_problem(layout, e)],
    };
    candidates
        .iter()
        .zip(marked)
        .filter(|(_, marked)| *marked)
        .filter_map(|(id, _)| {
            let record = layout.record(id);
            match fs::symlink_metadata(&record) {
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                _ => return None,
            }
            Some(Loaded::Problem(Problem {
                path: record.display().to_string(),
                reason: format!(
                    "{}: record missing: done marker {} says run {id} finished, but its \
                     record file is gone (deleted?); the run does not count as done and \
                     resume runs it again",
                    record.display(),
                    layout.done_marker(id).display()
                ),
                corrupt: false,
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::{test_record as record, Cell};
    use crate::layout::test_layout;

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
        let cols = load_columns(&test_layout(&root), None, None);
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
        let cols = load_columns(&test_layout(&root), None, None);
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
        let only = load_columns(&test_layout(&root), Some(&ids), None);
        assert_eq!(only.run_id, vec!["aa00"]);
        assert!(only.problems.is_empty());
        assert!(load_columns(&test_layout(&root), None, Some("other:1")).is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_record_under_another_runs_name_is_corrupt_not_a_duplicate() {
        let root = temp_root("copied");
        write(&root, "aa00", &record("aa00", 0, "{}", "{}"));
        write(&root, "bb01", &record("aa00", 0, "{}", "{}"));
        for cols in [
            load_columns(&test_layout(&root), None, None),
            load_columns(
                &test_layout(&root),
                Some(&["aa00".into(), "bb01".into()]),
                None,
            ),
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
            load_columns(&test_layout(&root), None, None),
            load_columns(&test_layout(&root), Some(&ids), None),
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
