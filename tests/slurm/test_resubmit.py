"""A resubmission with nothing to do, answered by the store's done proof (issue 13).

The proof (``metalab.store.done_proof``) lets resume skip the marker scan and the run-ID
hashing while no marker or record was created, deleted or renamed since a scan found
every run done. These tests show it is used, and that it never hides a run that became
unfinished: a deleted done marker, a deleted record, a grown grid, a garbled proof. The
first tests run in threads on a FileStore; the last one on the SLURM cluster.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab.keys import done_proof_key
from metalab.records import StoredState
from metalab.store.done_proof import MARGIN_NS
from metalab.store.file import FileStore


def _exp(calls: list[int], n: int = 12, name: str = "resubmit") -> metalab.Experiment:
    def op(params: Any, capture: Any) -> None:
        calls.append(params["x"])
        capture.metric("x", params["x"])

    return metalab.Experiment(
        name=name,
        version="1",
        context={},
        operation=op,
        params=metalab.grid(x=list(range(n))),
        seeds=metalab.seeds(base=3),
    )


def _settle(store: Path) -> None:
    """Wait until the file system's clock is MARGIN_NS past the last change of the
    store's marker and record directories, as it is for a sweep that finished a while
    ago (about a second here)."""
    dirs = [store / top for top in ("done", "runs")]
    dirs += [d for top in list(dirs) for d in top.iterdir()]
    newest = max(os.stat(d).st_ctime_ns for d in dirs)
    probe = store.parent / f".clock-{os.getpid()}"
    deadline = time.monotonic() + 5.0
    while True:
        probe.write_bytes(b"")
        if os.stat(probe).st_mtime_ns > newest + MARGIN_NS or time.monotonic() > deadline:
            probe.unlink()
            return
        time.sleep(0.05)


class _Scans:
    """Counts FileStore.states calls and the runs they were asked about."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.asked: list[int] = []
        real: Callable[[FileStore, Sequence[str]], list[StoredState]] = FileStore.states

        def counting(store: FileStore, run_ids: Sequence[str]) -> list[StoredState]:
            self.asked.append(len(run_ids))
            return real(store, run_ids)

        monkeypatch.setattr(FileStore, "states", counting)


def _finished(tmp_path: Path, calls: list[int], n: int = 12) -> Path:
    """A store where every run of ``_exp`` is done and a resume kept the done proof."""
    store = tmp_path / "store"
    metalab.run(_exp(calls, n), store=str(store)).result()
    assert sorted(calls) == list(range(n))
    _settle(store)
    again = metalab.run(_exp(calls, n), store=str(store))  # scans, finds all done
    assert again.status.skipped == n
    assert (store / "blobs" / done_proof_key("resubmit:1")).exists()
    calls.clear()
    return store


def test_a_finished_sweep_is_resubmitted_without_a_scan_or_run_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    store = _finished(tmp_path, calls)
    scans = _Scans(monkeypatch)
    handle = metalab.run(_exp(calls), store=str(store))
    assert scans.asked == [] and calls == []
    assert "run_ids" not in handle.plan.__dict__  # never computed
    assert handle.status.skipped == 12
    # The handle still answers everything (run IDs computed when asked).
    assert len(handle.result()) == 12 and len(handle.run_ids) == 12


def test_a_done_marker_deleted_after_the_proof_makes_that_run_execute_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    store = _finished(tmp_path, calls)
    fs = FileStore(store)
    victim = metalab.load_results(str(store))[5]
    fs.layout.done_marker(victim.run_id).unlink()
    scans = _Scans(monkeypatch)
    handle = metalab.run(_exp(calls), store=str(store))
    handle.result()
    assert calls == [victim.params["x"]]
    assert scans.asked[:1] == [12]  # the proof did not hold: one full scan
    assert fs.states([victim.run_id]) == [StoredState.DONE]


def test_a_record_deleted_after_the_proof_makes_that_run_execute_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    store = _finished(tmp_path, calls)
    fs = FileStore(store)
    victim = metalab.load_results(str(store))[8]
    fs.layout.record(victim.run_id).unlink()
    assert fs.layout.done_marker(victim.run_id).exists()  # the marker vouches for nothing
    handle = metalab.run(_exp(calls), store=str(store))
    results = handle.result()
    assert calls == [victim.params["x"]]
    assert len(results) == 12 and not results.problems


def test_a_marker_deleted_and_the_store_settled_again_is_still_seen(
    tmp_path: Path,
) -> None:
    # The proof's stamps are compared, not only its age: a change long after it counts.
    calls: list[int] = []
    store = _finished(tmp_path, calls)
    fs = FileStore(store)
    victim = metalab.load_results(str(store))[0]
    fs.layout.done_marker(victim.run_id).unlink()
    _settle(store)
    metalab.run(_exp(calls), store=str(store)).result()
    assert calls == [victim.params["x"]]


def test_a_grown_grid_runs_only_its_new_runs(tmp_path: Path) -> None:
    calls: list[int] = []
    store = _finished(tmp_path, calls)
    metalab.run(_exp(calls, n=13), store=str(store)).result()
    assert calls == [12]


