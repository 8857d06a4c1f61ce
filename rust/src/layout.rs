//! The part of a FileStore's on-disk layout that the scanners read, given to them.
//!
//! The layout is owned by `python/metalab/store/layout.py` (`FileLayout.scan`), which
//! builds one [`Layout`] per store; nothing in this crate knows a directory name, a file
//! suffix or the shard rule on its own. A run's file of some kind sits at
//! `{tree.root}/{shard}/{run_id}{tree.suffix}`, where `shard` is the first `shard_width`
//! characters of the run id (see [`Layout::shard_of`]).

use std::path::{Path, PathBuf};

use crate::CoreError;

/// One run-keyed, sharded directory tree: record files, done or failed markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// The directory holding the shard directories.
    pub root: PathBuf,
    /// What a run's file name ends with after its run id (e.g. `.done`).
    pub suffix: String,
    /// What the files are, for error messages (e.g. "completion markers").
    pub what: &'static str,
}

impl Tree {
    /// The run id a file name in this tree stands for: the name without the suffix, or
    /// `None` for a hidden name (temporaries start with `.`) or one with another suffix.
    pub fn id_of<'a>(&self, name: &'a str) -> Option<&'a str> {
        if name.starts_with('.') {
            return None;
        }
        name.strip_suffix(self.suffix.as_str())
            .filter(|id| !id.is_empty())
    }

    /// `{root}/{shard}/{run_id}{suffix}`.
    pub fn file(&self, shard: &str, run_id: &str) -> PathBuf {
        let mut name = String::with_capacity(run_id.len() + self.suffix.len());
        name.push_str(run_id);
        name.push_str(&self.suffix);
        self.root.join(shard).join(name)
    }
}

/// Where the scanners look: the record, done-marker and failed-marker trees and the
/// shard rule they share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub records: Tree,
    pub done: Tree,
    pub failed: Tree,
    /// Number of leading run-id characters naming a run's shard directory.
    pub shard_width: usize,
}

/// Names of the layout's parts, for [`Layout::new`]: `(root, suffix)` per tree.
pub struct Parts<'a> {
    pub records: (&'a Path, &'a str),
    pub done: (&'a Path, &'a str),
    pub failed: (&'a Path, &'a str),
    pub shard_width: i64,
}

fn check_suffix(what: &str, suffix: &str) -> Result<(), CoreError> {
    // A suffix is part of one file name: a separator would make the scanners look into
    // other directories, and an empty one would count every file (temporaries aside).
    if suffix.is_empty() || suffix.contains(['/', '\\', '\0']) {
        return Err(CoreError::Store(format!(
            "{what} = {}: expected a non-empty file-name suffix such as '.json' (no '/', \
             '\\\\' or NUL)",
            crate::encoding::quote_str(suffix)
        )));
    }
    Ok(())
}

impl Layout {
    /// A checked layout.
    ///
    /// Errors ([`CoreError::Store`]) name the bad part: an empty suffix or one holding a
    /// path separator, or a shard width outside 1..=32 (a run id has 32 characters).
    pub fn new(parts: Parts<'_>) -> Result<Layout, CoreError> {
        check_suffix("record_suffix", parts.records.1)?;
        check_suffix("done_suffix", parts.done.1)?;
        check_suffix("failed_suffix", parts.failed.1)?;
        if !(1..=32).contains(&parts.shard_width) {
            return Err(CoreError::Store(format!(
                "shard_width = {}: expected an int in 1..=32 (characters of a run id)",
                parts.shard_width
            )));
        }
        let tree = |(root, suffix): (&Path, &str), what| Tree {
            root: root.to_path_buf(),
            suffix: suffix.to_string(),
            what,
        };
        Ok(Layout {
            records: tree(parts.records, "record files"),
            done: tree(parts.done, "completion markers"),
            failed: tree(parts.failed, "failure markers"),
            shard_width: parts.shard_width as usize,
        })
    }

    /// The shard directory name of a run id: its first `shard_width` characters (all of
    /// it when shorter).
    pub fn shard_of<'a>(&self, run_id: &'a str) -> &'a str {
        match run_id.char_indices().nth(self.shard_width) {
            Some((i, _)) => &run_id[..i],
            None => run_id,
        }
    }

    /// The record file of a run.
    pub fn record(&self, run_id: &str) -> PathBuf {
        self.records.file(self.shard_of(run_id), run_id)
    }

    /// The done marker of a run.
    pub fn done_marker(&self, run_id: &str) -> PathBuf {
        self.done.file(self.shard_of(run_id), run_id)
    }
}

/// The layout metalab's FileStore uses under `root`, for the unit tests of this crate
/// (production layouts always come from Python).
#[cfg(test)]
pub fn test_layout(root: &Path) -> Layout {
    Layout::new(Parts {
        records: (&root.join("runs"), ".json"),
        done: (&root.join("done"), ".done"),
        failed: (&root.join("failed"), ".failed"),
        shard_width: 2,
    })
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_and_paths() {
        let layout = test_layout(Path::new("/s"));
        assert_eq!(layout.shard_of("abcdef"), "ab");
        assert_eq!(layout.shard_of("a"), "a");
        assert_eq!(layout.shard_of("éàx"), "éà");
        assert_eq!(layout.record("abcd"), Path::new("/s/runs/ab/abcd.json"));
        assert_eq!(
            layout.done_marker("abcd"),
            Path::new("/s/done/ab/abcd.done")
        );
        let wide = Layout {
            shard_width: 3,
            ..layout.clone()
        };
        assert_eq!(wide.shard_of("abcdef"), "abc");
        assert_eq!(layout.done.id_of("ab12.done"), Some("ab12"));
        for name in [".ab12.done", "ab12.done.tmp", ".done", "ab12.json"] {
            assert_eq!(layout.done.id_of(name), None, "{name}");
        }
    }

    #[test]
    fn bad_parts_are_named() {
        let root = Path::new("/s");
        let parts = |suffix, width| Parts {
            records: (root, ".json"),
            done: (root, suffix),
            failed: (root, ".failed"),
            shard_width: width,
        };
        for (suffix, width, named) in [
            ("", 2, "done_suffix = ''"),
            ("a/b", 2, "done_suffix = 'a/b'"),
            (".done", 0, "shard_width = 0"),
            (".done", 33, "shard_width = 33"),
        ] {
            let e = Layout::new(parts(suffix, width)).unwrap_err().to_string();
            assert!(e.starts_with(named) && e.contains("expected"), "{e}");
        }
        assert!(Layout::new(parts(".done", 32)).is_ok());
    }
}
