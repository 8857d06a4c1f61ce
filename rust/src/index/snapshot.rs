//! The column snapshot: one load's whole answer, compacted into one binary file.
//!
//! A full load through the segments parses every summary line and lays the rows out as
//! columns (at 300,000 runs most of its time). When it found nothing wrong it may save
//! its answer here, together with the identity of every record file it listed (run id,
//! inode, modification time, size). A later load lists and `stat`s the records as
//! always; when every record is exactly the version the snapshot lists (same set, same
//! identities) the snapshot *is* the answer, and neither the segments nor the records are
//! read. Any difference sends the load back to the segments and records (the source of
//! truth), so a snapshot can be stale, missing or corrupt without changing an answer.
//!
//! Format (little endian): `MAGIC`, the body, then the body's length (u64) and checksum
//! (8 bytes, see [`body_sum`]). The body: the experiment filter, the listed records, the
//! columns (see `docs/storage.md`, "Column snapshot").

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use rayon::prelude::*;

use super::segment::FileId;
use crate::columns::{Column, Columns};
use crate::idhash::IdBuild;

/// First bytes of a snapshot file (the last one is the format version).
const MAGIC: &[u8; 8] = b"MLSNAP\x00\x01";
/// After the body: its length (u64) and its checksum (8 bytes).
const TRAILER: usize = 8 + 8;
/// Bytes summed per parallel piece of the checksum.
const SUM_PIECE: usize = 1 << 20;

/// One record file as the snapshot's load listed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub run_id: String,
    pub file: FileId,
}

/// A record file of a decoded snapshot: its run id is the `run_id` of a row, or (a
/// record of another experiment than the load kept) its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    Row(u32),
    Other(String),
}

/// A decoded snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The experiment the load kept (`None`: every experiment).
    pub experiment_id: Option<String>,
    /// Every record file listed, in listing order (by shard, then name).
    pub listed: Vec<(Name, FileId)>,
    /// The modification times of the done-marker directories (see [`DirTimes`]).
    pub done_dirs: DirTimes,
    /// The answer (without problems: a load that found any saves no snapshot).
    pub columns: Columns,
}

impl Snapshot {
    /// The run id of listed record `i`.
    pub fn run_id(&self, i: usize) -> &str {
        match &self.listed[i].0 {
            Name::Row(row) => &self.columns.run_id[*row as usize],
            Name::Other(id) => id,
        }
    }
}

/// A directory tree's own modification time and its visible subdirectories' (by name,
/// sorted): a file created, removed or renamed in any of them changes one.
pub type DirTimes = Vec<(String, i128)>;

/// Where the row of a listed record is not a row of the answer.
const NOT_A_ROW: u32 = u32::MAX;

/// The checksum of a body: a 64-bit sum per MiB (in parallel), summed again with the
/// length. It guards against torn and damaged files, not forgery (whoever may write the
/// store may write its records too): each 8-byte word goes through a bijective mix, so
/// any one changed word changes the sum, and a cryptographic hash here cost more than
/// checking every record's identity.
fn body_sum(body: &[u8]) -> [u8; 8] {
    let pieces: Vec<u64> = body.par_chunks(SUM_PIECE).map(word_sum).collect();
    combine(&pieces, body.len() as u64)
}

/// The checksum of a body of `length` bytes whose pieces summed to `pieces`.
fn combine(pieces: &[u64], length: u64) -> [u8; 8] {
    let mut tail: Vec<u8> = pieces.iter().flat_map(|p| p.to_le_bytes()).collect();
    tail.extend_from_slice(&length.to_le_bytes());
    word_sum(&tail).to_le_bytes()
}

/// One pass of the mix over `bytes` (the last partial word padded with zeros).
fn word_sum(bytes: &[u8]) -> u64 {
    const MIX: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |h: u64, w: u64| (h ^ w).wrapping_mul(MIX).rotate_left(29);
    let mut words = bytes.chunks_exact(8);
    let mut h = 0x6a09_e667_f3bc_c908;
    for word in &mut words {
        h = mix(h, u64::from_le_bytes(word.try_into().unwrap_or_default()));
    }
    let mut last = [0u8; 8];
    last[..words.remainder().len()].copy_from_slice(words.remainder());
    mix(mix(h, u64::from_le_bytes(last)), bytes.len() as u64)
}

/// The bytes of the snapshot of a load of `experiment_id` that listed `listed`, saw
/// the done-marker directories at `done_dirs` and answered `columns` (`None`: a string
/// too long for the format).
pub fn encode(
    experiment_id: Option<&str>,
    listed: &[Listed],
    done_dirs: &DirTimes,
    c: &Columns,
) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    encode_into(&mut bytes, experiment_id, listed, done_dirs, c).ok()?;
    Some(bytes)
}

