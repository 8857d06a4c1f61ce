"""Every file of a SLURM submission that is not a store blob, named in one place.

:class:`SubmissionPaths` owns the task logs (``{store}/slurm/logs/<submission>/
shard<n>-<index>.out`` for a FileStore, SLURM's default ``slurm-<job>_<index>.out`` in the
submission directory otherwise), the ``--output`` pattern that puts them there, and the
submission's private files (:mod:`metalab.store.credentials`): its password file and,
when sbatch cannot name the log directory, a log alias. The submitting side and the
monitor ask it for every name; nobody formats these paths by hand.

Why an alias: ``--output`` is a filename pattern. ``%`` starts a replacement symbol (``%%``
is a literal ``%``), and a backslash *anywhere* turns every symbol off, ``%a`` included,
while slurmstepd strips the backslashes: a store path ``a\\b`` then names a directory
``ab`` that does not exist, and no task can even start. Written ``\\\\``, a backslash is
kept, but without ``%a`` every task of an array would share one file; the job's working
directory is prepended to a relative pattern first, so ``--chdir`` does not help. A
directory with a backslash is therefore reached through a symlink in the private
directory, which nobody else can point elsewhere.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from metalab.errors import SlurmError
from metalab.store import credentials
from metalab.store.base import Store
from metalab.store.postgres_config import redact

__all__ = ["SubmissionPaths", "last_line", "log_file_name", "output_pattern", "pattern_safe"]


def log_file_name(shard_number: int, array_index: int | str) -> str:
    """Name of the log of array task ``array_index`` of a shard, in its log directory.

    With ``array_index="%a"`` it is the pattern :func:`output_pattern` uses: one definition.
    """
    return f"shard{shard_number}-{array_index}.out"


def pattern_safe(directory: str) -> bool:
    """Whether sbatch's ``--output`` can name a file per array task in ``directory``."""
    return "\\" not in directory


def output_pattern(directory: str, shard_number: int) -> str:
    """The ``--output`` value for the logs of a shard in ``directory``.

    Raises:
        SlurmError: ``directory`` is not :func:`pattern_safe`.
    """
    if not pattern_safe(directory):
        raise SlurmError(
            f"log directory {directory!r} contains a backslash, which sbatch's --output "
            f"cannot name per array task; expected a directory path without '\\'"
        )
    return f"{directory.replace('%', '%%')}/{log_file_name(shard_number, '%a')}"


def last_line(path: Path, limit: int = 500) -> str | None:
    """The last non-empty line of a task log (passwords masked), or None."""
    try:
        with open(path, "rb") as handle:
            # A log can be large; its last line is all the monitor wants.
            handle.seek(max(os.fstat(handle.fileno()).st_size - 8192, 0))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return redact(lines[-1][:limit]) if lines else None


@dataclass(frozen=True)
class SubmissionPaths:
    """The files of one submission outside the store's blobs.

    Args:
        submission: the submission id.
        log_dir: the store's log directory of the submission, or None (not a FileStore).
        submit_dir: where sbatch ran (SLURM's default logs go there), or None if unknown.
    """

    submission: str
    log_dir: str | None
    submit_dir: str | None = None

    @classmethod
    def of(cls, store: Store, submission: str, submit_dir: str | None = None) -> SubmissionPaths:
        """The paths of ``submission`` into ``store`` (logs inside a FileStore only)."""
        root = store.directory
        log_dir = None if root is None else str(root / "slurm" / "logs" / submission)
        return cls(submission, log_dir, submit_dir)

    @property
    def private_name(self) -> str:
        """Name of the submission's files in the private directory."""
        return f"slurm-{self.submission}"

    @property
    def passfile(self) -> Path:
        """The submission's password file (written only when the store has passwords)."""
        return credentials.passfile_path(self.private_name)

    @property
    def log_target(self) -> str | None:
        """The directory ``--output`` names: the log directory, or its private alias."""
        if self.log_dir is None or pattern_safe(self.log_dir):
            return self.log_dir
        return str(credentials.alias_path(self.private_name))

    def output(self, shard_number: int) -> str | None:
        """The ``--output`` value of a shard; None keeps SLURM's default."""
        target = self.log_target
        return None if target is None else output_pattern(target, shard_number)

    @property
    def retry_output(self) -> str | None:
        """The ``--output`` of the submission's retry job (``retry.out`` beside the logs)."""
        target = self.log_target
        return None if target is None else os.path.join(target, "retry.out")

    @property
    def wave_output(self) -> str | None:
        """The ``--output`` of the submission's wave job (``wave.out`` beside the logs)."""
        target = self.log_target
        return None if target is None else os.path.join(target, "wave.out")

    def log_path(self, shard_number: int, job_id: str, array_index: int) -> Path | None:
        """Where the log of one array task lands (through the alias, if any)."""
        if self.log_dir is not None:
            return Path(self.log_dir) / log_file_name(shard_number, array_index)
        if self.submit_dir is not None:
            return Path(self.submit_dir) / f"slurm-{job_id}_{array_index}.out"
        return None

    def create(self, secrets: list[credentials.Credential]) -> None:
        """Make the log directory and the private files, before anything is submitted.

        Raises:
            StoreError: a private file cannot be created.
            UntrustedFileError: the private directory is not safely ours.
        """
        if self.log_dir is not None:
            os.makedirs(self.log_dir, exist_ok=True)
            if self.log_target != self.log_dir:
                credentials.make_alias(self.private_name, self.log_dir)
        if secrets:
            credentials.write_passfile(self.private_name, secrets)

    def release(self) -> None:
        """Remove the private files once no task of the submission can start any more."""
        with contextlib.suppress(OSError):
            credentials.remove_passfile(self.private_name)
        with contextlib.suppress(OSError):
            credentials.remove_alias(self.private_name)
