"""Temporaries of killed writers are removed by a resume and by ``metalab store clean``.

A real writer process is stopped (SIGSTOP) in the middle of an artifact write, while its
hidden temporary exists and the artifact does not yet; it is then either killed with
SIGKILL (a dead writer: its temporary must go) or left stopped (a live writer: its
temporary must stay, and the write must still complete when it continues).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import metalab
from metalab.plan import RunPlan
from metalab.records import StoredState
from metalab.store.atomic import STALE_FOREIGN_AGE, parse_temp_name, temp_name
from metalab.store.file import FileStore
from metalab.store.layout import FileLayout

METALAB = [sys.executable, "-c", "import sys; from metalab.cli import main; sys.exit(main())"]
BIG = 128 * 1024 * 1024  # large enough that the write takes tens of milliseconds
RUN_ID = "5e" * 16

EXPERIMENT_MODULE = """
import os
import numpy as np
import metalab


@metalab.operation
def heavy(params, capture):
    # The writer under test captures a big artifact; the resume only a small one.
    size = int(os.environ.get("STALE_TEST_BYTES", "16"))
    capture.artifact("blob", np.zeros(size, dtype=np.uint8))
    capture.metric("x", params["x"])


def experiment():
    return metalab.Experiment(
        name="stale", version="1", context={}, operation=heavy,
        params=metalab.grid(x=[1]), seeds=metalab.seeds(base=1),
    )
"""

RUN_WRITER = """
import sys
sys.path.insert(0, sys.argv[2])
import metalab
from stale_exp import experiment
metalab.run(experiment(), store=sys.argv[1], resume=False).result()
"""

ARTIFACT_WRITER = """
import sys
from metalab.store.file import FileStore
data = bytes(int(sys.argv[3]))
FileStore(sys.argv[1]).put_artifact(sys.argv[2], "blob", data, "bytes", ".bin", {})
"""


def _temps(directory: Path) -> list[Path]:
    try:
        return [directory / n for n in os.listdir(directory) if n.endswith(".tmp")]
    except FileNotFoundError:
        return []


def stop_mid_write(
    argv: list[str], directory: Path, target: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start a writer and SIGSTOP it while its temporary in ``directory`` is being written.

    Returns the stopped process and its temporary (the final file does not exist yet).
    """
    for _attempt in range(3):
        proc = subprocess.Popen(argv, env={**os.environ, **env})
        found: list[Path] = []
        while proc.poll() is None and not found:
            found = _temps(directory)
            if not found:
                time.sleep(0.0005)
        while found:
            os.kill(proc.pid, signal.SIGSTOP)
            if target.exists() or not found[0].exists():
                break  # too late: the write completed
            if found[0].stat().st_size > 0:
                return proc, found[0]  # stopped with part of the data written
            os.kill(proc.pid, signal.SIGCONT)  # created but nothing written yet
            time.sleep(0.0005)
        os.kill(proc.pid, signal.SIGCONT)
        proc.wait(60)
        target.unlink(missing_ok=True)
    pytest.fail("could not catch the writer in the middle of its write in 3 attempts")


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)  # reaped, as a dead worker's parent (shell, slurmstepd) would


