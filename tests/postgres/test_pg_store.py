"""PostgresStore against a real server: the spec's blocks, Store contract, concurrency."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from helpers_pg import experiment, record

import metalab
from metalab.errors import LocatorError
from metalab.records import RunState, StoredState
from metalab.store import FileStore, create_store, to_locator
from metalab.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres
# The console script's entry point (``python -m metalab.cli`` would register the
# sub-commands on a second copy of the module).
METALAB = [sys.executable, "-c", "import sys; from metalab.cli import main; sys.exit(main())"]


def test_storage_backends_block(pg_locator: str, tmp_path: Path) -> None:
    # Spec "Storage Backends": the same experiment runs into a file and a PG store.
    exp = experiment()
    handle = metalab.run(exp, store=str(tmp_path / "runs" / "my_exp"))
    assert len(handle.result()) == 4
    handle = metalab.run(exp, store=(tmp_path / "abs").as_uri())
    assert len(handle.result()) == 4
    handle = metalab.run(exp, store=pg_locator)
    results = handle.result()
    assert len(results) == 4 and all(r.metrics["score"] > 0 for r in results)


def test_end_to_end_run_then_load_results(pg_locator: str) -> None:
    exp = experiment("e2e")
    results = metalab.run(exp, store=pg_locator, derived_metrics=[_final]).result()
    assert len(results.successful) == 4
    loaded = metalab.load_results(pg_locator)
    assert sorted(r.run_id for r in loaded) == sorted(r.run_id for r in results)
    run = loaded[0]
    assert run.record.metric_series["loss"][0][0] == 0
    assert list(run.artifact("weights")) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert "Starting training" in run.log and "Training complete" in run.log
    assert run.derived["final"] == run.record.metric_series["loss"][-1][1]
    df = loaded.to_dataframe(include_derived=True)
    assert len(df) == 4 and "derived_final" in df.columns
    store = create_store(pg_locator)
    assert store.list_manifests(exp.experiment_id)[0]["experiment_id"] == exp.experiment_id
    # Resume: nothing left to do, completion answered from the markers table.
    again = metalab.run(exp, store=pg_locator)
    assert again.result() is not None and again.status.completed >= 0
    assert set(store.states([r.run_id for r in results])) == {StoredState.DONE}


def _final(run):  # type: ignore[no-untyped-def]
    return {"final": run.record.metric_series["loss"][-1][1]}


def test_store_factory_block(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = create_store("./runs/exp")
    assert to_locator(store) == (tmp_path / "runs" / "exp").as_uri()
    store = create_store(pg_url)
    assert isinstance(store, PostgresStore)
    loc = pg_url + "?schema=myschema&artifact_root=/data"
    assert to_locator(create_store(loc)) == loc
    assert create_store(to_locator(create_store(loc))).locator == loc
    for bad in (
        "postgresql://u:pw@h:99999/db",
        "postgresql://h/db?schema=x;drop",
        "postgresql://h/db?nope=1",
    ):
        with pytest.raises(LocatorError) as info:
            create_store(bad)
        assert "pw" not in str(info.value).replace("pw@", "***@") or ":***@" in str(info.value)


def test_password_in_locator_is_used_but_never_shown(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    password = _pgpass_password()
    schema = f"t_{uuid.uuid4().hex}"
    secret_url = pg_url.replace("@", f":{password}@", 1) + f"?schema={schema}"
    store = create_store(secret_url)
    try:
        store.put_record(record("ab" * 8))
        store.mark("ab" * 8, RunState.SUCCESS)
        assert store.states(["ab" * 8]) == [StoredState.DONE]
        texts = [repr(store), store.locator, to_locator(store), str(store.config)]
        assert all(password not in t for t in texts)
        # Errors are sanitised: a wrong password on the same host.
        bad = create_store(pg_url.replace("@", ":WrongSecret123@", 1) + f"?schema={schema}")
        with pytest.raises(metalab.errors.StoreError) as info:
            bad.get_blob("x")
        assert "WrongSecret123" not in str(info.value) and password not in str(info.value)
        with pytest.raises(LocatorError) as info2:
            create_store(secret_url + "&bogus=1")
        assert password not in str(info2.value)
    finally:
        store.drop_schema()  # type: ignore[attr-defined]
        store.close()


def _pgpass_password() -> str:
    path = Path(os.environ.get("PGPASSFILE", Path.home() / ".pgpass"))
    return path.read_text().splitlines()[0].rsplit(":", 1)[1]


def test_hostile_schema_cannot_inject(pg_url: str) -> None:
    for hostile in (
        'x"; DROP TABLE t; --',
        "Robert'); DROP SCHEMA public;--",
        "a b",
        "A",
        "1abc",
        "x" * 64,
    ):
        with pytest.raises(LocatorError):
            PostgresStore.from_locator(pg_url + "?schema=" + _q(hostile))
    # Even if validation were bypassed, the name is quoted as one identifier.
    from metalab.store.postgres_config import PostgresConfig

    with pytest.raises(LocatorError):
        PostgresConfig(schema='evil"; DROP SCHEMA metalab CASCADE; --')


def _q(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def test_contract_artifacts_logs_derived_blobs(pg_locator: str, tmp_path: Path) -> None:
    store = create_store(pg_locator)
    assert isinstance(store, PostgresStore)
    rid = "cd" * 16  # a run ID as metalab makes them: 32 hex characters
    small = store.put_artifact(rid, "small", b"abc", "bytes", ".bin", {"k": 1})
    big_data = os.urandom(2 * 1024 * 1024)
    big = store.put_artifact(rid, "big", big_data, "bytes", ".bin", {})
    assert store.get_artifact(rid, small) == b"abc" and store.get_artifact(rid, big) == big_data
    assert list((tmp_path / "pg_artifacts").rglob("big.bin"))  # large one went to the root
    sink = store.open_log(rid)
    sink.write_line("one")
    sink.write_line("two")
    assert store.read_log(rid) == "one\ntwo\n"  # visible before close (crash-safe)
    sink.close()
    store.put_derived(rid, {"d": 1.5})
    assert store.get_derived([rid, "zz"]) == {rid: {"d": 1.5}}
    store.put_blob("spec-x.json", b"{}")
    store.put_blob("spec-x.json", b"{1}")
    assert store.get_blob("spec-x.json") == b"{1}" and store.get_blob("nope") is None
    rec = record(rid)
    store.put_record(rec)
    store.put_record(rec)  # idempotent upsert
    store.mark(rid, RunState.FAILED)
    assert store.states([rid]) == [StoredState.FAILED]
    store.mark(rid, RunState.SUCCESS)
    assert store.states([rid]) == [StoredState.DONE]
    got = store.get_record(rid)
    assert got is not None and list(got.params) == ["zeta", "alpha"]  # key order kept
    assert len(store.load_records(experiment_id="e:1").records) == 1
    assert store.load_records(experiment_id="other").records == []


def _writer(locator: str, worker: int, n: int) -> None:
    store = create_store(locator)
    for i in range(n):
        own = f"{worker:02x}{i:014x}"
        shared = f"ff{i:014x}"  # every worker writes these: upserts must not conflict
        for rid in (own, shared):
            sink = store.open_log(rid)
            sink.write_line(f"worker {worker} run {i}")
            store.put_artifact(rid, "a", f"{worker}".encode(), "bytes", ".bin", {})
            store.put_record(record(rid, task_index=i))
            store.mark(rid, RunState.SUCCESS)
            store.put_derived(rid, {"w": worker})
    store.close()


def test_eight_concurrent_processes(pg_locator: str) -> None:
    n = 40
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(pg_locator, w, n)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 8
    store = create_store(pg_locator)
    ids = [f"{w:02x}{i:014x}" for w in range(8) for i in range(n)] + [
        f"ff{i:014x}" for i in range(n)
    ]
    assert set(store.states(ids)) == {StoredState.DONE}
    assert len(store.load_records().records) == 9 * n
    assert store.read_log("ff" + "0" * 14).count("\n") == 8


def test_fork_recreates_pool(pg_locator: str) -> None:
    store = create_store(pg_locator)
    store.put_blob("k", b"parent")
    ctx = mp.get_context("fork")
    proc = ctx.Process(target=_fork_child, args=(store,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert store.get_blob("k") == b"child"  # parent's pool still fine after the child


def _fork_child(store: PostgresStore) -> None:
    store.put_blob("k", b"child")


def test_load_uses_sql_filter(pg_locator: str) -> None:
    store = create_store(pg_locator)
    for i in range(30):
        store.put_record(record(f"{i:016x}", i, experiment_id="a:1" if i % 2 else "b:1"))
    loaded = store.load_records(experiment_id="a:1")
    assert len(loaded.records) == 15 and not loaded.problems
    subset = store.load_records(run_ids=[f"{i:016x}" for i in range(5)])
    assert len(subset.records) == 5


def test_cli_output_has_no_password(pg_url: str, tmp_path: Path) -> None:
    password = _pgpass_password()
    src = FileStore(tmp_path / "src")
    src.put_record(record("ee" * 16))
    schema = f"t_{uuid.uuid4().hex}"
    dst = pg_url.replace("@", f":{password}@", 1) + f"?schema={schema}"
    try:
        done = subprocess.run(
            [*METALAB, "store", "import", "--from", str(src.root), "--to", dst],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert password not in done.stdout + done.stderr and "copied 1 runs" in done.stdout
    finally:
        cleanup = create_store(dst)
        cleanup.drop_schema()  # type: ignore[attr-defined]
