//! Tests of the marker scans (listing and look-up agree, layouts, errors).

use super::*;
use crate::layout::test_layout;
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

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn scan_and_list() {
    let root = tmpdir("a");
    let layout = test_layout(&root);
    let done = root.join("done");
    touch(&done, "ab/abc1.done");
    touch(&done, "ab/.abc2.done.tmp");
    touch(&done, "ab/abc3.tmp");
    touch(&done, "cd/cd99.done");
    touch(&done, "cd/ab77.done"); // wrong shard: ignored
    let ids = ids(&["abc1", "abc2", "abc3", "cd99", "ab77", "ef00", "x"]);
    assert_eq!(
        scan_done(&layout, &ids).unwrap(),
        vec![true, false, false, true, false, false, false]
    );
    assert_eq!(list_done(&layout).unwrap(), vec!["abc1", "cd99"]);
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn the_layout_decides_suffix_and_shard() {
    let root = tmpdir("w");
    let mut layout = test_layout(&root);
    layout.done.suffix = ".ok".into();
    layout.shard_width = 3;
    touch(&root, "done/abc/abcd.ok");
    touch(&root, "done/ab/abce.ok"); // the 2-character shard is the wrong one now
    touch(&root, "done/abc/abcf.done");
    let ids = ids(&["abcd", "abce", "abcf"]);
    assert_eq!(scan_done(&layout, &ids).unwrap(), vec![true, false, false]);
    assert_eq!(list_done(&layout).unwrap(), vec!["abcd"]);
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn missing_root_is_nothing_done() {
    let layout = test_layout(&tmpdir("b").join("missing"));
    assert_eq!(scan_done(&layout, &ids(&["abcd"])).unwrap(), vec![false]);
    assert!(list_done(&layout).unwrap().is_empty());
    let states = scan_states(&layout, &ids(&["abcd"])).unwrap();
    assert_eq!(states.states, vec![State::Absent]);
}

#[test]
fn root_is_a_file() {
    let dir = tmpdir("c");
    let mut layout = test_layout(&dir);
    layout.done.root = dir.join("file");
    fs::write(&layout.done.root, b"x").unwrap();
    let e = scan_done(&layout, &ids(&["abcd"])).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
    let mut layout = test_layout(&dir);
    layout.failed.root = dir.join("file");
    let e = scan_states(&layout, &ids(&["abcd"])).unwrap_err();
    assert!(e.to_string().starts_with("failure markers root"), "{e}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hex_ids_and_other_ids_mix() {
    let root = tmpdir("d");
    let layout = test_layout(&root);
    let hex = "0123456789abcdef0123456789abcdef".to_string();
    let upper = "0123456789ABCDEF0123456789ABCDEF".to_string();
    touch(&root, &format!("done/01/{hex}.done"));
    touch(&root, "done/zz/zzz.done");
    let ids = vec![hex.clone(), upper, "zzz".to_string(), "zzy".to_string()];
    assert_eq!(
        scan_done(&layout, &ids).unwrap(),
        vec![true, false, true, false]
    );
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn completion_needs_the_record_too() {
    let root = tmpdir("e");
    let layout = test_layout(&root);
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
    let ids = ids(&[hex.as_str(), "abc1", "cd99", "cd77", "ef00", "zz"]);
    let found = scan_completed(&layout, &ids).unwrap();
    assert_eq!(found.done, vec![true, false, true, false, false, false]);
    assert_eq!(found.orphans, vec!["abc1", "cd77"]);
    let empty = scan_completed(&test_layout(&root.join("none")), &ids).unwrap();
    assert_eq!(empty.done, vec![false; ids.len()]);
    assert!(empty.orphans.is_empty());
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn states_in_one_scan() {
    let root = tmpdir("f");
    let layout = test_layout(&root);
    touch(&root, "done/ab/ab01.done");
    touch(&root, "runs/ab/ab01.json");
    touch(&root, "failed/ab/ab02.failed");
    touch(&root, "failed/ab/.ab03.failed.tmp"); // a temporary: not a marker
    touch(&root, "done/ab/ab04.done"); // orphan with a failed marker: failed
    touch(&root, "failed/ab/ab04.failed");
    touch(&root, "done/cd/cd05.done"); // orphan: absent
    touch(&root, "done/cd/cd06.done"); // done wins over an old failed marker
    touch(&root, "runs/cd/cd06.json");
    touch(&root, "failed/cd/cd06.failed");
    touch(&root, "failed/cd/ab07.failed"); // wrong shard
    touch(&root, "failed/ef/ef08.failed"); // only a failed tree for this shard
    let ids = ids(&[
        "ab01", "ab02", "ab03", "ab04", "cd05", "cd06", "ab07", "ef08", "gh09",
    ]);
    let got = scan_states(&layout, &ids).unwrap();
    use State::*;
    assert_eq!(
        got.states,
        vec![Done, Failed, Absent, Failed, Absent, Done, Absent, Failed, Absent]
    );
    assert_eq!(got.orphans, vec!["ab04", "cd05"]);
    let completed = scan_completed(&layout, &ids).unwrap();
    let done: Vec<bool> = got.states.iter().map(|s| *s == Done).collect();
    assert_eq!((completed.done, completed.orphans), (done, got.orphans));
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn looking_up_finds_what_listing_finds() {
    let root = tmpdir("g");
    let layout = test_layout(&root);
    touch(&root, "done/ab/ab01.done");
    touch(&root, "runs/ab/ab01.json");
    touch(&root, "failed/ab/ab02.failed");
    touch(&root, "failed/ab/.ab03.failed"); // hidden: not a marker
    touch(&root, "done/ab/ab04.done"); // orphan with a failed marker
    touch(&root, "failed/ab/ab04.failed");
    touch(&root, "done/cd/cd05.done"); // orphan
    touch(&root, "failed/cd/ab07.failed"); // wrong shard
    fs::create_dir_all(root.join("done/ef/ef09.done")).unwrap(); // a directory entry
    touch(&root, "runs/ef/ef09.json");
    let ids = ids(&[
        "ab01", "ab02", "ab03", ".ab03", "ab04", "cd05", "ab07", "ef09", "gh", "", "ab/x",
    ]);
    let by_path = classify_with(&layout, &ids, true, usize::MAX).unwrap();
    let listed = classify_with(&layout, &ids, true, 0).unwrap();
    assert_eq!(by_path, listed);
    use State::*;
    let states: Vec<State> = listed.iter().map(|one| one.state).collect();
    let orphans: Vec<bool> = listed.iter().map(|one| one.orphan).collect();
    let (t, f) = (true, false);
    assert_eq!(
        states,
        vec![Done, Failed, Absent, Absent, Failed, Absent, Absent, Done, Absent, Absent, Absent]
    );
    assert_eq!(orphans, vec![f, f, f, f, t, t, f, f, f, f, f]);
    fs::remove_dir_all(&root).unwrap();
}
