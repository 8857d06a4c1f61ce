"""Behaviour of the local loop: operations, experiments, capture, records, resume."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import metalab
from metalab.errors import CaptureError, ExperimentError, UnsafeLoadError
from metalab.store import FileStore


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _exp(op, name="exp", params=None, replicates=1, context=None, version="1"):
    return metalab.Experiment(
        name=name,
        version=version,
        context=context if context is not None else {},
        operation=op,
        params=params or metalab.grid(x=[1, 2, 3]),
        seeds=metalab.seeds(base=7, replicates=replicates),
    )


# -- operations and experiments ----------------------------------------------------------
def test_operation_injects_only_named_arguments() -> None:
    @metalab.operation
    def only_params(params, capture):
        capture.metric("x", params["x"])

    results = metalab.run(_exp(only_params)).result()
    assert [r.metrics["x"] for r in results] == [1, 2, 3]


@pytest.mark.parametrize("bad", ["data", "kwargs_style"])
def test_operation_rejects_unknown_argument(bad: str) -> None:
    namespace: dict = {}
    exec(f"def op(params, {bad}): pass", namespace)
    with pytest.raises(ExperimentError, match=repr(bad)):
        metalab.operation(namespace["op"])


def test_operation_rejects_var_keyword() -> None:
    def op(**kwargs):
        pass

    with pytest.raises(ExperimentError, match="kwargs"):
        metalab.operation(op)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("name", "a/b", "'a/b'"),
        ("name", "..", "'..'"),
        ("version", "1 0", "'1 0'"),
        ("name", 3, "3"),
    ],
)
def test_experiment_rejects_bad_names(field: str, value: object, needle: str) -> None:
    kwargs = {"name": "ok", "version": "1"}
    kwargs[field] = value
    with pytest.raises(ExperimentError, match=needle):
        metalab.Experiment(
            **kwargs,
            context={},
            operation=lambda: None,
            params=metalab.grid(x=[1]),
            seeds=metalab.seeds(0),
        )


def test_experiment_rejects_wrong_types() -> None:
    with pytest.raises(ExperimentError, match="params"):
        metalab.Experiment("e", "1", {}, lambda: None, [{"x": 1}], metalab.seeds(0))
    with pytest.raises(ExperimentError, match="seeds"):
        metalab.Experiment("e", "1", {}, lambda: None, metalab.grid(x=[1]), 42)
    with pytest.raises(ExperimentError, match="tags"):
        metalab.Experiment(
            "e", "1", {}, lambda: None, metalab.grid(x=[1]), metalab.seeds(0), tags="oops"
        )


def test_each_run_gets_its_own_context_copy() -> None:
    @metalab.operation
    def mutate(context, capture):
        capture.metric("len", len(context["items"]))
        context["items"].append("mutated")

    context = {"items": ["a"]}
    results = metalab.run(_exp(mutate, context=context)).result()
    assert [r.metrics["len"] for r in results] == [1, 1, 1]
    assert context == {"items": ["a"]}


def test_failure_is_recorded_and_other_runs_go_on() -> None:
    @metalab.operation
    def flaky(params, capture):
        if params["x"] == 2:
            raise RuntimeError("boom at x=2")
        capture.metric("x", params["x"])

    handle = metalab.run(_exp(flaky))
    results = handle.result()
    assert handle.status.failed == 1 and handle.status.completed == 2
    (failed,) = results.failed
    assert failed.error.type == "RuntimeError" and "boom at x=2" in failed.error.message
    assert "Traceback" in failed.error.traceback and "flaky" in failed.error.traceback
    assert len(results.successful) == 2


# -- records --------------------------------------------------------------------------------
def test_record_fields_and_provenance() -> None:
    @metalab.operation
    def op(params, capture):
        capture.metric("x", params["x"])

    results = metalab.run(_exp(op, params=metalab.grid(x=[5]))).result()
    record = results[0].record
    assert record.experiment_id == "exp:1"
    assert len(record.run_id) == 32
    assert {
        len(record.context_fingerprint),
        len(record.params_fingerprint),
        len(record.seed_fingerprint),
    } == {32}
    assert record.started_at.tzinfo is not None and record.finished_at >= record.started_at
    assert record.duration is not None and record.duration >= 0
    prov = record.provenance
    assert prov.code_hash == metalab.operation(op.func).code_hash
    assert prov.python and prov.metalab == metalab.__version__ and prov.host
    assert prov.executor == "thread" and str(prov.pid) in prov.worker_id
    stored = json.loads(next(Path("runs/exp/runs").glob("*/*.json")).read_text())
    assert stored["status"] == "success"
    assert dt.datetime.fromisoformat(stored["started_at"]).tzinfo is not None


def test_operation_code_is_not_part_of_the_run_id() -> None:
    def op_a(capture):
        capture.metric("v", 1)

    def op_b(capture):
        capture.metric("v", 2)

    first = metalab.run(_exp(op_a), store="s1").result()
    second = metalab.run(_exp(op_b), store="s2").result()
    assert [r.run_id for r in first] == [r.run_id for r in second]
    third = metalab.run(_exp(op_b, version="2"), store="s2").result()
    assert {r.run_id for r in third}.isdisjoint({r.run_id for r in first})


# -- capture ---------------------------------------------------------------------------------
def test_artifact_round_trips_every_kind() -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5], "c": ["x", "y"]})
    arrays = {"w": np.ones((2, 2)), "b": np.arange(3)}

    class Custom:
        def __init__(self, v):
            self.v = v

        def __eq__(self, other):
            return isinstance(other, Custom) and other.v == self.v

    @metalab.operation
    def op(capture):
        capture.artifact("arr", np.arange(6).reshape(2, 3))
        capture.artifact("arrays", arrays)
        capture.artifact("frame", frame)
        capture.artifact("obj", {"k": [1, 2, {"z": None}]})
        capture.artifact("raw", b"\x00\x01")
        capture.artifact("custom", Custom(3), kind="pickle")

    (run,) = metalab.run(_exp(op, params=metalab.grid(x=[1]))).result()
    np.testing.assert_array_equal(run.artifact("arr"), np.arange(6).reshape(2, 3))
    loaded = run.artifact("arrays")
    assert set(loaded) == {"w", "b"} and np.array_equal(loaded["b"], np.arange(3))
    pd.testing.assert_frame_equal(run.artifact("frame"), frame)
    assert run.artifact("obj") == {"k": [1, 2, {"z": None}]}
    assert run.artifact("raw") == b"\x00\x01"
    with pytest.raises(UnsafeLoadError, match="allow_pickle=True"):
        run.artifact("custom")
    assert run.artifact("custom", allow_pickle=True) == Custom(3)
    with pytest.raises(KeyError, match="nope"):
        run.artifact("nope")


def test_unserialisable_artifact_fails_the_run_with_a_hint() -> None:
    @metalab.operation
    def op(capture):
        capture.artifact("thing", object())

    (run,) = metalab.run(_exp(op, params=metalab.grid(x=[1]))).result()
    assert run.error.type == "CaptureError" and "kind='pickle'" in run.error.message


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "", ".hidden", "x" * 200, "a\\b"])
def test_hostile_artifact_names_are_rejected(name: str, tmp_path: Path) -> None:
    from metalab.capture import Capture

    capture = Capture(FileStore(tmp_path / "store"), "ab" * 16, "w")
    with pytest.raises(CaptureError, match="invalid artifact name"):
        capture.artifact(name, {"a": 1})
    with pytest.raises(CaptureError, match="invalid artifact name"):
        capture.figure(name, object())
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_metric_validation(tmp_path: Path) -> None:
    from metalab.capture import Capture

    capture = Capture(FileStore(tmp_path / "s"), "cd" * 16, "w")
    with pytest.raises(CaptureError, match=r"'accuracy'.*'high'"):
        capture.metric("accuracy", "high")
    with pytest.raises(CaptureError, match="step"):
        capture.metric("loss", 1.0, step=-1)
    with pytest.raises(CaptureError, match="metric name"):
        capture.metric("", 1.0)
    with pytest.raises(CaptureError, match="'bad'"):
        capture.log_metrics({"ok": 1.0, "bad": [1]})
    assert capture.metrics == {}  # log_metrics validates everything first
    capture.metric("np", np.float32(0.5))
    capture.metric("flag", True)
    assert capture.metrics == {"np": 0.5, "flag": 1}
    with pytest.raises(CaptureError, match="level"):
        capture.log("x", level="loud")


def test_non_finite_metrics_use_the_documented_encoding() -> None:
    @metalab.operation
    def op(capture):
        capture.metric("nan", math.nan)
        capture.metric("inf", math.inf, step=0)
        capture.metric("ninf", -math.inf)

    (run,) = metalab.run(_exp(op, params=metalab.grid(x=[1]))).result()
    assert math.isnan(run.metrics["nan"]) and run.metrics["inf"] == math.inf
    assert run.metrics["ninf"] == -math.inf and run.metric_series("inf") == [(0, math.inf)]
    raw = next(Path("runs/exp/runs").glob("*/*.json")).read_text()
    assert '"NaN"' in raw and '"Infinity"' in raw and "-Infinity" in raw
    json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_log_lines_survive_a_crashing_operation() -> None:
    @metalab.operation
    def op(capture):
        capture.log("before the crash")
        raise ValueError("crash")

    (run,) = metalab.run(_exp(op, params=metalab.grid(x=[1]))).result()
    assert run.status.value == "failed" and "before the crash" in run.log


# -- resume ----------------------------------------------------------------------------------
def test_resume_reruns_failed_and_new_runs_only() -> None:
    calls: list[int] = []
    fail = {2}

    @metalab.operation
    def op(params, capture):
        calls.append(params["x"])
        if params["x"] in fail:
            raise RuntimeError("fails this time")
        capture.metric("x", params["x"])

    metalab.run(_exp(op)).result()
    assert sorted(calls) == [1, 2, 3]
    fail.clear()
    calls.clear()
    handle = metalab.run(_exp(op))
    results = handle.result()
    assert calls == [2] and handle.status.skipped == 2
    assert len(results.successful) == 3
    calls.clear()
    grown = metalab.run(_exp(op, params=metalab.grid(x=[1, 2, 3, 4]))).result()
    assert calls == [4] and len(grown) == 4
    calls.clear()
    metalab.run(_exp(op), resume=False).result()
    assert sorted(calls) == [1, 2, 3]


def test_two_experiments_share_a_store_without_clobbering() -> None:
    def op_a(params, capture):
        capture.metric("who", 1)

    def op_b(params, capture):
        capture.metric("who", 2)

    a = metalab.run(_exp(op_a, name="a"), store="shared").result()
    b = metalab.run(_exp(op_b, name="b"), store="shared").result()
    assert {r.metrics["who"] for r in a} == {1} and {r.metrics["who"] for r in b} == {2}
    everything = metalab.load_results("shared")
    assert len(everything) == 6
    assert len(metalab.load_results("shared", experiment_id="a:1")) == 3
    assert len(FileStore("shared").list_manifests("b:1")) == 1


def test_corrupt_record_is_reported_and_rerun_on_resume() -> None:
    calls: list[int] = []

    @metalab.operation
    def op(params, capture):
        calls.append(params["x"])
        capture.metric("x", params["x"])

    first = metalab.run(_exp(op)).result()
    victim = Path("runs/exp/runs") / first[1].run_id[:2] / f"{first[1].run_id}.json"
    victim.write_text('{"run_id": "trunc')
    loaded = metalab.load_results("runs/exp")
    assert len(loaded) == 2
    (problem,) = loaded.problems
    assert problem.location == str(victim.absolute()) and "not valid JSON" in problem.reason
    calls.clear()
    again = metalab.run(_exp(op)).result()
    assert calls == [2] and len(again.successful) == 3 and not again.problems


def test_cancel_stops_scheduling_and_leaves_nothing_running() -> None:
    import threading

    started = threading.Event()

    @metalab.operation
    def slow(params, capture):
        started.set()
        import time

        time.sleep(0.05)
        capture.metric("x", params["x"])

    handle = metalab.run(_exp(slow, params=metalab.grid(x=list(range(40)))))
    assert started.wait(5)
    handle.cancel()
    results = handle.result(timeout=10)
    status = handle.status
    assert status.running == 0 and status.pending == 0 and status.is_complete
    assert status.cancelled > 0 and status.completed == len(results) < 40
    assert status.completed + status.cancelled == 40
    # A later resume runs exactly the cancelled runs.
    again = metalab.run(_exp(slow, params=metalab.grid(x=list(range(40)))))
    assert again.status.skipped == status.completed
    assert len(again.result().successful) == 40


def test_unpicklable_operation_runs_in_process_but_not_in_other_processes() -> None:
    import threading

    lock = threading.Lock()

    @metalab.operation
    def guarded(params, capture):
        with lock:
            capture.metric("x", params["x"])

    results = metalab.run(_exp(guarded)).result()
    assert len(results.successful) == 3
    with pytest.raises(ExperimentError, match="cannot be serialised"):
        metalab.run(_exp(guarded, name="other"), executor=metalab.ProcessExecutor(1))


def test_json_artifact_accepts_numpy_scalars_as_their_python_values() -> None:
    @metalab.operation
    def op(capture):
        capture.artifact(
            "summary", {"n": np.int64(3), "mean": np.float32(0.5), "ok": np.bool_(True)}
        )
        capture.artifact("zero_d", [np.array(2.5)])

    (run,) = metalab.run(_exp(op, params=metalab.grid(x=[1]))).result()
    assert run.status.value == "success", run.error
    summary = run.artifact("summary")
    assert summary == {"n": 3, "mean": 0.5, "ok": True}
    assert [type(v) for v in summary.values()] == [int, float, bool]
    assert run.artifact("zero_d") == [2.5]


def test_json_artifact_of_an_unserialisable_value_names_pickle() -> None:
    @metalab.operation
    def op(capture):
        capture.artifact("bad", {"when": np.datetime64("2026-01-01")})

    (run,) = metalab.run(_exp(op, params=metalab.grid(x=[1]))).result()
    assert run.status.value == "failed"
    assert run.error is not None and run.error.type == "CaptureError"
    assert "pickle" in run.error.message
