//! The line format of a results-index segment: checksum, parse, record identity.
//!
//! `{sum} {run_id} {ino} {mtime_ns} {size} {summary JSON}\n` (see the parent module and
//! `docs/storage.md`, "Results index").

use std::fs;
#[cfg(unix)]
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rayon::prelude::*;

use crate::fingerprint::{blake2b, to_hex};

/// Bytes of the line checksum (16 hex characters).
pub const SUM_BYTES: usize = 8;

/// The identity of one version of a record file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub ino: u64,
    pub mtime_ns: i128,
    pub size: u64,
}

/// One valid line of a segment, borrowing the segment's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub run_id: &'a str,
    pub file: FileId,
    /// The summary document (a record document without its heavy parts).
    pub doc: &'a str,
}

/// The checksum field of a line whose body (after `{sum} `) is `body`.
pub fn checksum(body: &[u8]) -> String {
    to_hex(&blake2b::<SUM_BYTES>(&[body]))
}

/// Parse one line (without its newline); `None` when torn, corrupt or malformed.
pub fn parse_line(line: &[u8]) -> Option<Entry<'_>> {
    let width = 2 * SUM_BYTES;
    if line.len() <= width + 1 || line[width] != b' ' {
        return None;
    }
    let (sum, body) = (&line[..width], &line[width + 1..]);
    if checksum(body).as_bytes() != sum {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    let mut fields = text.splitn(5, ' ');
    let run_id = fields.next()?;
    let ino = fields.next()?.parse().ok()?;
    let mtime_ns = fields.next()?.parse().ok()?;
    let size = fields.next()?.parse().ok()?;
    let doc = fields.next()?;
    if run_id.is_empty() || doc.is_empty() {
        return None;
    }
    Some(Entry {
        run_id,
        file: FileId {
            ino,
            mtime_ns,
            size,
        },
        doc,
    })
}

/// The valid lines of a segment's bytes (parsed in parallel) and the number of bad
/// ones. Only lines ended by a newline count: a last line without one is an append in
/// progress or torn.
pub fn parse_segment(data: &[u8]) -> (Vec<Entry<'_>>, usize) {
    let complete = match data.iter().rposition(|&b| b == b'\n') {
        Some(end) => &data[..end],
        None => return (Vec::new(), usize::from(!data.is_empty())),
    };
    let torn = usize::from(complete.len() + 1 < data.len());
    let parsed: Vec<Option<Entry<'_>>> = complete
        .par_split(|&b| b == b'\n')
        .map(parse_line)
        .collect();
    let bad = parsed.iter().filter(|e| e.is_none()).count();
    (parsed.into_iter().flatten().collect(), bad + torn)
}

/// The identity of the file at `path` (following a link, as reading it does).
pub fn file_id(path: &Path) -> std::io::Result<FileId> {
    let meta = fs::metadata(path)?;
    Ok(FileId {
        ino: meta.ino(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        size: meta.size(),
    })
}
