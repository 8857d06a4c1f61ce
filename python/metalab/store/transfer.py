"""Copy runs between any two stores (file, PostgreSQL, fallback), in both directions.

The source is read as a :class:`~metalab.store.capabilities.BundleReader` and the
destination written as a :class:`~metalab.store.capabilities.BundleWriter`, which every
store is: this module knows no backend and builds no path.

Everything is copied byte-exact — records, metric series (inside records), logs,
artifacts, derived metrics, completion markers, manifests and blobs — so a round trip
file -> PostgreSQL -> file reproduces the original files. Every write is an upsert or a
whole-file replacement, so re-running a transfer is harmless; it is also how runs that
landed only in a FallbackStore's fallback are pushed back into the primary.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from metalab.errors import UnsafeLoadError, UnsafeNameError
from metalab.store.bundle import RunBundle
from metalab.store.capabilities import BundleReader, BundleWriter
from metalab.store.file import FileStore
from metalab.store.layout import (
    check_blob_key,
    check_experiment_id,
    check_file_name,
    check_run_id,
    check_stamp,
)
from metalab.store.locator import create_store

__all__ = ["TransferReport", "copy_bundles", "export_store", "import_from_filestore", "transfer"]

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
    try:
        return copy_bundles(source, target, experiment_id, progress)
    finally:
        if source is not src:
            source.close()
        if target is not dst:
            target.close()


def copy_bundles(
    source: BundleReader,
    target: BundleWriter,
    experiment_id: str | None = None,
    progress: bool | None = None,
) -> TransferReport:
    """Copy manifests, blobs and runs from ``source`` to ``target`` (see :func:`transfer`).

    Raises:
        StoreError: a store cannot be read or written (StoreUnavailableError when down).
    """
    started = time.monotonic()
    report = TransferReport(source.locator, target.locator, experiment_id=experiment_id)
    skipped = report.skipped
    docs, refused = source.manifest_docs(experiment_id)
    skipped += refused
    for doc in docs:
        try:
            check_experiment_id(doc.experiment_id)
            check_stamp(doc.stamp)
        except UnsafeNameError as exc:
            skipped.append(f"manifest: {exc}")
            continue
        target.put_manifest_doc(doc)
        report.manifests += 1
    for key in source.blob_keys():
        if experiment_id is not None and experiment_id not in key:
            continue
        try:
            data = source.get_blob(check_blob_key(key))
        except (UnsafeNameError, UnsafeLoadError) as exc:
            skipped.append(f"blob: {exc}")
            continue
        if data is not None:
            target.put_blob(key, data)
            report.blobs += 1
    run_ids = []
    for run_id in source.stored_run_ids(experiment_id):
        try:
            run_ids.append(check_run_id(run_id))
        except UnsafeNameError as exc:
            skipped.append(f"run: {exc}")
    bar = _Progress(len(run_ids), progress)
    for chunk in _batches(run_ids, _BATCH):
        bundles, refused = source.read_bundles(chunk)
        skipped += refused
        for bundle in bundles:
            _screen(bundle, skipped)
        target.write_bundles(bundles)
        report.runs += len(bundles)
        report.records += sum(b.record_doc is not None for b in bundles)
        report.artifacts += sum(len(b.artifacts) for b in bundles)
        bar.advance(len(bundles))
    report.seconds = time.monotonic() - started
    if report.matched_nothing:
        found = (str(m.get("experiment_id", "")) for m in source.list_manifests())
        report.available = sorted({exp for exp in found if exp})
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
