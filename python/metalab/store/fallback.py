"""FallbackStore: write to a primary store, and to a fallback when the primary is down.

Writes go to the primary; when it raises :class:`StoreUnavailableError` (down, refused,
timed out) the same write goes to the fallback, so no record is lost. With
``write_to_both=True`` the fallback gets every write as well (a complete second copy).
Reads merge both stores, so runs that landed only in the fallback are still seen by
resume and ``load_results``. Push them back with ``metalab store import --from
<fallback dir> --to <primary>`` once the primary is back.

Its locator is ``fallback://?primary=<urlencoded>&fallback=<urlencoded>&write_to_both=1``
so process and SLURM workers rebuild the same pair.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from metalab.errors import LocatorError, StoreUnavailableError
from metalab.records import ArtifactInfo, RunRecord, RunState
from metalab.store.base import LoadedRecords, LoadProblem, LogSink, Store
from metalab.store.locator import create_store
from metalab.store.postgres_config import mask_locator

__all__ = ["FallbackStore"]

T = TypeVar("T")
# After a failure the primary is skipped this long, so a dead server costs one connect
# timeout per interval instead of one per write.
_RETRY_AFTER_S = 5.0


class _FallbackLogSink:
    """Sends lines to the primary's sink, switching to the fallback when it fails.

    Lines are also kept in memory so that, on a switch, the fallback receives the whole
    log of the run (not only what came after the failure).
    """

    def __init__(self, owner: FallbackStore, run_id: str) -> None:
        self._owner = owner
        self._run_id = run_id
        self._lines: list[str] = []
        self._primary: LogSink | None = None
        self._fallback: LogSink | None = None
        if owner.write_to_both:
            self._fallback = owner.fallback.open_log(run_id)
        if owner.primary_usable():
            try:
                self._primary = owner.primary.open_log(run_id)
            except StoreUnavailableError:
                owner.note_primary_down()
        if self._primary is None and self._fallback is None:
            self._fallback = owner.fallback.open_log(run_id)

    def write_line(self, line: str) -> None:
        if self._primary is not None:
            try:
                self._primary.write_line(line)
            except StoreUnavailableError:
                self._owner.note_primary_down()
                self._primary = None
                if self._fallback is None:
                    self._fallback = self._owner.fallback.open_log(self._run_id)
                    for earlier in self._lines:
                        self._fallback.write_line(earlier)
        if self._fallback is not None:
            self._fallback.write_line(line)
        self._lines.append(line)

    def close(self) -> None:
        for sink in (self._primary, self._fallback):
            if sink is not None:
                try:
                    sink.close()
                except StoreUnavailableError:
                    continue


class FallbackStore(Store):
    """A primary store with a fallback taking the writes the primary cannot.

    Args:
        primary: the preferred store (typically a PostgresStore), or its locator.
        fallback: where writes go when the primary is unreachable (typically a FileStore).
        write_to_both: also send every write to the fallback.
    """

    def __init__(self, primary: Any, fallback: Any, write_to_both: bool = False) -> None:
        self.primary: Store = create_store(primary)
        self.fallback: Store = create_store(fallback)
        self.write_to_both = bool(write_to_both)
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._pending: dict[str, RunRecord] = {}

    @property
    def locator(self) -> str:
        """``fallback://?primary=...&fallback=...[&write_to_both=1]`` (no passwords)."""
        query = [("primary", self.primary.locator), ("fallback", self.fallback.locator)]
        if self.write_to_both:
            query.append(("write_to_both", "1"))
        return "fallback://?" + urlencode(query)

    @classmethod
    def from_locator(cls, locator: str) -> FallbackStore:
        """Rebuild a FallbackStore from its :attr:`locator`.

        Raises:
            LocatorError: the locator lacks ``primary``/``fallback`` or is malformed.
        """
        shown = mask_locator(locator)
        parts = urlsplit(locator)
        if parts.netloc or parts.path or parts.fragment:
            raise LocatorError(f"fallback locator {shown!r} must be fallback://?primary=..")
        try:
            query = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True))
        except ValueError:
            raise LocatorError(f"fallback locator {shown!r} has a malformed query") from None
        unknown = set(query) - {"primary", "fallback", "write_to_both"}
        if unknown or not query.get("primary") or not query.get("fallback"):
            raise LocatorError(
                f"fallback locator {shown!r} needs primary= and fallback= "
                f"(and optional write_to_both=0|1); unknown: {sorted(unknown)}"
            )
        both = query.get("write_to_both", "0").lower()
        if both not in ("0", "1", "true", "false", ""):
            raise LocatorError(f"fallback locator {shown!r}: bad write_to_both={both!r}")
        return cls(query["primary"], query["fallback"], write_to_both=both in ("1", "true"))

    def __repr__(self) -> str:
        return (
            f"FallbackStore(primary={self.primary!r}, fallback={self.fallback!r}, "
            f"write_to_both={self.write_to_both})"
        )

    # -- primary health ---------------------------------------------------------------
    def primary_usable(self) -> bool:
        """False while the primary is in its back-off period after a failure."""
        return time.monotonic() >= self._down_until

    def note_primary_down(self) -> None:
        """Skip the primary for a few seconds (it just failed)."""
        with self._lock:
            self._down_until = time.monotonic() + _RETRY_AFTER_S

    def _write(self, op: Callable[[Store], T]) -> T:
        """Apply a write to the primary, or the fallback if the primary is unreachable."""
        result: T | None = None
        wrote_primary = False
        if self.primary_usable():
            try:
                result = op(self.primary)
                wrote_primary = True
            except StoreUnavailableError:
                self.note_primary_down()
        if self.write_to_both or not wrote_primary:
            fallback_result = op(self.fallback)
            if not wrote_primary:
                result = fallback_result
        return result  # type: ignore[return-value]

    def _read(self, op: Callable[[Store], T], *, force: bool = False) -> tuple[T | None, T]:
        """Return ``(primary result or None when unreachable, fallback result)``.

        ``force`` tries the primary even within the back-off after a failure (for bulk
        reads, where one attempt is cheap next to silently missing its records).
        """
        primary: T | None = None
        if force or self.primary_usable():
            try:
                primary = op(self.primary)
            except StoreUnavailableError:
                self.note_primary_down()
        return primary, op(self.fallback)

    # -- experiments ------------------------------------------------------------------
    def put_manifest(self, experiment_id: str, manifest: dict[str, Any]) -> str:
        return self._write(lambda s: s.put_manifest(experiment_id, manifest))

    def list_manifests(self, experiment_id: str | None = None) -> list[dict[str, Any]]:
        primary, fallback = self._read(lambda s: s.list_manifests(experiment_id))
        merged: dict[str, dict[str, Any]] = {}
        for manifest in (primary or []) + fallback:
            key = f"{manifest.get('experiment_id')}@{manifest.get('submitted_at')}"
            merged.setdefault(key, manifest)
        return sorted(merged.values(), key=lambda m: str(m.get("submitted_at", "")))

    def put_blob(self, key: str, data: bytes) -> None:
        self._write(lambda s: s.put_blob(key, data))

    def get_blob(self, key: str) -> bytes | None:
        if self.primary_usable():
            try:
                found = self.primary.get_blob(key)
                if found is not None:
                    return found
            except StoreUnavailableError:
                self.note_primary_down()
        return self.fallback.get_blob(key)

    # -- run write path ---------------------------------------------------------------
    def open_log(self, run_id: str) -> LogSink:
        return _FallbackLogSink(self, run_id)

    def put_artifact(
        self, run_id: str, name: str, data: bytes, kind: str, ext: str, meta: dict[str, Any]
    ) -> ArtifactInfo:
        return self._write(lambda s: s.put_artifact(run_id, name, data, kind, ext, meta))

    def put_record(self, record: RunRecord) -> None:
        # Remember the record until its marker is written: if the primary dies in
        # between, the marker fails over and the record must follow it.
        with self._lock:
            self._pending[record.run_id] = record
        self._write(lambda s: s.put_record(record))

    def mark(self, run_id: str, state: RunState) -> None:
        with self._lock:
            record = self._pending.pop(run_id, None)

        def op(store: Store) -> None:
            if store is self.fallback and record is not None and not self.write_to_both:
                store.put_record(record)  # only reached after a failover
            store.mark(run_id, state)

        self._write(op)

    # -- completion -------------------------------------------------------------------
    def completed(self, run_ids: Sequence[str]) -> list[bool]:
        ids = list(run_ids)
        primary, fallback = self._read(lambda s: s.completed(ids))
        return [a or b for a, b in zip(primary or [False] * len(ids), fallback, strict=True)]

    def failed(self, run_ids: Sequence[str]) -> list[bool]:
        ids = list(run_ids)
        done = self.completed(ids)
        primary, fallback = self._read(lambda s: s.failed(ids))
        pairs = zip(primary or [False] * len(ids), fallback, done, strict=True)
        return [(a or b) and not ok for a, b, ok in pairs]

    # -- read path --------------------------------------------------------------------
    def get_record(self, run_id: str) -> RunRecord | None:
        primary, fallback = self._read(lambda s: s.get_record(run_id))
        return _newest(primary, fallback)

    def load_records(
        self, experiment_id: str | None = None, run_ids: Iterable[str] | None = None
    ) -> LoadedRecords:
        ids = None if run_ids is None else list(run_ids)
        primary, fallback = self._read(lambda s: s.load_records(experiment_id, ids), force=True)
        merged: dict[str, RunRecord] = {}
        problems = list(fallback.problems)
        if primary is None:
            problems.append(
                LoadProblem(
                    self.primary.locator,
                    "primary store unreachable: only records in the fallback were loaded",
                )
            )
        for loaded in (primary, fallback):
            if loaded is None:
                continue
            for record in loaded.records:
                best = _newest(merged.get(record.run_id), record)
                assert best is not None
                merged[record.run_id] = best
        if primary is not None:
            problems = primary.problems + problems
        order = {run_id: i for i, run_id in enumerate(ids or [])}
        records = sorted(
            merged.values(),
            key=lambda r: (order.get(r.run_id, 0), r.experiment_id, r.task_index, r.run_id),
        )
        return LoadedRecords(records=records, problems=problems)

    def get_artifact(self, run_id: str, info: ArtifactInfo) -> bytes:
        if self.primary_usable():
            try:
                return self.primary.get_artifact(run_id, info)
            except KeyError:
                pass
            except StoreUnavailableError:
                self.note_primary_down()
        return self.fallback.get_artifact(run_id, info)

    def read_log(self, run_id: str) -> str:
        primary, fallback = self._read(lambda s: s.read_log(run_id))
        # The fallback holds the whole log whenever it holds any (see _FallbackLogSink).
        return fallback if len(fallback) >= len(primary or "") else (primary or "")

    def put_derived(self, run_id: str, values: dict[str, Any]) -> None:
        self._write(lambda s: s.put_derived(run_id, values))

    def get_derived(self, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        primary, fallback = self._read(lambda s: s.get_derived(run_ids))
        return {**fallback, **(primary or {})}

    def close(self) -> None:
        """Close both stores."""
        self.primary.close()
        self.fallback.close()


def _newest(a: RunRecord | None, b: RunRecord | None) -> RunRecord | None:
    """The record of the later attempt (by finish time), preferring ``a`` on ties."""
    if a is None or b is None:
        return a if b is None else b
    ka, kb = a.finished_at, b.finished_at
    if ka is not None and kb is not None and kb > ka:
        return b
    if ka is None and kb is not None:
        return b
    return a
