"""``metalab ls|status|show|logs`` on a PostgreSQL store named by a locator with a password.

The password of the test role is put into the locator itself (as a user pasting a URL
would); every command must work with it and none may ever print it.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab.cli import main
from metalab.store import create_store

pytestmark = pytest.mark.postgres


def _password_of(url: str) -> str:
    """The test role's password from the libpq password file (host:port:db:user:pw)."""
    parts = urllib.parse.urlsplit(url)
    passfile = Path(os.environ.get("PGPASSFILE", Path.home() / ".pgpass"))
    wanted = [parts.hostname, str(parts.port or 5432), parts.path.lstrip("/"), parts.username]
    for line in passfile.read_text().splitlines():
        fields = line.split(":", 4)
        if len(fields) == 5 and all(f in ("*", w) for f, w in zip(fields, wanted, strict=False)):
            return fields[4]
    pytest.skip(f"no password for {parts.username}@{parts.hostname} in {passfile}")


def _with_password(locator: str, password: str) -> str:
    parts = urllib.parse.urlsplit(locator)
    user = urllib.parse.quote(parts.username or "", safe="")
    netloc = f"{user}:{urllib.parse.quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def flaky(params: Any, capture: Any) -> None:
    """x == 1 fails; the others log and record a metric."""
    capture.log(f"step x={params['x']}")
    if params["x"] == 1:
        raise ValueError(f"bad x {params['x']}")
    capture.metric("y", params["x"] * 10)


def test_inspection_commands_on_postgres_never_print_the_password(
    pg_locator: str, capsys: pytest.CaptureFixture[str]
) -> None:
    password = _password_of(pg_locator)
    locator = _with_password(pg_locator, password)
    exp = metalab.Experiment(
        name="pgcli",
        version="1",
        context={},
        operation=flaky,
        params=metalab.grid(x=[0, 1, 2]),
        seeds=metalab.seeds(base=5),
    )
    results = metalab.run(exp, store=locator).result()
    failed = next(r for r in results if r.status.value == "failed")
    printed: list[str] = []

    def cli(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        printed.extend([out, err])
        return code, out

    code, out = cli("ls", locator, "--json")
    [row] = json.loads(out)["experiments"]
    assert code == 0 and row["experiment_id"] == "pgcli:1"
    assert row["counts"] == {"success": 2, "failed": 1, "pending": 0}

    code, out = cli("status", locator, "pgcli", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["status"]["completed"] == 2 and doc["status"]["failed"] == 1
    assert doc["failed_run_ids"] == [failed.run_id] and doc["source"] == "launch"

    code, out = cli("show", locator, failed.run_id[:10])
    assert code == 1 and "ValueError: bad x 1" in out and "step x=1" in out
    assert "Traceback (most recent call last):" in out.splitlines()

    code, out = cli("logs", locator, "--failed", "--json")
    [run] = json.loads(out)["runs"]
    assert code == 1 and run["run_id"] == failed.run_id
    assert run["log"] == failed.log.splitlines() and "step x=1" in run["log"][0]
    assert run["error"] == {"type": "ValueError", "message": "bad x 1"}

    code, out = cli("ls", locator)
    assert code == 0 and "pgcli:1" in out

    quoted = urllib.parse.quote(password, safe="")
    assert all(password not in text and quoted not in text for text in printed)
    # The store is named by its password-free locator.
    with create_store(locator) as store:
        assert json.loads(printed[0])["store"] == store.locator
