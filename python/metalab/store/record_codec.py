"""Bytes <-> RunRecord, and the checks a stored record must pass to be loaded.

JSON has no NaN or infinity, so non-finite floats in metrics are stored as the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` and turned back into floats on load.

Record checks
-------------
Two loaders read records: this module (``get_record``, ``load_records``, PostgreSQL
rows) and the Rust column loader (``rust/src/records.rs``, behind ``load_results``).
They implement the SAME checks, listed here once, in the order they are applied; the
first failing check is the reason reported, word for word the same in both loaders
(only the parser's detail inside ``not valid JSON (...)`` differs). The corpus
``tests/reliability/corrupt_records/`` holds one file per check and is run through both.

1. The bytes are strict UTF-8 JSON: no ``NaN``/``Infinity`` literals, no number beyond
   the range of a double, no lone surrogate escape (``"\\ud800"``), nothing after the
   value, and at most 127 nested arrays/objects counting the record itself (the Rust
   parser's recursion limit). ``-0`` is a float, as Rust reads it. Duplicate keys: the
   last one wins. -> ``not valid JSON (...)``
2. The value is an object. -> ``expected a JSON object``
3. Required keys, each checked for presence then type, in this order (-> ``not a run
   record (missing key 'k')`` / ``not a run record ('k' must be ..., got ...)``):
   ``run_id`` (non-empty string, equal to the name the record is stored under when the
   loader knows it: the file name ``{run_id}.json``), ``experiment_id`` (string),
   ``status`` (one of success, failed, cancelled, running), ``context_fingerprint``,
   ``params_fingerprint``, ``seed_fingerprint`` (strings), ``params`` (object),
   ``task_index``, ``replicate`` (integers in ``[0, 2**63)``).
4. Optional keys, absent or ``null`` or: ``metrics`` (object), ``metric_series``
   (object of arrays of ``[step, value]`` pairs, ``step`` an integer in ``[0, 2**63)``),
   ``started_at``, ``finished_at`` (``YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+HH:MM|-HH:MM)``,
   a real date and time), ``duration_s`` (number), ``error`` (object: ``type``,
   ``message`` strings, optional ``traceback`` string, no other key), ``provenance``
   (object: ``code_hash``, ``operation``, ``python``, ``metalab``, ``host``, ``executor``,
   ``worker_id`` strings and ``pid`` integer, no other key), ``artifacts`` (array of
   objects: ``name``, ``kind``, ``file`` strings, ``size`` integer, optional ``meta``
   object, no other key), ``derived_errors`` (object of strings). Other top-level keys
   (``schema``) are ignored.

A value is named in messages as JSON names its type (``got array``), except strings
(quoted, cut at 40 characters), booleans and 64-bit integers (written out).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from metalab.errors import CorruptRecordError
from metalab.records import RunRecord

__all__ = [
    "STATUSES",
    "SUMMARY_KEYS",
    "check_record",
    "decode_metric",
    "decode_record",
    "encode_metric",
    "encode_record",
    "encode_record_and_summary",
    "record_document",
    "record_from_dict",
    "summary_of_document",
]

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
STATUSES = ("success", "failed", "cancelled", "running")
"""The values of ``status`` a record may hold (those of ``RunState``)."""

_MAX_DEPTH = 127
_I64 = 2**63
_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]{1,6})?"
    r"(Z|[+-]([0-9]{2}):([0-9]{2}))"
)
_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class _Invalid(ValueError):
    """One failed check; ``str()`` is the reason without the location."""


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


#: The keys of a record's summary (its results-index line): what the column table and
#: the dashboard show. ``metric_series``, ``provenance``, ``artifacts``,
#: ``derived_errors`` and the error's traceback are left out (the error's type and
#: message are kept). A stored record document lists these keys first, in this order.
SUMMARY_KEYS = (
    "run_id",
    "experiment_id",
    "status",
    "reason",
    "context_fingerprint",
    "params_fingerprint",
    "seed_fingerprint",
    "params",
    "task_index",
    "replicate",
    "metrics",
    "started_at",
    "finished_at",
    "duration_s",
)


def record_document(record: RunRecord) -> dict[str, Any]:
    """The JSON document of ``record`` (metric values encoded); stored with its
    :data:`SUMMARY_KEYS` first (see :func:`encode_record_and_summary`)."""
    data = record.to_json()
    data["metrics"] = {k: encode_metric(v) for k, v in data["metrics"].items()}
    data["metric_series"] = {
        k: [[step, encode_metric(v)] for step, v in points]
        for k, points in data["metric_series"].items()
    }
    return data


#: What a summary keeps of a record's error (its traceback stays in the record file).
_ERROR_KEPT = ("type", "message")


def summary_of_document(document: dict[str, Any]) -> dict[str, Any]:
    """The summary (results-index line) of a stored record document: its
    :data:`SUMMARY_KEYS` and the error's type and message."""
    summary = {key: document[key] for key in SUMMARY_KEYS if key in document}
    error = document.get("error")
    if isinstance(error, dict):
        summary["error"] = {k: error[k] for k in _ERROR_KEPT if k in error}
    return summary


