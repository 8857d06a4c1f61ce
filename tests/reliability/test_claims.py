"""Each run executed once, even when launched several times at once (run claims).

Executions are counted with a side file: the operation appends one line per execution
(``O_APPEND``, one ``write`` per line, so concurrent processes never interleave a line).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from claim_drivers import concurrent_drivers_execute_once, drivers, executions, write_driver
from metalab.store.claims import new_owner
from metalab.store.file import FileStore


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_eight_drivers_on_one_file_store_execute_each_run_once(
    tmp_path: Path, executor: str
) -> None:
    concurrent_drivers_execute_once(tmp_path, str(tmp_path / "store"), executor)


def test_a_killed_claimer_loses_its_runs_after_the_lease(tmp_path: Path) -> None:
    """SIGKILL a driver mid-run: a later launch executes the run it held (crashes retry)."""
    script, log = write_driver(tmp_path), tmp_path / "executions.log"
    store = tmp_path / "store"
    (first,) = drivers(script, str(store), "thread", log, 1, 30.0, 2)
    try:
        deadline = time.monotonic() + 60
        while not executions(log):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        held = next(iter(executions(log)))
        claim = FileStore(store).layout.claim(held)
        assert claim.exists()
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # The dead owner's claim is still on disk; its lease makes the new launch wait for it
    # until it expires (the owner ran on this host, so it is known dead at once).
    env = dict(os.environ, METALAB_CLAIM_TTL="3")
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(script), str(store), "thread", str(log), "0", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "RESULT 2 2" in out.stdout
    assert time.monotonic() - started < 60
    executed = executions(log)
    assert executed[held] == 2  # once by the killed driver, once after its lease was lost
    assert not claim.exists()  # released after the record and marker


def test_runs_claimed_by_another_launch_are_waited_for_and_shown_in_status(
    tmp_path: Path,
) -> None:
    script, log = write_driver(tmp_path), tmp_path / "executions.log"
    store = str(tmp_path / "store")
    (first,) = drivers(script, store, "thread", log, 1, 2.0, 2)
    try:
        deadline = time.monotonic() + 60
        while not executions(log):  # it claimed both runs and executes the first
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, str(script), store, "thread", str(log), "0", "2", "0.5"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 0, second.stderr
        assert "ELSEWHERE 2" in second.stdout  # both held by the first launch
        assert "RESULT 2 2" in second.stdout  # and waited for
        out, err = first.communicate(timeout=60)
        assert "RESULT 2 2" in out, err
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert set(executions(log).values()) == {1} and len(executions(log)) == 2


def test_a_live_claim_is_refused_and_an_expired_one_taken_over(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    run_id = "ab" * 16
    me, other = new_owner(), new_owner()
    assert store.claim([run_id], me, 30.0) == [run_id]
    assert store.claim([run_id], other, 30.0) == []
    assert store.claim_holders([run_id]) == {run_id: me}
    assert store.claim([run_id], me, 30.0) == [run_id]  # own claim: granted again
    path = store.layout.claim(run_id)
    os.utime(path, (time.time() - 60, time.time() - 60))  # its lease ran out
    assert store.renew([run_id], other, 30.0) == []
    assert store.claim([run_id], other, 30.0) == [run_id]
    assert store.renew([run_id], me, 30.0) == []  # the old owner learns it lost it
    store.release([run_id], me)  # not its claim any more: left alone
    assert store.claim_holders([run_id]) == {run_id: other}
    store.release([run_id], other)
    assert not path.exists()


RACE = textwrap.dedent(
    """
    import sys, time
    from metalab.store.claims import new_owner
    from metalab.store.file import FileStore

    store = FileStore(sys.argv[1])
    run_ids = sys.argv[3].split(",")
    owner = new_owner()
    while time.time() < float(sys.argv[2]):
        pass
    print(",".join(store.claim(run_ids, owner, 60.0)), flush=True)
    # A winner that exited would be a dead owner, whose claims the slower racers take
    # over legitimately: every racer stays alive until all of them have claimed.
    time.sleep(max(float(sys.argv[2]) + 2.5 - time.time(), 0))
    """
)


def test_two_takers_racing_for_one_expired_claim_exactly_one_wins(tmp_path: Path) -> None:
    """Real processes released at one instant onto the same expired claims, many times."""
    store = FileStore(tmp_path / "store")
    script = tmp_path / "race.py"
    script.write_text(RACE)
    run_ids = [f"{i:02x}" * 16 for i in range(40)]
    dead = new_owner()
    assert store.claim(run_ids, dead, 60.0) == run_ids
    old = time.time() - 600
    for rounds in range(3):
        for run_id in run_ids:
            os.utime(store.layout.claim(run_id), (old, old))
        at = time.time() + 1.5
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), str(store.root), str(at), ",".join(run_ids)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        wins: collections.Counter[str] = collections.Counter()
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0
            wins.update(x for x in out.strip().split(",") if x)
        assert wins == collections.Counter(run_ids), f"round {rounds}: {wins}"


def test_a_fallback_store_claims_in_its_primary(tmp_path: Path) -> None:
    from metalab.store.fallback import FallbackStore

    primary, fallback = FileStore(tmp_path / "primary"), FileStore(tmp_path / "fallback")
    both = FallbackStore(primary, fallback, write_to_both=True)
    run_id, owner = "cd" * 16, new_owner()
    assert both.claim([run_id], owner, 30.0) == [run_id]
    assert primary.claim_holders([run_id]) == {run_id: owner}
    assert fallback.claim_holders([run_id]) == {}  # one store decides, never both
    assert both.claim([run_id], new_owner(), 30.0) == []
    both.release([run_id], owner)
    assert primary.claim_holders([run_id]) == {}
