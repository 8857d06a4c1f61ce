"""The Rust columnar loader against a pure-Python reference, and Results loaded as columns against
the record-based Results it replaces for FileStores."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metalab
from metalab import _core
from metalab.errors import CorruptRecordError
from metalab.records import StoredState
from metalab.results import Results
from metalab.store.file import FileStore
from metalab.store.record_codec import decode_metric, decode_record

# -- pure-Python reference -----------------------------------------------------------------


def reference(root: Path) -> dict[str, Any]:
    """What load_record_columns must return, computed with json + record_codec."""
    docs = []
    problems = []
    for path in sorted(root.glob("runs/*/*.json")):
        data = path.read_bytes()
        try:
            decode_record(data, str(path))
        except CorruptRecordError as exc:
            problems.append((str(path), str(exc)))
            continue
        docs.append(json.loads(data))
    docs.sort(key=lambda d: (d["experiment_id"], d["task_index"]))
    out: dict[str, Any] = {
        key: [d.get(key) for d in docs]
        for key in (
            "run_id",
            "experiment_id",
            "status",
            "task_index",
            "replicate",
            "duration_s",
            "started_at",
        )
    }
    for section, decode in (("params", lambda v: v), ("metrics", decode_metric)):
        names = list(dict.fromkeys(k for d in docs for k in (d.get(section) or {})))
        out[section] = {
            name: [decode((d.get(section) or {}).get(name)) for d in docs] for name in names
        }
    out["problems"] = problems
    return out


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def assert_matches(root: Path) -> None:
    got = _core.load_record_columns(FileStore(root).layout.scan, None, None)
    want = reference(root)
    for key in ("run_id", "experiment_id", "status", "task_index", "replicate", "started_at"):
        assert got[key] == want[key], key
    assert all(same(a, b) for a, b in zip(got["duration_s"], want["duration_s"], strict=True))
    for section in ("params", "metrics"):
        assert [c[0] for c in got[section]] == list(want[section]), section
        for name, values, nulls, _first, _position in got[section]:
            expected = want[section][name]
            assert all(same(a, b) for a, b in zip(values, expected, strict=True)), name
            assert all(values[i] is None for i in nulls)
    assert [(p, r.split(": ", 1)[1].split(" (")[0]) for p, r, _ in got["problems"]] == [
        (p, r.split(": ", 1)[1].split(" (")[0]) for p, r in want["problems"]
    ]
    assert all(corrupt for _, _, corrupt in got["problems"])


# -- generated stores ------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_param_values = st.one_of(
    _scalars,
    st.lists(_scalars, max_size=3),
    st.dictionaries(st.text(max_size=3), _scalars, max_size=2),
)
_metric_values = st.one_of(
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["NaN", "Infinity", "-Infinity"]),
)
_keys = st.sampled_from(["lr", "batch", "depth", "name", "x"])
_corruptions = st.sampled_from(["truncated", "array", "missing_key", "bad_status", "empty"])


@st.composite
def stores(draw: Any) -> list[tuple[str, bytes]]:
    count = draw(st.integers(0, 12))
    files = []
    for index in range(count):
        run_id = f"{draw(st.integers(0, 2**128 - 1)):032x}"
        doc = {
            "run_id": run_id,
            "experiment_id": draw(st.sampled_from(["a:1", "b:2"])),
            "status": draw(st.sampled_from(["success", "failed", "cancelled", "running"])),
            "context_fingerprint": "c",
            "params_fingerprint": "p",
            "seed_fingerprint": "s",
            "params": draw(st.dictionaries(_keys, _param_values, max_size=4)),
            "task_index": draw(st.integers(0, 10**6)) * 100 + index,
            "replicate": draw(st.integers(0, 5)),
            "metrics": draw(st.dictionaries(_keys, _metric_values, max_size=4)),
            "metric_series": {},
            "started_at": draw(st.sampled_from([None, "2026-11-27T10:00:00+00:00"])),
            "finished_at": None,
            "duration_s": draw(st.one_of(st.none(), st.floats(0, 1e6))),
        }
        data = json.dumps(doc).encode()
        if draw(st.integers(0, 5)) == 0:
            kind = draw(_corruptions)
            if kind == "truncated":
                data = data[: draw(st.integers(0, len(data) - 1))]
            elif kind == "array":
                data = b"[1, 2]"
            elif kind == "missing_key":
                del doc[draw(st.sampled_from(["run_id", "params", "task_index", "status"]))]
                data = json.dumps(doc).encode()
            elif kind == "bad_status":
                doc["status"] = "exploded"
                data = json.dumps(doc).encode()
            else:
                data = b""
        files.append((run_id, data))
    return files


def _write_store(root: Path, files: list[tuple[str, bytes]]) -> None:
    for run_id, data in files:
        directory = root / "runs" / run_id[:2]
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{run_id}.json").write_bytes(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stores())
def test_rust_columns_equal_python_reference(files: list[tuple[str, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write_store(root, files)
        assert_matches(root)


def test_problems_name_path_and_reason_and_drop_done_marker(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    good = {
        "run_id": "ab" * 16,
        "experiment_id": "e:1",
        "status": "success",
        "context_fingerprint": "c",
        "params_fingerprint": "p",
        "seed_fingerprint": "s",
        "params": {"x": 1},
        "task_index": 0,
        "replicate": 0,
    }
    _write_store(
        tmp_path,
        [
            ("ab" * 16, json.dumps(good).encode()),
            ("cd" * 16, b'{"run_id": "trunc'),
            ("ef" * 16, b"[]"),
        ],
    )
    for run_id in ("ab" * 16, "cd" * 16, "ef" * 16):
        store.mark(run_id, metalab.records.RunState.SUCCESS)
    results = metalab.load_results(tmp_path)
    assert len(results) == 1
    reasons = {Path(p.location).name.removesuffix(".json"): p.reason for p in results.problems}
    assert str(store.layout.record("cd" * 16)) + ": not valid JSON" in reasons["cd" * 16]
    assert reasons["ef" * 16].endswith("expected a JSON object")
    assert store.states(["ab" * 16, "cd" * 16, "ef" * 16]) == [
        StoredState.DONE,
        StoredState.ABSENT,
        StoredState.ABSENT,
    ]


# -- Results loaded as columns behave like Results built from records ------------------


@pytest.fixture
def both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Results, Results]:
    monkeypatch.chdir(tmp_path)

    @metalab.operation
    def op(params: dict[str, Any], capture: Any) -> None:
        if params["lr"] == 0.3 and params["depth"] == 2:
            raise ValueError("boom")
        capture.metric("score", params["lr"] * params["depth"])
        capture.metric("odd", math.nan if params["depth"] == 1 else math.inf)

    exp = metalab.Experiment(
        name="cmp",
        version="1",
        context={},
        operation=op,
        params=metalab.grid(lr=[0.1, 0.2, 0.3], depth=[1, 2]),
        seeds=metalab.seeds(base=1, replicates=2),
    )
    fast = metalab.run(exp, store="store").result()
    store = FileStore("store")
    slow = Results.from_records(store.load_records().records, store)
    return fast, slow


def test_columnar_results_match_record_results(both: tuple[Results, Results]) -> None:
    fast, slow = both
    assert isinstance(fast, Results) and len(fast) == len(slow) == 12
    assert repr(fast) == repr(slow)
    assert [r.run_id for r in fast] == [r.run_id for r in slow]
    assert fast[3].record == slow[3].record and fast[-1].params == slow[-1].params
    assert [r.run_id for r in fast.successful] == [r.run_id for r in slow.successful]
    assert [r.run_id for r in fast.failed] == [r.run_id for r in slow.failed]
    for criteria in (
        {"lr": 0.2},
        {"depth": 2, "status": "success"},
        {"score": 0.4},
        {"replicate": 1},
        {"nothing": 3},
    ):
        assert [r.run_id for r in fast.filter(**criteria)] == [
            r.run_id for r in slow.filter(**criteria)
        ], criteria
    assert str(fast.table()) == str(slow.table())
    assert fast.summary(["lr"]) == slow.summary(["lr"])
    assert [r.run_id for r in fast[2:5]] == [r.run_id for r in slow[2:5]]
    pd = pytest.importorskip("pandas")
    pd.testing.assert_frame_equal(fast.to_dataframe(), slow.to_dataframe())
    pd.testing.assert_frame_equal(fast.successful.to_dataframe(), slow.successful.to_dataframe())
    pd.testing.assert_frame_equal(
        fast.to_dataframe(include_params=False), slow.to_dataframe(include_params=False)
    )
