//! Completion-marker scans.
//!
//! A finished run leaves `{done_root}/{run_id[:2]}/{run_id}.done`. Scans read each shard
//! directory once (in parallel) instead of stat-ing one path per run. A missing root or
//! shard directory means nothing in it is done. Names starting with `.` (temp files) and
//! names not ending in `.done` are ignored, as are markers filed under the wrong shard.

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use rayon::prelude::*;

use crate::CoreError;

pub const MARKER_SUFFIX: &str = ".done";

/// The shard directory name of a run id: its first two characters.
pub fn shard_of(run_id: &str) -> &str {
    match run_id.char_indices().nth(2) {
        Some((i, _)) => &run_id[..i],
        None => run_id,
    }
}

fn store_err(path: &Path, e: std::io::Error) -> CoreError {
    CoreError::Store(format!(
        "cannot read completion markers in {}: {}",
        path.display(),
        e
    ))
}

/// Run ids with a marker in shard directory `shard` (empty if it does not exist).
pub fn read_shard(root: &Path, shard: &str) -> Result<Vec<String>, CoreError> {
    let dir = root.join(shard);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(store_err(&dir, e)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| store_err(&dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let Some(id) = name.strip_suffix(MARKER_SUFFIX) else {
            continue;
        };
        if !id.is_empty() && shard_of(id) == shard {
            ids.push(id.to_string());
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
    let shards: HashSet<&str> = run_ids.iter().map(|r| shard_of(r)).collect();
    let shards: Vec<&str> = shards.into_iter().filter(|s| !s.is_empty()).collect();
    let found = shards
        .par_iter()
        .map(|s| read_shard(root, s))
        .collect::<Result<Vec<_>, _>>()?;
    let done: HashSet<&str> = found.iter().flatten().map(|s| s.as_str()).collect();
    Ok(run_ids.iter().map(|r| done.contains(r.as_str())).collect())
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
    fn shards() {
        assert_eq!(shard_of("abcdef"), "ab");
        assert_eq!(shard_of("a"), "a");
        assert_eq!(shard_of("éàx"), "éà");
    }
}
