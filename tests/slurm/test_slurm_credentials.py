"""SLURM tasks get the locator's password out of band, and logs survive any store path.

Issue 11, items 5 and 7, on the real local cluster. The password-only PostgreSQL role
(see ``tests/pg_roles.py``) can be logged in only with the locator's password: before the
fix, every task failed as "killed, out of memory or out of time?". A store path with a
backslash made sbatch's ``--output`` name a directory that does not exist: no task could
start and no log was written.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab.executors.slurm import SlurmLaunch
from metalab.store import FileStore
from metalab.store.credentials import CREDENTIALS_DIR_ENV, alias_path, passfile_path
from metalab.store.postgres import PostgresStore
from pg_roles import PasswordRole, password_role

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]


@pytest.fixture
def private_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Password files and log aliases of these tests go here, not to ``~/.metalab``."""
    path = tmp_path / "private"
    monkeypatch.setenv(CREDENTIALS_DIR_ENV, str(path))
    # SLURM's default logs of PostgreSQL-store tasks land in the submission directory.
    monkeypatch.chdir(tmp_path)
    return path


@pytest.fixture
def pw_role(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PasswordRole]:
    """A role whose password is only in its locator (no pgpass entry can supply it)."""
    with password_role(tmp_path, monkeypatch) as role:
        yield role


def note_worker(context: Any, params: Any, capture: Any) -> None:
    """Note what another local user could see of this task: argv, ps, the password file."""
    out = Path(context["dir"])
    argv = Path("/proc/self/cmdline").read_bytes().split(b"\0")
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, check=True).stdout
    (out / f"seen-{params['i']}").write_bytes(b"\n".join(argv) + b"\n" + ps)
    if b"--passfile" in argv:
        st = os.stat(argv[argv.index(b"--passfile") + 1])
        capture.metric("passfile_mode", stat.S_IMODE(st.st_mode))
        capture.metric("passfile_uid", st.st_uid)
    os.write(2, f"task log line of run {params['i']}\n".encode())
    capture.metric("i", params["i"])


def _experiment(name: str, tmp_path: Path, n: int) -> metalab.Experiment:
    return metalab.Experiment(
        name=name,
        version="1",
        context={"dir": str(tmp_path)},
        operation=note_worker,
        params=metalab.grid(i=list(range(n))),
        seeds=metalab.seeds(base=5),
    )


def _batch_script(job_id: str) -> bytes:
    done = subprocess.run(
        ["scontrol", "write", "batch_script", job_id, "-"], capture_output=True, check=True
    )
    return done.stdout


def _job_details(job_id: str) -> bytes:
    done = subprocess.run(["scontrol", "show", "job", "-d", job_id], capture_output=True)
    return done.stdout


