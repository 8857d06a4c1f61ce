"""The artifact half of :class:`~metalab.store.postgres.PostgresStore`.

Small artifacts live in the ``artifacts`` table; large ones (over ``inline_limit``, when
the locator names an ``artifact_root``) in files under that root, written atomically
before their row. A row's ``path`` is written by whoever can write the table, so it is
never used as a path: it must equal the path derived from the run ID and file name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metalab.errors import StoreError, UnsafeNameError
from metalab.records import ArtifactInfo
from metalab.store import postgres_sql as Q
from metalab.store.atomic import atomic_write
from metalab.store.layout import NoFollowReader, check_file_name, shared_artifact_relative
from metalab.store.postgres_conn import PostgresConnection

__all__ = ["PostgresArtifacts"]


class PostgresArtifacts(PostgresConnection):
    """The artifact methods of PostgresStore, over its connection."""

    def _artifact_path(self, run_id: str, file_name: str) -> tuple[str, Path]:
        relative = shared_artifact_relative(self.config.schema, run_id, file_name)
        assert self.config.artifact_root is not None
        return relative, Path(self.config.artifact_root) / relative

    def read_artifact_path(self, run_id: str, file_name: str, path: object) -> bytes | None:
        """Read an artifact kept under artifact_root, given its row's ``path`` column.

        The column is written by whoever can write the table, so it is never used as a
        path: it must equal the path this store derives from the run ID and file name,
        and the file is read without following symbolic links. ``None`` if it is gone.

        Raises:
            UnsafeNameError: the row's path, run ID or file name points elsewhere, or
                the file is a symbolic link.
            StoreError: the store has no artifact_root.
        """
        if not self.config.artifact_root:
            raise StoreError(f"artifact {file_name!r} of run {run_id} is a file but no root set")
        relative, target = self._artifact_path(run_id, file_name)
        if path != relative:
            raise UnsafeNameError(
                f"refusing artifact {file_name!r} of run {run_id}: its row points at "
                f"{path!r}, expected {relative!r} under artifact_root",
                name=str(path),
            )
        with NoFollowReader(Path(self.config.artifact_root)) as reader:
            return reader.read(target)

    def put_artifact(
        self, run_id: str, name: str, data: bytes, kind: str, ext: str, meta: dict[str, Any]
    ) -> ArtifactInfo:
        file_name = f"{name}{ext}"
        self.put_artifact_file(run_id, file_name, data, name=name, kind=kind)
        return ArtifactInfo(name=name, kind=kind, file=file_name, size=len(data), meta=meta)

    def put_artifact_file(
        self, run_id: str, file_name: str, data: bytes, *, name: str = "", kind: str = ""
    ) -> None:
        """Store an artifact's bytes: in the database, or under artifact_root when large."""
        query = self._q(Q.ARTIFACT_UPSERT)
        row = self.artifact_row(run_id, file_name, data, name=name or file_name, kind=kind)
        self._run(lambda conn: conn.execute(query, row))

    def artifact_row(
        self, run_id: str, file_name: str, data: bytes, *, name: str, kind: str
    ) -> tuple[Any, ...]:
        """The :data:`~metalab.store.postgres_sql.ARTIFACT_UPSERT` parameters of one
        artifact, after writing its bytes under artifact_root when they are large.

        Large files go to the shared file system, written atomically, and the row only
        points at them: a row is written after its file, never before.
        """
        path: str | None = None
        blob: bytes | None = data
        if self.config.artifact_root and len(data) > self.config.inline_limit:
            path, target = self._artifact_path(run_id, file_name)
            atomic_write(target, data)
            blob = None
        return (run_id, file_name, name, kind, len(data), blob, path)

    def get_artifact_file(self, run_id: str, file_name: str) -> bytes:
        """Return an artifact's bytes by file name.

        Raises:
            KeyError: no such artifact, or its file under artifact_root is gone.
            UnsafeNameError: the file name (e.g. from a tampered record) is not a plain
                file name, or the row points outside the run's folder.
        """
        check_file_name(file_name)
        query = self._q(Q.ARTIFACT_OF_RUN)
        row = self._run(lambda conn: conn.execute(query, (run_id, file_name)).fetchone())
        if row is None:
            raise KeyError(f"artifact {file_name!r} of run {run_id} is missing from {self}")
        data, path = row
        if data is not None:
            return bytes(data)
        if not self.config.artifact_root:
            raise KeyError(f"artifact {file_name!r} of run {run_id} is a file but no root is set")
        found = self.read_artifact_path(run_id, file_name, path)
        if found is None:
            raise KeyError(f"artifact {file_name!r} of run {run_id} is missing: {path}")
        return found

    def get_artifact(self, run_id: str, info: ArtifactInfo) -> bytes:
        return self.get_artifact_file(run_id, info.file)
