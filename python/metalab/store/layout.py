"""The one place that knows every path of a FileStore (see ``docs/storage.md``).

Run-keyed directories are sharded by the first two hex characters of the run ID, so no
directory holds more than ~1/256 of the runs (about 1,200 at 300,000 runs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FileLayout"]

_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")


@dataclass(frozen=True)
class FileLayout:
    """Paths of a FileStore rooted at ``root``."""

    root: Path

    @staticmethod
    def shard(run_id: str) -> str:
        """Return the shard directory name of a run ID."""
        return run_id[:2]

    @property
    def experiments_dir(self) -> Path:
        """Directory of timestamped experiment manifests."""
        return self.root / "experiments"

    def manifest(self, experiment_id: str, timestamp: str) -> Path:
        """``experiments/{experiment_id}_{timestamp}.json``."""
        return self.experiments_dir / f"{experiment_id}_{timestamp}.json"

    @property
    def blobs_dir(self) -> Path:
        """Directory of small named blobs (experiment specs)."""
        return self.root / "blobs"

    def blob(self, key: str) -> Path:
        """Path of the blob ``key`` (validated to stay inside the store)."""
        if not _SAFE_KEY.fullmatch(key) or ".." in key:
            raise ValueError(f"invalid blob key {key!r}")
        return self.blobs_dir / key

    @property
    def runs_dir(self) -> Path:
        """Directory of run records, logs and artifact folders, sharded."""
        return self.root / "runs"

    def run_dir(self, run_id: str) -> Path:
        """``runs/{id[:2]}/{id}/``: the run's artifacts (created only when it has some)."""
        return self.root.joinpath("runs", run_id[:2], run_id)

    def record(self, run_id: str) -> Path:
        """``runs/{id[:2]}/{id}.json``: the run's record.

        Records sit directly in the shard directory, not in a per-run directory: creating
        a directory costs several times more than creating a file on common file systems,
        and most runs have no artifacts.
        """
        return self.root.joinpath("runs", run_id[:2], f"{run_id}.json")

    @staticmethod
    def run_id_of_record(file_name: str) -> str | None:
        """The run ID of a record file name, or ``None`` for anything else."""
        if file_name.endswith(".json") and not file_name.startswith("."):
            return file_name[: -len(".json")]
        return None

    def log(self, run_id: str) -> Path:
        """``runs/{id[:2]}/{id}.log``: the run's log."""
        return self.root.joinpath("runs", run_id[:2], f"{run_id}.log")

    def artifact(self, run_id: str, file_name: str) -> Path:
        """``runs/{id[:2]}/{id}/{file}``: an artifact file of the run."""
        return self.root.joinpath("runs", run_id[:2], run_id, file_name)

    @property
    def done_dir(self) -> Path:
        """Root of success markers ``done/{id[:2]}/{id}.done``."""
        return self.root / "done"

    def done_marker(self, run_id: str) -> Path:
        """The success marker of a run."""
        return self.root.joinpath("done", run_id[:2], f"{run_id}.done")

    @property
    def failed_dir(self) -> Path:
        """Root of failure markers ``failed/{id[:2]}/{id}.failed``."""
        return self.root / "failed"

    def failed_marker(self, run_id: str) -> Path:
        """The failure marker of a run."""
        return self.root.joinpath("failed", run_id[:2], f"{run_id}.failed")

    @property
    def derived_dir(self) -> Path:
        """Root of derived metrics ``derived/{id[:2]}/{id}.json``."""
        return self.root / "derived"

    def derived(self, run_id: str) -> Path:
        """The derived-metrics file of a run."""
        return self.derived_dir / self.shard(run_id) / f"{run_id}.json"
