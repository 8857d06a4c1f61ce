//! Columnar loading of FileStore runs through the results index (append-only segments).
//!
//! A segment (written by `python/metalab/store/index_segments.py`; format in
//! `docs/storage.md`, "Results index") holds one line per written record:
//!
//! ```text
//! {sum} {run_id} {ino} {mtime_ns} {size} {summary JSON}\n
//! ```
//!
//! `sum` is the hex BLAKE2b-8 of everything after `{sum} ` up to the newline, so a torn
//! last line (a writer killed mid-append) or flipped bytes are detected and the line is
//! ignored. `ino`, `mtime_ns` and `size` identify the version of the record file the
//! line summarises: a line counts only while the record file listed now has exactly
//! that identity, so a rewritten, replaced, edited or deleted record is never answered
//! from a stale line. Runs with no matching line are read from their record file by the
//! same code as `crate::records` (the records stay the source of truth), and the
//! summaries are checked and laid out by `crate::columns` (one parser for both), so the
//! result equals `records::load_columns` over the same store.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

mod current;
pub mod frame;
mod io;
mod segment;
pub mod snapshot;
mod stats;

pub use io::drop_later;
use io::on_io_pool;
pub use segment::{checksum, file_id, parse_line, parse_segment, Entry, FileId, SUM_BYTES};
pub use stats::{Clock, Stats};

use crate::columns::{assemble, Columns, Loaded};
use crate::idhash::IdBuild;
use crate::layout::Layout;
use crate::records;

/// Read every segment: their bytes (kept, the entries borrow them) and counts.
fn read_segments(segments: &[PathBuf], stats: &mut Stats) -> Vec<Vec<u8>> {
    // On the I/O pool: a SLURM sweep leaves one segment per array task (thousands).
    let read: Vec<Option<Vec<u8>>> =
        on_io_pool(|| segments.par_iter().map(|p| fs::read(p).ok()).collect());
    stats.segments = segments.len();
    stats.unreadable = read.iter().filter(|d| d.is_none()).count();
    read.into_iter().flatten().collect()
}

const NONE: u32 = u32::MAX;

/// The valid lines of every segment, found by run id, newest (last read) first.
struct Lines<'a> {
    entries: Vec<Entry<'a>>,
    /// Run id -> its last line.
    last: HashMap<&'a str, u32, IdBuild>,
    /// Line -> the run's line read before it (`NONE`: none).
    before: Vec<u32>,
}

impl<'a> Lines<'a> {
    fn of<'s>(&'s self, run_id: &str) -> impl Iterator<Item = &'s Entry<'a>> + 's {
        self.from(self.last.get(run_id).copied().unwrap_or(NONE))
    }

    /// The lines of one run from line `at` (its newest) back.
    fn from<'s>(&'s self, mut at: u32) -> impl Iterator<Item = &'s Entry<'a>> + 's {
        std::iter::from_fn(move || {
            if at == NONE {
                return None;
            }
            let entry = &self.entries[at as usize];
            at = self.before[at as usize];
            Some(entry)
        })
    }
}

fn entries_by_run<'a>(buffers: &'a [Vec<u8>], stats: &mut Stats) -> Lines<'a> {
    let mut entries = Vec::new();
    for data in buffers {
        let (found, bad) = parse_segment(data);
        stats.lines += found.len() + bad;
        stats.bad_lines += bad;
        entries.extend(found);
    }
    let mut last = HashMap::with_capacity_and_hasher(entries.len(), Default::default());
    let before = entries
        .iter()
        .enumerate()
        .map(|(i, e)| last.insert(e.run_id, i as u32).unwrap_or(NONE))
        .collect();
    Lines {
        entries,
        last,
        before,
    }
}

