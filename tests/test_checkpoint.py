"""Checkpoints: ``capture.checkpoint(state)`` / ``capture.restore()`` (issue 13 item 4).

A run saves its state step by step; when its execution dies (the whole driver process of a
ThreadExecutor, a ProcessExecutor worker, an exception) the next execution gets the last
state back and continues from there. Every step a run executes is written to a side file,
so "resumed" is proven by each step appearing exactly once, never by the code's own word.
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import metalab
from metalab.capture import Capture
from metalab.capture.checkpoint import checkpoint_key, decode_checkpoint, encode_checkpoint
from metalab.errors import CaptureError
from metalab.records import RunState
from metalab.store.base import Store
from metalab.store.file import FileStore

STEPS = 6
CRASH_AFTER = 3


@metalab.operation
def stepper(context: Any, params: Any, capture: Any) -> None:
    """Six steps, a checkpoint after each; the first execution dies after step 3."""
    root = Path(context["dir"])
    x = params["x"]
    state = capture.restore()
    resumed = state is not None
    if state is None:
        state = {"step": 0, "total": 0, "trace": np.zeros(0)}
    for step in range(state["step"], STEPS):
        with open(root / f"steps-{x}", "a") as fh:
            fh.write(f"{step}\n")
        state = {
            "step": step + 1,
            "total": state["total"] + step * x,
            "trace": np.append(state["trace"], float(step)),
        }
        capture.checkpoint(state)
        marker = root / f"died-{x}"
        if step + 1 == CRASH_AFTER and x in context["victims"] and not marker.exists():
            marker.touch()
            if context["how"] == "exit":
                os._exit(9)  # the process dies: no record, no cleanup, no finally
            raise RuntimeError(f"run {x} gave up after step {step}")
    capture.metric("total", state["total"])
    capture.metric("resumed", int(resumed))
    capture.metric("trace_sum", float(state["trace"].sum()))


def _exp(tmp: Path, how: str, victims: list[int], n: int = 3) -> metalab.Experiment:
    return metalab.Experiment(
        name=f"ckpt-{how}",
        version="1",
        context={"dir": str(tmp), "how": how, "victims": victims},
        operation=stepper,
        params=metalab.grid(x=list(range(n))),
        seeds=metalab.seeds(base=1, replicates=1),
    )


def _steps(tmp: Path, x: int) -> list[int]:
    path = tmp / f"steps-{x}"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _check_resumed(tmp: Path, results: Any, victims: list[int]) -> None:
    assert len(results.successful) == len(results) == 3
    for run in results:
        x = run.params["x"]
        # Each step executed exactly once: the victim's second execution began at step 3.
        assert _steps(tmp, x) == list(range(STEPS)), (x, _steps(tmp, x))
        assert run.metrics["total"] == sum(range(STEPS)) * x
        assert run.metrics["trace_sum"] == float(sum(range(STEPS)))
        assert run.metrics["resumed"] == (1 if x in victims else 0)


def test_thread_executor_resumes_after_the_process_died(tmp_path: Path) -> None:
    store = tmp_path / "store"
    driver = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import metalab
        from test_checkpoint import _exp
        exp = _exp(__import__("pathlib").Path({str(tmp_path)!r}), "exit", [1])
        metalab.run(exp, store={str(store)!r}, executor=metalab.ThreadExecutor(1)).result()
        """
    )
    died = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True)
    assert died.returncode == 9, died.stderr
    assert _steps(tmp_path, 1) == [0, 1, 2]

    results = metalab.run(
        _exp(tmp_path, "exit", [1]), store=store, executor=metalab.ThreadExecutor(1), resume=True
    ).result(60)
    _check_resumed(tmp_path, results, [1])


def test_process_executor_resumes_after_its_worker_crashed(tmp_path: Path) -> None:
    store = tmp_path / "store"
    exp = _exp(tmp_path, "exit", [0, 2])
    first = metalab.run(exp, store=store, executor=metalab.ProcessExecutor(2, mp_context="fork"))
    crashed = first.result(60)
    assert sorted(r.params["x"] for r in crashed.failed) == [0, 2]
    assert {r.error.type for r in crashed.failed} == {"WorkerCrashedError"}

    results = metalab.run(
        exp, store=store, executor=metalab.ProcessExecutor(2, mp_context="fork"), resume=True
    ).result(60)
    _check_resumed(tmp_path, results, [0, 2])


def test_a_failed_run_keeps_its_checkpoint_and_success_clears_it(tmp_path: Path) -> None:
    store_path = tmp_path / "store"
    exp = _exp(tmp_path, "raise", [2])
    first = metalab.run(exp, store=store_path).result(60)
    (failed,) = first.failed
    assert failed.status is RunState.FAILED and failed.error.type == "RuntimeError"

    results = metalab.run(exp, store=store_path, resume=True).result(60)
    _check_resumed(tmp_path, results, [2])
    store = FileStore(store_path)
    for run in results:
        blob = store.get_blob(checkpoint_key(run.run_id))
        assert blob is not None
        # Cleared, so a forced re-execution starts afresh instead of at the last step.
        assert decode_checkpoint(blob, run.run_id, "blob") == (False, None)
        assert Capture(store, run.run_id, "test").restore() is None


