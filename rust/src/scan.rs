//! Completion-marker scans.
//!
//! A finished run leaves `{done_root}/{run_id[:2]}/{run_id}.done`. Scans read each shard
//! directory once (in parallel) instead of stat-ing one path per run. A missing root or
//! shard directory means nothing in it is done. Names starting with `.` (temp files) and
//! names not ending in `.done` are ignored, as are markers filed under the wrong shard.
//!
//! `scan_completed` (what resume and status use) also lists the record shard
//! `{runs_root}/{run_id[:2]}/` of every shard that has markers: a marker only counts when
//! `{run_id}.json` is there too, and markers without it are returned so they can be
//! reported. Two listings per shard, never a `stat` per run.

use std::collections::HashSet;
use std::fs;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::ErrorKind;
use std::path::Path;

use rayon::prelude::*;

use crate::CoreError;

pub const MARKER_SUFFIX: &str = ".done";
/// Suffix of a record file in a record shard directory.
pub const RECORD_SUFFIX: &str = ".json";

/// The shard directory name of a run id: its first two characters.
pub fn shard_of(run_id: &str) -> &str {
    match run_id.char_indices().nth(2) {
        Some((i, _)) => &run_id[..i],
        None => run_id,
    }
}

fn store_err(path: &Path, e: std::io::Error) -> CoreError {
    listing_err("completion markers", path, e)
}

fn listing_err(what: &str, path: &Path, e: std::io::Error) -> CoreError {
    CoreError::Store(format!("cannot read {what} in {}: {e}", path.display()))
}

/// Run ids with a marker in shard directory `shard` (empty if it does not exist).
pub fn read_shard(root: &Path, shard: &str) -> Result<Vec<String>, CoreError> {
    read_ids(root, shard, MARKER_SUFFIX, "completion markers")
}

/// Run ids `id` with a visible `{id}{suffix}` in `root/shard` filed under the right shard.
fn read_ids(root: &Path, shard: &str, suffix: &str, what: &str) -> Result<Vec<String>, CoreError> {
    let dir = root.join(shard);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(listing_err(what, &dir, e)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| listing_err(what, &dir, e))?;
        // One allocation per marker: the OsString itself becomes the id.
        let Ok(mut name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') || !name.ends_with(suffix) {
            continue;
        }
        name.truncate(name.len() - suffix.len());
        if !name.is_empty() && shard_of(&name) == shard {
            ids.push(name);
        }
    }
    Ok(ids)
}

fn check_root(root: &Path) -> Result<bool, CoreError> {
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok(true),
        Ok(_) => Err(CoreError::Store(format!(
            "done root {} is not a directory: expected a directory of shard directories",
            root.display()
        ))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(store_err(root, e)),
    }
}

