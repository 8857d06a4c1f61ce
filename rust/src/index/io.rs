//! File-system work of an index load: listing record shards and `stat`ing record files,
//! on as many threads as the page cache calls for.

use std::fs;
#[cfg(unix)]
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::segment::FileId;
use crate::layout::Layout;

/// Threads that read segments, list shards and `stat` record files when the cache is
/// cold: the work then waits on the disk (or a parallel file system's metadata server),
/// not on the CPU, so more requests in flight than cores pay off (cold cache, 300,000
/// records, 2 cores: the stats took 3.4-4.4 s on 16 threads, 1.4-2.8 s on 64).
const STAT_THREADS: usize = 64;

/// Items done one by one before choosing the pool, and the time per item under which the
/// cache is taken for warm. A warm `stat` costs 1-3 µs of CPU: there 64 threads on two
/// cores only add switching (300,000 stats: 0.95 CPU-s on 64 threads, half that on the
/// cores' own pool), while a cold one waits for the disk (hundreds of µs to ms).
const PROBE: usize = 64;
const WARM_PER_ITEM: Duration = Duration::from_micros(40);

/// `f` of every item, in order: the first few inline, the rest on the CPU pool when they
/// were fast (a warm cache) and on the I/O pool when they waited (a cold one).
pub fn map_io<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    let started = Instant::now();
    let mut out = Vec::with_capacity(items.len());
    for item in items.iter().take(PROBE) {
        out.push(f(item));
        if started.elapsed() > WARM_PER_ITEM * PROBE as u32 {
            break;
        }
    }
    let rest = &items[out.len()..];
    if rest.is_empty() {
        return out;
    }
    let warm = started.elapsed() <= WARM_PER_ITEM * out.len() as u32;
    let work = || -> Vec<R> { rest.par_iter().with_min_len(64).map(&f).collect() };
    out.extend(if warm { work() } else { on_io_pool(work) });
    out
}

/// Drop `value` on a thread of its own (freeing hundreds of MB, or 300,000 rows' strings,
/// takes a while and nothing waits for it); inline when no thread can be started (a
/// process limit), since `thread::spawn` would panic.
pub fn drop_later<T: Send + 'static>(value: T) {
    // On failure the closure, and `value` with it, is dropped here.
    let _ = std::thread::Builder::new().spawn(move || drop(value));
}

/// Run `work` on the process's pool of [`STAT_THREADS`] threads, started on first use
/// and kept (a load used to start three pools, 192 threads, which on a busy machine cost
/// more than the stats of a small store). A forked child has none of its parent's
/// threads, so it starts a pool per call; the global pool serves if none can start.
pub fn on_io_pool<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    static POOL: std::sync::OnceLock<(u32, Option<rayon::ThreadPool>)> = std::sync::OnceLock::new();
    let build = || {
        rayon::ThreadPoolBuilder::new()
            .num_threads(STAT_THREADS)
            .build()
            .ok()
    };
    let (owner, pool) = POOL.get_or_init(|| (std::process::id(), build()));
    if *owner == std::process::id() {
        if let Some(pool) = pool {
            return pool.install(work);
        }
    }
    match build() {
        Some(pool) => pool.install(work),
        None => work(),
    }
}

/// Record files directly inside one shard directory with the inode their directory entry
/// names (no `stat`: a listing tells it), as `records::record_paths` filters them.
fn shard_records(layout: &Layout, shard: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = fs::read_dir(shard) else {
        return Vec::new();
    };
    let mut found: Vec<(std::ffi::OsString, u64)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| (e.file_name(), e.ino()))
        .filter(|(name, _)| {
            name.to_str()
                .is_some_and(|name| layout.records.id_of(name).is_some())
        })
        .collect();
    // One directory: the names decide the order (sorting whole paths compared them
    // component by component, a visible share of listing 300,000 records).
    found.sort_unstable();
    found
        .into_iter()
        .map(|(name, ino)| (shard.join(name), ino))
        .collect()
}

