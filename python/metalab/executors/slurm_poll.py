"""Gentle polling of the SLURM controller: one ``squeue`` per poll, backing off when idle.

The controller is shared by every user of a site, so a watching driver must cost it
little:

* **One call per poll for the whole submission.** A launch and the launches its retry
  and wave jobs made (followed by :mod:`metalab.executors.slurm_retry` /
  :mod:`~metalab.executors.slurm_waves` right after the launch's own poll) read the same
  ``squeue --me`` answer: an answer younger than :data:`SHARE_S` that a launch has not
  seen yet is used instead of asking again. Never a call per task or per shard.
* **Backing off while nothing changes.** :class:`PollClock` starts at :data:`FIRST_S`
  and grows by :data:`FACTOR` after each poll that saw no change, up to :data:`CAP_S`;
  any change (a task starting or ending, a run finishing) resets it.
* **Backing off when the controller is slow or refuses.** A failed call (``Socket timed
  out``, a timeout, squeue missing) doubles the interval; a slow answer sets it to at
  least ten times the call's duration. Neither is an error of the launch: ``result()``
  keeps waiting (a warning is said once).

Reusing a slightly older answer is safe for the launch's bookkeeping: the store's
markers are read after the answer was taken, so a task absent from it had already
exited and everything it wrote is visible.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from metalab.executors.slurm_commands import ACTIVE_STATES, command_error, run_tool

__all__ = [
    "CAP_S",
    "FACTOR",
    "FIRST_S",
    "SHARE_S",
    "PollClock",
    "QueueAnswer",
    "answering",
    "ask_queue",
    "born_at",
    "shared_answer",
]

FIRST_S = 1.0
"""Interval between two polls of a launch after a change."""
FACTOR = 1.5
"""Growth of the interval after each poll that saw no change."""
CAP_S = 30.0
"""Longest interval between two polls."""
SHARE_S = 1.0
"""An answer this young is reused by the other launches of the process."""
_SLOW_S = 1.0


class PollClock:
    """When a launch polls next: :data:`FIRST_S`, times :data:`FACTOR` while idle, capped."""

    def __init__(self) -> None:
        self.interval = FIRST_S
        self.last = float("-inf")

    def due(self, now: float) -> bool:
        """True when the interval since the last poll has passed."""
        return now - self.last >= self.interval

    def next_at(self) -> float:
        """``time.monotonic()`` of the next poll."""
        return self.last + self.interval

    def polled(self, at: float, *, changed: bool, took: float = 0.0) -> None:
        """A poll at ``at`` answered in ``took`` s; ``changed``: it saw something new."""
        self.last = at
        self.interval = FIRST_S if changed else min(self.interval * FACTOR, CAP_S)
        if took > _SLOW_S:  # the controller is struggling: ask it less often
            self.interval = min(max(self.interval, 10 * took), CAP_S)

    def failed(self, at: float) -> None:
        """The controller refused or did not answer: wait twice as long next time."""
        self.last = at
        self.interval = min(self.interval * 2, CAP_S)


@dataclass(frozen=True)
class QueueAnswer:
    """One ``squeue --me`` answer: array job id -> {array index: state} of active tasks."""

    seq: int
    taken: float
    jobs: dict[str, dict[int, str]] = field(default_factory=dict)

    def tasks_of(self, offsets: Mapping[str, int]) -> dict[int, str]:
        """Global array task -> state for the jobs in ``offsets`` (job -> index of task 0)."""
        queued: dict[int, str] = {}
        for job, offset in offsets.items():
            for index, state in self.jobs.get(job, {}).items():
                queued[offset + index] = state
        return queued

    def states_of(self, job_ids: list[str]) -> tuple[tuple[str, int, str], ...]:
        """The active tasks of ``job_ids``, sorted: what a launch compares between polls."""
        return tuple(
            sorted(
                (job, index, state)
                for job in job_ids
                for index, state in self.jobs.get(job, {}).items()
            )
        )


_lock = threading.Lock()
_latest: QueueAnswer | None = None
_seq = 0


def ask_queue() -> QueueAnswer:
    """Ask ``squeue`` once for every active array task of this user.

    Raises:
        SlurmError: squeue is missing or exited non-zero (with its output).
        OSError, subprocess.TimeoutExpired: squeue could not be run or did not answer.
    """
    global _latest, _seq
    done = run_tool(["squeue", "--me", "-h", "-r", "-o", "%F %K %T"])
    if done.returncode != 0:
        raise command_error("squeue failed", done)
    jobs: dict[str, dict[int, str]] = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) != 3 or not parts[1].isdigit() or parts[2] not in ACTIVE_STATES:
            continue
        jobs.setdefault(parts[0], {})[int(parts[1])] = parts[2]
    with _lock:
        _seq += 1
        answer = QueueAnswer(_seq, time.monotonic(), jobs)
        _latest = answer
    return answer


_polling = threading.local()


@contextmanager
def answering(answer: QueueAnswer) -> Iterator[None]:
    """Mark ``answer`` as the one a poll of this thread is acting on (see :func:`born_at`)."""
    outer = getattr(_polling, "answer", None)
    _polling.answer = answer
    try:
        yield
    finally:
        _polling.answer = outer


def born_at() -> float:
    """When a launch made now counts as made, for :func:`shared_answer`.

    Normally now. A launch made while a poll acts on an answer is one that a retry or
    wave job submitted (its follower reattaches it because that job left the queue in
    the answer): its jobs existed when the answer was taken, so the answer may serve it
    (one ``squeue`` per poll, also on the poll that finds it).
    """
    answer: QueueAnswer | None = getattr(_polling, "answer", None)
    return answer.taken if answer is not None else time.monotonic()


def shared_answer(seen: int, since: float) -> QueueAnswer | None:
    """The latest answer if it is younger than :data:`SHARE_S`, newer than ``seen`` and
    taken after ``since`` (``time.monotonic()``).

    ``since`` is when the asking launch was made: an answer taken before its jobs were
    submitted would not list them, and they would look ended.
    """
    with _lock:
        answer = _latest
    if answer is None or answer.seq <= seen or answer.taken < since:
        return None
    return answer if time.monotonic() - answer.taken <= SHARE_S else None
