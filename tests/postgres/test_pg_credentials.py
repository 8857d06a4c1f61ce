"""A password given only in the locator reaches ProcessExecutor workers (issue 11, item 5).

Every test logs in as a fresh role whose password exists nowhere but in the locator
(``PGPASSFILE`` points at an empty file). Before the fix, workers rebuilt the store from
the password-less locator: runs executed and then failed to be recorded, and behind a
FallbackStore every record silently went to the fallback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

import metalab
from metalab.errors import StoreError
from metalab.records import StoredState
from metalab.store import FallbackStore, FileStore, create_store
from metalab.store.credentials import verify_login
from metalab.store.postgres import PostgresStore
from metalab.store.postgres_config import PostgresConfig
from pg_roles import PasswordRole, password_role

pytestmark = pytest.mark.postgres
N_RUNS = 12


@pytest.fixture
def pw_role(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PasswordRole]:
    """A role whose password is only in its locator (no pgpass entry can supply it)."""
    with password_role(tmp_path, monkeypatch) as role:
        yield role


def note_process(context: Any, params: Any, capture: Any) -> None:
    """Record what another local user could see of this worker: argv and environment."""
    out = Path(context["dir"]) / f"proc-{params['i']}"
    out.write_bytes(
        Path("/proc/self/cmdline").read_bytes() + b"\n" + Path("/proc/self/environ").read_bytes()
    )
    capture.metric("pid", os.getpid())


def _experiment(tmp_path: Path, name: str) -> metalab.Experiment:
    return metalab.Experiment(
        name=name,
        version="1",
        context={"dir": str(tmp_path)},
        operation=note_process,
        params=metalab.grid(i=list(range(N_RUNS))),
        seeds=metalab.seeds(base=3),
    )


def _assert_secret_absent(role: PasswordRole, *texts: bytes) -> None:
    for text in texts:
        for secret in role.secrets:
            assert secret.encode() not in text


def _proc_notes(tmp_path: Path) -> list[bytes]:
    notes = [p.read_bytes() for p in sorted(tmp_path.glob("proc-*"))]
    assert len(notes) == N_RUNS
    return notes


def test_process_executor_workers_log_in_with_the_locator_password(
    pw_role: PasswordRole, tmp_path: Path
) -> None:
    exp = _experiment(tmp_path, "pw_process")
    handle = metalab.run(
        exp, store=pw_role.url, executor=metalab.ProcessExecutor(2, mp_context="spawn")
    )
    results = handle.result(timeout=120)
    assert [r.status.value for r in results] == ["success"] * N_RUNS
    assert len({r.metrics["pid"] for r in results}) == 2  # really ran in the two workers
    store = PostgresStore.from_locator(pw_role.url)
    try:
        stored = store.load_records(exp.experiment_id).records
        assert len(stored) == N_RUNS
        assert set(store.states([r.run_id for r in stored])) == {StoredState.DONE}
    finally:
        store.close()
    # The password went over the pipe: not in the workers' argv or environment.
    _assert_secret_absent(pw_role, *_proc_notes(tmp_path))


def test_fallback_store_sends_every_record_to_postgres_none_to_the_fallback(
    pw_role: PasswordRole, tmp_path: Path
) -> None:
    exp = _experiment(tmp_path, "pw_fallback")
    fallback_dir = tmp_path / "fallback"
    store = FallbackStore(pw_role.url, str(fallback_dir))
    handle = metalab.run(exp, store=store, executor=metalab.ProcessExecutor(2))
    results = handle.result(timeout=120)
    assert [r.status.value for r in results] == ["success"] * N_RUNS
    run_ids = [r.run_id for r in results]
    primary = PostgresStore.from_locator(pw_role.url)
    try:
        assert len(primary.load_records(exp.experiment_id).records) == N_RUNS
        assert set(primary.states(run_ids)) == {StoredState.DONE}
    finally:
        primary.close()
    backup = FileStore(str(fallback_dir))
    assert backup.load_records().records == []
    assert StoredState.DONE not in backup.states(run_ids)
    _assert_secret_absent(pw_role, *_proc_notes(tmp_path))


def test_a_refused_login_is_an_error_an_outage_is_not(
    pw_role: PasswordRole, tmp_path: Path
) -> None:
    no_password = pw_role.url.replace(f":{pw_role.secrets[1]}@", "@")
    assert no_password != pw_role.url
    with pytest.raises(StoreError, match=r"cannot log in.*no password supplied") as caught:
        verify_login(create_store(no_password))
    _assert_secret_absent(pw_role, str(caught.value).encode())
    wrong = pw_role.url.replace(pw_role.secrets[1], "wrong")
    with pytest.raises(StoreError, match="password authentication failed"):
        verify_login(FallbackStore(wrong, str(tmp_path / "fb")))
    # A server that does not answer is an outage, for the FallbackStore to handle.
    down = "postgresql://nobody@127.0.0.1:9/db?connect_timeout=2"
    verify_login(FallbackStore(down, str(tmp_path / "fb")))
    verify_login(create_store(pw_role.url))


def _forget_runs(role: PasswordRole) -> None:
    kwargs = PostgresConfig.parse(role.url).conninfo_kwargs()
    with psycopg.connect(make_conninfo("", **kwargs), autocommit=True) as conn:
        for table in ("markers", "records"):
            query = sql.SQL("DELETE FROM {}.{}").format(
                sql.Identifier(role.schema), sql.Identifier(table)
            )
            conn.execute(query)


def test_worker_without_the_password_stops_before_running_anything(
    pw_role: PasswordRole, tmp_path: Path
) -> None:
    exp = _experiment(tmp_path, "pw_worker")
    fallback_dir = tmp_path / "fallback"
    store = FallbackStore(pw_role.url, str(fallback_dir))
    metalab.run(exp, store=store, executor=metalab.ProcessExecutor(1)).result(timeout=120)
    _forget_runs(pw_role)  # the spec stays: a worker would run all of them again
    for note in tmp_path.glob("proc-*"):
        note.unlink()
    # A SLURM worker started without the submission's password file.
    worker = [sys.executable, "-m", "metalab.worker", "--store", store.locator]
    done = subprocess.run(
        [
            *worker,
            "--experiment",
            exp.experiment_id,
            "--runs-per-task",
            str(N_RUNS),
            "--array-task",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "cannot log in" in done.stderr and "no password supplied" in done.stderr
    assert "nothing was executed" in done.stderr
    assert not list(tmp_path.glob("proc-*"))  # no operation ran
    assert FileStore(str(fallback_dir)).load_records().records == []