# ``default=str``: a param the operation received as an odd type is stored as text. One
# encoder for every record: json.dumps with options builds a new one per call. (Its
# encode() keeps no state between calls, so threads may share it.)
_ENCODER = json.JSONEncoder(allow_nan=False, default=str)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def encode_record_and_summary(record: RunRecord) -> tuple[bytes, str]:
    """The bytes of ``record``'s file and the JSON text of its summary, encoded once.

    The document lists the summary's keys first, so its encoding is the summary's
    encoding followed by the other keys'; the summary adds the error's type and message.
    (Encoding the summary separately was a visible share of a ThreadExecutor run.)
    """
    document = record_document(record)
    head = {key: document.pop(key) for key in SUMMARY_KEYS if key in document}
    head_text, tail_text = _dumps(head), _dumps(document)
    if head and document:
        text = f"{head_text[:-1]}, {tail_text[1:]}"
    else:
        text = head_text if head else tail_text
    summary = head_text
    error = document.get("error")
    if head and isinstance(error, dict):
        brief = {key: error[key] for key in _ERROR_KEPT if key in error}
        summary = f'{head_text[:-1]}, "error": {_dumps(brief)}}}'
    return text.encode(), summary


def encode_record(record: RunRecord) -> bytes:
    """Serialise a record to strict JSON bytes."""
    return encode_record_and_summary(record)[0]


# -- check 1: strict JSON ------------------------------------------------------------------
def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def _json_int(text: str) -> int | float:
    if text == "-0":
        return -0.0
    value = int(text)
    try:
        float(value)
    except OverflowError:
        raise ValueError(f"number out of range: {text[:20]}...") from None
    return value


_DECODER = json.JSONDecoder(
    parse_float=_json_float, parse_int=_json_int, parse_constant=_no_constant
)


