"""Store faults: full disk mid-experiment, concurrent writers, corrupt files."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import metalab
from metalab.errors import StoreError
from metalab.store.file import FileStore


def _experiment(n: int = 20, name: str = "faults") -> metalab.Experiment:
    @metalab.operation
    def op(params, capture):
        capture.artifact("data", {"i": params["i"]})
        capture.metric("i", params["i"])

    return metalab.Experiment(name, "1", {}, op, metalab.grid(i=list(range(n))), metalab.seeds(5))


def test_disk_full_mid_experiment_is_a_clear_error_and_resume_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    original = FileStore._write
    writes = {"n": 0}

    def failing_write(self: FileStore, path: Path, data: bytes) -> None:
        writes["n"] += 1
        if writes["n"] > 25:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        original(self, path, data)

    monkeypatch.setattr(FileStore, "_write", failing_write)
    handle = metalab.run(_experiment(), store=store)
    with pytest.raises(StoreError, match="No space left on device") as info:
        handle.result()
    assert "resume=True" in str(info.value)
    monkeypatch.setattr(FileStore, "_write", original)

    done_before = metalab.load_results(store)
    assert not done_before.problems
    assert all(r.status.value == "success" for r in done_before)
    assert 0 < len(done_before) < 20
    # Nothing half-written: every record on disk parses, no visible temporary file.
    for path in store.glob("runs/*/*.json"):
        json.loads(path.read_bytes())
    assert not [p for p in store.rglob("*.tmp") if not p.name.startswith(".")]

    results = metalab.run(_experiment(), store=store).result()
    assert len(results.successful) == 20
    assert sorted(r.params["i"] for r in results) == list(range(20))


CONCURRENT = textwrap.dedent(
    """
    import sys
    import metalab

    @metalab.operation
    def op(params, seeds, runtime, capture):
        capture.log(f"writer {sys.argv[3]}")
        capture.artifact("blob", {"i": params["i"], "writer": sys.argv[3]})
        capture.metric("value", params["i"] * 10 + seeds.rng().random())

    exp = metalab.Experiment(
        name=sys.argv[2], version="1", context={}, operation=op,
        params=metalab.grid(i=list(range(40))), seeds=metalab.seeds(base=9),
    )
    results = metalab.run(exp, store=sys.argv[1], executor=metalab.ThreadExecutor(2)).result()
    print(len(results.successful))
    """
)


def test_eight_concurrent_writers_lose_and_corrupt_nothing(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(CONCURRENT)
    store = tmp_path / "shared store"
    # Six distinct experiments plus two concurrent launches of the same one.
    names = ["e0", "e1", "e2", "e3", "e4", "e5", "same", "same"]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(store), name, str(k)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for k, name in enumerate(names)
    ]
    outputs = [p.communicate(timeout=180)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs == ["40"] * 8
    results = metalab.load_results(store)
    assert not results.problems
    assert len(results) == 7 * 40  # the duplicate launch shares run IDs: no duplicates
    for name in {"e0", "e1", "e2", "e3", "e4", "e5", "same"}:
        runs = metalab.load_results(store, experiment_id=f"{name}:1")
        assert sorted(r.params["i"] for r in runs) == list(range(40))
        for run in runs:
            # A run executed twice is harmless: both writes are complete and identical
            # in what identity determines; the artifact belongs to the surviving record's run.
            assert run.artifact("blob")["i"] == run.params["i"]
            assert int(run.metrics["value"]) == run.params["i"] * 10
    done = list(store.glob("done/*/*.done"))
    assert len(done) == 7 * 40


def test_store_root_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        FileStore(target)


def test_blobs_are_private_and_foreign_writable_blobs_are_refused(tmp_path: Path) -> None:
    from metalab.errors import UnsafeLoadError

    store = FileStore(tmp_path / "s")
    store.put_blob("spec-x:1.json", b"{}")
    path = store.layout.blob("spec-x:1.json")
    assert path.stat().st_mode & 0o777 == 0o600
    assert store.get_blob("spec-x:1.json") == b"{}"
    path.chmod(0o666)
    with pytest.raises(UnsafeLoadError, match="refusing to load"):
        store.get_blob("spec-x:1.json")


def test_reconnect_refuses_a_tampered_spec(tmp_path: Path) -> None:
    from metalab.errors import UnsafeLoadError

    metalab.run(_experiment(3), store=tmp_path / "s").result()
    for blob in (tmp_path / "s" / "blobs").iterdir():
        blob.chmod(0o664)
    with pytest.raises(UnsafeLoadError, match="only its owner can write"):
        metalab.reconnect(tmp_path / "s")
