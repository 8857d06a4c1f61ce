//! Whether a column snapshot is still the answer: the records listed now are exactly the
//! record versions it was made from.

use std::path::PathBuf;

use super::segment::FileId;
use super::snapshot::Snapshot;
use crate::layout::Layout;

/// True when `saved` answers a load of `experiment_id` whose listing is `listed` (record
/// path and directory-entry inode, in listing order) and whose `stat`s found `files`:
/// the same experiment filter, the same record files in the same order with the same
/// inodes, and each file's modification time and size unchanged. Anything else (a run
/// written, rewritten, deleted or edited in place since) is `false`, and the load reads
/// the segments and records instead.
pub fn is_current(
    layout: &Layout,
    saved: &Snapshot,
    listed: &[(PathBuf, u64)],
    files: &[Option<FileId>],
    experiment_id: Option<&str>,
) -> bool {
    if saved.experiment_id.as_deref() != experiment_id || saved.listed.len() != listed.len() {
        return false;
    }
    let suffix = layout.records.suffix.as_bytes();
    let same_names = listed.iter().enumerate().all(|(i, (path, ino))| {
        *ino == saved.listed[i].1.ino && is_record_of(path, saved.run_id(i), suffix)
    });
    same_names
        && files
            .iter()
            .zip(&saved.listed)
            .all(|(now, (_, was))| *now == Some(*was))
}

/// True when `path` is `.../{run_id}{suffix}` (bytes compared: no path parsing per file).
#[cfg(unix)]
fn is_record_of(path: &std::path::Path, run_id: &str, suffix: &[u8]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let Some(rest) = bytes
        .strip_suffix(suffix)
        .and_then(|stem| stem.strip_suffix(run_id.as_bytes()))
    else {
        return false;
    };
    rest.is_empty() || rest.ends_with(b"/")
}

#[cfg(not(unix))]
fn is_record_of(path: &std::path::Path, run_id: &str, suffix: &[u8]) -> bool {
    let wanted = format!("{run_id}{}", String::from_utf8_lossy(suffix));
    path.file_name().and_then(|n| n.to_str()) == Some(wanted.as_str())
}
