"""Copy runs between stores: FileStore <-> PostgresStore (and FileStore <-> FileStore).

Everything is copied byte-exact — records, metric series (inside records), logs,
artifacts, derived metrics, completion markers, manifests and blobs — so a round trip
file -> PostgreSQL -> file reproduces the original files. Every write is an upsert or a
whole-file replacement, so re-running a transfer is harmless; it is also how runs that
landed only in a FallbackStore's fallback are pushed back into the primary.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from metalab.errors import CorruptRecordError, StoreError, UnsafeLoadError, UnsafeNameError
from metalab.records import RunState
from metalab.store.atomic import atomic_write
from metalab.store.base import Store
from metalab.store.bundle import ArtifactBlob, RunBundle
from metalab.store.file import FileStore
from metalab.store.layout import (
    NoFollowReader,
    check_blob_key,
    check_experiment_id,
    check_file_name,
    check_run_id,
    check_stamp,
)
from metalab.store.locator import create_store
from metalab.store.record_codec import decode_record

__all__ = ["TransferReport", "export_store", "import_from_filestore", "transfer"]

_BATCH = 500
_STATES = frozenset(state.value for state in RunState)


@dataclass
class TransferReport:
    """What a transfer copied."""

    source: str
    destination: str
    runs: int = 0
    records: int = 0
    artifacts: int = 0
    manifests: int = 0
    blobs: int = 0
    seconds: float = 0.0
    #: One line per item not copied because a name or file in the source was unsafe
    #: (a run ID, artifact file, manifest or blob key that could point outside the
    #: destination, or a symbolic link); the rest was copied.
    skipped: list[str] = field(default_factory=list)
    #: The experiment filter of the transfer (``None``: everything).
    experiment_id: str | None = None
    #: When a filter matched nothing: the experiment IDs the source does hold.
    available: list[str] = field(default_factory=list)

    @property
    def matched_nothing(self) -> bool:
        """True when an experiment filter was given and the source had nothing of it."""
        found = self.runs + self.manifests + self.blobs + len(self.skipped)
        return self.experiment_id is not None and found == 0

    def __str__(self) -> str:
        text = (
            f"copied {self.runs} runs ({self.records} records, {self.artifacts} artifacts), "
            f"{self.manifests} manifests and {self.blobs} blobs from {self.source} to "
            f"{self.destination} in {self.seconds:.1f} s"
        )
        if self.skipped:
            text += f"; skipped {len(self.skipped)} unsafe items"
        return text


class _Progress:
    """A one-line text progress bar on stderr (shown for large transfers)."""

    def __init__(self, total: int, enabled: bool | None, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        if enabled is None:
            enabled = total >= 1000 and self.stream.isatty()
        self.enabled = enabled
        self.done = 0
        self._last = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.2 or self.done >= self.total):
            self._last = now
            width = 30
            filled = width * self.done // max(self.total, 1)
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\rtransfer [{bar}] {self.done}/{self.total} runs")
            if self.done >= self.total:
                self.stream.write("\n")
            self.stream.flush()


# -- FileStore side -------------------------------------------------------------------
def _file_run_ids(store: FileStore, experiment_id: str | None) -> list[str]:
    """Every name in the store that claims to be a run (validated later, by the caller)."""
    runs_dir = store.layout.runs_dir
    found: set[str] = set()
    if runs_dir.is_dir():
        for shard in os.scandir(runs_dir):
            if shard.is_dir(follow_symlinks=False) and not shard.name.startswith("."):
                for entry in os.scandir(shard.path):
                    if entry.name.endswith(".json") and not entry.name.startswith("."):
                        found.add(entry.name[: -len(".json")])
    if experiment_id is None:
        for root in (store.layout.done_dir, store.layout.failed_dir, store.layout.derived_dir):
            if root.is_dir():
                for shard in os.scandir(root):
                    if shard.is_dir(follow_symlinks=False):
                        found.update(
                            e.name.rsplit(".", 1)[0]
                            for e in os.scandir(shard.path)
                            if not e.name.startswith(".")
                        )
        return sorted(found)
    selected = []
    for run_id in sorted(found):
        try:
            record = store.get_record(run_id)
        except UnsafeNameError:
            selected.append(run_id)  # reported as skipped by the caller
            continue
        if record is not None and record.experiment_id == experiment_id:
            selected.append(run_id)
    return selected


def _read_part(reader: NoFollowReader, bundle: RunBundle, path: Path, what: str) -> str | None:
    """Text of one file of a run, or ``None``; a symlinked file is noted, not followed."""
    try:
        data = reader.read(path)
    except UnsafeNameError as exc:
        bundle.problems.append(f"{what} of run {bundle.run_id}: {exc}")
        return None
    # newline="" semantics: the text is kept byte-exact, "\r\n" included.
    return None if data is None else data.decode("utf-8")


def _file_bundle(store: FileStore, reader: NoFollowReader, run_id: str) -> RunBundle:
    layout = store.layout
    bundle = RunBundle(run_id)
    bundle.record_doc = _read_part(reader, bundle, layout.record(run_id), "record")
    if layout.done_marker(run_id).exists():
        bundle.marker = RunState.SUCCESS.value
    else:
        failed = _read_part(reader, bundle, layout.failed_marker(run_id), "failure marker")
        if failed is not None:
            state = failed.strip() or RunState.FAILED.value
            if state in _STATES:
                bundle.marker = state
            else:
                bundle.problems.append(
                    f"failure marker of run {run_id}: {str(layout.failed_marker(run_id))!r} "
                    f"holds {state[:40]!r}, expected one of {sorted(_STATES)}"
                )
    bundle.log = _read_part(reader, bundle, layout.log(run_id), "log") or ""
    bundle.derived_doc = _read_part(reader, bundle, layout.derived(run_id), "derived metrics")
    names: dict[str, tuple[str, str]] = {}
    if bundle.record_doc is not None:
        record = decode_record(bundle.record_doc.encode(), str(layout.record(run_id)))
        names = {a.file: (a.name, a.kind) for a in record.artifacts}
        for file_name in names:
            try:
                check_file_name(file_name)
            except UnsafeNameError as exc:  # copied as data, but the user must know
                bundle.problems.append(f"record of run {run_id} lists an artifact: {exc}")
    try:
        entries = reader.list_dir(layout.run_dir(run_id))
    except UnsafeNameError as exc:
        bundle.problems.append(f"artifacts of run {run_id}: {exc}")
        entries = []
    for file_name, is_link in entries:
        try:
            if is_link:
                raise UnsafeNameError(
                    f"{str(layout.run_dir(run_id) / file_name)!r} is a symbolic link; "
                    f"metalab does not follow links inside a store",
                    name=file_name,
                )
            data = reader.read(layout.artifact(run_id, file_name))
        except UnsafeNameError as exc:
            bundle.problems.append(f"artifact of run {run_id}: {exc}")
            continue
        if data is not None:
            name, kind = names.get(file_name, (file_name.split(".", 1)[0], ""))
            bundle.artifacts.append(ArtifactBlob(file_name, name, kind, data))
    return bundle


def _write_file_bundle(store: FileStore, bundle: RunBundle) -> None:
    layout = store.layout
    run_id = bundle.run_id
    for art in bundle.artifacts:
        atomic_write(layout.artifact(run_id, art.file), art.data)
    if bundle.log:
        atomic_write(layout.log(run_id), bundle.log.encode())
    else:
        layout.log(run_id).unlink(missing_ok=True)
    if bundle.derived_doc is not None:
        atomic_write(layout.derived(run_id), bundle.derived_doc.encode())
    if bundle.record_doc is not None:
        atomic_write(layout.record(run_id), bundle.record_doc.encode())
    # Markers last: they vouch for the record written just before.
    if bundle.marker is not None:
        store.mark(run_id, RunState(bundle.marker))


def _file_manifests(
    store: FileStore, experiment_id: str | None, skipped: list[str]
) -> list[tuple[str, str, str]]:
    directory = store.layout.experiments_dir
    out: list[tuple[str, str, str]] = []
    with NoFollowReader(store.root) as reader:
        for file_name, _ in reader.list_dir(directory):
            if not file_name.endswith(".json"):
                continue
            try:
                data = reader.read(directory / file_name)
            except UnsafeNameError as exc:  # a symlink: it names a file elsewhere
                skipped.append(f"manifest: {exc}")
                continue
            if data is None:
                continue
            doc = data.decode("utf-8")
            try:
                exp = str(json.loads(doc).get("experiment_id", ""))
            except (ValueError, AttributeError):
                exp = ""
            stem = file_name[: -len(".json")]
            if exp and stem.startswith(exp + "_"):
                stamp = stem[len(exp) + 1 :]
            else:
                exp, _, stamp = stem.rpartition("_")
            if experiment_id is None or exp == experiment_id:
                out.append((exp, stamp, doc))
    return out


def _file_blobs(store: FileStore) -> list[str]:
    directory = store.layout.blobs_dir
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.is_file() and p.name[0] != ".")


# -- generic dispatch -----------------------------------------------------------------
def _run_ids(store: Store, experiment_id: str | None) -> list[str]:
    if isinstance(store, FileStore):
        return _file_run_ids(store, experiment_id)
    from metalab.store.postgres import PostgresStore

    if isinstance(store, PostgresStore):
        return store.run_ids(experiment_id)
    raise StoreError(f"cannot transfer from {store!r}: only file and PostgreSQL stores")


def _read(store: Store, run_ids: Sequence[str], skipped: list[str]) -> list[RunBundle]:
    if isinstance(store, FileStore):
        bundles = []
        with NoFollowReader(store.root) as reader:
            for run_id in run_ids:
                try:
                    bundles.append(_file_bundle(store, reader, run_id))
                except CorruptRecordError as exc:  # one bad run must not stop the rest
                    skipped.append(f"run {run_id}: {exc}")
        return bundles
    from metalab.store.postgres_bulk import read_bundles

    return read_bundles(store, run_ids)  # type: ignore[arg-type]


def _write(store: Store, bundles: Sequence[RunBundle]) -> None:
    if isinstance(store, FileStore):
        for bundle in bundles:
            _write_file_bundle(store, bundle)
        return
    from metalab.store.postgres import PostgresStore
    from metalab.store.postgres_bulk import write_bundles

    if not isinstance(store, PostgresStore):
        raise StoreError(f"cannot transfer into {store!r}: only file and PostgreSQL stores")
    write_bundles(store, bundles)


def _manifests(
    store: Store, experiment_id: str | None, skipped: list[str]
) -> list[tuple[str, str, str]]:
    if isinstance(store, FileStore):
        return _file_manifests(store, experiment_id, skipped)
    return store.manifest_docs(experiment_id)  # type: ignore[attr-defined, no-any-return]


def _put_manifest(store: Store, experiment_id: str, stamp: str, doc: str) -> None:
    if isinstance(store, FileStore):
        atomic_write(store.layout.manifest(experiment_id, stamp), doc.encode())
    else:
        store.put_manifest_doc(experiment_id, stamp, doc)  # type: ignore[attr-defined]


def _blob_keys(store: Store, experiment_id: str | None) -> list[str]:
    keys = _file_blobs(store) if isinstance(store, FileStore) else store.blob_keys()  # type: ignore[attr-defined]
    if experiment_id is None:
        return list(keys)
    return [k for k in keys if experiment_id in k]


def _screen(bundle: RunBundle, skipped: list[str]) -> None:
    """Drop the artifacts of a bundle whose file names are unsafe; note every problem.

    Artifact names come from the source's rows or listings, written by whoever can write
    that store: a name like ``../../x`` must never reach the destination's paths.
    """
    skipped.extend(bundle.problems)
    bundle.problems.clear()
    kept = []
    for art in bundle.artifacts:
        try:
            check_file_name(art.file)
        except UnsafeNameError as exc:
            skipped.append(f"artifact of run {bundle.run_id}: {exc}")
            continue
        kept.append(art)
    bundle.artifacts[:] = kept


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def transfer(
    src: Any,
    dst: Any,
    experiment_id: str | None = None,
    progress: bool | None = None,
) -> TransferReport:
    """Copy every run (or one experiment's) with manifests and blobs from ``src`` to ``dst``.

    Names read from the source (run IDs, artifact files, manifest names, blob keys) are
    validated before they become paths; an unsafe one, a symbolic link inside a source
    FileStore, a corrupt record or marker there, or a blob that cannot be trusted is
    skipped and listed in ``report.skipped`` (one line each) while everything else is
    copied.

    Args:
        src: source store, locator or path.
        dst: destination store, locator or path.
        experiment_id: copy only this experiment's runs, manifests and blobs.
        progress: show a progress bar (default: for 1,000+ runs on a terminal).

    Raises:
        StoreError: a store cannot be read or written (StoreUnavailableError when down).
    """
    source, target = create_store(src), create_store(dst)
    started = time.monotonic()
    report = TransferReport(source.locator, target.locator, experiment_id=experiment_id)
    skipped = report.skipped
    for exp, stamp, doc in _manifests(source, experiment_id, skipped):
        try:
            check_experiment_id(exp)
            check_stamp(stamp)
        except UnsafeNameError as exc:
            skipped.append(f"manifest: {exc}")
            continue
        _put_manifest(target, exp, stamp, doc)
        report.manifests += 1
    for key in _blob_keys(source, experiment_id):
        try:
            data = source.get_blob(check_blob_key(key))
        except (UnsafeNameError, UnsafeLoadError) as exc:
            skipped.append(f"blob: {exc}")
            continue
        if data is not None:
            target.put_blob(key, data)
            report.blobs += 1
    run_ids = []
    for run_id in _run_ids(source, experiment_id):
        try:
            run_ids.append(check_run_id(run_id))
        except UnsafeNameError as exc:
            skipped.append(f"run: {exc}")
    bar = _Progress(len(run_ids), progress)
    for chunk in _batches(run_ids, _BATCH):
        bundles = _read(source, chunk, skipped)
        for bundle in bundles:
            _screen(bundle, skipped)
        _write(target, bundles)
        report.runs += len(bundles)
        report.records += sum(b.record_doc is not None for b in bundles)
        report.artifacts += sum(len(b.artifacts) for b in bundles)
        bar.advance(len(bundles))
    report.seconds = time.monotonic() - started
    if report.matched_nothing:
        found = (str(m.get("experiment_id", "")) for m in source.list_manifests())
        report.available = sorted({exp for exp in found if exp})
    if source is not src:
        source.close()
    if target is not dst:
        target.close()
    return report


def export_store(
    src: Any, dst_dir: Any, experiment_id: str | None = None, progress: bool | None = None
) -> TransferReport:
    """Export a store (typically PostgreSQL) into a FileStore directory ``dst_dir``."""
    return transfer(src, FileStore(os.fspath(dst_dir)), experiment_id, progress)


def import_from_filestore(
    src_dir: Any, dst: Any, experiment_id: str | None = None, progress: bool | None = None
) -> TransferReport:
    """Import a FileStore directory ``src_dir`` into a store (typically PostgreSQL)."""
    return transfer(FileStore(os.fspath(src_dir)), dst, experiment_id, progress)
