"""The ProcessExecutor's typed worker protocol and per-worker state, over real pipes.

A real worker process (``worker_main``, forked) is driven message by message as the
driver drives it, so the conversation documented in ``process_protocol`` is what runs.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab.errors import ExecutorError
from metalab.executors.process_protocol import (
    Credentials,
    Done,
    Dropped,
    Fatal,
    Init,
    InitError,
    Ready,
    Stop,
    Tasks,
    receive,
    receive_instruction,
    receive_report,
)
from metalab.executors.process_state import WorkerPhase, WorkerState
from metalab.executors.process_worker import worker_main
from metalab.plan import RunPlan
from metalab.spec import experiment_to_spec
from metalab.store.file import FileStore


@metalab.operation
def halve(params: dict[str, Any], capture: Any) -> None:
    if params["x"] == 3:
        raise ValueError("three is odd")
    capture.metric("half", params["x"] / 2)


def _init(store: FileStore, label: str = "p7") -> tuple[Init, RunPlan]:
    experiment = metalab.Experiment(
        name="protocol",
        version="1",
        context={},
        operation=halve,
        params=metalab.grid(x=[0, 1, 2, 3]),
        seeds=metalab.seeds(base=1),
    )
    plan = RunPlan(experiment)
    spec = experiment_to_spec(experiment)
    spec["context_fingerprint"] = plan.context_fp
    return Init(json.dumps(spec), store.locator, b"", "process", label), plan


def _start(init: Init) -> tuple[Any, Any]:
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=True)
    process = ctx.Process(target=worker_main, args=(child, [parent]))
    process.start()
    child.close()
    parent.send(Credentials(()))
    parent.send(init)
    return process, parent


def test_a_worker_answers_each_message_with_its_typed_report(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s")
    init, plan = _init(store)
    process, conn = _start(init)
    try:
        assert receive_report(conn) == Ready()
        conn.send(Tasks((0, 3)))
        conn.send(Tasks((2, 1)))
        first, second = receive_report(conn), receive_report(conn)
        assert isinstance(first, Done) and isinstance(second, Done)
        assert (first.task_index, first.status, first.metrics) == (0, "success", {"half": 0.0})
        assert (second.task_index, second.status) == (3, "failed")
        assert (second.error_type, second.error_message) == ("ValueError", "three is odd")
        # A Stop is read between runs: whatever the worker still holds comes back unrun
        # (or was run, when the worker got to it before the Stop arrived).
        conn.send(Stop())
        reports = []
        while not isinstance(report := receive_report(conn), Dropped):
            reports.append(report)
        ran = [r.task_index for r in reports if isinstance(r, Done)]
        assert sorted([*ran, *report.task_indices]) == [1, 2]
        process.join(timeout=10)
        assert process.exitcode == 0
    finally:
        conn.close()
        if process.is_alive():
            process.kill()
    # The worker wrote the records under its own identity (label from Init).
    first_record = store.get_record(plan.task(0).run_id)
    failed_record = store.get_record(plan.task(3).run_id)
    assert first_record is not None and failed_record is not None
    assert first_record.status.value == "success" and failed_record.status.value == "failed"
    provenance = first_record.provenance
    assert provenance is not None and provenance.worker_id.endswith(":p7")
    assert provenance.pid == process.pid


def test_a_worker_that_cannot_rebuild_the_experiment_reports_init_error(
    tmp_path: Path,
) -> None:
    init = dataclasses.replace(_init(FileStore(tmp_path / "s"))[0], spec_text="{}")
    process, conn = _start(init)
    try:
        report = receive_report(conn)
        assert isinstance(report, InitError)
        assert report.error_type and report.traceback.startswith("Traceback")
        process.join(timeout=10)
    finally:
        conn.close()
        if process.is_alive():
            process.kill()


def test_a_message_of_the_wrong_kind_is_a_typed_error_naming_it() -> None:
    left, right = multiprocessing.Pipe()
    try:
        # The old positional tuples are no longer a message of this protocol.
        left.send(("tasks", [1, 2]))
        with pytest.raises(
            ExecutorError, match=r"expected a Tasks or Stop .*\('tasks', \[1, 2\]\)"
        ):
            receive_instruction(right)
        left.send(Ready())
        with pytest.raises(ExecutorError, match="expected a Credentials message"):
            receive(right, Credentials)
        left.send(Stop())
        with pytest.raises(ExecutorError, match="expected a worker report message"):
            receive_report(right)
        left.send(Fatal(4, "OSError", "disk full", "tb"))
        assert receive_report(right) == Fatal(4, "OSError", "disk full", "tb")
    finally:
        left.close()
        right.close()


def test_messages_are_immutable() -> None:
    done = Done(1, "success", {}, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        done.task_index = 2  # type: ignore[misc]


def test_worker_phases_follow_ready_and_stop_in_either_order() -> None:
    # Stopped before its Ready arrived: still not ready (a death now blames no run).
    early = WorkerState(process=None, conn=None, label="p0")  # type: ignore[arg-type]
    seen = [early.phase]
    early.stop_sent()
    seen.append(early.phase)
    early.became_ready()
    seen.append(early.phase)
    assert seen == [WorkerPhase.STARTING, WorkerPhase.STOPPING_UNREADY, WorkerPhase.STOPPING]
    assert [(p.ready, p.stopping) for p in seen] == [(False, False), (False, True), (True, True)]

    late = WorkerState(process=None, conn=None, label="p1")  # type: ignore[arg-type]
    took_work = [late.takes_work]
    late.became_ready()
    took_work.append(late.takes_work)
    late.stop_sent()
    took_work.append(late.takes_work)
    assert late.phase is WorkerPhase.STOPPING and took_work == [True, True, False]