/// Write the snapshot ([`encode`]'s arguments) to `sink`, a MiB at a time (a whole
/// snapshot in memory first was tens of MB of fresh pages to fault in).
fn encode_into(
    sink: &mut dyn Write,
    experiment_id: Option<&str>,
    listed: &[Listed],
    done_dirs: &DirTimes,
    c: &Columns,
) -> std::io::Result<()> {
    sink.write_all(MAGIC)?;
    let mut body = Out::new(sink);
    body.opt_str(experiment_id);
    body.u32(done_dirs.len() as u32);
    for (name, time) in done_dirs {
        body.str(name);
        body.bytes(&time.to_le_bytes());
    }
    body.u64(c.len() as u64);
    c.run_id.iter().for_each(|s| body.str(s));
    // Experiment ids and statuses repeat: a table, then one index per row.
    for strings in [&c.experiment_id, &c.status] {
        let mut table: Vec<&str> = Vec::new();
        let mut slot: HashMap<&str, u32> = HashMap::new();
        let mut last: Option<(&str, u32)> = None;
        let rows: Vec<u32> = strings
            .iter()
            .map(|s| {
                // Rows come sorted by experiment: mostly the value of the row before.
                if let Some((_, index)) = last.filter(|(value, _)| *value == s.as_str()) {
                    return index;
                }
                let index = *slot.entry(s.as_str()).or_insert_with(|| {
                    table.push(s);
                    (table.len() - 1) as u32
                });
                last = Some((s.as_str(), index));
                index
            })
            .collect();
        body.u32(table.len() as u32);
        table.iter().for_each(|s| body.str(s));
        rows.iter().for_each(|&i| body.u32(i));
    }
    c.task_index.iter().for_each(|&v| body.i64(v));
    c.replicate.iter().for_each(|&v| body.i64(v));
    for v in &c.duration_s {
        match v {
            Some(f) => {
                body.byte(1);
                body.f64(*f);
            }
            None => body.byte(0),
        }
    }
    c.started_at.iter().for_each(|s| body.opt_str(s.as_deref()));
    for group in [&c.params, &c.metrics] {
        body.u32(group.len() as u32);
        for column in group {
            body.str(&column.name);
            body.u64(column.first_row as u64);
            body.u64(column.position as u64);
            column.values.iter().for_each(|cell| body.cell(cell));
        }
    }
    let row_of: HashMap<&str, u32, IdBuild> = c
        .run_id
        .iter()
        .enumerate()
        .map(|(row, id)| (id.as_str(), row as u32))
        .collect();
    body.u64(listed.len() as u64);
    for item in listed {
        match row_of.get(item.run_id.as_str()) {
            Some(&row) => body.u32(row),
            None => {
                body.u32(NOT_A_ROW);
                body.str(&item.run_id);
            }
        }
        body.u64(item.file.ino);
        body.bytes(&item.file.mtime_ns.to_le_bytes());
        body.u64(item.file.size);
    }
    body.finish()
}

/// Decode a snapshot file's bytes; `None` for anything that is not a whole, intact
/// snapshot of this format (torn, flipped, another version): the load then reads the
/// segments and records, as without a snapshot.
pub fn decode(data: &[u8]) -> Option<Snapshot> {
    if data.len() < MAGIC.len() + TRAILER || &data[..MAGIC.len()] != MAGIC {
        return None;
    }
    let (body, trailer) = data[MAGIC.len()..].split_at(data.len() - MAGIC.len() - TRAILER);
    let length = u64::from_le_bytes(trailer[..8].try_into().ok()?);
    if body.len() as u64 != length || body_sum(body) != trailer[8..] {
        return None;
    }
    let mut r = In { data: body, at: 0 };
    let experiment_id = r.opt_str()?;
    let count = r.len32()?;
    let done_dirs = r.many(count, |r| Some((r.str()?, r.i128()?)))?;
    let rows = r.len()?;
    let mut c = Columns {
        run_id: r.many(rows, In::str)?,
        ..Columns::default()
    };
    for strings in [&mut c.experiment_id, &mut c.status] {
        let count = r.len32()?;
        let table = r.many(count, In::str)?;
        *strings = r.many(rows, |r| table.get(r.u32()? as usize).cloned())?;
    }
    c.task_index = r.many(rows, In::i64)?;
    c.replicate = r.many(rows, In::i64)?;
    c.duration_s = r.many(rows, |r| match r.u8()? {
        0 => Some(None),
        1 => r.f64().map(Some),
        _ => None,
    })?;
    c.started_at = r.many(rows, In::opt_str)?;
    for group in [&mut c.params, &mut c.metrics] {
        let columns = r.len32()?;
        for _ in 0..columns {
            let name = r.str()?;
            let first_row = r.len()?;
            let position = r.len()?;
            let values = r.many(rows, In::cell)?;
            group.push(Column {
                name,
                values,
                first_row,
                position,
            });
        }
    }
    let count = r.len()?;
    let listed = r.many(count, |r| {
        let name = match r.u32()? {
            NOT_A_ROW => Name::Other(r.str()?),
            row if (row as usize) < rows => Name::Row(row),
            _ => return None,
        };
        let ino = r.u64()?;
        let mtime_ns = r.i128()?;
        let size = r.u64()?;
        let file = FileId {
            ino,
            mtime_ns,
            size,
        };
        Some((name, file))
    })?;
    (r.at == body.len()).then_some(Snapshot {
        experiment_id,
        listed,
        done_dirs,
        columns: c,
    })
}

/// Read and decode the snapshot at `path` (`None`: absent, unreadable or not intact).
pub fn read(path: &Path) -> Option<Snapshot> {
    // Not through a link: the snapshot is only ever renamed into place by a load.
    if !fs::symlink_metadata(path).ok()?.file_type().is_file() {
        return None;
    }
    decode(&fs::read(path).ok()?)
}

/// Save the snapshot ([`encode`]'s arguments) at `path` atomically: written to a hidden
/// temporary name in the same directory and renamed over the old one, so a reader sees
/// the old or the new file, never a part (concurrent loads each rename a whole file;
/// the last one stays, and each is the answer of the listing it names).
pub fn write(
    path: &Path,
    experiment_id: Option<&str>,
    listed: &[Listed],
    done_dirs: &DirTimes,
    columns: &Columns,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("snapshot");
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let temporary = dir.join(format!(".{name}.{}.{unique}.tmp", std::process::id()));
    let result = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)
        .and_then(|mut file| encode_into(&mut file, experiment_id, listed, done_dirs, columns))
        .and_then(|()| fs::rename(&temporary, path));
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

#[path = "snapshot/codec.rs"]
mod codec;
use codec::{In, Out};

#[cfg(test)]
#[path = "snapshot/tests.rs"]
mod tests;
