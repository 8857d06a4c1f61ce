use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::columns::{test_record as record, Cell};
use crate::index::{load_columns, SnapshotPlan};
use crate::layout::test_layout;

fn temp_root(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("metalab-snap-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    root
}

fn write_record(root: &Path, run_id: &str, task: i64, metric: &str) -> PathBuf {
    let dir = root.join("runs").join(&run_id[..2]);
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{run_id}.json"));
    let body = record(run_id, task, r#"{"a": [1, {"b": null}]}"#, metric);
    // Write and rename, as metalab does (a new inode per version).
    let temporary = dir.join(format!(".{run_id}.tmp"));
    fs::write(&temporary, body).unwrap();
    fs::rename(&temporary, &path).unwrap();
    path
}

fn sample(name: &str) -> (Vec<Listed>, Columns) {
    let root = temp_root(name);
    write_record(&root, "aa00", 1, r#"{"m": 1.5, "s": "x", "n": "NaN"}"#);
    write_record(
        &root,
        "bb01",
        0,
        r#"{"m": true, "big": 18446744073709551615}"#,
    );
    let layout = test_layout(&root);
    let (columns, _) = load_columns(&layout, &[], None, None);
    let listed = vec![
        Listed {
            run_id: "aa00".into(),
            file: FileId {
                ino: 7,
                mtime_ns: -5,
                size: 9,
            },
        },
        Listed {
            run_id: "bb01".into(),
            file: FileId {
                ino: u64::MAX,
                mtime_ns: i128::MAX,
                size: 0,
            },
        },
        Listed {
            run_id: "cc99".into(),
            file: FileId {
                ino: 1,
                mtime_ns: i128::MIN,
                size: u64::MAX,
            },
        },
    ];
    fs::remove_dir_all(&root).unwrap();
    (listed, columns)
}

#[test]
fn a_snapshot_decodes_to_what_was_encoded() {
    let (listed, columns) = sample("decode");
    assert!(columns
        .metrics
        .iter()
        .any(|c| c.values.contains(&Cell::Missing)));
    let dirs = vec![(String::new(), 5), ("aa".to_string(), -1)];
    let bytes = encode(Some("e:1"), &listed, &dirs, &columns).unwrap();
    let back = decode(&bytes).unwrap();
    assert_eq!(back.experiment_id.as_deref(), Some("e:1"));
    assert_eq!(back.done_dirs, dirs);
    let again: Vec<Listed> = (0..back.listed.len())
        .map(|i| Listed {
            run_id: back.run_id(i).to_string(),
            file: back.listed[i].1,
        })
        .collect();
    assert_eq!(again, listed);
    // Listed records of rows name their row (by task index: aa00 is task 1); the others
    // (records of other experiments) carry their own id.
    assert_eq!(back.listed[0].0, Name::Row(1));
    assert_eq!(back.listed[2].0, Name::Other("cc99".into()));
    // NaN != NaN: compare the cells' encodings, then everything else directly.
    assert_eq!(
        encode(Some("e:1"), &again, &dirs, &back.columns).unwrap(),
        bytes
    );
    assert_eq!(back.columns.run_id, columns.run_id);
    assert_eq!(back.columns.params, columns.params);
}

#[test]
fn a_torn_flipped_or_foreign_snapshot_is_rejected() {
    let (listed, columns) = sample("torn");
    let bytes = encode(None, &listed, &Vec::new(), &columns).unwrap();
    assert!(decode(&bytes).is_some());
    assert!(decode(&bytes[..bytes.len() - 1]).is_none());
    for at in [0, 9, 17, bytes.len() / 2, bytes.len() - 12, bytes.len() - 1] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x10;
        assert!(decode(&flipped).is_none(), "flip at {at} went unnoticed");
    }
    assert!(decode(b"").is_none());
    assert!(decode(b"{\"not\": \"a snapshot\"}").is_none());
}

#[test]
fn loads_answer_from_a_current_snapshot_and_never_from_a_stale_one() {
    let root = temp_root("load");
    let first = write_record(&root, "aa00", 0, r#"{"m": 1}"#);
    write_record(&root, "bb01", 1, r#"{"m": 2}"#);
    let layout = test_layout(&root);
    let path = root.join("index").join("columns.snapshot");
    let plan = SnapshotPlan {
        path: &path,
        min_records: 2,
    };
    let (fresh, stats) = load_columns(&layout, &[], None, Some(plan));
    assert!(stats.snapshot_written && stats.from_snapshot == 0);
    let (again, stats) = load_columns(&layout, &[], None, Some(plan));
    assert_eq!((stats.from_snapshot, stats.from_records), (2, 0));
    assert_eq!(again, fresh);
    // Another experiment's filter is another answer.
    let (_, stats) = load_columns(&layout, &[], Some("e:2"), Some(plan));
    assert_eq!(stats.from_snapshot, 0);
    // (That load saved its own answer over the first: the next one saves it back.)
    let (_, stats) = load_columns(&layout, &[], None, Some(plan));
    assert!(stats.from_snapshot == 0 && stats.snapshot_written);

    // An edit in place keeps the inode: the size tells it, and so does the time of
    // an edit of the same size (file times tick every few ms: wait for the next tick).
    for (from, to) in [(r#""m": 1"#, r#""m": 33"#), (r#""m": 33"#, r#""m": 44"#)] {
        let (_, stats) = load_columns(&layout, &[], None, Some(plan));
        assert_eq!(stats.from_snapshot, 2);
        std::thread::sleep(std::time::Duration::from_millis(30));
        let edited = fs::read_to_string(&first).unwrap().replace(from, to);
        fs::write(&first, edited).unwrap();
        let (now, stats) = load_columns(&layout, &[], None, Some(plan));
        assert_eq!((stats.from_snapshot, stats.from_records), (0, 2));
        let wanted: i64 = to[5..].parse().unwrap();
        assert_eq!(now.metrics[0].values[0], Cell::Int(wanted));
    }

    // A run written since is not in the snapshot: the records answer.
    let (_, stats) = load_columns(&layout, &[], None, Some(plan));
    assert_eq!(stats.from_snapshot, 2);
    write_record(&root, "cc02", 2, r#"{"m": 4}"#);
    let (now, stats) = load_columns(&layout, &[], None, Some(plan));
    assert_eq!((now.len(), stats.from_snapshot), (3, 0));

    // A deleted record leaves the snapshot's listing too.
    fs::remove_file(root.join("runs/cc/cc02.json")).unwrap();
    let (now, stats) = load_columns(&layout, &[], None, Some(plan));
    assert_eq!((now.len(), stats.from_snapshot), (2, 0));

    // A done marker without its record, created after the snapshot, is still reported.
    let (_, stats) = load_columns(&layout, &[], None, Some(plan));
    assert_eq!(stats.from_snapshot, 2);
    fs::create_dir_all(root.join("done/dd")).unwrap();
    fs::write(root.join("done/dd/dd03.done"), "").unwrap();
    let (now, stats) = load_columns(&layout, &[], None, Some(plan));
    assert_eq!(stats.from_snapshot, 2);
    assert_eq!(now.problems.len(), 1, "{:?}", now.problems);
    assert!(now.problems[0].reason.contains("record missing"));
    // ... and by every later load (a load that finds one saves no snapshot).
    let (now, stats) = load_columns(&layout, &[], None, Some(plan));
    assert_eq!((now.problems.len(), stats.snapshot_written), (1, false));
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_load_with_problems_saves_no_snapshot() {
    let root = temp_root("problems");
    write_record(&root, "aa00", 0, r#"{"m": 1}"#);
    fs::write(root.join("runs/aa/ab01.json"), "{broken").unwrap();
    let layout = test_layout(&root);
    let path = root.join("columns.snapshot");
    let plan = SnapshotPlan {
        path: &path,
        min_records: 1,
    };
    let (cols, stats) = load_columns(&layout, &[], None, Some(plan));
    assert_eq!(cols.problems.len(), 1);
    assert!(!stats.snapshot_written && !path.exists());
    // Below the threshold no snapshot either.
    fs::remove_file(root.join("runs/aa/ab01.json")).unwrap();
    let small = SnapshotPlan {
        path: &path,
        min_records: 2,
    };
    let (_, stats) = load_columns(&layout, &[], None, Some(small));
    assert!(!stats.snapshot_written && !path.exists());
    fs::remove_dir_all(&root).unwrap();
}

#[cfg(unix)]
#[test]
fn a_snapshot_reached_through_a_link_is_not_read() {
    let (listed, columns) = sample("linked");
    let root = temp_root("link");
    fs::create_dir_all(&root).unwrap();
    let real = root.join("real.snapshot");
    write(&real, None, &listed, &Vec::new(), &columns).unwrap();
    assert!(read(&real).is_some());
    let link = root.join("columns.snapshot");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert!(read(&link).is_none());
    // Saving replaces the link itself, never writes through it.
    write(&link, None, &listed[..1], &Vec::new(), &columns).unwrap();
    assert!(!fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(read(&real).unwrap().listed.len(), listed.len());
    fs::remove_dir_all(&root).unwrap();
}
