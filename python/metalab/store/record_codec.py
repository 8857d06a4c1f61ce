"""Bytes <-> RunRecord, with a documented encoding of non-finite metric values.

JSON has no NaN or infinity, so non-finite floats in metrics are stored as the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` and turned back into floats on load.
"""

from __future__ import annotations

import json
import math
from typing import Any

from metalab.errors import CorruptRecordError
from metalab.records import RunRecord

__all__ = ["decode_metric", "decode_record", "encode_metric", "encode_record"]

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def encode_metric(value: Any) -> Any:
    """Return a JSON-safe form of a metric value."""
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return "NaN"
        return "Infinity" if value > 0 else "-Infinity"
    return value


def decode_metric(value: Any) -> Any:
    """Invert :func:`encode_metric`."""
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    return value


def encode_record(record: RunRecord) -> bytes:
    """Serialise a record to strict JSON bytes."""
    data = record.to_json()
    data["metrics"] = {k: encode_metric(v) for k, v in data["metrics"].items()}
    data["metric_series"] = {
        k: [[step, encode_metric(v)] for step, v in points]
        for k, points in data["metric_series"].items()
    }
    return json.dumps(data, allow_nan=False, default=str).encode()


def record_from_dict(data: dict[str, Any]) -> RunRecord:
    """Build a record from its decoded JSON document (raises on a malformed one)."""
    data["metrics"] = {k: decode_metric(v) for k, v in (data.get("metrics") or {}).items()}
    data["metric_series"] = {
        k: [[step, decode_metric(v)] for step, v in points]
        for k, points in (data.get("metric_series") or {}).items()
    }
    return RunRecord.from_json(data)


def decode_record(data: bytes, location: str) -> RunRecord:
    """Parse record bytes.

    Raises:
        CorruptRecordError: the bytes are truncated or not a valid record; the message
            names ``location`` and the reason.
    """
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise CorruptRecordError(f"{location}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise CorruptRecordError(f"{location}: expected a JSON object")
    try:
        return record_from_dict(document)
    except (KeyError, ValueError, TypeError) as exc:
        raise CorruptRecordError(f"{location}: not a run record ({exc!r})") from None
