"""Proof that every run of a plan is still done, checked with a few hundred ``stat`` calls.

A resubmission of a finished sweep must still scan every marker: a done marker or a
record deleted since the last look makes that run unfinished again, and resume must run
it. At 300,000 runs the scan lists ~600,000 names (0.3-0.45 CPU-s) to learn, nearly
always, that nothing changed. A directory's ``ctime`` answers that question for all of
its entries at once: creating, deleting or renaming an entry of a directory sets the
directory's ``ctime`` to the current time, and no call can set it to anything else.

So when a full :meth:`~metalab.store.file.FileStore.states` scan of a FileStore finds
every run of a plan done, :meth:`DoneProof.states` also keeps, in the blob
:func:`~metalab.keys.done_proof_key`, the plan's :attr:`~metalab.plan.RunPlan.run_set_key`
and the ``(device, inode, ctime, mtime)`` of the marker and record roots and of every entry
in them, taken *before* the scan. :meth:`DoneProof.holds` takes the same stamps again:
all equal means no marker and no record was created, deleted or renamed since that scan
saw every run done (a failed marker cannot change a done run's state: done wins), so
every run is still done.

The stamps are only kept when each ``ctime`` is older, by :data:`MARGIN_NS`, than the
modification time of a file written just before them (the file system's own clock: an
NFS server's, not ours): a change right after the stamps lands in a later clock tick, so
it gets another ``ctime`` even on file systems with coarse (jiffy or one-second)
timestamps, and the margin covers file systems that take the time from each client
(Lustre) whose clocks differ by less than it. Stamps of a directory on another device
are never kept. On NFS the stamps are as fresh as the client's attribute cache, as a
listing is. Stores whose states do not come from FileStore's scan (PostgreSQL, a
subclass) keep no proof.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from metalab.errors import MetalabError
from metalab.keys import done_proof_key
from metalab.records import StoredState

if TYPE_CHECKING:
    # Only the type: FileStore asks for its proof (a runtime import would be a cycle).
    from metalab.store.file import FileStore

__all__ = ["DoneProof"]

FORMAT = 1
"""Version of the proof blob's content; a blob of another version proves nothing."""

MARGIN_NS = 1_000_000_000
"""How much older than the file system's clock a directory's last change must be for
its stamp to be kept (a finished sweep's directories are minutes old; right after the
last run, resume scans once more)."""

Stamp = tuple[str, int, int, int, int]
"""``(path relative to the store, st_dev, st_ino, st_ctime_ns, st_mtime_ns)``."""


class DoneProof:
    """The done proof of one plan in one FileStore (see the module docstring).

    Args:
        store: the FileStore.
        experiment_id: the plan's experiment (names the blob).
        run_set_key: the plan's :attr:`~metalab.plan.RunPlan.run_set_key`.
    """

    def __init__(self, store: FileStore, experiment_id: str, run_set_key: str) -> None:
        self.store = store
        self.key = done_proof_key(experiment_id)
        self.run_set_key = run_set_key

    def holds(self) -> bool:
        """True when a kept proof shows every run of the plan is still done.

        Never raises: an unreadable, foreign or garbled proof proves nothing (the caller
        scans, and a broken store reports itself there).
        """
        try:
            data = self.store.get_blob(self.key)
        except (MetalabError, OSError):
            return False
        if data is None:
            return False
        try:
            kept = json.loads(data)
        except ValueError:
            return False
        if not isinstance(kept, dict) or kept.get("format") != FORMAT:
            return False
        if kept.get("run_set_key") != self.run_set_key:
            return False
        now = self._stamps()
        return now is not None and [list(s) for s in now] == kept.get("stamps")

    def states(self, run_ids: Sequence[str], *, keep: bool = True) -> list[StoredState]:
        """``store.states(run_ids)``, keeping a proof when every run is done.

        Args:
            run_ids: every run ID of the plan (the proof is about all of them).
            keep: write the proof (False for dry runs, which write nothing).

        Raises:
            StoreError: the store cannot be scanned (as ``FileStore.states``).
        """
        # Without a done marker there is nothing to prove: no write into a new store.
        clock = self._clock() if keep and self.store.layout.done_dir.is_dir() else None
        stamps = self._stamps() if clock is not None else None
        states = self.store.states(run_ids)
        if stamps is None or clock is None or states.count(StoredState.DONE) != len(states):
            return states
        device, now = clock
        settled = now - MARGIN_NS
        if all(dev == device and ctime < settled for _p, dev, _ino, ctime, _m in stamps):
            blob = {"format": FORMAT, "run_set_key": self.run_set_key, "stamps": stamps}
            self._put(json.dumps(blob, separators=(",", ":")).encode())
        return states

    def _clock(self) -> tuple[int, int] | None:
        """Device and modification time of the proof blob rewritten now (it proves
        nothing until the scan ends), or None when the store cannot be written."""
        if not self._put(b'{"format":0}'):
            return None
        try:
            written = os.stat(self.store.layout.blob(self.key))
        except OSError:
            return None
        return written.st_dev, written.st_mtime_ns

    def _put(self, data: bytes) -> bool:
        # The proof is an optimisation: a store that cannot keep it is scanned every time.
        try:
            self.store.put_blob(self.key, data)
        except (MetalabError, OSError):
            return False
        return True

    def _stamps(self) -> list[Stamp] | None:
        """Stamps of the done-marker and record roots and of every entry in them, each
        root stat-ed before it is listed (an entry made in between changes the root's
        stamp); None when a root is missing or cannot be read."""
        layout = self.store.layout
        stamps: list[Stamp] = []
        try:
            for top in (layout.done_dir, layout.runs_dir):
                base = str(top)
                name = os.path.relpath(base, layout.root)
                stamps.append(_stamp(name, base))
                with os.scandir(base) as entries:
                    names = sorted(entry.name for entry in entries)
                # Plain strings, not Paths: 500 stamps in ~3 ms instead of ~15 ms.
                stamps.extend(_stamp(f"{name}/{n}", f"{base}/{n}") for n in names)
        except OSError:
            return None
        return stamps


def _stamp(name: str, path: str) -> Stamp:
    # Follows a symlinked shard: the scan lists the directory it points to.
    st = os.stat(path)
    return name, st.st_dev, st.st_ino, st.st_ctime_ns, st.st_mtime_ns