@pytest.fixture
def writer_module(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "module"
    directory.mkdir()
    (directory / "stale_exp.py").write_text(textwrap.dedent(EXPERIMENT_MODULE))
    sys.path.insert(0, str(directory))
    try:
        yield directory
    finally:
        sys.path.remove(str(directory))
        sys.modules.pop("stale_exp", None)


def test_resume_removes_the_temporary_of_a_writer_killed_mid_artifact(
    tmp_path: Path, writer_module: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from stale_exp import experiment  # type: ignore[import-not-found]

    store = tmp_path / "store"
    run_id = RunPlan(experiment()).run_ids[0]
    artifact = FileLayout(store).artifact(run_id, "blob.npy")
    proc, temp = stop_mid_write(
        [sys.executable, "-c", RUN_WRITER, str(store), str(writer_module)],
        artifact.parent,
        artifact,
        {"STALE_TEST_BYTES": str(BIG)},
    )
    kill(proc)
    info = parse_temp_name(temp.name)
    assert info is not None and info.pid == proc.pid and info.host is not None
    assert temp.exists() and temp.stat().st_size > 0  # the leftover a kill leaves
    assert FileStore(store).states([run_id])[0] is not StoredState.DONE

    results = metalab.run(experiment(), store=store, resume=True).result()

    assert [r.status.value for r in results] == ["success"]
    assert not temp.exists() and not _temps(artifact.parent)
    assert results[0].artifact("blob").size == 16
    assert "removed 1 stale temporaries" in capfd.readouterr().err


def test_store_clean_removes_a_dead_writers_temporary_and_keeps_a_live_ones(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    layout = FileLayout(store)
    live_id, dead_id = "a1" * 16, "d0" * 16
    writers = {}
    for run_id in (live_id, dead_id):
        target = layout.artifact(run_id, "blob.bin")
        argv = [sys.executable, "-c", ARTIFACT_WRITER, str(store), run_id, str(BIG)]
        writers[run_id] = stop_mid_write(argv, target.parent, target, {})
    live, live_temp = writers[live_id]
    dead, dead_temp = writers[dead_id]
    try:
        kill(dead)
        dead_size = dead_temp.stat().st_size

        dry = subprocess.run(
            [*METALAB, "store", "clean", str(store), "--dry-run", "--json"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert dry.returncode == 0, dry.stderr
        report = json.loads(dry.stdout)
        assert report["dry_run"] and report["removed"] == 1 and dead_temp.exists()

        done = subprocess.run(
            [*METALAB, "store", "clean", str(store), "--json"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["removed"] == 1 and report["bytes_freed"] == dead_size
        assert report["files"] == [{"path": str(dead_temp), "bytes": dead_size}]
        assert report["kept"] == 1
        assert not dead_temp.exists() and live_temp.exists()
    finally:
        live.send_signal(signal.SIGCONT)
        assert live.wait(60) == 0
    # The live writer was not disturbed: its write completed.
    assert layout.artifact(live_id, "blob.bin").stat().st_size == BIG
    assert not _temps(layout.run_dir(live_id))


def my_writer(layout: FileLayout) -> tuple[str, str, int]:
    """Host, scope and start time this process writes into its temporaries' names."""
    mine = parse_temp_name(temp_name(layout.record(RUN_ID)).name)
    assert mine is not None and mine.host and mine.scope and mine.start is not None
    assert mine.pid == os.getpid()
    return mine.host, mine.scope, mine.start


def _temp_of(target: Path, host: str, pid: int, scope: str, start: int) -> Path:
    path = target.with_name(f".{target.name}.{host}.{pid}.{scope}-{start}.0badc0de.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"partial")
    return path


def test_liveness_rules_pid_reuse_other_hosts_and_old_names(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    layout = store.layout
    host, scope, start = my_writer(layout)
    record, log = layout.record(RUN_ID), layout.log(RUN_ID)
    day_old = time.time() - STALE_FOREIGN_AGE - 3600
    # This very process, alive: kept. Its PID with another start time (reused): removed.
    alive = _temp_of(record, host, os.getpid(), scope, start)
    reused = _temp_of(log, host, os.getpid(), scope, start + 1)
    # Another host cannot be checked from here: kept unless a day old.
    fresh_remote = _temp_of(layout.derived(RUN_ID), "other-node", 1, "0123abcd", 5)
    old_remote = _temp_of(layout.done_marker(RUN_ID), "other-node", 1, "0123abcd", 5)
    os.utime(old_remote, (day_old, day_old))
    # Temporaries of an older metalab (no writer identity): the age rule as well.
    fresh_legacy = layout.blob("spec-x").with_name(".spec-x.123.deadbeef.tmp")
    fresh_legacy.parent.mkdir(parents=True)
    fresh_legacy.write_bytes(b"x")
    old_legacy = fresh_legacy.with_name(".spec-y.123.deadbeef.tmp")
    old_legacy.write_bytes(b"x")
    os.utime(old_legacy, (day_old, day_old))
    # Hidden files that are not metalab temporaries are never touched.
    other_hidden = layout.run_dir(RUN_ID) / ".notes.tmp"
    other_hidden.parent.mkdir(parents=True)
    other_hidden.write_text("mine")

    sweep = store.clean_temporaries()

    removed = {Path(path) for path, _ in sweep.removed}
    assert removed == {reused, old_remote, old_legacy}
    assert all(p.exists() for p in (alive, fresh_remote, fresh_legacy, other_hidden))
    assert sweep.kept == 3 and sweep.bytes_freed == len(b"partial") * 2 + 1


def test_resume_sweep_looks_only_where_the_runs_to_redo_write(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    layout = store.layout
    other = "77" * 16
    dead_pid = _reaped_pid()
    host, scope, _ = my_writer(layout)
    redo = _temp_of(layout.artifact(RUN_ID, "a.npy"), host, dead_pid, scope, 0)
    elsewhere = _temp_of(layout.artifact(other, "a.npy"), host, dead_pid, scope, 0)
    manifest = _temp_of(layout.manifest("e:1", "20260101T000000Z"), host, dead_pid, scope, 0)

    sweep = store.clean_temporaries([RUN_ID])

    assert {Path(p) for p, _ in sweep.removed} == {redo, manifest}
    assert elsewhere.exists()


def _reaped_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_store_clean_of_a_missing_store_is_an_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [*METALAB, "store", "clean", str(tmp_path / "typo")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and "no store at" in done.stderr


def test_clean_does_not_follow_a_link_planted_in_the_store(tmp_path: Path) -> None:
    from other_user import run_as_other_user, shared_dir

    base = shared_dir()
    try:
        store = FileStore(base / "store")
        layout = store.layout
        host, scope, _ = my_writer(layout)
        mine = _temp_of(layout.artifact(RUN_ID, "a.npy"), host, _reaped_pid(), scope, 0)
        for directory, _, _ in os.walk(store.root):
            os.chmod(directory, 0o777)  # a group-writable lab store
        # A file of the victim's elsewhere that merely looks like a dead writer's temporary.
        precious = _temp_of(tmp_path / "victim" / "data.bin", host, _reaped_pid(), scope, 0)

        def plant() -> None:
            os.symlink(precious.parent, layout.runs_dir / "zz")
            os.symlink(precious.parent, layout.derived_dir)

        run_as_other_user(plant)
        sweep = store.clean_temporaries()
        assert precious.exists()
        assert [Path(p) for p, _ in sweep.removed] == [mine]
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
