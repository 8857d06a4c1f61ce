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
from dataclasses import dataclass
from typing import Any, TextIO

from metalab.errors import StoreError
from metalab.records import RunState
from metalab.store.atomic import atomic_write
from metalab.store.base import Store
from metalab.store.bundle import ArtifactBlob, RunBundle
from metalab.store.file import FileStore
from metalab.store.locator import create_store
from metalab.store.record_codec import decode_record

__all__ = ["TransferReport", "export_store", "import_from_filestore", "transfer"]

_BATCH = 500


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

    def __str__(self) -> str:
        return (
            f"copied {self.runs} runs ({self.records} records, {self.artifacts} artifacts), "
            f"{self.manifests} manifests and {self.blobs} blobs from {self.source} to "
            f"{self.destination} in {self.seconds:.1f} s"
        )


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
    runs_dir = store.layout.runs_dir
    found: set[str] = set()
    if runs_dir.is_dir():
        for shard in os.scandir(runs_dir):
            if shard.is_dir() and not shard.name.startswith("."):
                for entry in os.scandir(shard.path):
                    run_id = store.layout.run_id_of_record(entry.name)
                    if run_id is not None:
                        found.add(run_id)
    if experiment_id is None:
        for root in (store.layout.done_dir, store.layout.failed_dir, store.layout.derived_dir):
            if root.is_dir():
                for shard in os.scandir(root):
                    if shard.is_dir():
                        found.update(
                            e.name.rsplit(".", 1)[0]
                            for e in os.scandir(shard.path)
                            if not e.name.startswith(".")
                        )
        return sorted(found)
    selected = []
    for run_id in sorted(found):
        record = store.get_record(run_id)
        if record is not None and record.experiment_id == experiment_id:
            selected.append(run_id)
    return selected


def _read_text(path: os.PathLike[str]) -> str | None:
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _file_bundle(store: FileStore, run_id: str) -> RunBundle:
    layout = store.layout
    bundle = RunBundle(run_id, record_doc=_read_text(layout.record(run_id)))
    if layout.done_marker(run_id).exists():
        bundle.marker = RunState.SUCCESS.value
    else:
        failed = _read_text(layout.failed_marker(run_id))
        if failed is not None:
            bundle.marker = failed.strip() or RunState.FAILED.value
    bundle.log = _read_text(layout.log(run_id)) or ""
    bundle.derived_doc = _read_text(layout.derived(run_id))
    names: dict[str, tuple[str, str]] = {}
    if bundle.record_doc is not None:
        record = decode_record(bundle.record_doc.encode(), str(layout.record(run_id)))
        names = {a.file: (a.name, a.kind) for a in record.artifacts}
    art_dir = layout.artifact(run_id, "x").parent
    if art_dir.is_dir():
        for entry in sorted(os.scandir(art_dir), key=lambda e: e.name):
            if entry.is_file() and not entry.name.startswith("."):
                name, kind = names.get(entry.name, (entry.name.split(".", 1)[0], ""))
                with open(entry.path, "rb") as handle:
                    data = handle.read()
                bundle.artifacts.append(ArtifactBlob(entry.name, name, kind, data))
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


def _file_manifests(store: FileStore, experiment_id: str | None) -> list[tuple[str, str, str]]:
    directory = store.layout.experiments_dir
    out: list[tuple[str, str, str]] = []
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.json")):
        doc = _read_text(path)
        if doc is None:
            continue
        try:
            exp = str(json.loads(doc).get("experiment_id", ""))
        except (ValueError, AttributeError):
            exp = ""
        stem = path.stem
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


def _read(store: Store, run_ids: Sequence[str]) -> list[RunBundle]:
    if isinstance(store, FileStore):
        return [_file_bundle(store, run_id) for run_id in run_ids]
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


def _manifests(store: Store, experiment_id: str | None) -> list[tuple[str, str, str]]:
    if isinstance(store, FileStore):
        return _file_manifests(store, experiment_id)
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
    report = TransferReport(source.locator, target.locator)
    for exp, stamp, doc in _manifests(source, experiment_id):
        _put_manifest(target, exp, stamp, doc)
        report.manifests += 1
    for key in _blob_keys(source, experiment_id):
        data = source.get_blob(key)
        if data is not None:
            target.put_blob(key, data)
            report.blobs += 1
    run_ids = _run_ids(source, experiment_id)
    bar = _Progress(len(run_ids), progress)
    for chunk in _batches(run_ids, _BATCH):
        bundles = _read(source, chunk)
        _write(target, bundles)
        report.runs += len(bundles)
        report.records += sum(b.record_doc is not None for b in bundles)
        report.artifacts += sum(len(b.artifacts) for b in bundles)
        bar.advance(len(bundles))
    report.seconds = time.monotonic() - started
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
