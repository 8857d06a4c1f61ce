"""The tasks of a launch, handed out only once the launch holds their run's claim.

Every in-process executor (thread, and the ProcessExecutor's driver) takes its tasks from
a :class:`ClaimedTasks`: it claims a small batch of runs in one call
(:class:`~metalab.store.capabilities.RunClaims`), hands out the granted ones, and keeps
the refused ones — claimed by a live other launch, or already done by it — *deferred*.
Once nothing else is left it polls the deferred runs (one ``states`` call, at most twice
a second): those that landed are reported to the launch (``landed``), those whose claim
was lost (their launch crashed) are claimed and executed here. So every launch's
``result()`` has every run, and each run executes once.

A heartbeat thread renews the held claims every third of their lease (for a FileStore one
``utime`` per launch: its claims share one inode). A run's claim is released once its
record and marker are written, in batches: together with the next batch's claim call
(so a FileStore launch keeps its one claim anchor from first claim to last, instead of
making a new one per batch) or at :meth:`ClaimedTasks.close`.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from metalab.records import StoredState
from metalab.store.claims import claim_ttl, new_owner

if TYPE_CHECKING:
    from metalab.executors.job import Job

__all__ = ["ClaimedTasks"]

# Runs claimed per call: one query (PostgreSQL) per batch, few enough that a launch
# never sits on runs another could start.
_BATCH = 8
# Finished runs whose claims are released by the next claim call; past this many they go
# at once (an executor that takes many tasks ahead, e.g. the ProcessExecutor's driver).
_RELEASE_AT = 4 * _BATCH
# How often deferred runs (executing in another launch) are looked at again.
_POLL_S = 0.5

Landed = Callable[[int, StoredState], None]
"""Called with (task index, state) for a deferred run another launch finished."""


class ClaimedTasks:
    """A thread-safe queue of task indices whose runs this launch has claimed.

    Args:
        job: the launch's plan, store and tasks (in order).
        landed: called for each deferred run that another launch finished.
        owner: the claims' owner (default: a fresh one, :func:`~metalab.store.claims.new_owner`).
    """

    def __init__(self, job: Job, landed: Landed, owner: str | None = None) -> None:
        self._plan = job.plan
        # The whole plan's run IDs if the launch computed them already; an array task of
        # a 300,000-run sweep has not (computing them all cost it 0.3 s of CPU).
        self._all_ids: list[str] | None = job.plan.__dict__.get("run_ids")
        self._store = job.store
        self._unless_done = not job.redo_done
        task_indices = job.task_indices
        self._landed = landed
        self.owner = owner if owner is not None else new_owner()
        self.ttl = claim_ttl()
        self._pending = collections.deque(task_indices)
        self._ready: collections.deque[int] = collections.deque()
        self._deferred: dict[int, None] = {}
        self._held: set[str] = set()
        self._to_release: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._next_poll = 0.0

    @property
    def deferred(self) -> int:
        """Runs claimed by another launch, waited for."""
        with self._lock:
            return len(self._deferred)

    def not_elsewhere(self, tasks: list[int]) -> list[int]:
        """``tasks`` without those deferred to another launch (which executes them)."""
        with self._lock:
            return [t for t in tasks if t not in self._deferred]

    def drain(self) -> int:
        """Drop every task not handed out yet (a cancel); return how many."""
        with self._lock:
            count = len(self._pending) + len(self._ready) + len(self._deferred)
            self._pending.clear()
            self._deferred.clear()
            dropped = [self._run_id(t) for t in self._ready]
            self._ready.clear()
            self._to_release.extend(dropped)
        return count

    def take(self, block: bool = True) -> int | None:
        """The next claimed task; ``None`` once nothing is left to execute.

        With ``block=False`` it returns ``None`` at once while only deferred runs
        remain (check :attr:`exhausted`); with ``block=True`` it waits for them.

        Raises:
            StoreError: the store cannot take claims.
        """
        while True:
            with self._lock:
                if self._ready:
                    return self._ready.popleft()
                if self._pending:
                    self._claim_batch(
                        [self._pending.popleft() for _ in range(min(_BATCH, len(self._pending)))]
                    )
                    continue
                if not self._deferred:
                    return None
                wait = self._next_poll - time.monotonic()
                if wait <= 0:
                    self._poll_deferred()
                    continue
            if not block:
                return None
            if self._stop.wait(wait):
                return None

    def take_many(self, n: int) -> list[int]:
        """Up to ``n`` claimed tasks, without waiting for deferred runs."""
        tasks: list[int] = []
        while len(tasks) < n and (task := self.take(block=False)) is not None:
            tasks.append(task)
        return tasks

    @property
    def exhausted(self) -> bool:
        """True when no task is left to hand out or wait for."""
        with self._lock:
            return not (self._ready or self._pending or self._deferred)

    def next_poll_in(self) -> float | None:
        """Seconds until deferred runs are looked at again (``None``: nothing deferred)."""
        with self._lock:
            if not self._deferred or self._ready or self._pending:
                return None
            return max(self._next_poll - time.monotonic(), 0.0)

    def done(self, task_index: int) -> None:
        """The run's record and marker are written: its claim can go."""
        run_id = self._run_id(task_index)
        with self._lock:
            self._held.discard(run_id)
            self._to_release.append(run_id)
            flush = len(self._to_release) >= _RELEASE_AT
        if flush:
            self._flush_releases()

    def close(self) -> None:
        """Stop renewing and release every claim still held (end of the launch)."""
        self._stop.set()
        with self._lock:
            self._to_release.extend(self._held)
            self._held.clear()
        self._flush_releases()

    # -- internals (called with the lock held, except where said) ----------------------
    def _run_id(self, task_index: int) -> str:
        ids = self._all_ids
        return ids[task_index] if ids is not None else self._plan.task(task_index).run_id

    def _claim_batch(self, tasks: list[int]) -> None:
        ids = [self._run_id(t) for t in tasks]
        granted = set(self._store.claim(ids, self.owner, self.ttl, self._unless_done))
        self._held.update(granted)
        # Released after the claim, never before: the launch holds a claim throughout.
        finished, self._to_release = self._to_release, []
        if finished:
            self._store.release(finished, self.owner)
        for task, run_id in zip(tasks, ids, strict=True):
            if run_id in granted:
                self._ready.append(task)
            else:
                self._deferred[task] = None
        if granted and self._heartbeat is None:
            self._heartbeat = threading.Thread(
                target=self._renew_loop, daemon=True, name="metalab-claims"
            )
            self._heartbeat.start()
        if not self._next_poll:
            self._next_poll = time.monotonic() + _POLL_S

    def _poll_deferred(self) -> None:
        tasks = list(self._deferred)
        states = self._store.states([self._run_id(t) for t in tasks])
        waiting = []
        for task, state in zip(tasks, states, strict=True):
            if state is StoredState.ABSENT:
                waiting.append(task)
            else:
                del self._deferred[task]
                self._landed(task, state)
        if waiting:
            # Still absent: executing elsewhere, or its launch died (its claim is lost
            # and granted here). A run that lands meanwhile is refused by the claim.
            for task in waiting:
                del self._deferred[task]
            self._claim_batch(waiting)
        self._next_poll = time.monotonic() + _POLL_S

    def _flush_releases(self) -> None:
        with self._lock:
            ids, self._to_release = self._to_release, []
        if ids:
            self._store.release(ids, self.owner)

    def _renew_loop(self) -> None:
        """Renew held claims every third of the lease until :meth:`close` (own thread)."""
        while not self._stop.wait(self.ttl / 3):
            with self._lock:
                held = list(self._held)
            if not held:
                continue
            try:
                self._store.renew(held, self.owner, self.ttl)
            except Exception:  # a missed renewal only risks the lease; the next one retries
                continue
