//! Counts and per-stage timings of one index load (for diagnostics and benches).

use std::fs;
use std::time::Instant;

/// What reading the segments found, for diagnostics (`metalab store reindex` fixes it).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stats {
    pub segments: usize,
    /// Segments that could not be read at all.
    pub unreadable: usize,
    pub lines: usize,
    /// Lines that failed the checksum or the header format (torn or corrupt).
    pub bad_lines: usize,
    /// Runs answered from the index.
    pub indexed: usize,
    /// Runs read from their record file (no line matched the record's identity).
    pub from_records: usize,
    /// Record files answered by the column snapshot (all listed, or none).
    pub from_snapshot: usize,
    /// True when this load saved its answer as the column snapshot.
    pub snapshot_written: bool,
    /// Per stage, in order: `(name, wall seconds, CPU seconds of the whole process)`
    /// (for benches and diagnostics; CPU is 0 where `/proc/self/stat` is missing).
    pub seconds: Vec<(&'static str, f64, f64)>,
}

/// A stopwatch over wall time and the process's CPU time (every thread's).
pub struct Clock {
    wall: Instant,
    cpu: f64,
}

/// CPU seconds (user + system) the process has used, from `/proc/self/stat` (ticks of
/// 1/100 s on Linux); 0 elsewhere.
fn process_cpu() -> f64 {
    let Ok(text) = fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) end with `)`.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            wall: Instant::now(),
            cpu: process_cpu(),
        }
    }
}

impl Stats {
    /// Record that the stage `name` ended now (it began at `since`, which moves on).
    pub fn lap(&mut self, name: &'static str, since: &mut Clock) {
        let now = Clock::start();
        let wall = (now.wall - since.wall).as_secs_f64();
        self.seconds.push((name, wall, now.cpu - since.cpu));
        *since = now;
    }
}
