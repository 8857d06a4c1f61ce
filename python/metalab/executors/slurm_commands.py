"""The SLURM client commands metalab runs (``sbatch``, ``squeue``, ``scancel``), in one place.

Every call goes through :func:`run_tool` (a missing binary or a command that does not
answer is a :class:`~metalab.errors.SlurmError` naming it), and every failure becomes a
``SlurmError`` carrying the command, its exit status and its output
(:func:`command_error`), so a caller can show sbatch's own reason without re-running it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from metalab.errors import SlurmError

__all__ = [
    "ACTIVE_STATES",
    "SUBPROCESS_TIMEOUT_S",
    "command_error",
    "run_tool",
    "scancel",
]

SUBPROCESS_TIMEOUT_S = 60.0
"""Longest wait for one SLURM command (sbatch blocks while the controller is saturated)."""

ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "CONFIGURING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
    }
)
"""Job states in which an array task may still run (absent from the queue: it ended)."""


def run_tool(argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a SLURM client command and return its result, whatever its exit status.

    Raises:
        SlurmError: the binary is not on PATH (``exit_code`` None).
        subprocess.TimeoutExpired: it did not answer in :data:`SUBPROCESS_TIMEOUT_S`.
    """
    if shutil.which(argv[0]) is None:
        raise SlurmError(
            f"{argv[0]} not found on PATH: is this a SLURM login node?", command=tuple(argv)
        )
    return subprocess.run(
        list(argv),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )


def command_error(message: str, done: subprocess.CompletedProcess[str]) -> SlurmError:
    """A :class:`SlurmError` for the failed command ``done``, with its output attached.

    ``message`` says what failed; the exit status and the command's own words (stderr,
    else stdout) are appended, as the fields hold them.
    """
    said = done.stderr.strip() or done.stdout.strip()
    return SlurmError(
        f"{message} (exit {done.returncode}): {said}",
        command=tuple(str(arg) for arg in done.args),
        exit_code=done.returncode,
        stdout=done.stdout,
        stderr=done.stderr,
    )


def scancel(job_ids: Sequence[str]) -> None:
    """Cancel the jobs ``job_ids`` (every task of each array).

    Raises:
        SlurmError: scancel is missing or failed (with its exit status and stderr).
    """
    done = run_tool(["scancel", *job_ids])
    if done.returncode != 0:
        raise command_error(f"scancel {' '.join(job_ids)} failed", done)