/// For each listed record, the line summarising exactly its current version, if any:
/// a line of the run whose identity is the one `stat` found now (`files`, in listing
/// order; modification time and size catch an edit in place, the inode a rerun).
fn matching_lines<'e, 'a>(
    layout: &Layout,
    paths: &[PathBuf],
    files: &[Option<FileId>],
    entries: &'e Lines<'a>,
) -> Vec<Option<&'e Entry<'a>>> {
    (0..paths.len())
        .into_par_iter()
        .with_min_len(1024)
        .map(|i| {
            let file = files[i]?;
            let last = *entries.last.get(records::stored_id(layout, &paths[i])?)?;
            entries.from(last).find(|e| e.file == file)
        })
        .collect()
}

/// Where a load finds and may save its column snapshot (see [`snapshot`]).
#[derive(Debug, Clone, Copy)]
pub struct SnapshotPlan<'p> {
    pub path: &'p Path,
    /// A load of at least this many record files that had to read the segments saves
    /// its answer (smaller stores load fast enough without one).
    pub min_records: usize,
}

/// Load every run of the layout (those of `experiment_id` when given) as columns,
/// answering from the column `snapshot` when every record file is the version it lists,
/// else from the `segments` where a line matches the record file and reading the record
/// otherwise. The result equals `records::load_columns(layout, None, ...)`.
pub fn load_columns(
    layout: &Layout,
    segments: &[PathBuf],
    experiment_id: Option<&str>,
    snapshot: Option<SnapshotPlan<'_>>,
) -> (Columns, Stats) {
    let mut stats = Stats::default();
    let mut clock = Clock::start();
    // The snapshot is read while the shards are listed and the records `stat`ed (its
    // time is its own stage, of wall time only: the two overlap).
    let ((listed, files, listing), (saved, reading)) = rayon::join(
        || {
            let started = std::time::Instant::now();
            let listed = io::list_records(layout);
            let listing = started.elapsed().as_secs_f64();
            let files = io::stat_all(&listed);
            (listed, files, listing)
        },
        || {
            let started = std::time::Instant::now();
            let saved = snapshot.and_then(|plan| snapshot::read(plan.path));
            (saved, started.elapsed().as_secs_f64())
        },
    );
    stats.lap("list_and_stat_records", &mut clock);
    stats
        .seconds
        .push(("list_records (of which)", listing, 0.0));
    if snapshot.is_some() {
        stats
            .seconds
            .push(("read_snapshot (overlapped)", reading, 0.0));
    }
    if let Some(saved) = saved {
        let current = current::is_current(layout, &saved, &listed, &files, experiment_id);
        stats.lap("check_snapshot", &mut clock);
        if current {
            let mut columns = saved.columns;
            drop_later(saved.listed);
            stats.from_snapshot = listed.len();
            // No marker created or removed since the snapshot (it was saved with none
            // orphaned): none is orphaned now either, since the records are the same.
            if io::dir_times(&layout.done.root) != saved.done_dirs {
                let paths: Vec<PathBuf> = listed.into_iter().map(|(path, _)| path).collect();
                columns.problems.extend(orphan_markers(layout, &paths));
                drop_later(paths);
            } else {
                drop_later(listed);
            }
            stats.lap("done_markers", &mut clock);
            return (columns, stats);
        }
    }
    let buffers = read_segments(segments, &mut stats);
    stats.lap("read_segments", &mut clock);
    let entries = entries_by_run(&buffers, &mut stats);
    stats.lap("parse_lines", &mut clock);
    // From here on the inodes are not needed: the paths alone, moved (not copied).
    let paths: Vec<PathBuf> = listed.into_iter().map(|(path, _)| path).collect();
    let chosen = matching_lines(layout, &paths, &files, &entries);
    stats.lap("match_lines", &mut clock);
    let saving = snapshot.filter(|plan| paths.len() >= plan.min_records);
    let rows = rows_of(layout, &paths, &chosen, experiment_id, &mut stats);
    stats.lap("parse_summaries", &mut clock);
    drop(chosen);
    drop(entries);
    // The segments' bytes (hundreds of MB at 300,000 runs) are freed off the caller's path.
    drop_later(buffers);
    let mut columns = assemble(rows);
    stats.lap("assemble", &mut clock);
    // The markers' directories are timed before their scan: a marker created after it
    // changes a time, and the next load scans again.
    let done_dirs = saving.map(|_| io::dir_times(&layout.done.root));
    let orphans = orphan_markers(layout, &paths);
    stats.lap("done_markers", &mut clock);
    if let (Some(plan), Some(done_dirs)) = (saving, done_dirs) {
        let clean = columns.problems.is_empty() && orphans.is_empty();
        stats.snapshot_written = clean
            && save_snapshot(
                layout,
                plan,
                &paths,
                files,
                &done_dirs,
                &columns,
                experiment_id,
            );
        stats.lap("write_snapshot", &mut clock);
    }
    columns.problems.extend(orphans);
    drop_later(paths);
    (columns, stats)
}

