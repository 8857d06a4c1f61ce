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

use crate::ids::{hex_key, IdFlags, IdSet};
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

/// Bits of a run in the listings of its shard.
const FAILED: u8 = 1;
const MARKED: u8 = 2;
const STORED: u8 = 4;

/// Shard `s` listed: its asked runs classified against its
/// failed markers, done markers and records.
fn list_shard(
    layout: &Layout,
    s: &str,
    asked: &[Asked<'_>],
    with_done: bool,
    with_failed: bool,
) -> Result<Vec<(usize, Seen)>, CoreError> {
    // Failed markers first, then done markers, then records, in the order a run
    // writes them (a retried run's done marker is created before its failed
    // marker goes; a record is renamed into place before its done marker is
    // created): a run finishing during the scan is seen in its old state or its
    // new one, and never taken for an orphan.
    //
    // One table of bits per run instead of a set per listing: each asked id is parsed
    // and looked up once (three sets cost three parses and three look-ups per id, a
    // quarter of a 300,000-run status scan).
    let mut bits = IdFlags::default();
    if with_failed {
        read_ids(layout, &layout.failed, s)?
            .into_iter()
            .for_each(|id| bits.set(id, FAILED));
    }
    let mut any_marked = false;
    if with_done {
        for id in read_ids(layout, &layout.done, s)? {
            bits.set(id, MARKED);
            any_marked = true;
        }
    }
    if any_marked {
        // Only runs with a done marker need their record: others gain no entry.
        for id in read_ids(layout, &layout.records, s)? {
            bits.set_if(&id, STORED, MARKED);
        }
    }
    if bits.is_empty() {
        return Ok(asked.iter().map(|a| (a.at, ABSENT)).collect());
    }
    Ok(asked
        .iter()
        .map(|a| {
            let (i, b) = (a.at, bits.get_keyed(a.key, a.id));
            (
                i,
                Seen::of(b & FAILED != 0, b & MARKED != 0, b & STORED != 0),
            )
        })
        .collect())
}

/// What [`list_shard`] would find of the asked runs of shard `s`, by one path per file:
/// per run in the same order (failed marker, done marker, then its record).
fn look_up(
    layout: &Layout,
    s: &str,
    asked: &[Asked<'_>],
    with_done: bool,
    with_failed: bool,
) -> Result<Vec<(usize, Seen)>, CoreError> {
    let mut found = Vec::with_capacity(asked.len());
    for &Asked { at: i, id, .. } in asked {
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

/// The asked runs of each needed shard (non-empty ids only), shards in first-seen order;
/// two-character shards of ASCII ids through a 64 Ki-entry table, as [`needed_shards`].
/// Each id's [`hex_key`] is taken here, in one sequential pass over the ids: parsed later,
/// shard by shard, every id was a cache miss again (a quarter of a 300,000-run scan).
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
        groups[at].1.push(Asked {
            at: i,
            id: r.as_str(),
            key: hex_key(r),
        });
    }
    groups
}

/// A shard and its asked runs.
type Group<'a> = (&'a str, Vec<Asked<'a>>);

/// One asked run: its position in the input, its id and the id's [`hex_key`].
#[derive(Debug, Clone, Copy)]
struct Asked<'a> {
    at: usize,
    id: &'a str,
    key: Option<u128>,
}

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
mod tests;
