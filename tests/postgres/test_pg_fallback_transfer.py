"""FallbackStore (incl. killing PostgreSQL mid-run), transfers, service manager, spec blocks."""

from __future__ import annotations

import filecmp
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers_pg import experiment, record, slow

import metalab
from metalab.records import RunState, StoredState
from metalab.store import (
    FallbackStore,
    FileStore,
    create_store,
    export_store,
    import_from_filestore,
)

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]
PG_SCRIPT = ROOT / "scripts" / "postgres-local.sh"
METALAB = [sys.executable, "-c", "import sys; from metalab.cli import main; sys.exit(main())"]


def test_fallback_block_and_locator(pg_locator: str, tmp_path: Path) -> None:
    primary = create_store(pg_locator)
    fallback = create_store(str(tmp_path / "runs" / "backup"))
    store = FallbackStore(primary, fallback, write_to_both=True)
    results = metalab.run(experiment("fb"), store=store).result()
    assert len(results.successful) == 4
    # write_to_both: both stores hold every run, log and artifact.
    for s in (primary, fallback):
        assert len(s.load_records().records) == 4
        assert set(s.states([r.run_id for r in results])) == {StoredState.DONE}
        assert "Training complete" in s.read_log(results[0].run_id)
    rebuilt = create_store(store.locator)
    assert isinstance(rebuilt, FallbackStore) and rebuilt.locator == store.locator
    assert rebuilt.write_to_both and rebuilt.primary.locator == primary.locator


def test_fallback_survives_postgres_dying_mid_experiment(pg_locator: str, tmp_path: Path) -> None:
    n = 40
    exp = metalab.Experiment(
        name="kill_pg",
        version="1",
        context={},
        operation=slow,
        params=metalab.grid(i=list(range(n))),
        seeds=metalab.seeds(base=1),
    )
    primary = create_store(pg_locator)
    primary.ping()  # type: ignore[attr-defined]
    backup = tmp_path / "backup"
    store = FallbackStore(primary, str(backup))

    def outage() -> None:
        time.sleep(1.0)
        subprocess.run([str(PG_SCRIPT), "stop"], check=True, capture_output=True)
        time.sleep(4.0)
        subprocess.run([str(PG_SCRIPT), "start"], check=True, capture_output=True)

    killer = threading.Thread(target=outage)
    try:
        killer.start()
        handle = metalab.run(exp, store=store)
        killer.join()  # read results once the server is back, as a user would
        results = handle.result()
    finally:
        killer.join()
        # Whatever happened, leave the shared server running for everyone else.
        subprocess.run([str(PG_SCRIPT), "start"], check=False, capture_output=True)
    assert not results.problems
    assert len(results.successful) == n
    in_fallback = FileStore(backup).load_records().records
    assert in_fallback, "the outage should have sent some runs to the fallback"
    merged = FallbackStore(primary, str(backup)).load_records(experiment_id=exp.experiment_id)
    assert len(merged.records) == n  # zero lost records
    # Push what landed in the fallback back into the primary: then PG alone has all.
    import_from_filestore(backup, primary)
    ids = [r.run_id for r in results]
    assert set(primary.states(ids)) == {StoredState.DONE}
    assert len(primary.load_records(experiment_id=exp.experiment_id).records) == n


def test_transfer_round_trip_is_exact(pg_locator: str, tmp_path: Path) -> None:
    src = tmp_path / "runs" / "my_exp"
    exp = experiment("xfer")
    metalab.run(exp, store=str(src), derived_metrics=[_derived]).result()
    store = FileStore(src)
    rid = store.load_records().records[0].run_id
    store.put_artifact(rid, "big", os.urandom(3 * 1024 * 1024), "bytes", ".bin", {})
    report = import_from_filestore(str(src), pg_locator)
    assert report.records == 4 and report.manifests == 1
    import_from_filestore(str(src), pg_locator)  # idempotent re-run
    export_store(pg_locator, str(tmp_path / "runs" / "export"))
    export_store(pg_locator, str(tmp_path / "runs" / "export"))
    _assert_same_tree(src, tmp_path / "runs" / "export")
    only = export_store(pg_locator, str(tmp_path / "one"), experiment_id=exp.experiment_id)
    assert only.records == 4
    none = export_store(pg_locator, str(tmp_path / "none"), experiment_id="other:1")
    assert none.records == 0
    assert len(create_store(pg_locator).read_log(rid).splitlines()) == 2


def _derived(run):  # type: ignore[no-untyped-def]
    return {"best": min(v for _, v in run.record.metric_series["loss"]), "nan": float("nan")}