/// The problems of done markers without a record among `paths` (the record files listed;
/// see `records::orphan_markers`).
fn orphan_markers(layout: &Layout, paths: &[PathBuf]) -> Vec<crate::columns::Problem> {
    records::orphan_markers(layout, paths)
        .into_iter()
        .filter_map(|orphan| match orphan {
            Loaded::Problem(problem) => Some(problem),
            _ => None,
        })
        .collect()
}

/// Save `columns` as the snapshot of a load that listed `paths` with identities `files`
/// and saw the done-marker directories at `done_dirs`; the caller saves only a load that
/// found nothing wrong (a problem must be reported by every load, so it is never
/// answered from a snapshot). `false` when an identity is unknown or the file cannot be
/// written (a store the caller may only read keeps its state).
fn save_snapshot(
    layout: &Layout,
    plan: SnapshotPlan<'_>,
    paths: &[PathBuf],
    files: Vec<Option<FileId>>,
    done_dirs: &snapshot::DirTimes,
    columns: &Columns,
    experiment_id: Option<&str>,
) -> bool {
    let listed: Option<Vec<snapshot::Listed>> = paths
        .iter()
        .zip(files)
        .map(|(path, file)| {
            let run_id = records::stored_id(layout, path)?.to_string();
            Some(snapshot::Listed {
                run_id,
                file: file?,
            })
        })
        .collect();
    let Some(listed) = listed else {
        return false;
    };
    snapshot::write(plan.path, experiment_id, &listed, done_dirs, columns).is_ok()
}

/// [`load_columns`] for the runs `run_ids` only, in that order (a run without a record
/// file is skipped, reported when its done marker exists): equals
/// `records::load_columns(layout, Some(run_ids), ...)`.
pub fn load_columns_of(
    layout: &Layout,
    segments: &[PathBuf],
    run_ids: &[String],
    experiment_id: Option<&str>,
) -> (Columns, Stats) {
    let mut stats = Stats::default();
    let buffers = read_segments(segments, &mut stats);
    let entries = entries_by_run(&buffers, &mut stats);
    let paths: Vec<PathBuf> = run_ids.iter().map(|id| layout.record(id)).collect();
    // No listing names the inodes here: every run with a line is confirmed by stat.
    let chosen: Vec<Option<&Entry<'_>>> = on_io_pool(|| {
        paths
            .par_iter()
            .zip(run_ids.par_iter())
            .with_min_len(256)
            .map(|(path, id)| {
                entries.of(id).next()?;
                let file = file_id(path).ok()?;
                entries.of(id).find(|e| e.file == file)
            })
            .collect()
    });
    let mut rows = rows_of(layout, &paths, &chosen, experiment_id, &mut stats);
    let without_record: Vec<String> = run_ids
        .iter()
        .zip(&rows)
        .filter(|(_, row)| matches!(row, Loaded::Missing))
        .map(|(id, _)| id.clone())
        .collect();
    rows.extend(records::missing_records(layout, &without_record));
    (assemble(rows), stats)
}

