"""A full SLURM array against a stock PostgreSQL server: 250 writers, 100 connections.

A private server is started with the native binaries (as metalab's service manager does)
with PostgreSQL's stock ``max_connections=100``, and the workers log in as an ordinary
role, so 97 slots are theirs (3 are reserved for superusers). 250 array tasks then run
``metalab.worker`` at the same time: each is a real process with its own connections,
forked from one parent that imported metalab once (250 fresh interpreters would cost
~75 s of CPU on two cores before the first run; a fork costs milliseconds). The
operation waits at a rendezvous until every task is inside it, so all 250 are alive
together, as the tasks of an array with ``max_concurrent=500`` are. The same with 250
processes each running ``metalab.run`` of one run (the case measured in issue 13).
Before short-lived connections with backoff (``metalab.store.pg_backoff``), 199 of 250
failed in either case, with some 220 lines of "remaining connection slots are reserved".
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab.records import RunState, StoredState
from metalab.store.locator import create_store
from submit_only import SubmitOnly

pytestmark = pytest.mark.postgres

WRITERS = 250
MAX_CONNECTIONS = 100


def _as_postgres(*argv: object, check: bool = True) -> None:
    """Run a server binary as the unprivileged server user when we are root."""
    from metalab.service_native import as_server_user

    subprocess.run([str(a) for a in argv], check=check, capture_output=True, **as_server_user())


@pytest.fixture(scope="module")
def stock_server() -> Iterator[str]:
    """A private server with ``max_connections=100``; yields a non-superuser locator."""
    psycopg = pytest.importorskip("psycopg")
    from metalab.errors import ServiceError
    from metalab.service_native import UNPRIVILEGED_USER, find_bin_dir, free_port

    try:
        bin_dir = find_bin_dir()
    except ServiceError as exc:
        pytest.skip(str(exc))
    base = Path(tempfile.mkdtemp(prefix="metalab-pg100-", dir="/var/tmp"))
    if os.geteuid() == 0:  # initdb refuses root: the data belongs to the server user
        shutil.chown(base, UNPRIVILEGED_USER, UNPRIVILEGED_USER)
    data, admin_pw, writer_pw = base / "data", secrets.token_hex(12), secrets.token_hex(12)
    pwfile = base / "pw"
    pwfile.write_text(admin_pw + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, UNPRIVILEGED_USER, UNPRIVILEGED_USER)
    port = free_port()
    options = (
        f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
        f"-c max_connections={MAX_CONNECTIONS}"
    )
    _as_postgres(
        bin_dir / "initdb",
        "-D",
        data,
        "-U",
        "admin",
        f"--pwfile={pwfile}",
        "-E",
        "UTF8",
        "--auth-local=scram-sha-256",
        "--auth-host=scram-sha-256",
    )
    _as_postgres(bin_dir / "pg_ctl", "-D", data, "-l", base / "log", "-o", options, "-w", "start")
    try:
        admin = f"postgresql://admin:{admin_pw}@127.0.0.1:{port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE writer LOGIN PASSWORD '{writer_pw}'")
            conn.execute("CREATE DATABASE writes OWNER writer")
        yield f"postgresql://writer:{writer_pw}@127.0.0.1:{port}/writes"
    finally:
        _as_postgres(bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop", check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_a_store_holds_no_connection_between_bursts(stock_server: str) -> None:
    import psycopg

    def held() -> int:
        with psycopg.connect(stock_server, application_name="probe") as probe:
            row = probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'metalab'"
            ).fetchone()
        return int(row[0]) if row else -1

    store = create_store(f"{stock_server}?schema=idle")
    try:
        for i in range(20):  # a burst: one connection serves it
            store.put_blob(f"k{i}", b"v")
        assert held() == 1
        time.sleep(0.3)  # idle: the connection is closed, as while an operation computes
        assert held() == 0
        assert store.get_blob("k19") == b"v"  # and opened again when needed
    finally:
        store.close()


# Forks WRITERS array tasks from one interpreter that imported metalab (see the module
# docstring), each running the worker's main() exactly as `python -m metalab.worker`.
_FORK_ARRAY = textwrap.dedent(
    """
    import json, os, sys
    from metalab import worker
    import metalab.store.postgres, metalab.execution, metalab.plan_loading  # once, shared

    count, argv = int(sys.argv[1]), json.loads(sys.argv[2])
    pids = []
    for task in range(count):
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                code = worker.main(argv + ["--array-task", str(task)])
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    print(json.dumps(codes))
    """
)

_OPS = textwrap.dedent(
    """
    import os, time
    import metalab

    @metalab.operation
    def write(params, capture):
        # Rendezvous: every array task is inside its operation at the same time.
        here = os.environ["MANY_WRITERS_DIR"]
        open(os.path.join(here, f"{params['x']}.{os.getpid()}"), "w").close()
        deadline = time.monotonic() + 60
        while len(os.listdir(here)) < int(os.environ["MANY_WRITERS_N"]):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        capture.log(f"writer {params['x']} inside")
        capture.metric("y", params["x"] * 2)
        capture.artifact("out", {"x": params["x"]})
        capture.log(f"writer {params['x']} done")
    """
)


def test_250_array_tasks_against_100_connections_lose_nothing(
    stock_server: str, tmp_path: Path
) -> None:
    import psycopg

    with psycopg.connect(stock_server) as conn:
        shown = conn.execute("SHOW max_connections").fetchone()
    assert shown is not None and int(shown[0]) == MAX_CONNECTIONS
    locator = f"{stock_server}?artifact_root={tmp_path / 'artifacts'}"

    ops = tmp_path / "ops"
    ops.mkdir()
    (ops / "many_writers_ops.py").write_text(_OPS)
    sys.path.insert(0, str(ops))
    try:
        import many_writers_ops  # type: ignore[import-not-found]

        exp = metalab.Experiment(
            name="many_writers",
            version="1",
            context={},
            operation=many_writers_ops.write,
            params=metalab.grid(x=list(range(WRITERS))),
            seeds=metalab.seeds(base=1, replicates=1),
        )
        metalab.run(exp, store=locator, executor=SubmitOnly(), progress=False)
    finally:
        sys.path.remove(str(ops))
        sys.modules.pop("many_writers_ops", None)

    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()
    env = {
        **os.environ,
        "MANY_WRITERS_DIR": str(rendezvous),
        "MANY_WRITERS_N": str(WRITERS),
        "PYTHONPATH": os.pathsep.join([str(ops), os.environ.get("PYTHONPATH", "")]),
    }
    argv = ["--store", locator, "--experiment", exp.experiment_id, "--runs-per-task", "1"]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _FORK_ARRAY, str(WRITERS), json.dumps(argv)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    codes = json.loads(done.stdout.splitlines()[-1])
    stderr = done.stderr.splitlines()
    assert codes == [0] * WRITERS, (
        f"{sum(c != 0 for c in codes)} of {WRITERS} tasks failed, {len(stderr)} stderr "
        f"lines, the last: " + shlex.join(stderr[-3:])
    )
    # Every task was inside its operation at once (the rendezvous was complete).
    assert len(os.listdir(rendezvous)) == WRITERS
    store = create_store(locator)
    try:
        results = metalab.load_results(store)
        runs = list(results)
        assert sorted(r.params["x"] for r in runs if r.status is RunState.SUCCESS) == list(
            range(WRITERS)
        )
        assert set(store.states([r.run_id for r in runs])) == {StoredState.DONE}
        for run in runs[:: WRITERS // 10]:
            assert run.log.count("\n") == 2
            assert run.artifact("out") == {"x": run.params["x"]}
    finally:
        store.close()
    # No flood: the waits for a free connection are silent (one line per task at most
    # when a wait grows long, which it does not here).
    assert len(stderr) <= 5, "\n".join(stderr[:20])
    print(f"{WRITERS} tasks in {elapsed:.1f} s, {len(stderr)} stderr lines")


# The measured case of issue 13: each process one `metalab.run` of one short run (its own
# experiment: manifest, spec, claims, record, marker, log, artifact), all at once.
_FORK_DRIVERS = textwrap.dedent(
    """
    import json, os, sys
    import metalab, metalab.store.postgres, many_writers_ops

    count, locator = int(sys.argv[1]), sys.argv[2]
    pids = []
    for task in range(count):
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                exp = metalab.Experiment(
                    name=f"driver{task}", version="1", context={},
                    operation=many_writers_ops.write, params=metalab.grid(x=[task]),
                    seeds=metalab.seeds(base=1, replicates=1),
                )
                results = metalab.run(exp, store=locator, progress=False).result()
                code = 0 if [r.status.value for r in results] == ["success"] else 1
            except BaseException as exc:
                print(f"driver {task}: {type(exc).__name__}: {exc}", file=sys.stderr)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    print(json.dumps(codes))
    """
)


@pytest.mark.slow
def test_250_metalab_run_drivers_against_100_connections_lose_nothing(
    stock_server: str, tmp_path: Path
) -> None:
    locator = f"{stock_server}?schema=drivers&artifact_root={tmp_path / 'artifacts'}"
    ops = tmp_path / "ops"
    ops.mkdir()
    (ops / "many_writers_ops.py").write_text(_OPS)
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()
    env = {
        **os.environ,
        "MANY_WRITERS_DIR": str(rendezvous),
        "MANY_WRITERS_N": str(WRITERS),
        "PYTHONPATH": os.pathsep.join([str(ops), os.environ.get("PYTHONPATH", "")]),
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _FORK_DRIVERS, str(WRITERS), locator],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    codes = json.loads(done.stdout.splitlines()[-1])
    stderr = done.stderr.splitlines()
    assert codes == [0] * WRITERS, (
        f"{sum(c != 0 for c in codes)} of {WRITERS} drivers failed, {len(stderr)} stderr "
        f"lines, the last: " + shlex.join(stderr[-3:])
    )
    assert len(os.listdir(rendezvous)) == WRITERS
    runs = list(metalab.load_results(locator))
    assert sorted(r.params["x"] for r in runs if r.status is RunState.SUCCESS) == list(
        range(WRITERS)
    )
    assert len(stderr) <= 5, "\n".join(stderr[:20])
    print(f"{WRITERS} drivers in {elapsed:.1f} s, {len(stderr)} stderr lines")


def _held_submission(locator: str, name: str, max_concurrent: int, capsys: Any) -> str:
    """Submit 120 one-run tasks held (``SBATCH_HOLD``), cancel them; return what was said."""
    exp = metalab.Experiment(
        name=name,
        version="1",
        context={},
        operation=_noop,
        params=metalab.grid(x=list(range(120))),
        seeds=metalab.seeds(base=1, replicates=1),
    )
    config = metalab.SlurmConfig(time="5:00", memory="100M", max_concurrent=max_concurrent)
    capsys.readouterr()
    handle = metalab.run(exp, store=locator, executor=metalab.SlurmExecutor(config))
    try:
        return str(capsys.readouterr().err)
    finally:
        subprocess.run(["scancel", *handle.job_ids], check=False, capture_output=True)


def test_a_submission_says_when_the_server_admits_fewer_tasks_than_may_run(
    stock_server: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from services import require_slurm

    require_slurm()
    monkeypatch.setenv("SBATCH_HOLD", "1")  # nothing runs: only what is said counts
    said = _held_submission(stock_server, "too_many_writers", 500, capsys)
    # 120 tasks may run at once (max_concurrent=500); an ordinary login gets 100 - 3.
    assert "up to 120 array tasks may write to PostgreSQL store" in said, said
    assert "admits 97 connections (max_connections=100 minus 3 reserved)" in said, said
    # With max_concurrent within what the server admits, nothing is said.
    said = _held_submission(stock_server, "few_enough_writers", 90, capsys)
    assert "may write to PostgreSQL store" not in said, said


@metalab.operation
def _noop(params: Any, capture: Any) -> None:
    capture.metric("x", params["x"])
