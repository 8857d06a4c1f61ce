"""Run records as columns, for stores that have no columnar loader of their own.

``FileStore.load_columns`` (one parallel Rust scan of the record files) and
``PostgresStore.load_columns`` (one query, parsed in Rust) return records as columns: one
list per record field, per parameter and per metric. :func:`columns_from_records` gives
the same shape from records already in memory, so every store feeds one column table and
``Results`` has a single implementation.

Each record is encoded as the part of its stored document that columns hold (the
required keys, metrics, start time and duration; metrics through
:func:`~metalab.store.record_codec.encode_metric`) and parsed by the same Rust code
PostgreSQL rows go through (``_core.record_columns_from_docs``): one parser decides what a
column holds (non-finite metrics, explicit ``null``\\ s, first-appearance column order),
not two that could drift apart. Leaving out the series, provenance and artifacts that no
column shows cuts encoding 20,000 records from 0.38 s to 0.21 s (measured here).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

from metalab import _core
from metalab.errors import CorruptRecordError
from metalab.records import RunRecord
from metalab.store.record_codec import encode_metric

__all__ = ["ColumnData", "columns_from_records", "record_summary"]

ColumnData = dict[str, Any]
"""Keys ``run_id``, ``experiment_id``, ``status``, ``task_index``, ``replicate``,
``duration_s``, ``started_at`` (one list each), ``params`` and ``metrics`` (lists of
``(name, values, explicit_null_rows, first_row, position)``), rows ordered by
(experiment id, task index); see ``_core.load_record_columns``."""

# The problem type is the caller's (``LoadProblem``): generic so that this module needs
# nothing from ``store.base``, whose default ``load_columns`` is built on it.
_Problem = TypeVar("_Problem")


def columns_from_records(
    records: Sequence[RunRecord], problems: Sequence[_Problem] = ()
) -> tuple[ColumnData, list[_Problem]]:
    """Turn loaded records into the columns ``FileStore.load_columns`` returns.

    Args:
        records: the records, in any order (rows come out ordered by experiment id,
            then task index, as every store's ``load_columns`` orders them).
        problems: what the load that produced ``records`` could not read; returned
            unchanged, so ``(columns, problems)`` is the pair ``load_columns`` returns.

    Raises:
        CorruptRecordError: a record fails a record check (records read from a store
            always pass them; one built by hand may not), naming the run and the check.
    """
    docs = [(record.run_id, _column_doc(record)) for record in records]
    data: ColumnData = _core.record_columns_from_docs(docs, None)
    failed = data.pop("problems")
    if failed:
        run_id, reason, _corrupt = failed[0]
        raise CorruptRecordError(
            f"record of run {run_id!r} cannot be tabulated: {reason} (expected a record "
            f"that passes the checks of metalab.store.record_codec)"
        )
    return data, list(problems)


def record_summary(record: RunRecord) -> dict[str, Any]:
    """The keys of ``record``'s stored document that columns (and the index) are built from.

    What the record checks require plus what a results table shows: status and reason,
    params, scalar metrics, timings, the error's type and message. Stepped metrics,
    artifacts, provenance and the traceback stay in the record file. Equal to
    ``summary_of_document(record_document(record))`` (``metalab.store.record_codec``),
    built without copying the parts it leaves out.
    """
    started, finished = record.started_at, record.finished_at
    summary: dict[str, Any] = {
        "run_id": record.run_id,
        "experiment_id": record.experiment_id,
        "status": record.status.value,
        "reason": None if record.reason is None else record.reason.value,
        "context_fingerprint": record.context_fingerprint,
        "params_fingerprint": record.params_fingerprint,
        "seed_fingerprint": record.seed_fingerprint,
        "params": record.params,
        "task_index": record.task_index,
        "replicate": record.replicate,
        "metrics": {name: encode_metric(value) for name, value in record.metrics.items()},
        "started_at": None if started is None else started.isoformat(),
        "finished_at": None if finished is None else finished.isoformat(),
        "duration_s": record.duration,
    }
    if record.error is not None:
        summary["error"] = {"type": record.error.type, "message": record.error.message}
    return summary


def _column_doc(record: RunRecord) -> str:
    """The JSON of :func:`record_summary` (``default=str`` as in ``encode_record``)."""
    return json.dumps(record_summary(record), allow_nan=False, default=str)
