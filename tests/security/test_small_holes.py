"""The "smaller holes" of the shared-store hardening, each shown closed.

NumPy values are taken as their Python values everywhere (same run IDs, JSON-ready
manifests and specs), an unserialisable value fails before the store is touched, locator
errors never show a password, ``file:`` locators that name no usable directory are refused,
SlurmConfig takes ASCII digits only, and a garbled launch pointer is a CorruptRecordError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import metalab
from metalab.errors import EncodingError
from metalab.plan import RunPlan


def _exp(params: Any, metadata: dict[str, Any] | None = None, context: Any = None) -> Any:
    @metalab.operation
    def op(params, runtime, capture):  # type: ignore[no-untyped-def]
        capture.metric("seen_type", {int: 1, float: 2, bool: 3}.get(type(params["x"]), 0))
        capture.metric("y", np.float64(params["x"]) * 2)
        capture.metric("flag", np.bool_(True))

    return metalab.Experiment(
        name="small",
        version="1",
        context=context if context is not None else {},
        operation=op,
        params=params,
        seeds=metalab.seeds(base=3, replicates=1),
        metadata=metadata,
    )


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# -- NumPy values are their Python values -----------------------------------------------

NUMPY_AND_PLAIN = [
    (lambda: metalab.grid(x=np.arange(3)), lambda: metalab.grid(x=[0, 1, 2])),
    (lambda: metalab.grid(x=[np.float64(0.5)]), lambda: metalab.grid(x=[0.5])),
    (lambda: metalab.grid(x=[np.float32(0.25)]), lambda: metalab.grid(x=[0.25])),
    (lambda: metalab.grid(x=[np.bool_(True)]), lambda: metalab.grid(x=[True])),
    (lambda: metalab.manual([{"x": np.int64(3)}]), lambda: metalab.manual([{"x": 3}])),
    (
        lambda: metalab.random(
            {"x": metalab.choice(np.arange(4)), "u": metalab.uniform(np.float32(0), 1)},
            n_trials=np.int64(3),
            seed=np.int64(5),
        ),
        lambda: metalab.random(
            {"x": metalab.choice([0, 1, 2, 3]), "u": metalab.uniform(0.0, 1)}, n_trials=3, seed=5
        ),
    ),
]


@pytest.mark.parametrize(("with_numpy", "plain"), NUMPY_AND_PLAIN)
def test_numpy_params_run_with_the_run_ids_of_python_values(
    with_numpy: Any, plain: Any, tmp_path: Path
) -> None:
    exp = _exp(with_numpy(), metadata={"n": np.int64(5), "shape": np.array([2, 3])})
    twin = _exp(plain())
    assert RunPlan(exp).run_ids == RunPlan(twin).run_ids

    results = metalab.run(exp, store=tmp_path / "np").result()
    assert sorted(r.run_id for r in results) == sorted(RunPlan(twin).run_ids)
    assert all(r.status.value == "success" for r in results)
    # The operation sees the Python type, as a worker would after the JSON round trip.
    expected_type = {int: 1, float: 2, bool: 3}[type(plain()[0]["x"])]
    assert {r.metrics["seen_type"] for r in results} == {expected_type}

    (manifest_path,) = (tmp_path / "np" / "experiments").glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["params"] == json.loads(json.dumps(plain().spec()))  # numbers, not "0"
    assert manifest["metadata"] == {"n": 5, "shape": [2, 3]}


def test_numpy_context_values_are_json_ready(tmp_path: Path) -> None:
    exp = _exp(metalab.grid(x=[1]), context={"n_cells": np.int64(50000), "w": np.arange(2)})
    assert (
        RunPlan(exp).context_fp
        == RunPlan(_exp(metalab.grid(x=[1]), context={"n_cells": 50000, "w": [0, 1]})).context_fp
    )
    metalab.run(exp, store=tmp_path / "ctx").result()
    (manifest_path,) = (tmp_path / "ctx" / "experiments").glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["context"] == {"__metalab_plain__": {"n_cells": 50000, "w": [0, 1]}}


def test_unserialisable_metadata_fails_before_anything_is_written(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with pytest.raises(EncodingError, match=r"metadata\['groups'\]\[1\]") as info:
        _exp(metalab.grid(x=[1]), metadata={"groups": ["a", {1, 2}]})
    assert "'set'" in str(info.value)

    # Edited after the Experiment was built: still refused before the manifest is written.
    exp = _exp(metalab.grid(x=[1]), metadata={"ok": 1})
    exp.metadata["when"] = np.datetime64("2024-01-01T00:00:00.000000000")
    with pytest.raises(EncodingError, match=r"'datetime64' at metadata\['when'\]"):
        metalab.run(exp, store=store)
    assert _files(store) == []

    exp.metadata["when"] = float("nan")
    with pytest.raises(EncodingError, match=r"metadata\['when'\]"):
        metalab.run(exp, store=store)
    assert _files(store) == []


@pytest.mark.parametrize(
    ("make", "path"),
    [
        (lambda: metalab.grid(x=[1, np.datetime64("NaT")]), r"grid\['x'\]\[1\]"),
        (lambda: metalab.grid(x=[np.complex128(1j)]), r"grid\['x'\]\[0\]"),
        (
            lambda: metalab.manual([{"x": [np.longdouble(1)]}]),
            r"'longdouble' at values\[0\]\['x'\]\[0\]",
        ),
        (lambda: metalab.choice([np.timedelta64(1, "ns")]), r"value"),
    ],
)
def test_numpy_values_without_a_python_equal_are_encoding_errors(make: Any, path: str) -> None:
    with pytest.raises(EncodingError, match=path):
        make()
