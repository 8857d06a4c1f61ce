"""PostgreSQL that explains itself (issue 14, point 6).

A refused login fails at once with the server's reason (not a pool timeout after 12 s
and a screen of pool warnings); a FallbackStore with a dead primary warns once and runs
at the fallback's speed; the locator ``metalab postgres start`` prints works as printed;
``to_locator`` round-trips a store with a password without containing it; an export
whose ``--experiment`` matches nothing says so and exits non-zero.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_pg import experiment, train
from tcp_relay import Relay

import metalab
from metalab.errors import StoreAuthError, StoreUnavailableError
from metalab.store import FallbackStore, FileStore, create_store, to_locator
from pg_roles import PasswordRole, isolate_from_pgpass, password_role

pytestmark = pytest.mark.postgres
METALAB = [sys.executable, "-c", "import sys; from metalab.cli import main; sys.exit(main())"]
EXPORT = [*METALAB, "store", "export", "--from"]
FAST_S = 3.0


@pytest.fixture
def pw_role(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PasswordRole]:
    """A role whose password is only in its locator (libpq sees an empty PGPASSFILE)."""
    with password_role(tmp_path, monkeypatch) as role:
        yield role


def _without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    netloc = f"{parts.username}@{parts.hostname}:{parts.port or 5432}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fails_fast(locator: str, caplog: pytest.LogCaptureFixture) -> StoreAuthError:
    store = create_store(locator)
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="psycopg"), pytest.raises(StoreAuthError) as info:
        store.ping()  # type: ignore[attr-defined]
    elapsed = time.monotonic() - started
    store.close()
    assert elapsed < FAST_S, f"took {elapsed:.1f} s"
    assert [r for r in caplog.records if r.name.startswith("psycopg")] == []
    return info.value


def test_no_password_fails_fast_with_the_servers_reason(
    pw_role: PasswordRole, caplog: pytest.LogCaptureFixture
) -> None:
    error = _fails_fast(_without_password(pw_role.url), caplog)
    assert "no password supplied" in str(error)
    assert "PoolTimeout" not in str(error)


def test_wrong_password_fails_fast_with_the_servers_reason(
    pw_role: PasswordRole, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "Wr0ng-" + pw_role.password[:6]
    parts = urllib.parse.urlsplit(pw_role.url)
    netloc = f"{pw_role.name}:{wrong}@{parts.hostname}:{parts.port or 5432}"
    error = _fails_fast(urllib.parse.urlunsplit(parts._replace(netloc=netloc)), caplog)
    assert "password authentication failed" in str(error)
    assert wrong not in str(error) and pw_role.password not in str(error)


def test_dead_server_fails_fast_as_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    store = create_store(f"postgresql://nobody@127.0.0.1:{_closed_port()}/none")
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="psycopg"), pytest.raises(StoreUnavailableError):
        store.ping()  # type: ignore[attr-defined]
    assert time.monotonic() - started < FAST_S
    assert [r for r in caplog.records if r.name.startswith("psycopg")] == []


def _sweep(name: str) -> metalab.Experiment:
    """Nine runs."""
    return metalab.Experiment(
        name=name,
        version="1.0",
        context={},
        operation=train,
        params=metalab.grid(lr=[i / 10 for i in range(1, 10)]),
        seeds=metalab.seeds(base=7),
    )


def test_fallback_with_a_dead_primary_costs_little_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    exp = _sweep("fb_dead")
    started = time.monotonic()
    alone = metalab.run(exp, store=str(tmp_path / "alone")).result()
    file_only = time.monotonic() - started
    assert len(alone.successful) == 9

    dead = f"postgresql://nobody@127.0.0.1:{_closed_port()}/none?connect_timeout=2"
    store = FallbackStore(dead, str(tmp_path / "backup"))
    capfd.readouterr()
    with (
        warnings.catch_warnings(record=True) as caught,
        caplog.at_level(logging.INFO, logger="psycopg"),
    ):
        warnings.simplefilter("always")  # a repeated warning would be seen every time
        started = time.monotonic()
        results = metalab.run(exp, store=store).result()
        with_fallback = time.monotonic() - started
    assert len(results.successful) == 9
    assert len(FileStore(tmp_path / "backup").load_records().records) == 9
    assert with_fallback - file_only < 2.0, (file_only, with_fallback)
    mine = [w for w in caught if "unreachable" in str(w.message)]
    assert len(mine) == 1, [str(w.message) for w in caught]
    text = str(mine[0].message)
    assert "Connection refused" in text and str(tmp_path / "backup") in text
    assert [r for r in caplog.records if r.name.startswith("psycopg")] == []
    assert "psycopg" not in capfd.readouterr().err


def test_fallback_probes_the_primary_again_without_blocking_writers(
    pg_locator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import metalab.store.fallback as fallback_module

    monkeypatch.setattr(fallback_module, "_RETRY_AFTER_S", 2.0)
    real = urllib.parse.urlsplit(pg_locator)
    port = _closed_port()
    # ~/.pgpass names the real port: the relayed locator carries the password itself.
    pgpass = Path(os.environ.get("PGPASSFILE", Path.home() / ".pgpass")).read_text()
    password = urllib.parse.quote(pgpass.splitlines()[0].rsplit(":", 1)[1], safe="")
    relayed = pg_locator.replace(
        f"@{real.hostname}:{real.port or 5432}", f":{password}@127.0.0.1:{port}", 1
    )
    store = FallbackStore(relayed, str(tmp_path / "backup"))
    with pytest.warns(RuntimeWarning, match="unreachable"):
        store.put_blob("first", b"1")
    assert store.fallback.get_blob("first") == b"1"
    relay = Relay((real.hostname or "127.0.0.1", real.port or 5432), port)
    try:
        # The primary answers again, but until the background check sees it, writers
        # go on to the fallback without trying it.
        store.put_blob("meanwhile", b"2")
        assert store.fallback.get_blob("meanwhile") == b"2"
        assert not store.primary_usable()
        deadline = time.monotonic() + 15
        while not store.primary_usable() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.primary_usable()
        store.put_blob("after", b"3")
        assert store.primary.get_blob("after") == b"3"
        assert store.primary.get_blob("meanwhile") is None
        assert store.fallback.get_blob("after") is None
    finally:
        store.close()
        relay.close()


def _start_service(service_dir: Path) -> tuple[str, str]:
    started = subprocess.run(
        [*METALAB, "postgres", "start", "--engine", "native", "--service-dir", str(service_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    assert started.returncode == 0, started.stderr
    (line,) = [x for x in started.stdout.splitlines() if x.startswith("locator: ")]
    return line.removeprefix("locator: ").strip(), started.stdout


def _stop_service(service_dir: Path) -> None:
    stopped = subprocess.run(
        [*METALAB, "postgres", "stop", "--service-dir", str(service_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert stopped.returncode == 0, stopped.stderr


def _run_script(script: str, locator: str, empty_pgpass: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter that has no password source but the locator."""
    env = {**os.environ, "PGPASSFILE": str(empty_pgpass)}
    env.pop("PGPASSWORD", None)
    return subprocess.run(
        [sys.executable, "-c", script, locator, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env=env,
    )


def test_the_printed_service_locator_works_for_slurm_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services import require_slurm

    require_slurm()
    empty = isolate_from_pgpass(tmp_path, monkeypatch)
    service_dir = tmp_path / "svc"
    locator, _ = _start_service(service_dir)
    try:
        script = (
            "import sys, metalab\n"
            "sys.path.insert(0, sys.argv[2])\n"
            "from helpers_pg import experiment\n"
            "exp = experiment('printed_slurm', lrs=(0.1, 0.2))\n"
            "ex = metalab.SlurmExecutor(metalab.SlurmConfig(runs_per_task=2, time='5'))\n"
            "done = metalab.run(exp, store=sys.argv[1], executor=ex).result(timeout=240)\n"
            "assert len(done.successful) == 4, (done, [r.error for r in done.failed])\n"
            "print(len(metalab.load_results(sys.argv[1])))\n"
        )
        ran = _run_script(script, locator, empty)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip().splitlines()[-1] == "4"
    finally:
        _stop_service(service_dir)


def test_the_printed_service_locator_works_as_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No ~/.pgpass or PGPASSWORD can help: only what the locator names may log in.
    empty = isolate_from_pgpass(tmp_path, monkeypatch)
    service_dir = tmp_path / "svc"
    locator, stdout = _start_service(service_dir)
    try:
        password = json.loads((service_dir / "service.json").read_text())["password"]
        assert password not in stdout and password not in locator
        assert f"passfile={service_dir / 'pgpass'}" in locator
        script = (
            "import sys, metalab\n"
            "sys.path.insert(0, sys.argv[2])\n"
            "from helpers_pg import experiment\n"
            "exp = experiment('printed', lrs=(0.1, 0.2, 0.3))\n"
            "done = metalab.run(exp, store=sys.argv[1]).result()\n"
            "assert len(done.successful) == 6, done\n"
            "more = experiment('printed_proc', lrs=(0.5,))\n"
            "ex = metalab.ProcessExecutor(2)\n"
            "done = metalab.run(more, store=sys.argv[1], executor=ex).result(timeout=120)\n"
            "assert len(done.successful) == 2, done\n"
            "print(len(metalab.load_results(sys.argv[1])))\n"
        )
        ran = _run_script(script, locator, empty)
        env = {**os.environ, "PGPASSFILE": str(empty)}
        env.pop("PGPASSWORD", None)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip().splitlines()[-1] == "8"
        listed = subprocess.run(
            [*METALAB, "ls", locator, "--json"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env=env,
        )
        assert listed.returncode == 0, listed.stderr
        assert "printed:1.0" in listed.stdout and "printed_proc:1.0" in listed.stdout
        assert password not in listed.stdout + listed.stderr + ran.stdout + ran.stderr
    finally:
        _stop_service(service_dir)


def test_to_locator_round_trips_a_store_with_a_password(
    pw_role: PasswordRole, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METALAB_CREDENTIALS_DIR", str(tmp_path / "creds"))
    store = create_store(pw_role.url)
    results = metalab.run(experiment("roundtrip"), store=store).result()
    assert len(results.successful) == 4
    locator = to_locator(store)
    for secret in pw_role.secrets:
        assert secret not in locator
    assert to_locator(store) == locator  # the same password file, not one per call
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(locator).query))
    passfile = Path(query["passfile"])
    assert passfile.parent == tmp_path / "creds"
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
    assert query["schema"] == pw_role.schema
    # A fresh process, with an empty PGPASSFILE: only the locator's passfile= can help.
    code = "import sys, metalab; print(len(metalab.load_results(sys.argv[1])))"
    loaded = subprocess.run(
        [sys.executable, "-c", code, locator],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "4"
    fallback = FallbackStore(store, str(tmp_path / "backup"))
    rebuilt = create_store(to_locator(fallback))
    assert isinstance(rebuilt, FallbackStore)
    assert len(rebuilt.load_records().records) == 4
    rebuilt.close()
    store.close()


def test_to_locator_keeps_one_password_file_per_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METALAB_CREDENTIALS_DIR", str(tmp_path / "creds"))

    def passfile(password: str) -> Path:
        loc = to_locator(create_store(f"postgresql://u:{password}@db.example:5433/d"))
        assert password not in loc
        return Path(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(loc).query))["passfile"])

    first, again, changed = passfile("Old-Secret-1"), passfile("Old-Secret-1"), passfile("New-2")
    assert first == again == changed
    assert [p.name for p in (tmp_path / "creds").iterdir()] == [first.name]
    lines = first.read_text().splitlines()
    assert lines[1] == "db.example:5433:d:u:New-2"  # libpq's own format, latest password
    assert stat.S_IMODE(first.stat().st_mode) == 0o600


def test_export_with_a_filter_matching_nothing_exits_non_zero(
    pg_locator: str, tmp_path: Path
) -> None:
    metalab.run(experiment("held"), store=pg_locator).result()
    out = tmp_path / "out"
    done = subprocess.run(
        [*EXPORT, pg_locator, "--to", str(out), "--experiment", "nope:1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 5, (done.returncode, done.stdout, done.stderr)
    assert "'nope:1'" in done.stderr and "held:1.0" in done.stderr
    assert "nothing was copied" in done.stderr
    helped = subprocess.run(
        [*METALAB, "store", "export", "--help"], capture_output=True, text=True, check=False
    )
    assert "5" in helped.stdout and "matched nothing" in helped.stdout
    kept = subprocess.run(
        [*EXPORT, pg_locator, "--to", str(out), "--experiment", "held:1.0"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert kept.returncode == 0, kept.stderr
    assert len(metalab.load_results(str(out))) == 4