@pytest.mark.postgres
def test_tasks_log_in_with_the_locator_password_and_it_shows_nowhere(
    pw_role: PasswordRole,
    private_dir: Path,
    tmp_path: Path,
    no_leftover_jobs: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    exp = _experiment("pw_slurm", tmp_path, 6)
    config = metalab.SlurmConfig(runs_per_task=3, time="5")
    # The dry run prints the exact sbatch command lines and scripts.
    metalab.run(exp, store=pw_role.url, executor=metalab.SlurmExecutor(config), dry_run=True)
    printed = capsys.readouterr().out
    assert "sbatch --parsable" in printed and "--passfile" in printed
    handle = metalab.run(exp, store=pw_role.url, executor=metalab.SlurmExecutor(config))
    launch = handle._launch
    assert isinstance(launch, SlurmLaunch)
    no_leftover_jobs.extend(launch.job_ids)
    passfile = passfile_path(f"slurm-{launch.submission}")
    assert passfile.parent == private_dir
    assert stat.S_IMODE(private_dir.stat().st_mode) == 0o700
    results = handle.result(timeout=120)
    assert [r.status.value for r in results] == ["success"] * 6
    for r in results:  # the file the tasks read: 0600 and ours
        assert r.metrics["passfile_mode"] == 0o600 and r.metrics["passfile_uid"] == os.getuid()
    assert not passfile.exists()  # removed once no task can start any more
    store = PostgresStore.from_locator(pw_role.url)
    try:
        assert len(store.load_records(exp.experiment_id).records) == 6
    finally:
        store.close()

    seen = [p.read_bytes() for p in sorted(tmp_path.glob("seen-*"))]
    assert len(seen) == 6 and all(b"--passfile" in s for s in seen)
    logs = [launch.log_path(g) for g in range(2)]
    assert all(log is not None and log.parent == tmp_path for log in logs)
    texts = [log.read_bytes() for log in logs if log is not None]
    assert all(b"task log line of run" in text for text in texts)
    scripts = [_batch_script(job) for job in launch.job_ids]
    assert all(str(passfile).encode() in script for script in scripts)
    details = [_job_details(job) for job in launch.job_ids]
    everything = [printed.encode(), *seen, *texts, *scripts, *details]
    for text in everything:
        for secret in pw_role.secrets:
            assert secret.encode() not in text


@pytest.mark.postgres
def test_a_task_that_cannot_log_in_runs_nothing_and_its_failure_says_why(
    pw_role: PasswordRole, private_dir: Path, tmp_path: Path, no_leftover_jobs: list[str]
) -> None:
    go = tmp_path / "go"
    # The tasks wait until the test removed the password file (as if the submitting
    # host's home were not visible on the node).
    wait = f"for _ in $(seq 600); do [ -e {shlex.quote(str(go))} ] && break; sleep 0.1; done"
    config = metalab.SlurmConfig(runs_per_task=2, time="5", setup=[wait])
    exp = _experiment("pw_gone", tmp_path, 4)
    handle = metalab.run(exp, store=pw_role.url, executor=metalab.SlurmExecutor(config))
    launch = handle._launch
    assert isinstance(launch, SlurmLaunch)
    no_leftover_jobs.extend(launch.job_ids)
    passfile_path(f"slurm-{launch.submission}").unlink()
    go.touch()
    results = handle.result(timeout=120)
    assert [r.status.value for r in results] == ["failed"] * 4
    assert not list(tmp_path.glob("seen-*"))  # no operation ran
    for r in results:
        assert r.error is not None and r.error.type == "WorkerCrashedError"
        assert "cannot open the store, nothing was executed" in r.error.message
        assert "password file" in r.error.message and "does not exist" in r.error.message
        assert "out of memory" not in r.error.message


def test_store_path_with_backslash_percent_space_and_non_ascii(
    private_dir: Path, tmp_path: Path, no_leftover_jobs: list[str]
) -> None:
    store = tmp_path / "a\\b %A %% %a é x"
    exp = _experiment("odd_path", tmp_path, 4)
    config = metalab.SlurmConfig(runs_per_task=2, time="5")
    handle = metalab.run(exp, store=str(store), executor=metalab.SlurmExecutor(config))
    launch = handle._launch
    assert isinstance(launch, SlurmLaunch)
    no_leftover_jobs.extend(launch.job_ids)
    alias = alias_path(f"slurm-{launch.submission}")
    assert alias.is_symlink()  # sbatch cannot name the store's log directory itself
    results = handle.result(timeout=120)
    assert [r.status.value for r in results] == ["success"] * 4
    assert len(FileStore(str(store)).load_records().records) == 4
    for g in range(2):
        log = launch.log_path(g)
        assert log is not None
        assert log.parent == store / "slurm" / "logs" / launch.submission
        deadline = time.monotonic() + 10
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert f"task log line of run {2 * g}".encode() in log.read_bytes()
    assert not alias.exists() and not alias.is_symlink()  # removed with the launch
    # Nothing was written where a mangled pattern would have pointed (backslash dropped).
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(
        [store.name, "private"]
    )