def test_runs_that_never_checkpoint_write_nothing(tmp_path: Path) -> None:
    @metalab.operation
    def plain(params: Any, capture: Any) -> None:
        capture.metric("x", params["x"])

    exp = metalab.Experiment(
        name="plain",
        version="1",
        context={},
        operation=plain,
        params=metalab.grid(x=[1, 2]),
        seeds=metalab.seeds(base=1, replicates=1),
    )
    metalab.run(exp, store=tmp_path / "store").result(30)
    assert not list((tmp_path / "store" / "blobs").glob("checkpoint-*"))


RICH_STATE: dict[str, Any] = {
    "none": None,
    "flags": [True, False],
    "big": 2**80,
    "floats": [0.5, -0.0, math.inf, -math.inf],
    "text": "ünïcode\n",
    "raw": b"\x00\xffbytes",
    "pair": (1, ("nested", [2.5])),
    "$looks_like_a_reference": {"$array": 0},
    "one_key": {"$bytes": 1},
    "empty": {"list": [], "dict": {}, "tuple": ()},
    "weights": np.arange(12, dtype=np.float32).reshape(3, 4),
    "fortran": np.asfortranarray(np.arange(6).reshape(2, 3)),
    "strided": np.arange(10)[::3],
    "records": np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
    "scalar": np.float32(1.25),
    "count": np.int64(7),
    "zero_d": np.array(3.0),
}


def _assert_same(restored: Any, saved: Any, path: str = "state") -> None:
    assert type(restored) is type(saved), (path, type(restored), type(saved))
    if isinstance(saved, np.ndarray):
        assert restored.dtype == saved.dtype and restored.shape == saved.shape, path
        np.testing.assert_array_equal(restored, saved)
    elif isinstance(saved, dict):
        assert list(restored) == list(saved), path
        for key in saved:
            _assert_same(restored[key], saved[key], f"{path}[{key!r}]")
    elif isinstance(saved, list | tuple):
        assert len(restored) == len(saved), path
        for i, (a, b) in enumerate(zip(restored, saved, strict=True)):
            _assert_same(a, b, f"{path}[{i}]")
    elif isinstance(saved, np.generic):
        assert restored.dtype == saved.dtype and restored == saved, path
    else:
        assert restored == saved or (restored != restored and saved != saved), path


