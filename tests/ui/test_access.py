"""Who may reach the dashboard, the ``metalab ui`` command itself, and live updates.

The command runs as a real subprocess (``python -m metalab ui``) and is asked over HTTP;
the live test writes a sweep while the server is watched, and the counts must climb.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_helpers import EXPERIMENT_ID, Server, free_port, slow_experiment

import metalab

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def guarded(pi_store: Path) -> Iterator[Server]:
    """The dashboard with a token required (as on a non-loopback bind)."""
    with Server(pi_store, token=TOKEN) as running:
        yield running


def test_token_is_required_on_every_request(guarded: Server) -> None:
    for path in (
        "/api/experiments",
        "/",
        "/vendor/plotly.min.js",
        f"/api/runs?experiment={EXPERIMENT_ID}",
    ):
        status, body, _ = guarded.get(path)
        assert status == 401 and b"token" in body, path
    assert guarded.get("/api/experiments", {"X-Metalab-Token": "wrong"})[0] == 401
    assert guarded.get("/api/experiments", {"X-Metalab-Token": TOKEN})[0] == 200
    assert guarded.get("/api/experiments", {"Authorization": f"Bearer {TOKEN}"})[0] == 200


def test_query_token_sets_a_cookie_that_later_requests_carry(guarded: Server) -> None:
    status, _, headers = guarded.get("/", token=TOKEN)
    assert status == 200
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"metalab_token={TOKEN}") and "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    jar = {"Cookie": f"metalab_token={TOKEN}"}
    assert guarded.get("/api/experiments", jar)[0] == 200
    assert guarded.get("/api/experiments", {"Cookie": "metalab_token=nope"})[0] == 401


def test_loopback_server_refuses_foreign_host_headers(server: Server) -> None:
    # A page elsewhere that rebinds its name to 127.0.0.1 still sends its own Host.
    status, body, _ = server.get("/api/experiments", {"Host": "evil.example:8765"})
    assert status == 403 and b"evil.example" in body
    assert server.get("/api/experiments", {"Host": f"localhost:{server.port}"})[0] == 200


def _start(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start ``metalab ui ...``; return the process and its banner once it listens."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "metalab", "ui", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(3)]
    return proc, "".join(lines)


def _wait_get(url: str, headers: dict[str, str] | None = None) -> int:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=headers or {}), timeout=5
            ) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_command_binds_loopback_by_default_and_says_so(pi_store: Path) -> None:
    port = free_port()
    proc, banner = _start([str(pi_store), "--port", str(port)])
    try:
        assert f"http://127.0.0.1:{port}/" in banner and "loopback only" in banner
        assert f"ssh -L {port}:localhost:{port}" in banner
        assert _wait_get(f"http://127.0.0.1:{port}/api/experiments") == 200
        # The run table is loaded at start, before any page asks for it.
        deadline = time.monotonic() + 30
        while True:
            url = f"http://127.0.0.1:{port}/api/experiments"
            with urllib.request.urlopen(url, timeout=10) as response:
                [exp] = json.loads(response.read())["experiments"]
            if exp["loaded_runs"] is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert exp["loaded_runs"] == 12
    finally:
        _stop(proc)


def test_command_on_all_interfaces_prints_and_requires_a_token(pi_store: Path) -> None:
    port = free_port()
    proc, banner = _start([str(pi_store), "--host", "0.0.0.0", "--port", str(port)])
    try:
        match = re.search(r"\?token=(\S+)", banner)
        assert match, banner
        token = match.group(1)
        base = f"http://127.0.0.1:{port}/api/experiments"
        assert _wait_get(base) == 401
        assert _wait_get(base, {"X-Metalab-Token": token}) == 200
    finally:
        _stop(proc)


def test_command_without_a_store_locator_fails_cleanly(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "metalab", "ui", "nosuchscheme://x", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "metalab ui:" in done.stderr and "nosuchscheme" in done.stderr


def test_counts_climb_while_a_sweep_is_written(tmp_path: Path) -> None:
    store = tmp_path / "live"
    runs = 40
    exp = slow_experiment(runs)
    writer = threading.Thread(
        target=lambda: metalab.run(exp, store=store, progress=False).result(), daemon=True
    )
    seen: list[int] = []
    matched: list[int] = []
    with Server(store, refresh_s=0.2) as server:
        writer.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            listed = server.json("/api/experiments")["experiments"]
            if not listed:  # the manifest is not written yet
                time.sleep(0.05)
                continue
            [e] = listed
            seen.append(e["counts"]["success"])
            matched.append(server.json("/api/runs", experiment="live:1", limit=1)["matched"])
            if matched[-1] == runs and not writer.is_alive():
                break
            time.sleep(0.1)
        writer.join(timeout=30)
        info = server.json("/api/experiment", experiment="live:1")
        table = server.json("/api/runs", experiment="live:1", limit=1000)
    # The table grew by merging the new runs in, and equals a full load of the store.
    assert info["merges"] >= 1, info
    full = metalab.load_results(store).to_dataframe()
    got = [dict(zip(table["columns"], row, strict=True)) for row in table["rows"]]
    assert [r["run_id"] for r in got] == full["run_id"].tolist()
    assert [r["square"] for r in got] == full["square"].tolist()
    assert seen == sorted(seen), seen  # never goes back
    assert seen[-1] == runs and matched[-1] == runs, (seen[-5:], matched[-5:])
    climbing = {c for c in seen if 0 < c < runs}
    assert len(climbing) >= 3, seen  # seen in progress, not just before and after
    assert len({m for m in matched if 0 < m < runs}) >= 2, matched


def test_an_experiment_without_records_yet_answers_zero_runs(tmp_path: Path) -> None:
    from dashboard_helpers import GATE, gated_experiment

    store = tmp_path / "gated"
    GATE.clear()
    handle = metalab.run(gated_experiment(), store=store, progress=False)
    try:
        with Server(store) as server:
            [exp] = server.json("/api/experiments")["experiments"]
            assert exp["total"] == 2 and exp["counts"]["pending"] == 2
            assert exp["progress"] == 0.0
            page = server.json("/api/runs", experiment="gated:1", status="failed")
            assert (page["total"], page["matched"], page["rows"]) == (0, 0, [])
            info = server.json("/api/experiment", experiment="gated:1")
            assert info["loaded"] == 0 and info["columns"]["metrics"] == []
            bad = server.json("/api/plot", expect=400, experiment="gated:1", x="k", y="k")
            assert "nothing to plot" in bad["error"]["message"]
    finally:
        GATE.set()
        handle.result()
