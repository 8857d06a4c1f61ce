"""The bundle half of :class:`~metalab.store.file.FileStore`: its files, byte-exact.

What :mod:`metalab.store.transfer` copies out of and into a FileStore (the
:class:`~metalab.store.capabilities.BundleReader` and ``BundleWriter`` capabilities).
Every file of the source is read without following a symbolic link planted inside the
store (:class:`~metalab.store.layout.NoFollowReader`): a link is reported in the
bundle's problems, never copied through.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from metalab.errors import CorruptRecordError, UnsafeNameError
from metalab.records import RunRecord, RunState
from metalab.store.atomic import atomic_write
from metalab.store.layout import (
    RECORD_SUFFIX,
    FileLayout,
    NoFollowReader,
    check_file_name,
    parse_manifest_name,
)
from metalab.store.record_codec import decode_record

if TYPE_CHECKING:
    # Imported where used: every FileStore (every SLURM array task) loads this mixin,
    # only export/import builds bundles.
    from metalab.store.bundle import ManifestDoc, RunBundle

__all__ = ["FileBundles"]

_STATES = frozenset(state.value for state in RunState)


class FileBundles:
    """Bundle methods of FileStore (a mixin: it provides ``root``, ``layout``, ``durable``,
    ``get_record`` and ``mark``)."""

    if TYPE_CHECKING:
        root: Path
        layout: FileLayout
        durable: bool

        def get_record(self, run_id: str) -> RunRecord | None: ...

        def mark(self, run_id: str, state: RunState) -> None: ...

    def stored_run_ids(self, experiment_id: str | None = None) -> list[str]:
        """Every name in the store that claims to be a run (validated by the caller).

        Unfiltered: anything with a record, marker or derived file. Filtered: runs whose
        record belongs to ``experiment_id``, plus names that are not run IDs at all (so
        the caller reports them as skipped instead of silently dropping them).
        """
        layout = self.layout
        found = layout.run_names(layout.runs_dir, RECORD_SUFFIX)
        if experiment_id is None:
            for top in (layout.done_dir, layout.failed_dir, layout.derived_dir):
                found |= layout.run_names(top)
            return sorted(found)
        selected = []
        for run_id in sorted(found):
            try:
                record = self.get_record(run_id)
            except UnsafeNameError:
                selected.append(run_id)  # reported as skipped by the caller
                continue
            if record is not None and record.experiment_id == experiment_id:
                selected.append(run_id)
        return selected

    def read_bundles(self, run_ids: Sequence[str]) -> tuple[list[RunBundle], list[str]]:
        """Return the bundles of ``run_ids``; a run whose record is corrupt is refused."""
        bundles, refused = [], []
        with NoFollowReader(self.root) as reader:
            for run_id in run_ids:
                try:
                    bundles.append(self._bundle(reader, run_id))
                except CorruptRecordError as exc:  # one bad run must not stop the rest
                    refused.append(f"run {run_id}: {exc}")
        return bundles, refused

    def _bundle(self, reader: NoFollowReader, run_id: str) -> RunBundle:
        from metalab.store.bundle import ArtifactBlob, RunBundle

        layout = self.layout
        bundle = RunBundle(run_id)
        bundle.record_doc = _read_part(reader, bundle, layout.record(run_id), "record")
        bundle.marker = self._marker(reader, bundle)
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

    def _marker(self, reader: NoFollowReader, bundle: RunBundle) -> str | None:
        """The run's final state from its markers; a failure marker's text must be a state."""
        layout, run_id = self.layout, bundle.run_id
        if layout.done_marker(run_id).exists():
            return RunState.SUCCESS.value
        failed = _read_part(reader, bundle, layout.failed_marker(run_id), "failure marker")
        if failed is None:
            return None
        state = failed.strip() or RunState.FAILED.value
        if state in _STATES:
            return state
        bundle.problems.append(
            f"failure marker of run {run_id}: {str(layout.failed_marker(run_id))!r} "
            f"holds {state[:40]!r}, expected one of {sorted(_STATES)}"
        )
        return None

    def write_bundles(self, bundles: Sequence[RunBundle]) -> None:
        """Write each run's files, whole-file replacements, markers last."""
        layout, durable = self.layout, self.durable
        for bundle in bundles:
            run_id = bundle.run_id
            for art in bundle.artifacts:
                atomic_write(layout.artifact(run_id, art.file), art.data, durable=durable)
            if bundle.log:
                atomic_write(layout.log(run_id), bundle.log.encode(), durable=durable)
            else:
                layout.log(run_id).unlink(missing_ok=True)
            if bundle.derived_doc is not None:
                atomic_write(layout.derived(run_id), bundle.derived_doc.encode(), durable=durable)
            if bundle.record_doc is not None:
                atomic_write(layout.record(run_id), bundle.record_doc.encode(), durable=durable)
            # Markers last: they vouch for the record written just before.
            if bundle.marker is not None:
                self.mark(run_id, RunState(bundle.marker))

    def manifest_docs(
        self, experiment_id: str | None = None
    ) -> tuple[list[ManifestDoc], list[str]]:
        """The manifests' exact texts (in file-name order) and the refused (linked) ones."""
        from metalab.store.bundle import ManifestDoc

        directory = self.layout.experiments_dir
        docs: list[ManifestDoc] = []
        refused: list[str] = []
        with NoFollowReader(self.root) as reader:
            for file_name, _ in reader.list_dir(directory):
                if parse_manifest_name(file_name, None) is None:
                    continue
                try:
                    data = reader.read(directory / file_name)
                except UnsafeNameError as exc:  # a symlink: it names a file elsewhere
                    refused.append(f"manifest: {exc}")
                    continue
                if data is None:
                    continue
                doc = data.decode("utf-8")
                try:
                    inside = str(json.loads(doc).get("experiment_id", "")) or None
                except (ValueError, AttributeError):
                    inside = None
                parsed = parse_manifest_name(file_name, inside)
                assert parsed is not None  # checked above: the suffix matches
                exp, stamp = parsed
                if experiment_id is None or exp == experiment_id:
                    docs.append(ManifestDoc(exp, stamp, doc))
        return docs, refused

    def put_manifest_doc(self, doc: ManifestDoc) -> None:
        """Write a manifest's exact text under its experiment and stamp (validated)."""
        path = self.layout.manifest(doc.experiment_id, doc.stamp)
        atomic_write(path, doc.doc.encode(), durable=self.durable)

    def blob_keys(self) -> list[str]:
        """Every blob key (file name under ``blobs/``), sorted; hidden temporaries excluded."""
        directory = self.layout.blobs_dir
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.iterdir() if p.is_file() and p.name[0] != ".")


def _read_part(reader: NoFollowReader, bundle: RunBundle, path: Path, what: str) -> str | None:
    """Text of one file of a run, or ``None``; a symlinked file is noted, not followed."""
    try:
        data = reader.read(path)
    except UnsafeNameError as exc:
        bundle.problems.append(f"{what} of run {bundle.run_id}: {exc}")
        return None
    # newline="" semantics: the text is kept byte-exact, "\r\n" included.
    return None if data is None else data.decode("utf-8")