def _stored_files(root: Path) -> list[Path]:
    # The results index (index/) is a cache each FileStore builds for what it wrote, its
    # segments named after the writing process; a transfer copies the records it is built
    # from (loading falls back to them; `metalab store reindex` rebuilds it).
    return sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).parts[0] != "index"
    )


def _assert_same_tree(a: Path, b: Path) -> None:
    files_a = _stored_files(a)
    files_b = _stored_files(b)
    assert files_a == files_b
    for rel in files_a:
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel


def test_store_transfer_cli_block(pg_locator: str, tmp_path: Path) -> None:
    src = tmp_path / "runs" / "my_exp"
    metalab.run(experiment("cli"), store=str(src)).result()
    done = subprocess.run(
        [*METALAB, "store", "import", "--from", str(src), "--to", pg_locator],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "runs" / "export"
    done = subprocess.run(
        [*METALAB, "store", "export", "--from", pg_locator, "--to", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    _assert_same_tree(src, out)
    assert len(metalab.load_results(str(out))) == 4


def test_service_start_status_stop_native(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"

    def run(*a):
        return subprocess.run(
            [*METALAB, "postgres", *a, "--store", str(store_dir)],
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )

    started = run("start", "--engine", "native")
    try:
        assert started.returncode == 0, started.stderr
        service = store_dir / "services" / "postgres" / "service.json"
        info = json.loads(service.read_text())
        assert stat.S_IMODE(service.stat().st_mode) == 0o600
        assert info["port"] != 5432 and info["mode"] == "native"
        status = run("status")
        assert status.returncode == 0 and info["password"] not in status.stdout + started.stdout
        # metalab.run discovers the service next to the FileStore and uses PostgreSQL.
        results = metalab.run(experiment("svc"), store=str(store_dir)).result()
        assert len(results.successful) == 4
        assert not (store_dir / "runs").exists()
        pg = results.store
        assert info["password"] not in pg.locator and "passfile=" in pg.locator
        rebuilt = create_store(pg.locator)
        assert len(rebuilt.load_records().records) == 4
        rebuilt.close()
        pg.close()
        manifests = json.dumps(rebuilt.list_manifests())
        assert info["password"] not in manifests
    finally:
        stopped = run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert run("status").returncode != 0


def test_records_and_logs_never_hold_the_password(pg_url: str, tmp_path: Path) -> None:
    import uuid

    password = Path(os.environ.get("PGPASSFILE", Path.home() / ".pgpass")).read_text()
    password = password.splitlines()[0].rsplit(":", 1)[1]
    loc = pg_url.replace("@", f":{password}@", 1) + f"?schema=t_{uuid.uuid4().hex}"
    store = create_store(loc)
    try:
        results = metalab.run(experiment("secret"), store=store).result()
        blob = json.dumps(store.list_manifests()) + repr(results) + repr(store)
        blob += "".join(store.read_log(r.run_id) for r in results)
        blob += "".join(json.dumps(r.record.to_json(), default=str) for r in results)
        for key in ("spec-", "launch-"):
            blob += "".join(str(store.get_blob(k)) for k in store.blob_keys() if k.startswith(key))  # type: ignore[attr-defined]
        assert password not in blob
        store.put_record(record("aa" * 8))
        store.mark("aa" * 8, RunState.SUCCESS)
    finally:
        store.drop_schema()  # type: ignore[attr-defined]


def test_service_as_slurm_job(tmp_path: Path) -> None:
    from services import require_slurm

    require_slurm()
    store_dir = tmp_path / "slurm_store"
    base = [*METALAB, "postgres"]
    started = subprocess.run(
        [*base, "start", "--store", str(store_dir), "--slurm", "--timeout", "150"],
        capture_output=True,
        text=True,
        check=False,
        timeout=200,
    )
    try:
        assert started.returncode == 0, started.stderr
        info = json.loads((store_dir / "services/postgres/service.json").read_text())
        assert info["mode"] == "slurm" and info["job_id"]
        results = metalab.run(experiment("slurmsvc"), store=str(store_dir)).result()
        assert len(results.successful) == 4
        results.store.close()
    finally:
        stopped = subprocess.run(
            [*base, "stop", "--store", str(store_dir)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    assert stopped.returncode == 0, stopped.stderr


def test_fallback_reports_an_unreachable_primary_when_loading(tmp_path: Path) -> None:
    # Port 1 on loopback refuses connections at once: the primary is "down".
    primary = create_store("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    store = FallbackStore(primary, str(tmp_path / "backup"))
    loaded = store.load_records()
    assert loaded.records == []
    (problem,) = loaded.problems
    assert "primary store unreachable" in problem.reason