@pytest.mark.parametrize("garbage", [b"not json", b'{"format": 1}', b"[1, 2]"])
def test_a_garbled_proof_proves_nothing(tmp_path: Path, garbage: bytes) -> None:
    calls: list[int] = []
    store = _finished(tmp_path, calls)
    fs = FileStore(store)
    fs.put_blob(done_proof_key("resubmit:1"), garbage)
    victim = metalab.load_results(str(store))[3]
    fs.layout.done_marker(victim.run_id).unlink()
    metalab.run(_exp(calls), store=str(store)).result()
    assert calls == [victim.params["x"]]


def test_a_proof_copied_from_another_store_proves_nothing(tmp_path: Path) -> None:
    # Stamps name devices and inodes: a copied store (or a copied blob) must scan.
    calls: list[int] = []
    store = _finished(tmp_path, calls)
    other = tmp_path / "other"
    metalab.run(_exp(calls), store=str(other)).result()
    calls.clear()
    proof = (store / "blobs" / done_proof_key("resubmit:1")).read_bytes()
    FileStore(other).put_blob(done_proof_key("resubmit:1"), proof)
    victim = metalab.load_results(str(other))[4]
    FileStore(other).layout.done_marker(victim.run_id).unlink()
    metalab.run(_exp(calls), store=str(other)).result()
    assert calls == [victim.params["x"]]


def test_a_dry_run_writes_no_proof(tmp_path: Path) -> None:
    calls: list[int] = []
    store = tmp_path / "store"
    metalab.run(_exp(calls), store=str(store)).result()
    _settle(store)
    with contextlib.redirect_stdout(io.StringIO()):
        handle = metalab.run(_exp(calls), store=str(store), dry_run=True)
    assert handle.status.completed == 12
    assert not _kept(store)


def _kept(store: Path) -> bool:
    """Whether the store holds a done proof (a resume that scanned leaves a placeholder)."""
    data = FileStore(store).get_blob(done_proof_key("resubmit:1"))
    return data is not None and json.loads(data).get("format") == 1


def test_the_proof_is_not_kept_while_a_run_is_missing(tmp_path: Path) -> None:
    calls: list[int] = []
    store = tmp_path / "store"
    metalab.run(_exp(calls), store=str(store)).result()
    fs = FileStore(store)
    victim = metalab.load_results(str(store))[2]
    fs.layout.done_marker(victim.run_id).unlink()
    _settle(store)
    calls.clear()
    metalab.run(_exp(calls), store=str(store)).result()
    assert calls == [victim.params["x"]] and not _kept(store)
    _settle(store)
    metalab.run(_exp(calls), store=str(store)).result()  # every run done: kept now
    assert _kept(store)


def test_no_proof_is_kept_of_directories_changed_a_moment_before(tmp_path: Path) -> None:
    # A marker deleted in the same clock tick as the stamps would leave them unchanged:
    # stamps of directories changed less than MARGIN_NS before are never kept.
    calls: list[int] = []
    store = tmp_path / "store"
    metalab.run(_exp(calls), store=str(store)).result()
    _settle(store)
    fs = FileStore(store)
    marker = fs.layout.done_marker(metalab.load_results(str(store))[6].run_id)
    marker.unlink()
    marker.touch()  # done again, its shard changed just now
    assert metalab.run(_exp(calls), store=str(store)).status.skipped == 12
    assert not _kept(store)
    _settle(store)
    metalab.run(_exp(calls), store=str(store)).result()
    assert _kept(store)


@pytest.mark.slurm
def test_slurm_resubmission_of_a_finished_sweep_submits_nothing_and_reconnects(
    tmp_path: Path, slurm: None, no_leftover_jobs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = metalab.Experiment(
        name="resubmit_slurm",
        version="1",
        context={},
        operation=_slurm_op,
        params=metalab.grid(x=list(range(6))),
        seeds=metalab.seeds(base=1),
    )
    store = tmp_path / "store"
    executor = metalab.SlurmExecutor(metalab.SlurmConfig(runs_per_task=3, time="5"))
    first = metalab.run(exp, store=str(store), executor=executor)
    no_leftover_jobs.extend(first.job_ids)
    assert len(first.result(timeout=300).successful) == 6
    _settle(store)
    second = metalab.run(exp, store=str(store), executor=executor)  # scans, keeps the proof
    assert not second.job_ids
    scans = _Scans(monkeypatch)
    third = metalab.run(exp, store=str(store), executor=executor)
    assert not third.job_ids and scans.asked == []
    status = metalab.reconnect(str(store)).status
    assert (status.completed, status.pending, status.running) == (6, 0, 0)
    # A marker deleted since: the next resubmission submits exactly that run.
    victim = metalab.load_results(str(store))[4]
    FileStore(store).layout.done_marker(victim.run_id).unlink()
    fourth = metalab.run(exp, store=str(store), executor=executor)
    no_leftover_jobs.extend(fourth.job_ids)
    assert len(fourth.job_ids) == 1 and fourth.status.skipped == 5
    assert len(fourth.result(timeout=300).successful) == 6
    assert metalab.reconnect(str(store)).status.completed == 6


def _slurm_op(params: Any, capture: Any) -> None:
    capture.metric("x", params["x"])
