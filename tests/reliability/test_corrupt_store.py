"""Corrupt stores are reported, never silently wrong.

* One corpus of record variants (``corrupt_records/``, described in its ``cases.json``)
  goes through every loader: the Python codec (``get_record``, ``load_records``) and the
  Rust column loader (``load_results``, by listing and by run IDs, and from in-memory
  documents as PostgreSQL uses it). They must agree on accept/reject and on the reason.
* A record deleted while its done marker stays, and a record overwritten by another
  run's, are reported and re-run by resume; the damage is done by a second Unix user
  (``nobody``) in a group-writable store, as it would be on a shared ``/scratch``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metalab
from metalab import _core
from metalab.errors import CorruptRecordError
from metalab.store.file import FileStore
from metalab.store.record_codec import decode_record

CORPUS = Path(__file__).parent / "corrupt_records"
MANIFEST = json.loads((CORPUS / "cases.json").read_text())
RUN_ID: str = MANIFEST["run_id"]
JSON_SYNTAX = "not valid JSON ("


def _python_reason(data: bytes, location: str, run_id: str | None) -> str | None:
    try:
        decode_record(data, location, run_id)
    except CorruptRecordError as exc:
        reason = str(exc)
        assert reason.startswith(f"{location}: ")
        return reason.removeprefix(f"{location}: ")
    return None


def _rust_reasons(data: dict[str, Any], location: str) -> list[str]:
    reasons = []
    for where, reason, corrupt in data["problems"]:
        assert where == location and corrupt
        assert reason.startswith(f"{location}: ")
        reasons.append(reason.removeprefix(f"{location}: "))
    return reasons


def _same(python: str | None, rust: str | None, expected: str | None) -> None:
    if expected == JSON_SYNTAX:
        # Only the parsers' own detail inside "not valid JSON (...)" may differ.
        assert python is not None and python.startswith(JSON_SYNTAX), python
        assert rust is not None and rust.startswith(JSON_SYNTAX), rust
    else:
        assert python == rust == expected


@pytest.mark.parametrize("case", sorted(MANIFEST["cases"]))
def test_python_and_rust_loaders_agree_on_the_corpus(case: str, tmp_path: Path) -> None:
    expected = MANIFEST["cases"][case]["expect"]
    data = (CORPUS / f"{case}.json").read_bytes()
    store = FileStore(tmp_path)
    path = store.layout.record(RUN_ID)
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    location = str(path)

    python = _python_reason(data, location, RUN_ID)
    listed = _core.load_record_columns(store.layout.scan)
    by_id = _core.load_record_columns(store.layout.scan, [RUN_ID])
    for columns in (listed, by_id):
        reasons = _rust_reasons(columns, location)
        assert len(reasons) + len(columns["run_id"]) == 1
        _same(python, reasons[0] if reasons else None, expected)

    # The stores' own entry points say the same.
    loaded = store.load_records()
    assert [p.reason for p in loaded.problems] == (
        [] if python is None else [f"{location}: {python}"]
    )
    if python is None:
        (record,) = loaded.records
        assert store.get_record(RUN_ID) == record
        # The columns the Rust loader fills hold the Python record's values.
        assert listed["run_id"] == [record.run_id]
        assert listed["status"] == [record.status.value]
        assert (listed["task_index"], listed["replicate"]) == (
            [record.task_index],
            [record.replicate],
        )
        assert listed["started_at"] == [json.loads(data).get("started_at")]
    else:
        with pytest.raises(CorruptRecordError):
            store.get_record(RUN_ID)

    # In-memory documents (PostgreSQL rows) have no file name to match; everything else
    # is checked the same way. Bytes that are not UTF-8 cannot be such a document.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    docs = _core.record_columns_from_docs([("row", text)])
    rust_doc = [reason.removeprefix("row: ") for _, reason, _ in docs["problems"]]
    python_doc = _python_reason(data, "row", None)
    _same(
        python_doc,
        rust_doc[0] if rust_doc else None,
        JSON_SYNTAX if expected == JSON_SYNTAX else python_doc,
    )


def test_the_corpus_covers_every_check_and_the_files_match_the_manifest() -> None:
    files = {p.stem for p in CORPUS.glob("*.json")} - {"cases"}
    assert files == set(MANIFEST["cases"])
    expects = [c["expect"] for c in MANIFEST["cases"].values()]
    assert None in expects and JSON_SYNTAX in expects and "expected a JSON object" in expects
    for key in ("run_id", "status", "task_index", "started_at", "metric_series", "artifacts"):
        assert any(e and key in e for e in expects), key


# -- whole-store damage by another user --------------------------------------------------


def _experiment(calls: list[int]) -> metalab.Experiment:
    @metalab.operation
    def op(params: dict[str, Any], capture: Any) -> None:
        calls.append(params["i"])
        capture.metric("i", params["i"])

    return metalab.Experiment(
        "damaged", "1", {}, op, metalab.grid(i=list(range(30))), metalab.seeds(7)
    )


@pytest.fixture
def shared_store() -> Iterator[Path]:
    """A finished 30-run experiment in a store a second user can write (group-writable
    lab folder), under /tmp so that user can reach it."""
    from other_user import shared_dir

    root = shared_dir()
    store = root / "store"
    calls: list[int] = []
    results = metalab.run(_experiment(calls), store=store).result()
    assert len(results) == 30 and len(calls) == 30
    for top in (store / "runs", store / "done"):
        for path in [top, *top.rglob("*")]:
            path.chmod(0o777 if path.is_dir() else 0o666)
    try:
        yield store
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _status(store: Path) -> metalab.RunStatus:
    return metalab.run(_experiment([]), store=store, dry_run=True).status


def test_a_deleted_record_is_reported_and_rerun_not_counted_done(
    shared_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from other_user import run_as_other_user

    store = FileStore(shared_store)
    victim = metalab.load_results(shared_store)[7].run_id
    run_as_other_user(lambda: store.layout.record(victim).unlink())
    assert store.layout.done_marker(victim).exists()

    for results in (
        metalab.load_results(shared_store),
        metalab.load_results(shared_store, experiment_id="damaged:1"),
    ):
        assert len(results) == 29
        (problem,) = results.problems
        assert problem.location == str(store.layout.record(victim))
        assert "record missing" in problem.reason and victim in problem.reason
    # The Python loader words it exactly as the Rust one, by listing and by run ID.
    assert store.load_records().problems == [problem]
    assert store.load_records(run_ids=[victim]).problems == [problem]
    # Reported on every load until the run executes again, not only once.
    assert len(metalab.load_results(shared_store).problems) == 1
    status = _status(shared_store)
    assert (status.completed, status.pending) == (29, 1)
    capsys.readouterr()

    calls: list[int] = []
    again = metalab.run(_experiment(calls), store=shared_store).result()
    assert calls == [7]
    assert len(again) == 30 and not again.problems
    assert not metalab.load_results(shared_store).problems
    assert _status(shared_store).completed == 30


def test_a_record_copied_over_another_runs_is_corrupt_not_a_duplicate(
    shared_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from other_user import run_as_other_user

    store = FileStore(shared_store)
    runs = metalab.load_results(shared_store)
    source, victim = runs[3].run_id, runs[11].run_id

    def overwrite() -> None:
        store.layout.record(victim).write_bytes(store.layout.record(source).read_bytes())

    run_as_other_user(overwrite)
    results = metalab.load_results(shared_store)
    run_ids = [r.run_id for r in results]
    assert len(run_ids) == len(set(run_ids)) == 29 and victim not in run_ids
    (problem,) = results.problems
    assert problem.location == str(store.layout.record(victim))
    assert f"run_id '{source}' differs from the run ID it is stored under" in problem.reason
    # Python's loaders refuse it the same way (reading the run by its ID included).
    with pytest.raises(CorruptRecordError, match="differs from the run ID"):
        store.get_record(victim)
    python_problems = store.load_records().problems
    assert [p.reason for p in python_problems] == [problem.reason]
    capsys.readouterr()

    calls: list[int] = []
    again = metalab.run(_experiment(calls), store=shared_store).result()
    assert calls == [11]
    assert sorted(r.params["i"] for r in again) == list(range(30)) and not again.problems


def test_a_bad_started_at_is_a_problem_not_a_crash_on_run_record(shared_store: Path) -> None:
    from other_user import run_as_other_user

    store = FileStore(shared_store)
    victim = metalab.load_results(shared_store)[0].run_id
    path = store.layout.record(victim)

    def garble() -> None:
        document = json.loads(path.read_bytes())
        document["started_at"] = "yesterday"
        path.write_text(json.dumps(document))

    run_as_other_user(garble)
    results = metalab.load_results(shared_store)
    assert len(results) == 29
    (problem,) = results.problems
    assert "'started_at' must be a timestamp" in problem.reason
    for run in results:
        assert run.record.started_at is not None  # every loaded run materialises


# -- differential properties: Rust against the Python side ------------------------------

_BASE = json.loads((CORPUS / "ok_full.json").read_bytes())
# Where a generated value is put: top-level fields and fields inside nested objects.
_PLACES: list[tuple[Any, ...]] = [
    (key,)
    for key in (
        "run_id", "experiment_id", "status", "params_fingerprint", "params", "task_index",
        "replicate", "metrics", "metric_series", "started_at", "finished_at", "duration_s",
        "error", "provenance", "artifacts", "derived_errors", "reason", "schema",
    )
] + [
    ("provenance", "pid"), ("provenance", "host"), ("artifacts", 0), ("artifacts", 0, "size"),
    ("artifacts", 0, "meta"), ("metric_series", "loss"), ("metric_series", "loss", 1),
    ("metric_series", "loss", 1, 0), ("params", "lr"), ("derived_errors", "f"),
]  # fmt: skip
_TIMESTAMPS = st.from_regex(
    r"[0-9]{4}-[0-2][0-9]-[0-3][0-9]T[0-2][0-9]:[0-6][0-9]:[0-6][0-9](\.[0-9]{0,7})?"
    r"(Z|[+-][0-2][0-9]:[0-6][0-9]|[+-][0-9]{4})?",
    fullmatch=True,
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=50),
    _TIMESTAMPS,
    st.sampled_from(["success", "failed", RUN_ID, "", "NaN"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["type", "message", "name", "x", "pid"]), inner),
    ),
    max_leaves=6,
)


def _put(document: Any, place: tuple[Any, ...], value: Any) -> None:
    for step in place[:-1]:
        if isinstance(document, dict):
            document = document.setdefault(step, {})
        elif isinstance(document, list) and isinstance(step, int) and step < len(document):
            document = document[step]
        else:
            return
    last = place[-1]
    in_list = isinstance(document, list) and isinstance(last, int) and last < len(document)
    if isinstance(document, dict) or in_list:
        document[last] = value


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(_PLACES), _VALUES), min_size=1, max_size=3))
def test_rust_checks_equal_python_checks_on_generated_records(
    edits: list[tuple[tuple[Any, ...], Any]],
) -> None:
    document = json.loads(json.dumps(_BASE))
    for place, value in edits:
        _put(document, place, value)
    text = json.dumps(document)
    python = _python_reason(text.encode(), "doc", None)
    (rust,) = [
        r.removeprefix("doc: ")
        for _, r, _ in _core.record_columns_from_docs([("doc", text)])["problems"]
    ] or [None]
    assert rust == python


@settings(deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ab12", "ab34", "cd56", "zz", "x", RUN_ID, "cdcd" * 8]),
            st.sampled_from(["done", "runs"]),
            st.sampled_from(["", ".done", ".json", ".log", ".json.tmp"]),
            st.booleans(),  # hidden (a leading dot, as temporaries have)
        ),
        max_size=12,
    ),
    st.lists(st.sampled_from(["ab12", "ab34", "cd56", "zz", "x", "q", RUN_ID]), max_size=8),
)
def test_scan_completed_equals_the_reference(
    files: list[tuple[str, str, str, bool]], run_ids: list[str]
) -> None:
    import tempfile

    import reference as ref

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for run_id, top, suffix, hidden in files:
            directory = root / top / run_id[:2]
            directory.mkdir(parents=True, exist_ok=True)
            (directory / f"{'.' if hidden else ''}{run_id}{suffix}").touch()
        got = _core.scan_completed(FileStore(root).layout.scan, run_ids)
        assert got == ref.scan_completed(str(root / "done"), str(root / "runs"), run_ids)