/// For each run id, whether its marker exists.
pub fn scan_done(root: &Path, run_ids: &[String]) -> Result<Vec<bool>, CoreError> {
    if run_ids.is_empty() || !check_root(root)? {
        return Ok(vec![false; run_ids.len()]);
    }
    // List each needed shard once, in parallel. Ids that are 32 lower-case hex digits (all
    // run ids) are compared as u128s, anything else as strings. The ids are then checked
    // in their own order, which keeps memory access sequential on large inputs.
    let shards = needed_shards(run_ids);
    let listed = shards
        .par_iter()
        .map(|s| read_shard(root, s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut hex_done: HashSet<u128, BuildIdHasher> = HashSet::default();
    let mut other_done: HashSet<String> = HashSet::new();
    for name in listed.into_iter().flatten() {
        match hex_key(&name) {
            Some(k) => {
                hex_done.insert(k);
            }
            None => {
                other_done.insert(name);
            }
        }
    }
    Ok(run_ids
        .par_iter()
        .with_min_len(4096)
        .map(|r| match hex_key(r) {
            Some(k) => hex_done.contains(&k),
            None => other_done.contains(r.as_str()),
        })
        .collect())
}

/// A set of run ids: 32-digit hex ids (all real ones) as u128s, anything else as strings.
#[derive(Default)]
struct IdSet {
    hex: HashSet<u128, BuildIdHasher>,
    other: HashSet<String>,
}

impl IdSet {
    fn insert(&mut self, id: String) {
        match hex_key(&id) {
            Some(k) => {
                self.hex.insert(k);
            }
            None => {
                self.other.insert(id);
            }
        }
    }

    fn contains(&self, id: &str) -> bool {
        match hex_key(id) {
            Some(k) => self.hex.contains(&k),
            None => self.other.contains(id),
        }
    }
}

impl FromIterator<String> for IdSet {
    fn from_iter<I: IntoIterator<Item = String>>(ids: I) -> Self {
        let mut set = IdSet::default();
        for id in ids {
            set.insert(id);
        }
        set
    }
}

/// What a completion scan found for a list of run ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Per run id: a done marker AND a record file exist.
    pub done: Vec<bool>,
    /// Run ids (in input order) whose done marker exists without a record file.
    pub orphans: Vec<String>,
}

/// For each run id, whether it is done: its marker under `done_root` and its record
/// `{runs_root}/{shard}/{run_id}.json` both exist. Markers without a record are listed
/// in `orphans` (a record deleted after the run finished): such a run is not done.
pub fn scan_completed(
    done_root: &Path,
    runs_root: &Path,
    run_ids: &[String],
) -> Result<Completion, CoreError> {
    let nothing = || Completion {
        done: vec![false; run_ids.len()],
        orphans: Vec::new(),
    };
    if run_ids.is_empty() || !check_root(done_root)? {
        return Ok(nothing());
    }
    let shards = needed_shards(run_ids);
    let listed = shards
        .par_iter()
        .map(|s| -> Result<(Vec<String>, Vec<String>), CoreError> {
            let marked = read_shard(done_root, s)?;
            if marked.is_empty() {
                return Ok((marked, Vec::new()));
            }
            // Markers first, then records: a record is renamed into place before its
            // marker is created, so a marker seen here has its record in the listing
            // below unless the record was removed.
            let records: IdSet = read_ids(runs_root, s, RECORD_SUFFIX, "record files")?
                .into_iter()
                .collect();
            Ok(marked.into_iter().partition(|id| records.contains(id)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut done = IdSet::default();
    let mut orphaned = IdSet::default();
    for (with_record, without) in listed {
        with_record.into_iter().for_each(|id| done.insert(id));
        without.into_iter().for_each(|id| orphaned.insert(id));
    }
    let flags = run_ids
        .par_iter()
        .with_min_len(4096)
        .map(|r| done.contains(r))
        .collect();
    let orphans = if orphaned.hex.is_empty() && orphaned.other.is_empty() {
        Vec::new()
    } else {
        run_ids
            .iter()
            .filter(|r| orphaned.contains(r))
            .cloned()
            .collect()
    };
    Ok(Completion {
        done: flags,
        orphans,
    })
}

/// The distinct non-empty shard names of `run_ids`; two-ASCII-byte shards (all run ids)
/// are collected through a 64 Ki-entry table instead of hashing every id.
fn needed_shards(run_ids: &[String]) -> Vec<&str> {
    let mut seen = vec![false; 1 << 16];
    let mut out = Vec::new();
    let mut others: HashSet<&str> = HashSet::new();
    for r in run_ids {
        let b = r.as_bytes();
        if b.len() >= 2 && b[0].is_ascii() && b[1].is_ascii() {
            let slot = (b[0] as usize) << 8 | b[1] as usize;
            if !seen[slot] {
                seen[slot] = true;
                out.push(&r[..2]);
            }
        } else if !r.is_empty() && others.insert(shard_of(r)) {
            out.push(shard_of(r));
        }
    }
    out
}

/// Hashes the u128 keys of hex run ids (BLAKE2 outputs, already uniform) with one
/// multiply instead of SipHash; other input falls back to FNV-1a.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u128(&mut self, v: u128) {
        let x = (v as u64) ^ ((v >> 64) as u64).rotate_left(32);
        self.0 = x.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
}

type BuildIdHasher = BuildHasherDefault<IdHasher>;

/// The value of a 32-digit lower-case hex id (the run-id format); `None` for anything
/// else. Injective on the ids it accepts, so comparing keys equals comparing strings.
pub fn hex_key(id: &str) -> Option<u128> {
    if id.len() != 32 {
        return None;
    }
    let mut v: u128 = 0;
    for b in id.bytes() {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u128;
    }
    Some(v)
}

/// Every run id with a marker under `done_root`, sorted.
pub fn list_done(root: &Path) -> Result<Vec<String>, CoreError> {
    if !check_root(root)? {
        return Ok(Vec::new());
    }
    let mut shards = Vec::new();
    for entry in fs::read_dir(root).map_err(|e| store_err(root, e))? {
        let entry = entry.map_err(|e| store_err(root, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.is_empty() || name.starts_with('.') {
            continue;
        }
        let ft = entry.file_type().map_err(|e| store_err(root, e))?;
        if ft.is_dir() || (ft.is_symlink() && entry.path().is_dir()) {
            shards.push(name.to_string());
        }
    }
    let found = shards
        .par_iter()
        .map(|s| read_shard(root, s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ids: Vec<String> = found.into_iter().flatten().collect();
    ids.sort_unstable();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn scan_and_list() {
        let root = tmpdir("a");
        touch(&root, "ab/abc1.done");
        touch(&root, "ab/.abc2.done.tmp");
        touch(&root, "ab/abc3.tmp");
        touch(&root, "cd/cd99.done");
        touch(&root, "cd/ab77.done"); // wrong shard: ignored
        let ids: Vec<String> = ["abc1", "abc2", "abc3", "cd99", "ab77", "ef00", "x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let root_s = root.as_path();
        assert_eq!(
            scan_done(root_s, &ids).unwrap(),
            vec![true, false, false, true, false, false, false]
        );
        assert_eq!(list_done(root_s).unwrap(), vec!["abc1", "cd99"]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn missing_root_is_nothing_done() {
        let root = tmpdir("b").join("missing");
        let s = root.as_path();
        assert_eq!(scan_done(s, &["abcd".to_string()]).unwrap(), vec![false]);
        assert!(list_done(s).unwrap().is_empty());
    }

    #[test]
    fn root_is_a_file() {
        let dir = tmpdir("c");
        let f = dir.join("file");
        fs::write(&f, b"x").unwrap();
        let e = scan_done(&f, &["abcd".to_string()]).unwrap_err();
        assert!(e.to_string().contains("not a directory"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hex_ids_and_other_ids_mix() {
        let root = tmpdir("d");
        let hex = "0123456789abcdef0123456789abcdef".to_string();
        let upper = "0123456789ABCDEF0123456789ABCDEF".to_string();
        touch(&root, &format!("01/{hex}.done"));
        touch(&root, "zz/zzz.done");
        let ids = vec![hex.clone(), upper, "zzz".to_string(), "zzy".to_string()];
        assert_eq!(
            scan_done(&root, &ids).unwrap(),
            vec![true, false, true, false]
        );
        assert_eq!(hex_key(&hex), Some(0x0123456789abcdef0123456789abcdef));
        assert_eq!(hex_key("0123456789ABCDEF0123456789abcdef"), None);
        assert_eq!(hex_key("abc"), None);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn completion_needs_the_record_too() {
        let root = tmpdir("e");
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
        let ids: Vec<String> = [hex.as_str(), "abc1", "cd99", "cd77", "ef00", "zz"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let found = scan_completed(&done, &runs, &ids).unwrap();
        assert_eq!(found.done, vec![true, false, true, false, false, false]);
        assert_eq!(found.orphans, vec!["abc1", "cd77"]);
        let empty = scan_completed(&root.join("none"), &runs, &ids).unwrap();
        assert_eq!(empty.done, vec![false; ids.len()]);
        assert!(empty.orphans.is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn shards() {
        assert_eq!(shard_of("abcdef"), "ab");
        assert_eq!(shard_of("a"), "a");
        assert_eq!(shard_of("éàx"), "éà");
    }
}
