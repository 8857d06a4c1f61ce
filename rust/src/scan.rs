//! Marker scans: which runs are done, failed or neither.
//!
//! Every path comes from the [`Layout`] (owned by `python/metalab/store/layout.py`): a
//! finished run leaves a done marker `{done.root}/{shard}/{run_id}{done.suffix}`, a failed
//! or cancelled one a failed marker in the failed tree, and its record in the record tree.
//! Scans read each needed shard directory once (in parallel) instead of stat-ing one path
//! per run. A missing root or shard directory means nothing in it is there. Hidden names
//! (temporaries start with `.`), names with another suffix and files filed under the
//! wrong shard are ignored.
//!
//! [`scan_completed`] and [`scan_states`] (what resume and status use) also list the record
//! shard of every shard that has done markers: a marker only counts when the run's record
//! is there too, and markers without it are returned as orphans so they can be reported.
//! At most three listings per shard; a shard asked about only a few runs (at most
//! [`STAT_MAX_PER_SHARD`]) is looked up instead, at most three `lstat`s per run, so that a
//! poll asking about one array task's runs (a few in each of the 256 shards) does not
//! list the whole store.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use rayon::prelude::*;

use crate::ids::IdSet;
use crate::layout::{Layout, Tree};
use crate::CoreError;

fn listing_err(what: &str, path: &Path, e: std::io::Error) -> CoreError {
    CoreError::Store(format!("cannot read {what} in {}: {e}", path.display()))
}

/// Run ids `id` with a visible `{id}{suffix}` in `tree.root/shard` filed under the right
/// shard (empty if the directory does not exist).
fn read_ids(layout: &Layout, tree: &Tree, shard: &str) -> Result<Vec<String>, CoreError> {
    let dir = tree.root.join(shard);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(listing_err(tree.what, &dir, e)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| listing_err(tree.what, &dir, e))?;
        // One allocation per file: the OsString itself becomes the id.
        let Ok(mut name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(id) = tree.id_of(&name) else {
            continue;
        };
        if layout.shard_of(id) == shard {
            name.truncate(id.len());
            ids.push(name);
        }
    }
    Ok(ids)
}

/// Whether `tree.root` exists (a missing root holds nothing); an error if it is no
/// directory or cannot be inspected.
fn check_root(tree: &Tree) -> Result<bool, CoreError> {
    match fs::metadata(&tree.root) {
        Ok(m) if m.is_dir() => Ok(true),
        Ok(_) => Err(CoreError::Store(format!(
            "{} root {} is not a directory: expected a directory of shard directories",
            tree.what,
            tree.root.display()
        ))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(listing_err(tree.what, &tree.root, e)),
    }
}

/// For each run id, whether `set` holds it (in parallel on large inputs; the ids are
/// checked in their own order, which keeps memory access sequential).
fn flags(set: &IdSet, run_ids: &[String]) -> Vec<bool> {
    run_ids
        .par_iter()
        .with_min_len(4096)
        .map(|r| set.contains(r))
        .collect()
}

/// For each run id, whether its done marker exists.
pub fn scan_done(layout: &Layout, run_ids: &[String]) -> Result<Vec<bool>, CoreError> {
    if run_ids.is_empty() || !check_root(&layout.done)? {
        return Ok(vec![false; run_ids.len()]);
    }
    let listed = needed_shards(layout, run_ids)
        .par_iter()
        .map(|s| read_ids(layout, &layout.done, s))
        .collect::<Result<Vec<_>, _>>()?;
    let done: IdSet = listed.into_iter().flatten().collect();
    Ok(flags(&done, run_ids))
}

/// What a completion scan found for a list of run ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Per run id: a done marker AND a record file exist.
    pub done: Vec<bool>,
    /// Run ids (in input order) whose done marker exists without a record file.
    pub orphans: Vec<String>,
}

/// Where a run stands by its markers (`metalab.records.StoredState` in Python).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A done marker and the record it vouches for.
    Done,
    /// A failed marker (and not done).
    Failed,
    /// Neither: never run, running, or a done marker without its record.
    Absent,
}

/// What a state scan found for a list of run ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct States {
    /// One state per run id.
    pub states: Vec<State>,
    /// Run ids (in input order) whose done marker exists without a record file.
    pub orphans: Vec<String>,
}