@pytest.fixture(params=["file", "postgres", "fallback"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A FileStore, a PostgresStore (fresh schema) or a FallbackStore with a dead primary."""
    if request.param == "file":
        yield FileStore(tmp_path / "store")
        return
    if request.param == "fallback":
        import warnings

        from metalab.store.fallback import FallbackStore

        dead = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the "primary unreachable" notice
            fallback = FallbackStore(dead, str(tmp_path / "backup"))
            yield fallback
        fallback.close()
        return
    from metalab.store.postgres import PostgresStore
    from services import postgres_url

    url = postgres_url()
    sep = "&" if "?" in url else "?"
    locator = f"{url}{sep}schema=t_{uuid.uuid4().hex}&artifact_root={tmp_path / 'pg'}"
    pg = PostgresStore.from_locator(locator)
    try:
        yield pg
    finally:
        pg.drop_schema()
        pg.close()


def test_every_kind_of_value_comes_back_with_its_type(store: Store) -> None:
    state = {**RICH_STATE, "nan": math.nan}
    first = Capture(store, "a" * 32, "w1")
    assert first.restore() is None
    first.checkpoint(state)
    first.checkpoint({**state, "later": 1})  # replaces the first one whole
    restored = Capture(store, "a" * 32, "w2").restore()
    _assert_same(restored, {**state, "later": 1})
    assert math.isnan(restored["nan"])
    # Another run's checkpoint is its own.
    assert Capture(store, "b" * 32, "w3").restore() is None


@pytest.mark.parametrize(
    ("state", "where", "named"),
    [
        ({"a": [1, {2, 3}]}, "state['a'][1]", "{2, 3} of type set"),
        ({1: "x"}, "state key", "1 of type int (dict keys must be str)"),
        ({"obj": np.array([object()])}, "state['obj']", "dtype object holds Python objects"),
        ((1, object), "state[1]", "of type type"),
        ({"m": np.ma.masked_array([1, 2])}, "state['m']", "use numpy.asarray()"),
        ({"f": lambda: 1}, "state['f']", "of type function"),
        (1 + 2j, "state", "(1+2j) of type complex"),
    ],
)
def test_unencodable_state_is_refused_naming_the_value(
    tmp_path: Path, state: Any, where: str, named: str
) -> None:
    store = FileStore(tmp_path / "store")
    capture = Capture(store, "c" * 32, "w")
    capture.checkpoint({"kept": True})
    with pytest.raises(CaptureError) as caught:
        capture.checkpoint(state)
    message = str(caught.value)
    assert f"checkpoint {where} is " in message and named in message, message
    assert "expected None, bool, int, float, str, bytes, list, tuple, dict" in message
    # Nothing was written: the previous checkpoint is intact.
    assert Capture(store, "c" * 32, "w").restore() == {"kept": True}


def test_a_cycle_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(CaptureError, match="nested deeper than 200 levels"):
        Capture(FileStore(tmp_path / "s"), "d" * 32, "w").checkpoint(loop)


def test_a_damaged_or_foreign_checkpoint_is_refused(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s")
    Capture(store, "e" * 32, "w").checkpoint({"weights": np.ones(4)})
    good = store.get_blob(checkpoint_key("e" * 32))
    assert good is not None
    # Another run's checkpoint copied under this run's key.
    store.put_blob(checkpoint_key("f" * 32), good)
    with pytest.raises(CaptureError, match=r"belongs to run 'e+', not to run 'f+'"):
        Capture(store, "f" * 32, "w").restore()
    store.put_blob(checkpoint_key("e" * 32), good[:-3])
    with pytest.raises(CaptureError, match="truncated"):
        Capture(store, "e" * 32, "w").restore()
    store.put_blob(checkpoint_key("e" * 32), b"\x80\x04pickle")
    with pytest.raises(CaptureError, match="is not a metalab checkpoint"):
        Capture(store, "e" * 32, "w").restore()


_KEYS = st.text(max_size=6) | st.sampled_from(["$array", "$bytes", "$tuple", "$dict", "$"])
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.builds(np.array, st.lists(st.floats(allow_nan=False, width=32), max_size=4))
)
_STATES = st.recursive(
    _LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(_KEYS, inner, max_size=4)
    ),
    max_leaves=20,
)


@given(_STATES)
def test_any_allowed_state_round_trips(state: Any) -> None:
    # Reserved-looking keys ("$array"...) included: a user dict is never read as a reference.
    blob = encode_checkpoint(state, "r" * 32)
    found, restored = decode_checkpoint(blob, "r" * 32, "blob")
    assert found
    _assert_same(restored, state)


@metalab.operation
def slow_counter(context: Any, capture: Any) -> None:
    """Needs 10 steps of 0.2 s: never done within its 0.9 s limit in one execution."""
    root = Path(context["dir"])
    state = capture.restore() or {"step": 0}
    with open(root / "starts", "a") as fh:
        fh.write(f"{state['step']}\n")
    for step in range(state["step"], 10):
        time.sleep(0.2)
        state = {"step": step + 1}
        capture.checkpoint(state)
    capture.metric("steps", state["step"])


def test_a_run_longer_than_its_timeout_finishes_over_several_executions(tmp_path: Path) -> None:
    exp = metalab.Experiment(
        name="ckpt-timeout",
        version="1",
        context={"dir": str(tmp_path)},
        operation=slow_counter,
        params=metalab.grid(x=[0]),
        seeds=metalab.seeds(base=1, replicates=1),
    )
    store = tmp_path / "store"
    attempts = []
    for _ in range(8):
        handle = metalab.run(
            exp,
            store=store,
            resume=True,
            timeout=0.9,
            executor=metalab.ProcessExecutor(1, mp_context="fork"),
        )
        (run,) = handle.result(60)
        attempts.append(run)
        if run.status is RunState.SUCCESS:
            break
        assert run.error.type == "RunTimeoutError"
    starts = [int(line) for line in (tmp_path / "starts").read_text().split()]
    assert attempts[-1].status is RunState.SUCCESS, starts
    assert attempts[-1].metrics["steps"] == 10
    # Every execution was killed at its limit and the next one went on from its last
    # checkpoint: the start steps never go back (without checkpoints every start is 0).
    assert len(starts) >= 2 and starts[0] == 0 and starts[-1] > 0, starts
    assert all(a <= b for a, b in itertools.pairwise(starts)), starts


_VALID = encode_checkpoint({"w": np.arange(3.0), "t": (1, b"x"), "$k": {"$array": 0}}, "g" * 32)


@given(st.binary(max_size=200), st.integers(0, len(_VALID) - 1), st.binary(min_size=1, max_size=8))
def test_garbled_blobs_raise_capture_error_only(noise: bytes, at: int, patch: bytes) -> None:
    # Whatever a co-user or a broken disk leaves under the key: a CaptureError naming the
    # blob, never another exception (and never an unpickle: there is none to run).
    from metalab.capture.checkpoint import MAGIC

    for blob in (MAGIC + noise, _VALID[:at] + patch + _VALID[at + len(patch) :]):
        try:
            decode_checkpoint(blob, "g" * 32, "blob")
        except CaptureError as exc:
            assert "blob" in str(exc)