/// One row per record path: from its chosen line, or read from the record.
fn rows_of(
    layout: &Layout,
    paths: &[PathBuf],
    chosen: &[Option<&Entry<'_>>],
    experiment_id: Option<&str>,
    stats: &mut Stats,
) -> Vec<Loaded> {
    let loaded: Vec<(Loaded, bool)> = paths
        .par_iter()
        .zip(chosen.par_iter())
        .with_min_len(64)
        .map_init(Vec::new, |buffer, (path, entry)| {
            if let Some(row) = entry.and_then(|e| from_line(layout, path, e, experiment_id)) {
                return (row, true);
            }
            (
                records::load_one(layout, path, experiment_id, buffer),
                false,
            )
        })
        .collect();
    let mut rows = Vec::with_capacity(loaded.len());
    for (row, indexed) in loaded {
        if indexed {
            stats.indexed += 1;
        } else if !matches!(row, Loaded::Missing) {
            stats.from_records += 1;
        }
        rows.push(row);
    }
    rows
}

/// The row of the record at `path` from its matching line (`None`: read the record).
fn from_line(
    layout: &Layout,
    path: &Path,
    entry: &Entry<'_>,
    experiment_id: Option<&str>,
) -> Option<Loaded> {
    let run_id = records::stored_id(layout, path)?;
    // No location: a summary that fails the record checks is not used (the record is
    // read and reports its own problems), so the text would never be shown.
    let loaded = Loaded::parse(entry.doc.as_bytes(), "", Some(run_id), experiment_id);
    // A summary that fails the record checks was not written by metalab: the record
    // decides (and reports its own problems, if any).
    if loaded.is_corrupt() {
        return None;
    }
    Some(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::test_record as record;
    use crate::layout::test_layout;

    fn line(run_id: &str, id: FileId, doc: &str) -> String {
        // A line holds one line of JSON (the writer's json.dumps never breaks lines).
        let doc = doc.replace('\n', " ");
        let body = format!("{run_id} {} {} {} {doc}", id.ino, id.mtime_ns, id.size);
        format!("{} {body}\n", checksum(body.as_bytes()))
    }

    fn temp_root(name: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("metalab-index-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        root
    }

    fn write_record(root: &Path, run_id: &str, body: &str) -> PathBuf {
        let dir = root.join("runs").join(&run_id[..2]);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{run_id}.json"));
        fs::write(&path, body).unwrap();
        path
    }

    #[test]
    fn torn_and_flipped_lines_are_ignored() {
        let id = FileId {
            ino: 1,
            mtime_ns: 2,
            size: 3,
        };
        let good = line("aa00", id, "{}");
        let mut flipped = line("bb01", id, "{}").into_bytes();
        flipped[20] ^= 1;
        let mut data = good.clone().into_bytes();
        data.extend(&flipped);
        data.extend(&good.as_bytes()[..good.len() - 4]);
        let (entries, bad) = parse_segment(&data);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].run_id, "aa00");
        assert_eq!(bad, 2);
    }

    #[test]
    fn a_line_counts_only_for_the_record_version_it_summarises() {
        let root = temp_root("version");
        let body = record("aa00", 0, r#"{"a": 1}"#, r#"{"m": 1}"#);
        let path = write_record(&root, "aa00", &body);
        let id = file_id(&path).unwrap();
        let summary = record("aa00", 0, r#"{"a": 1}"#, r#"{"m": 99}"#);
        let seg = root.join("index.seg");
        fs::write(&seg, line("aa00", id, &summary)).unwrap();
        let layout = test_layout(&root);
        let (cols, stats) = load_columns(&layout, std::slice::from_ref(&seg), None, None);
        // The (deliberately different) summary answered: the line was used.
        assert_eq!(cols.metrics[0].values[0], crate::columns::Cell::Int(99));
        assert_eq!((stats.indexed, stats.from_records), (1, 0));
        // Rewrite the record with other bytes: the line no longer matches.
        fs::write(&path, record("aa00", 0, r#"{"a": 1}"#, r#"{"m": 123}"#)).unwrap();
        let (cols, stats) = load_columns(&layout, &[seg], None, None);
        assert_eq!(cols.metrics[0].values[0], crate::columns::Cell::Int(123));
        assert_eq!((stats.indexed, stats.from_records), (0, 1));
        fs::remove_dir_all(&root).unwrap();
    }
}
