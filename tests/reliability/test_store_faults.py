"""Store faults: full disk mid-experiment, concurrent writers, corrupt files."""

from __future__ import annotations

import contextlib
import errno
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import metalab
from metalab.errors import StoreError
from metalab.records import StoredState
from metalab.store.file import FileStore
from small_disk import mounted_small_disk


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


# -- a real full disk: artifact and log writes ------------------------------------------
#
# A 1 MiB tmpfs is a file system that really runs out of space (ENOSPC from the kernel,
# not a patched method), in the test process and in worker processes alike.

ARTIFACT_BYTES = 300_000  # three fit in 1 MiB, a fourth does not; records still fit


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs) mounted for the test, unmounted after it."""
    with mounted_small_disk(tmp_path / "small-disk") as mount_point:
        yield mount_point


def _grow(disk: Path) -> None:
    """Free space the way an operator would: the same file system, now large enough."""
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)


def _fill(path: Path) -> None:
    """Another job fills the disk."""
    with open(path, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def _disk_experiment(calls: Path, mode: str, filler: Path | None = None) -> metalab.Experiment:
    @metalab.operation
    def op(params, capture):
        with open(calls, "a") as handle:
            handle.write(f"{params['i']:04d}\n")
            ordinal = handle.tell() // 5  # 1 for the first run to start, in any process
        if mode == "artifact":
            capture.artifact("blob", b"x" * ARTIFACT_BYTES)
        elif mode == "swallowed":
            # Code that guards its own saves must not turn a store failure into a run
            # that "succeeded" without its artifact.
            with contextlib.suppress(Exception):
                capture.artifact("blob", b"x" * ARTIFACT_BYTES)
        elif filler is not None and ordinal == 4:
            _fill(filler)  # the disk fills up while the run logs...
            try:
                capture.log("step 1")
            finally:
                filler.unlink()  # ...and has room again when its record is written
        else:
            capture.log("step 1")
        capture.metric("i", params["i"])

    return metalab.Experiment(
        f"disk-{mode}", "1", {}, op, metalab.grid(i=list(range(20))), metalab.seeds(5)
    )


def _calls(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


@pytest.mark.parametrize(
    ("mode", "executor"),
    [
        ("artifact", "thread"),
        ("swallowed", "thread"),
        ("log", "thread"),
        ("artifact", "process"),
        ("log", "process"),
    ],
)
def test_full_disk_writing_an_artifact_or_log_stops_the_launch(
    small_disk: Path, tmp_path: Path, mode: str, executor: str
) -> None:
    store = small_disk / "store"
    calls = tmp_path / "calls.txt"
    filler = small_disk / "other-job.bin" if mode == "log" else None
    exp = _disk_experiment(calls, mode, filler)
    runner = metalab.ProcessExecutor(max_workers=2) if executor == "process" else None
    with pytest.raises(StoreError, match=r"No space left on device") as info:
        metalab.run(exp, store=store, executor=runner).result(timeout=120)
    # No run was recorded as failed for the store's fault, nothing half-written.
    stored = metalab.load_results(store)
    assert not stored.problems
    assert stored and all(r.status.value == "success" for r in stored)
    assert StoredState.FAILED not in FileStore(store).states(exp_ids(exp))
    # The launch stopped at once instead of computing the other runs in vain.
    ran = _calls(calls)
    assert 0 < len(ran) <= (4 if executor == "thread" else 8), ran
    assert len(stored) < len(set(ran))  # the interrupted run(s) left no record
    assert not [p for p in store.rglob("*.tmp") if not p.name.startswith(".")]
    what = "log" if mode == "log" else "artifact 'blob'"
    assert f"cannot write the {what} of run" in str(info.value)
    assert "resume=True" in str(info.value)

    _grow(small_disk)
    results = metalab.run(exp, store=store, executor=runner).result(timeout=120)
    assert len(results.successful) == 20 and not results.problems
    if mode != "log":
        assert all(len(run.artifact("blob")) == ARTIFACT_BYTES for run in results)


def exp_ids(exp: metalab.Experiment) -> list[str]:
    from metalab.plan import RunPlan

    return RunPlan(exp).run_ids


def test_slurm_worker_stops_its_block_on_a_full_disk(small_disk: Path, tmp_path: Path) -> None:
    """A SLURM array task (``python -m metalab.worker``) whose store fills up stops its
    block with exit status 4 and says why, instead of running the rest in vain."""
    from metalab.plan import RunPlan
    from metalab.runner import _save_spec

    store = small_disk / "store"
    calls = tmp_path / "calls.txt"
    exp = _disk_experiment(calls, "artifact")
    plan = RunPlan(exp)
    # What metalab.run stores before submitting; the array task itself is run here.
    _save_spec(exp, plan, FileStore(store), metalab.SlurmExecutor())
    argv = ["--store", str(store), "--experiment", exp.experiment_id]
    worker = subprocess.run(
        [
            sys.executable,
            "-m",
            "metalab.worker",
            *argv,
            "--runs-per-task",
            "20",
            "--array-task",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert worker.returncode == 4, worker.stderr
    assert "store failed" in worker.stderr and "No space left on device" in worker.stderr
    assert _calls(calls) == [0, 1, 2, 3]
    stored = metalab.load_results(store)
    assert len(stored) == 3 and all(r.status.value == "success" for r in stored)
    assert StoredState.FAILED not in FileStore(store).states(plan.run_ids)


def test_a_launch_pointer_that_cannot_be_saved_warns_and_the_launch_still_finishes(
    tmp_path: Path,
) -> None:
    store = tmp_path / "s"
    # A directory where the pointer file goes: its atomic rename fails with an OSError.
    (store / "blobs" / "launch-latest.json").mkdir(parents=True)

    @metalab.operation
    def op(params, capture):
        capture.metric("y", params["x"])

    exp = metalab.Experiment(
        name="ptr",
        version="1",
        context={},
        operation=op,
        params=metalab.grid(x=[1, 2, 3]),
        seeds=metalab.seeds(base=1),
    )
    with pytest.warns(RuntimeWarning, match="could not save the launch pointer"):
        handle = metalab.run(exp, store=str(store))
    results = handle.result(timeout=60)
    assert sorted(r.metrics["y"] for r in results) == [1, 2, 3]


def test_bookkeeping_write_failures_are_store_errors(tmp_path: Path) -> None:
    from metalab.store.file import FileStore

    store = FileStore(tmp_path / "s")
    (store.layout.blob("spec-x:1.json")).mkdir(parents=True)
    with pytest.raises(StoreError, match=r"cannot write the blob .*spec-x:1.json"):
        store.put_blob("spec-x:1.json", b"{}")