def _walk_strict(value: Any, depth: int) -> None:
    """Refuse what Python's parser accepts and the Rust one does not (check 1)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("lone surrogate in a string escape") from None
        return
    if not isinstance(value, dict | list):
        return
    if depth >= _MAX_DEPTH:
        raise ValueError(f"more than {_MAX_DEPTH} nested arrays/objects")
    items = (x for pair in value.items() for x in pair) if isinstance(value, dict) else value
    for item in items:
        _walk_strict(item, depth + 1)


def _parse(data: bytes) -> Any:
    text = data.decode("utf-8")
    document = _DECODER.decode(text)
    # Both rare cases leave a trace in the raw text, so common records skip the walk.
    deep = data.count(b"[") + data.count(b"{") > _MAX_DEPTH
    if deep or b"\\ud" in data or b"\\uD" in data:
        _walk_strict(document, 0)
    return document


# -- checks 3 and 4 ------------------------------------------------------------------------
def _quote(text: str) -> str:
    """Quote like ``rust/src/encoding.rs`` ``quote_str`` (messages match word for word)."""
    out = ["'"]
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char == "'":
            out.append("\\'")
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    out.append("'")
    return "".join(out)


def _got(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value) if len(value) <= 40 else _quote(value[:40]) + "..."
    if isinstance(value, int) and -_I64 <= value < _I64:
        return str(value)
    if isinstance(value, int | float):
        return "number"
    return "array" if isinstance(value, list) else "object"


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _I64


def _kind_ok(kind: str, value: Any) -> bool:
    if kind == "a string":
        return isinstance(value, str)
    if kind == "an object":
        return isinstance(value, dict)
    if kind == "an integer in [0, 2**63)":
        return _is_count(value)
    raise AssertionError(kind)  # pragma: no cover - the tables below use only these


def _shape(what: str, value: Any, fields: Sequence[tuple[str, str, bool]], nullable: bool) -> None:
    """Check an object with fixed keys: ``(name, kind, required)`` in order, no others."""
    if not isinstance(value, dict):
        kind = "an object or null" if nullable else "an object"
        raise _Invalid(f"{what} must be {kind}, got {_got(value)}")
    for name, kind, required in fields:
        if name not in value:
            if required:
                raise _Invalid(f"{what} lacks key {_quote(name)}")
            continue
        if not _kind_ok(kind, value[name]):
            raise _Invalid(f"{what}[{_quote(name)}] must be {kind}, got {_got(value[name])}")
    known = {name for name, _, _ in fields}
    for key in value:
        if key not in known:
            raise _Invalid(f"{what} has unexpected key {_quote(key)}")


_STR, _OBJ, _COUNT = "a string", "an object", "an integer in [0, 2**63)"
_ERROR = (("type", _STR, True), ("message", _STR, True), ("traceback", _STR, False))
_PROVENANCE = tuple(
    (name, _COUNT if name == "pid" else _STR, True)
    for name in (
        "code_hash",
        "operation",
        "python",
        "metalab",
        "host",
        "pid",
        "executor",
        "worker_id",
    )
)
_ARTIFACT = (
    ("name", _STR, True),
    ("kind", _STR, True),
    ("file", _STR, True),
    ("size", _COUNT, True),
    ("meta", _OBJ, False),
)


def _timestamp_ok(value: str) -> bool:
    match = _TIMESTAMP.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    if year < 1 or not 1 <= month <= 12 or hour > 23 or minute > 59 or second > 59:
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= day <= _DAYS[month - 1] + (1 if leap and month == 2 else 0):
        return False
    off_hour, off_minute = match.group(8), match.group(9)
    return off_hour is None or (int(off_hour) < 24 and int(off_minute) < 60)


def _required(document: dict[str, Any], key: str, kind: str) -> Any:
    if key not in document:
        raise _Invalid(f"missing key {_quote(key)}")
    value = document[key]
    if not _kind_ok(kind, value):
        raise _Invalid(f"{_quote(key)} must be {kind}, got {_got(value)}")
    return value


def _check_series(series: dict[str, Any]) -> None:
    for name, points in series.items():
        where = f"'metric_series'[{_quote(name)}]"
        if not isinstance(points, list):
            raise _Invalid(f"{where} must be an array of [step, value] pairs, got {_got(points)}")
        for at, point in enumerate(points):
            if not (isinstance(point, list) and len(point) == 2 and _is_count(point[0])):
                raise _Invalid(
                    f"{where}[{at}] must be a [step, value] pair with an integer step "
                    f"in [0, 2**63), got {_got(point)}"
                )


def _check_optional(document: dict[str, Any]) -> None:
    present = document.get
    for key in ("metrics", "metric_series"):
        value = present(key)
        if value is not None and not isinstance(value, dict):
            raise _Invalid(f"{_quote(key)} must be an object or null, got {_got(value)}")
        if key == "metric_series" and value is not None:
            _check_series(value)
    for key in ("started_at", "finished_at"):
        value = present(key)
        if value is not None and not (isinstance(value, str) and _timestamp_ok(value)):
            raise _Invalid(
                f"{_quote(key)} must be a timestamp like 2026-01-31T12:00:00+00:00 or null, "
                f"got {_got(value)}"
            )
    duration = present("duration_s")
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, int | float)
    ):
        raise _Invalid(f"'duration_s' must be a number or null, got {_got(duration)}")
    if present("error") is not None:
        _shape("'error'", document["error"], _ERROR, nullable=True)
    # Any string is accepted: a kind this version does not know (a newer writer's) loads as
    # no reason, so only the type is checked.
    reason = present("reason")
    if reason is not None and not isinstance(reason, str):
        raise _Invalid(f"'reason' must be a string or null, got {_got(reason)}")
    if present("provenance") is not None:
        _shape("'provenance'", document["provenance"], _PROVENANCE, nullable=True)
    artifacts = present("artifacts")
    if artifacts is not None:
        if not isinstance(artifacts, list):
            raise _Invalid(f"'artifacts' must be an array or null, got {_got(artifacts)}")
        for at, artifact in enumerate(artifacts):
            _shape(f"'artifacts'[{at}]", artifact, _ARTIFACT, nullable=False)
    derived = present("derived_errors")
    if derived is not None:
        if not isinstance(derived, dict):
            raise _Invalid(f"'derived_errors' must be an object or null, got {_got(derived)}")
        for name, text in derived.items():
            if not isinstance(text, str):
                raise _Invalid(
                    f"'derived_errors'[{_quote(name)}] must be a string, got {_got(text)}"
                )


def check_record(document: Any, run_id: str | None = None) -> None:
    """Apply checks 2-4 of the module docstring to a parsed record document.

    Args:
        document: the parsed JSON value.
        run_id: the run ID the record is stored under (its file name), when known.

    Raises:
        ValueError: the first failing check; the message is the reason as reported.
    """
    if not isinstance(document, dict):
        raise _Invalid("expected a JSON object")
    try:
        inner = _required(document, "run_id", _STR)
        if not inner:
            raise _Invalid("'run_id' must be a non-empty string, got ''")
        if run_id is not None and inner != run_id:
            raise _Invalid(
                f"run_id {_got(inner)} differs from the run ID it is stored under, "
                f"{_got(run_id)}: a record copied over another run's?"
            )
        _required(document, "experiment_id", _STR)
        status = _required(document, "status", _STR)
        if status not in STATUSES:
            raise _Invalid(
                f"unknown status {_got(status)}: expected success, failed, cancelled or running"
            )
        for key in ("context_fingerprint", "params_fingerprint", "seed_fingerprint"):
            _required(document, key, _STR)
        _required(document, "params", _OBJ)
        _required(document, "task_index", _COUNT)
        _required(document, "replicate", _COUNT)
        _check_optional(document)
    except _Invalid as exc:
        raise _Invalid(f"not a run record ({exc})") from None


def record_from_dict(data: dict[str, Any], run_id: str | None = None) -> RunRecord:
    """Build a record from its decoded JSON document.

    Raises:
        ValueError: the document fails a record check (see the module docstring).
    """
    check_record(data, run_id)
    data["metrics"] = {k: decode_metric(v) for k, v in (data.get("metrics") or {}).items()}
    data["metric_series"] = {
        k: [[step, decode_metric(v)] for step, v in points]
        for k, points in (data.get("metric_series") or {}).items()
    }
    return RunRecord.from_json(data)


def decode_record(data: bytes, location: str, run_id: str | None = None) -> RunRecord:
    """Parse record bytes and apply every record check (see the module docstring).

    Args:
        data: the stored bytes.
        location: where they come from (a path), named in errors.
        run_id: the run ID the record is stored under, when known: a record whose own
            ``run_id`` differs (copied over another run's file) is refused.

    Raises:
        CorruptRecordError: a check failed; the message is ``{location}: {reason}`` and
            ``path`` is ``location``.
    """
    try:
        document = _parse(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError too
        raise CorruptRecordError(f"{location}: not valid JSON ({exc})", path=location) from None
    try:
        return record_from_dict(document, run_id)
    except _Invalid as exc:
        raise CorruptRecordError(f"{location}: {exc}", path=location) from None
    except (KeyError, ValueError, TypeError) as exc:  # pragma: no cover - checks come first
        raise CorruptRecordError(f"{location}: not a run record ({exc!r})", path=location) from None
