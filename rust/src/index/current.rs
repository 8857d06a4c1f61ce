//! Whether a column snapshot is still the answer: the records listed now are exactly the
//! record versions it was made from.

use std::path::PathBuf;

use super::io::stat_listed;
use super::snapshot::Snapshot;
use crate::layout::Layout;
use crate::records;

/// True when `saved` answers a load of `experiment_id` whose listing is `listed` (record
/// path and directory-entry inode, in listing order): the same experiment filter, the
/// same record files in the same order with the same inodes, and each file's
/// modification time and size unchanged (`stat`, in inode order, which turns a cold
/// cache's inode reads into mostly sequential ones). Anything else (a run written,
/// rewritten, deleted or edited in place since) is `false`, and the load reads the
/// segments and records instead.
pub fn is_current(
    layout: &Layout,
    saved: &Snapshot,
    listed: &[(PathBuf, u64)],
    experiment_id: Option<&str>,
) -> bool {
    if saved.experiment_id.as_deref() != experiment_id || saved.listed.len() != listed.len() {
        return false;
    }
    let same_names = listed.iter().enumerate().all(|(i, (path, ino))| {
        *ino == saved.listed[i].1.ino && records::stored_id(layout, path) == Some(saved.run_id(i))
    });
    if !same_names {
        return false;
    }
    let mut order: Vec<usize> = (0..listed.len()).collect();
    order.sort_unstable_by_key(|&i| listed[i].1);
    stat_listed(listed, &order)
        .into_iter()
        .zip(&order)
        .all(|(now, &i)| now == Some(saved.listed[i].1))
}
