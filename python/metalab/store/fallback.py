"""FallbackStore: write to a primary store, and to a fallback when the primary is down.

Writes go to the primary; when it raises :class:`StoreUnavailableError` (down, refused,
timed out) the same write goes to the fallback, so no record is lost. With
``write_to_both=True`` the fallback gets every write as well (a complete second copy).
Reads merge both stores, so runs that landed only in the fallback are still seen by
resume and ``load_results``. Push them back with ``metalab store import --from
<fallback dir> --to <primary>`` once the primary is back.

A dead primary is detected once: the first failure warns (one line: which store, why,
where writes go instead) and from then on every write goes straight to the fallback, at
the fallback's speed. Every 30 s a background thread checks the primary (one cheap
``ping``); writers never wait for it, and once it answers they use the primary again.

Its locator is ``fallback://?primary=<urlencoded>&fallback=<urlencoded>&write_to_both=1``
so process and SLURM workers rebuild the same pair.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from metalab.errors import CorruptRecordError, LocatorError, StoreUnavailableError
from metalab.records import ArtifactInfo, RunRecord, RunState, StoredState
from metalab.store.base import LoadedRecords, LoadProblem, LogSink, Store
from metalab.store.bundle import ManifestDoc, RunBundle
from metalab.store.locator import create_store, to_locator
from metalab.store.postgres_config import PostgresConfig, mask_locator
from metalab.store.record_codec import decode_record

__all__ = ["FallbackStore"]

T = TypeVar("T")
# After a failure the primary is skipped this long, then checked again in the background:
# a dead server costs one connection attempt per interval, never one per write.
_RETRY_AFTER_S = 30.0


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
            except StoreUnavailableError as exc:
                owner.note_primary_down(exc)
        if self._primary is None and self._fallback is None:
            self._fallback = owner.fallback.open_log(run_id)

    def write_line(self, line: str) -> None:
        if self._primary is not None:
            try:
                self._primary.write_line(line)
            except StoreUnavailableError as exc:
                self._owner.note_primary_down(exc)
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
        self._down = False
        self._probe_pid = -1  # the process whose thread is checking the primary
        self._warned = False
        self._lock = threading.Lock()
        self._pending: dict[str, RunRecord] = {}

    @property
    def locator(self) -> str:
        """``fallback://?primary=...&fallback=...[&write_to_both=1]`` (no passwords)."""
        return self._locator(self.primary.locator, self.fallback.locator)

    def connection_configs(self) -> list[PostgresConfig]:
        """The primary's connection settings, then the fallback's."""
        return self.primary.connection_configs() + self.fallback.connection_configs()

    def portable_locator(self) -> str:
        """Like :attr:`locator`, with both parts as :func:`~metalab.store.to_locator`
        gives them (a password becomes a ``passfile=`` reference)."""
        return self._locator(to_locator(self.primary), to_locator(self.fallback))

    def _locator(self, primary: str, fallback: str) -> str:
        query = [("primary", primary), ("fallback", fallback)]
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
        """False while the primary is known to be down (it is re-checked in the background)."""
        if not self._down:
            return True
        with self._lock:
            if self._probe_pid != os.getpid():
                # Forked while the parent was checking: that thread did not come along.
                self._down = False
            return not self._down

    def note_primary_down(self, exc: BaseException | None = None) -> None:
        """Send writes to the fallback for a while; the first time, say so (one warning).

        After :data:`_RETRY_AFTER_S` a background thread checks the primary; writers go on
        to the fallback meanwhile and return to the primary once it answers.
        """
        with self._lock:
            checking = self._down and self._probe_pid == os.getpid()
            self._down = True
            self._probe_pid = os.getpid()
            first, self._warned = not self._warned, True
        if first:
            why = "" if exc is None else f" ({_reason(exc, self.primary.locator)})"
            warnings.warn(
                f"metalab: primary store {self.primary.locator} is unreachable{why}; writing "
                f"to the fallback {self.fallback.locator} (the primary is checked again "
                f"every {_RETRY_AFTER_S:.0f} s)",
                RuntimeWarning,
                stacklevel=2,
            )
        if checking:
            return  # a thread of this process is already checking the primary
        threading.Thread(
            target=self._recheck_later, name="metalab-fallback-probe", daemon=True
        ).start()

    def _recheck_later(self) -> None:
        """Wait, then ping the primary until it answers (in a daemon thread)."""
        while True:
            time.sleep(_RETRY_AFTER_S)
            try:
                self.primary.ping()
            except StoreUnavailableError:
                continue
            except Exception:  # any other answer (a refused login...): the server is up
                break
            break
        with self._lock:
            self._down = False

    def _write(self, op: Callable[[Store], T]) -> T:
        """Apply a write to the primary, or the fallback if the primary is unreachable."""
        result: T | None = None
        wrote_primary = False
        if self.primary_usable():
            try:
                result = op(self.primary)
                wrote_primary = True
            except StoreUnavailableError as exc:
                self.note_primary_down(exc)
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
            except StoreUnavailableError as exc:
                self.note_primary_down(exc)
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
            except StoreUnavailableError as exc:
                self.note_primary_down(exc)
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
    def states(self, run_ids: Sequence[str]) -> list[StoredState]:
        """Done if either store has it done, else failed if either has it failed.

        A run that failed over stored its outcome only in the fallback, and one finished
        by a later attempt may be done in one store and failed in the other: done wins.
        """
        ids = list(run_ids)
        primary, fallback = self._read(lambda s: s.states(ids))
        return [
            _merge_states(a, b)
            for a, b in zip(primary or [StoredState.ABSENT] * len(ids), fallback, strict=True)
        ]

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
            except StoreUnavailableError as exc:
                self.note_primary_down(exc)
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

    # -- bundles (transfer) -------------------------------------------------------------
    def stored_run_ids(self, experiment_id: str | None = None) -> list[str]:
        primary, fallback = self._read(lambda s: s.stored_run_ids(experiment_id), force=True)
        return sorted(set(primary or []) | set(fallback))

    def read_bundles(self, run_ids: Sequence[str]) -> tuple[list[RunBundle], list[str]]:
        """Each run as the store holding its latest attempt has it (see ``_newest``)."""
        ids = list(run_ids)
        primary, fallback = self._read(lambda s: s.read_bundles(ids), force=True)
        refused = list(fallback[1])
        chosen = {b.run_id: b for b in fallback[0]}
        if primary is not None:
            refused = primary[1] + refused
            for bundle in primary[0]:
                other = chosen.get(bundle.run_id)
                if other is None or _prefer_first(bundle, other):
                    chosen[bundle.run_id] = bundle
        return [chosen[run_id] for run_id in ids if run_id in chosen], refused

    def manifest_docs(
        self, experiment_id: str | None = None
    ) -> tuple[list[ManifestDoc], list[str]]:
        primary, fallback = self._read(lambda s: s.manifest_docs(experiment_id), force=True)
        merged: dict[tuple[str, str], ManifestDoc] = {}
        refused: list[str] = []
        for docs, problems in (primary or ([], [])), fallback:
            refused += problems
            for doc in docs:
                merged.setdefault((doc.experiment_id, doc.stamp), doc)
        return list(merged.values()), refused

    def blob_keys(self) -> list[str]:
        primary, fallback = self._read(lambda s: s.blob_keys(), force=True)
        return sorted(set(primary or []) | set(fallback))

    def write_bundles(self, bundles: Sequence[RunBundle]) -> None:
        self._write(lambda s: s.write_bundles(bundles))

    def put_manifest_doc(self, doc: ManifestDoc) -> None:
        self._write(lambda s: s.put_manifest_doc(doc))

    # -- claims: the primary's (the fallback's while the primary is down) -------------
    def claim(
        self, run_ids: Sequence[str], owner: str, ttl: float, unless_done: bool = True
    ) -> list[str]:
        return self._claims(lambda s: s.claim(run_ids, owner, ttl, unless_done))

    def renew(self, run_ids: Sequence[str], owner: str, ttl: float) -> list[str]:
        return self._claims(lambda s: s.renew(run_ids, owner, ttl))

    def release(self, run_ids: Sequence[str], owner: str) -> None:
        self._claims(lambda s: s.release(run_ids, owner))

    def claim_holders(self, run_ids: Sequence[str]) -> dict[str, str]:
        return self._claims(lambda s: s.claim_holders(run_ids))

    def _claims(self, op: Callable[[Store], T]) -> T:
        # One store decides, never both: the primary, or the fallback while it is down.
        if self.primary_usable():
            try:
                return op(self.primary)
            except StoreUnavailableError as exc:
                self.note_primary_down(exc)
        return op(self.fallback)

    def close(self) -> None:
        """Close both stores."""
        self.primary.close()
        self.fallback.close()


def _reason(exc: BaseException, locator: str) -> str:
    """The cause in an error about ``locator``, without repeating the locator."""
    text = str(exc)
    if locator in text:
        text = text.split(locator, 1)[1].lstrip(" :").removeprefix("unavailable: ")
    return text


def _merge_states(a: StoredState, b: StoredState) -> StoredState:
    if StoredState.DONE in (a, b):
        return StoredState.DONE
    if StoredState.FAILED in (a, b):
        return StoredState.FAILED
    return StoredState.ABSENT


def _prefer_first(a: RunBundle, b: RunBundle) -> bool:
    """Whether bundle ``a`` holds the later attempt of its run than ``b`` (ties: ``a``)."""
    if a.record_doc is None or b.record_doc is None:
        return b.record_doc is None and (a.record_doc is not None or a.marker is not None)
    try:
        first = decode_record(a.record_doc.encode(), f"record of {a.run_id}")
    except CorruptRecordError:
        return False
    try:
        second = decode_record(b.record_doc.encode(), f"record of {b.run_id}")
    except CorruptRecordError:
        return True
    return _newest(first, second) is first


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