/// Asked runs of one shard up to which each is looked up by path (at most three `lstat`s:
/// failed marker, done marker, record) instead of listing the shard's three directories.
/// A listing costs ~0.8 us per entry (~2 ms for a shard of 1,200 finished runs, measured
/// on a 300,000-run store), an `lstat` a few us: a poll of a 300,000-run sweep asking
/// about the 1,500 runs of one array task took 0.33 s listing all 256 shards.
pub const STAT_MAX_PER_SHARD: usize = 64;

/// What the markers of one asked run say, found in its shard alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    state: State,
    /// A done marker without its record.
    orphan: bool,
}

impl Seen {
    fn of(failed: bool, marked: bool, stored: bool) -> Seen {
        // Done (marker and record) wins over a failed marker an earlier attempt left.
        let state = if marked && stored {
            State::Done
        } else if failed {
            State::Failed
        } else {
            State::Absent
        };
        Seen {
            state,
            orphan: marked && !stored,
        }
    }
}

const ABSENT: Seen = Seen {
    state: State::Absent,
    orphan: false,
};

/// Per run id, what its markers say (failed markers only looked at when `with_failed`).
/// Each shard is read on its own (in parallel) and its runs are classified against its
/// own small sets: one set of every finished run of a 300,000-run store spent a third of
/// a full scan in cache misses.
fn classify(
    layout: &Layout,
    run_ids: &[String],
    with_failed: bool,
) -> Result<Vec<Seen>, CoreError> {
    classify_with(layout, run_ids, with_failed, STAT_MAX_PER_SHARD)
}