/// Every record file of the layout with its directory entry's inode, sorted by shard and
/// then name (the order of `records::record_paths`).
pub fn list_records(layout: &Layout) -> Vec<(PathBuf, u64)> {
    let shards = crate::records::sorted_dirs(&layout.records.root);
    // Directory reads wait on the disk with a cold cache, as inode reads do; warm, the
    // listing is ~0.1 s of 300,000 records either way.
    on_io_pool(|| {
        shards
            .par_iter()
            .map(|shard| shard_records(layout, shard))
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect()
}

/// The identity of every listed record file (in listing order; `None`: gone or
/// unreadable), `stat`ed in inode order, which turns the inode reads of a cold cache into
/// mostly sequential ones (measured here: 11.3 s in name order, 4.9 s in inode order,
/// single-threaded).
pub fn stat_all(listed: &[(PathBuf, u64)]) -> Vec<Option<FileId>> {
    let mut order: Vec<usize> = (0..listed.len()).collect();
    order.sort_unstable_by_key(|&i| listed[i].1);
    let mut files = vec![None; listed.len()];
    for (i, file) in order.iter().zip(stat_listed(listed, &order)) {
        files[*i] = file;
    }
    files
}

/// The identity of `listed[i]` for each `i` of `order` (in that order; `None`: gone or
/// unreadable), on the pool [`map_io`] picks.
///
/// Each file is `stat`ed by name inside its shard directory, opened once: a whole-path
/// `stat` walks every component of the path again, half of a warm stat's kernel time.
fn stat_listed(listed: &[(PathBuf, u64)], order: &[usize]) -> Vec<Option<FileId>> {
    #[cfg(unix)]
    {
        let dirs = ShardDirs::open(listed);
        map_io(order, |&i| dirs.stat(listed, i))
    }
    #[cfg(not(unix))]
    {
        map_io(order, |&i| super::segment::file_id(&listed[i].0).ok())
    }
}

/// The directories of a listing (consecutive entries share one), opened.
#[cfg(unix)]
struct ShardDirs {
    /// Per listed entry, its directory's index in `open`.
    dir_of: Vec<u32>,
    /// `None`: the directory could not be opened (its entries are stat'ed by path).
    open: Vec<Option<fs::File>>,
}

#[cfg(unix)]
impl ShardDirs {
    fn open(listed: &[(PathBuf, u64)]) -> ShardDirs {
        use std::os::unix::fs::OpenOptionsExt;
        let mut dir_of = Vec::with_capacity(listed.len());
        let mut open = Vec::new();
        let mut current: Option<&Path> = None;
        for (path, _) in listed {
            let parent = path.parent();
            if parent != current || open.is_empty() {
                current = parent;
                open.push(parent.and_then(|dir| {
                    fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                        .open(dir)
                        .ok()
                }));
            }
            dir_of.push((open.len() - 1) as u32);
        }
        ShardDirs { dir_of, open }
    }

    fn stat(&self, listed: &[(PathBuf, u64)], i: usize) -> Option<FileId> {
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStrExt;
        let path = &listed[i].0;
        let Some(dir) = &self.open[self.dir_of[i] as usize] else {
            return super::segment::file_id(path).ok();
        };
        // The name is the part after the last `/` (the listing joined it to its shard);
        // copied with its NUL into a buffer on the stack (no allocation per file).
        let bytes = path.as_os_str().as_bytes();
        let name = &bytes[bytes
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(0, |at| at + 1)..];
        let mut buffer = [0u8; 256];
        if name.is_empty() || name.len() >= buffer.len() || name.contains(&0) {
            return super::segment::file_id(path).ok();
        }
        buffer[..name.len()].copy_from_slice(name);
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `dir` is an open directory descriptor, `buffer` holds a NUL-terminated
        // name and `st` is a buffer of the type `fstatat` fills; read only on success.
        let st = unsafe {
            let name = buffer.as_ptr().cast::<libc::c_char>();
            if libc::fstatat(dir.as_raw_fd(), name, st.as_mut_ptr(), 0) != 0 {
                return None;
            }
            st.assume_init()
        };
        Some(FileId {
            ino: st.st_ino,
            mtime_ns: i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec),
            size: st.st_size as u64,
        })
    }
}

/// The modification time of `root` and of each visible subdirectory (see
/// [`super::snapshot::DirTimes`]); empty when `root` is missing.
pub fn dir_times(root: &Path) -> super::snapshot::DirTimes {
    #[cfg(unix)]
    use std::os::unix::fs::MetadataExt;
    let time = |path: &Path| {
        fs::metadata(path)
            .ok()
            .map(|m| i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()))
    };
    let Some(own) = time(root) else {
        return Vec::new();
    };
    let mut times = vec![(String::new(), own)];
    for dir in crate::records::sorted_dirs(root) {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        times.push((name.unwrap_or_default(), time(&dir).unwrap_or(-1)));
    }
    times
}
