"""Run records: the durable, JSON-serialisable outcome of one run."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

__all__ = [
    "RECORD_SCHEMA",
    "ArtifactInfo",
    "ErrorInfo",
    "FailureReason",
    "Provenance",
    "RunRecord",
    "RunState",
    "StoredState",
    "utc_now",
]

RECORD_SCHEMA = 1


class RunState(StrEnum):
    """Where a run stands."""

    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RUNNING = "running"


class StoredState(StrEnum):
    """What a store can vouch for about one run, from its markers (see ``Store.states``).

    Not :class:`RunState`: a store answers only for final, durable outcomes, and a run
    in progress, never started, or whose record is gone is simply ``ABSENT``.
    """

    DONE = "done"
    """A success marker and the record it vouches for are both stored."""
    FAILED = "failed"
    """The latest attempt ended failed or cancelled."""
    ABSENT = "absent"
    """Nothing final is stored: never run, still running, or a marker without record."""


class FailureReason(StrEnum):
    """Why a run did not succeed, as far as metalab or the scheduler can tell.

    Stored as the record's optional ``reason`` (old records have none: ``None``).
    """

    EXCEPTION = "exception"
    """The operation raised (a bug or bad input in user code)."""
    TIMEOUT = "timeout"
    """A time limit ended it: the run's ``timeout`` or the array task's walltime."""
    OUT_OF_MEMORY = "out_of_memory"
    """The kernel or the scheduler killed it for using more memory than it was given."""
    PREEMPTED = "preempted"
    """The scheduler stopped it for other work (preemption or requeue); it runs again."""
    NODE_FAIL = "node_fail"
    """The node it ran on failed."""
    CANCELLED = "cancelled"
    """Cancelled by a person (``handle.cancel()``, ``scancel``, Ctrl-C)."""
    CRASHED = "crashed"
    """Its process died without saying why (a signal, a segfault, an unknown exit)."""


def utc_now() -> dt.datetime:
    """Return the current time, timezone-aware (UTC)."""
    return dt.datetime.now(dt.UTC)


@dataclass
class ErrorInfo:
    """Why a run failed."""

    type: str
    message: str
    traceback: str = ""

    def __str__(self) -> str:
        """``Type: message``, then the traceback as real lines (repr keeps the fields)."""
        head = f"{self.type}: {self.message}" if self.message else self.type
        trace = self.traceback.rstrip("\n")
        return f"{head}\n{trace}" if trace else head


@dataclass
class Provenance:
    """Where and with what a run executed."""

    code_hash: str
    operation: str
    python: str
    metalab: str
    host: str
    pid: int
    executor: str
    worker_id: str


@dataclass
class ArtifactInfo:
    """One stored artifact of a run."""

    name: str
    kind: str
    file: str
    size: int
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunRecord:
    """Everything known about one run once it has finished."""

    run_id: str
    experiment_id: str
    status: RunState
    context_fingerprint: str
    params_fingerprint: str
    seed_fingerprint: str
    params: dict[str, Any]
    task_index: int
    replicate: int
    metrics: dict[str, Any] = field(default_factory=dict)
    metric_series: dict[str, list[list[Any]]] = field(default_factory=dict)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    error: ErrorInfo | None = None
    provenance: Provenance | None = None
    artifacts: list[ArtifactInfo] = field(default_factory=list)
    derived_errors: dict[str, str] = field(default_factory=dict)
    reason: FailureReason | None = None
    """Why the run did not succeed (``None`` for a success, or a record written before
    reasons existed)."""

    @property
    def duration(self) -> float | None:
        """Wall time in seconds, when both timestamps are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        """Return the JSON document stored for this record."""
        # Built field by field: dataclasses.asdict deep-copies every value and was the
        # largest Python cost of writing a record. Key order is that of asdict.
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        data["params"] = dict(self.params)
        data["metrics"] = dict(self.metrics)
        data["metric_series"] = {k: [list(p) for p in v] for k, v in self.metric_series.items()}
        data["error"] = dict(vars(self.error)) if self.error is not None else None
        data["provenance"] = dict(vars(self.provenance)) if self.provenance else None
        data["artifacts"] = [asdict(a) for a in self.artifacts]
        data["derived_errors"] = dict(self.derived_errors)
        data["schema"] = RECORD_SCHEMA
        data["status"] = self.status.value
        data["reason"] = self.reason.value if self.reason is not None else None
        data["started_at"] = self.started_at.isoformat() if self.started_at else None
        data["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        data["duration_s"] = self.duration
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        """Rebuild a record from :meth:`to_json` output.

        Raises:
            KeyError, ValueError, TypeError: the document is not a valid record.
        """

        def when(value: str | None) -> dt.datetime | None:
            return dt.datetime.fromisoformat(value) if value else None

        error = data.get("error")
        provenance = data.get("provenance")
        return cls(
            run_id=data["run_id"],
            experiment_id=data["experiment_id"],
            status=RunState(data["status"]),
            context_fingerprint=data["context_fingerprint"],
            params_fingerprint=data["params_fingerprint"],
            seed_fingerprint=data["seed_fingerprint"],
            params=data["params"],
            task_index=data["task_index"],
            replicate=data["replicate"],
            metrics=data.get("metrics") or {},
            metric_series=data.get("metric_series") or {},
            started_at=when(data.get("started_at")),
            finished_at=when(data.get("finished_at")),
            error=ErrorInfo(**error) if error else None,
            provenance=Provenance(**provenance) if provenance else None,
            artifacts=[ArtifactInfo(**a) for a in data.get("artifacts") or []],
            derived_errors=data.get("derived_errors") or {},
            reason=_reason(data.get("reason")),
        )


# RunRecord's field names in declaration order: fields() once, not per record written.
_FIELD_NAMES = tuple(f.name for f in fields(RunRecord))
_REASONS = {reason.value: reason for reason in FailureReason}


def _reason(value: Any) -> FailureReason | None:
    """The stored ``reason``; a kind this version does not know (a newer writer) is None."""
    return _REASONS.get(value) if isinstance(value, str) else None