/// [`classify`] looking up shards asked about at most `stat_max` runs by path (the tests
/// give 0 and `usize::MAX` to check both ways against each other).
fn classify_with(
    layout: &Layout,
    run_ids: &[String],
    with_failed: bool,
    stat_max: usize,
) -> Result<Vec<Seen>, CoreError> {
    let mut seen = vec![ABSENT; run_ids.len()];
    let with_done = check_root(&layout.done)?;
    let with_failed = with_failed && check_root(&layout.failed)?;
    if run_ids.is_empty() || !(with_done || with_failed) {
        return Ok(seen);
    }
    let found = shard_groups(layout, run_ids)
        .par_iter()
        .map(|(s, asked)| {
            if asked.len() <= stat_max {
                look_up(layout, s, asked, with_done, with_failed)
            } else {
                list_shard(layout, s, asked, with_done, with_failed)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    for shard in found {
        for (i, one) in shard {
            seen[i] = one;
        }
    }
    Ok(seen)
}

/// Shard `s` listed: its asked runs (input position, id) classified against its
/// failed markers, done markers and records.
fn list_shard(
    layout: &Layout,
    s: &str,
    asked: &[(usize, &str)],
    with_done: bool,
    with_failed: bool,
) -> Result<Vec<(usize, Seen)>, CoreError> {
    // Failed markers first, then done markers, then records, in the order a run
    // writes them (a retried run's done marker is created before its failed
    // marker goes; a record is renamed into place before its done marker is
    // created): a run finishing during the scan is seen in its old state or its
    // new one, and never taken for an orphan.
    let failed: IdSet = if with_failed {
        read_ids(layout, &layout.failed, s)?.into_iter().collect()
    } else {
        IdSet::default()
    };
    let marked: IdSet = if with_done {
        read_ids(layout, &layout.done, s)?.into_iter().collect()
    } else {
        IdSet::default()
    };
    let records: IdSet = if marked.is_empty() {
        IdSet::default()
    } else {
        read_ids(layout, &layout.records, s)?.into_iter().collect()
    };
    // An empty set is not asked: each lookup parses the id first (most shards have no
    // failed marker at all).
    let any_failed = !failed.is_empty();
    Ok(asked
        .iter()
        .map(|&(i, id)| {
            let done = marked.contains(id);
            let failed = any_failed && failed.contains(id);
            (i, Seen::of(failed, done, done && records.contains(id)))
        })
        .collect())
}

/// What [`list_shard`] would find of the asked runs of shard `s`, by one path per file:
/// per run in the same order (failed marker, done marker, then its record).
fn look_up(
    layout: &Layout,
    s: &str,
    asked: &[(usize, &str)],
    with_done: bool,
    with_failed: bool,
) -> Result<Vec<(usize, Seen)>, CoreError> {
    let mut found = Vec::with_capacity(asked.len());
    for &(i, id) in asked {
        // A listing only yields visible names of one path component.
        if id.starts_with('.') || id.contains(['/', '\0']) {
            continue;
        }
        let failed = with_failed && exists(&layout.failed, s, id)?;
        let marked = with_done && exists(&layout.done, s, id)?;
        let stored = marked && exists(&layout.records, s, id)?;
        found.push((i, Seen::of(failed, marked, stored)));
    }
    Ok(found)
}

/// Whether `{tree.root}/{s}/{id}{suffix}` is there (any kind of entry, as a listing sees).
fn exists(tree: &Tree, s: &str, id: &str) -> Result<bool, CoreError> {
    let path = tree.file(s, id);
    match fs::symlink_metadata(&path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(CoreError::Store(format!(
            "cannot look up {} {}: {e}",
            tree.what,
            path.display()
        ))),
    }
}

/// The run ids (in input order) whose done marker has no record.
fn orphans(seen: &[Seen], run_ids: &[String]) -> Vec<String> {
    run_ids
        .iter()
        .zip(seen)
        .filter(|(_r, one)| one.orphan)
        .map(|(r, _one)| r.clone())
        .collect()
}

/// For each run id, whether it is done: its done marker and its record file both exist.
/// Markers without a record are listed in `orphans` (a record deleted after the run
/// finished): such a run is not done.
pub fn scan_completed(layout: &Layout, run_ids: &[String]) -> Result<Completion, CoreError> {
    let seen = classify(layout, run_ids, false)?;
    Ok(Completion {
        done: seen.iter().map(|one| one.state == State::Done).collect(),
        orphans: orphans(&seen, run_ids),
    })
}

/// For each run id, its [`State`]: done as in [`scan_completed`] (which wins over a failed
/// marker left by an earlier attempt), else failed when a failed marker exists, else
/// absent; plus the orphans, as in [`scan_completed`]. One pass over the needed shards.
pub fn scan_states(layout: &Layout, run_ids: &[String]) -> Result<States, CoreError> {
    let seen = classify(layout, run_ids, true)?;
    Ok(States {
        states: seen.iter().map(|one| one.state).collect(),
        orphans: orphans(&seen, run_ids),
    })
}

/// The asked runs (input position, id) of each needed shard (non-empty ids only), shards
/// in first-seen order; two-character shards of ASCII ids through a 64 Ki-entry table,
/// as [`needed_shards`].
fn shard_groups<'a>(layout: &Layout, run_ids: &'a [String]) -> Vec<Group<'a>> {
    let mut groups: Vec<Group<'a>> = Vec::new();
    let mut others: HashMap<&str, usize> = HashMap::new();
    let mut slot_of = vec![usize::MAX; if layout.shard_width == 2 { 1 << 16 } else { 0 }];
    for (i, r) in run_ids.iter().enumerate() {
        let b = r.as_bytes();
        let at = if !slot_of.is_empty() && b.len() >= 2 && b[0].is_ascii() && b[1].is_ascii() {
            let slot = (b[0] as usize) << 8 | b[1] as usize;
            if slot_of[slot] == usize::MAX {
                slot_of[slot] = groups.len();
                groups.push((&r[..2], Vec::new()));
            }
            slot_of[slot]
        } else if !r.is_empty() {
            let s = layout.shard_of(r);
            *others.entry(s).or_insert_with(|| {
                groups.push((s, Vec::new()));
                groups.len() - 1
            })
        } else {
            continue;
        };
        groups[at].1.push((i, r.as_str()));
    }
    groups
}

/// A shard and its asked runs (input position, id).
type Group<'a> = (&'a str, Vec<(usize, &'a str)>);

/// The distinct non-empty shard names of `run_ids`. Two-character shards of ASCII ids
/// (all run ids, with metalab's shard width 2) are collected through a 64 Ki-entry table
/// instead of hashing every id.
fn needed_shards<'a>(layout: &Layout, run_ids: &'a [String]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut others: HashSet<&str> = HashSet::new();
    let mut seen = vec![false; if layout.shard_width == 2 { 1 << 16 } else { 0 }];
    for r in run_ids {
        let b = r.as_bytes();
        if !seen.is_empty() && b.len() >= 2 && b[0].is_ascii() && b[1].is_ascii() {
            let slot = (b[0] as usize) << 8 | b[1] as usize;
            if !seen[slot] {
                seen[slot] = true;
                out.push(&r[..2]);
            }
        } else if !r.is_empty() && others.insert(layout.shard_of(r)) {
            out.push(layout.shard_of(r));
        }
    }
    out
}

/// Every run id with a done marker, sorted.
pub fn list_done(layout: &Layout) -> Result<Vec<String>, CoreError> {
    let tree = &layout.done;
    if !check_root(tree)? {
        return Ok(Vec::new());
    }
    let root = &tree.root;
    let err = |e| listing_err(tree.what, root, e);
    let mut shards = Vec::new();
    for entry in fs::read_dir(root).map_err(err)? {
        let entry = entry.map_err(err)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.is_empty() || name.starts_with('.') {
            continue;
        }
        let ft = entry.file_type().map_err(err)?;
        if ft.is_dir() || (ft.is_symlink() && entry.path().is_dir()) {
            shards.push(name.to_string());
        }
    }
    let found = shards
        .par_iter()
        .map(|s| read_ids(layout, tree, s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ids: Vec<String> = found.into_iter().flatten().collect();
    ids.sort_unstable();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::test_layout;
    use std::path::PathBuf;

    fn tmpdir(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "metalab-scan-{}-{}-{}",
            tag,
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"").unwrap();
    }

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn scan_and_list() {
        let root = tmpdir("a");
        let layout = test_layout(&root);
        let done = root.join("done");
        touch(&done, "ab/abc1.done");
        touch(&done, "ab/.abc2.done.tmp");
        touch(&done, "ab/abc3.tmp");
        touch(&done, "cd/cd99.done");
        touch(&done, "cd/ab77.done"); // wrong shard: ignored
        let ids = ids(&["abc1", "abc2", "abc3", "cd99", "ab77", "ef00", "x"]);
        assert_eq!(
            scan_done(&layout, &ids).unwrap(),
            vec![true, false, false, true, false, false, false]
        );
        assert_eq!(list_done(&layout).unwrap(), vec!["abc1", "cd99"]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_layout_decides_suffix_and_shard() {
        let root = tmpdir("w");
        let mut layout = test_layout(&root);
        layout.done.suffix = ".ok".into();
        layout.shard_width = 3;
        touch(&root, "done/abc/abcd.ok");
        touch(&root, "done/ab/abce.ok"); // the 2-character shard is the wrong one now
        touch(&root, "done/abc/abcf.done");
        let ids = ids(&["abcd", "abce", "abcf"]);
        assert_eq!(scan_done(&layout, &ids).unwrap(), vec![true, false, false]);
        assert_eq!(list_done(&layout).unwrap(), vec!["abcd"]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn missing_root_is_nothing_done() {
        let layout = test_layout(&tmpdir("b").join("missing"));
        assert_eq!(scan_done(&layout, &ids(&["abcd"])).unwrap(), vec![false]);
        assert!(list_done(&layout).unwrap().is_empty());
        let states = scan_states(&layout, &ids(&["abcd"])).unwrap();
        assert_eq!(states.states, vec![State::Absent]);
    }

    #[test]
    fn root_is_a_file() {
        let dir = tmpdir("c");
        let mut layout = test_layout(&dir);
        layout.done.root = dir.join("file");
        fs::write(&layout.done.root, b"x").unwrap();
        let e = scan_done(&layout, &ids(&["abcd"])).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        let mut layout = test_layout(&dir);
        layout.failed.root = dir.join("file");
        let e = scan_states(&layout, &ids(&["abcd"])).unwrap_err();
        assert!(e.to_string().starts_with("failure markers root"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hex_ids_and_other_ids_mix() {
        let root = tmpdir("d");
        let layout = test_layout(&root);
        let hex = "0123456789abcdef0123456789abcdef".to_string();
        let upper = "0123456789ABCDEF0123456789ABCDEF".to_string();
        touch(&root, &format!("done/01/{hex}.done"));
        touch(&root, "done/zz/zzz.done");
        let ids = vec![hex.clone(), upper, "zzz".to_string(), "zzy".to_string()];
        assert_eq!(
            scan_done(&layout, &ids).unwrap(),
            vec![true, false, true, false]
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn completion_needs_the_record_too() {
        let root = tmpdir("e");
        let layout = test_layout(&root);
        let (done, runs) = (root.join("done"), root.join("runs"));
        let hex = "ab23456789abcdef0123456789abcdef".to_string();
        touch(&done, &format!("ab/{hex}.done"));
        touch(&runs, &format!("ab/{hex}.json"));
        touch(&done, "ab/abc1.done"); // record deleted: an orphan
        touch(&done, "cd/cd99.done");
        touch(&runs, "cd/cd99.json");
        touch(&runs, "cd/.cd77.json.tmp");
        touch(&done, "cd/cd77.done"); // only a hidden temporary: not a record
        touch(&runs, "ef/ef00.json"); // a record without marker is not done
        let ids = ids(&[hex.as_str(), "abc1", "cd99", "cd77", "ef00", "zz"]);
        let found = scan_completed(&layout, &ids).unwrap();
        assert_eq!(found.done, vec![true, false, true, false, false, false]);
        assert_eq!(found.orphans, vec!["abc1", "cd77"]);
        let empty = scan_completed(&test_layout(&root.join("none")), &ids).unwrap();
        assert_eq!(empty.done, vec![false; ids.len()]);
        assert!(empty.orphans.is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn states_in_one_scan() {
        let root = tmpdir("f");
        let layout = test_layout(&root);
        touch(&root, "done/ab/ab01.done");
        touch(&root, "runs/ab/ab01.json");
        touch(&root, "failed/ab/ab02.failed");
        touch(&root, "failed/ab/.ab03.failed.tmp"); // a temporary: not a marker
        touch(&root, "done/ab/ab04.done"); // orphan with a failed marker: failed
        touch(&root, "failed/ab/ab04.failed");
        touch(&root, "done/cd/cd05.done"); // orphan: absent
        touch(&root, "done/cd/cd06.done"); // done wins over an old failed marker
        touch(&root, "runs/cd/cd06.json");
        touch(&root, "failed/cd/cd06.failed");
        touch(&root, "failed/cd/ab07.failed"); // wrong shard
        touch(&root, "failed/ef/ef08.failed"); // only a failed tree for this shard
        let ids = ids(&[
            "ab01", "ab02", "ab03", "ab04", "cd05", "cd06", "ab07", "ef08", "gh09",
        ]);
        let got = scan_states(&layout, &ids).unwrap();
        use State::*;
        assert_eq!(
            got.states,
            vec![Done, Failed, Absent, Failed, Absent, Done, Absent, Failed, Absent]
        );
        assert_eq!(got.orphans, vec!["ab04", "cd05"]);
        let completed = scan_completed(&layout, &ids).unwrap();
        let done: Vec<bool> = got.states.iter().map(|s| *s == Done).collect();
        assert_eq!((completed.done, completed.orphans), (done, got.orphans));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn looking_up_finds_what_listing_finds() {
        let root = tmpdir("g");
        let layout = test_layout(&root);
        touch(&root, "done/ab/ab01.done");
        touch(&root, "runs/ab/ab01.json");
        touch(&root, "failed/ab/ab02.failed");
        touch(&root, "failed/ab/.ab03.failed"); // hidden: not a marker
        touch(&root, "done/ab/ab04.done"); // orphan with a failed marker
        touch(&root, "failed/ab/ab04.failed");
        touch(&root, "done/cd/cd05.done"); // orphan
        touch(&root, "failed/cd/ab07.failed"); // wrong shard
        fs::create_dir_all(root.join("done/ef/ef09.done")).unwrap(); // a directory entry
        touch(&root, "runs/ef/ef09.json");
        let ids = ids(&[
            "ab01", "ab02", "ab03", ".ab03", "ab04", "cd05", "ab07", "ef09", "gh", "", "ab/x",
        ]);
        let by_path = classify_with(&layout, &ids, true, usize::MAX).unwrap();
        let listed = classify_with(&layout, &ids, true, 0).unwrap();
        assert_eq!(by_path, listed);
        use State::*;
        let states: Vec<State> = listed.iter().map(|one| one.state).collect();
        let orphans: Vec<bool> = listed.iter().map(|one| one.orphan).collect();
        let (t, f) = (true, false);
        assert_eq!(
            states,
            vec![
                Done, Failed, Absent, Absent, Failed, Absent, Absent, Done, Absent, Absent, Absent
            ]
        );
        assert_eq!(orphans, vec![f, f, f, f, t, t, f, f, f, f, f]);
        fs::remove_dir_all(&root).unwrap();
    }
}
