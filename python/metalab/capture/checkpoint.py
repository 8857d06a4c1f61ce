"""Checkpoints: the state a long run saves so that its re-execution resumes from it.

An operation calls ``capture.checkpoint(state)`` now and then and ``capture.restore()``
once at its start: ``None`` on a first execution, otherwise the state of the last
checkpoint of the same run (same run ID), whichever executor ran it before and however
that execution ended (timeout, preemption, ``scancel``, a crashed process, an exception)::

    state = capture.restore() or {"epoch": 0, "weights": init_weights()}
    for epoch in range(state["epoch"], 100):
        state["weights"] = train_one_epoch(state["weights"])
        state["epoch"] = epoch + 1
        capture.checkpoint(state)

Where and how
-------------
One blob per run in the run's store, under :func:`metalab.keys.checkpoint_key`
(FileStore: a file in ``blobs/``, written atomically, owner-only; PostgreSQL: one
upserted row; FallbackStore: wherever its writes go). Each checkpoint replaces the
previous one whole: a crash while saving leaves the previous checkpoint intact, never a
torn one.

States are data, never code: ``None``, ``bool``, ``int``, ``float`` (NaN and infinities
included), ``str``, ``bytes``, ``list``, ``tuple``, ``dict`` with ``str`` keys, NumPy arrays
and scalars (not of object dtype), nested in any way. They come back with the same types
(tuples as tuples, ``np.float32`` as ``np.float32``). Nothing is unpickled, so a
checkpoint someone else wrote into a shared store can at worst be wrong data, never run
code; anything else (a model object) is serialised by the operation itself, e.g. to
``bytes``. A value outside this set raises :class:`~metalab.errors.CaptureError` naming
where it sits in the state (``state['model'][2]``) before anything is written.

Lifetime
--------
When a run succeeds after it saved or restored a checkpoint, the checkpoint is cleared
(overwritten by a small "cleared" marker, before the run's record is written), so a
later forced re-execution (``rerun="stale"``) starts afresh. A run that fails keeps its
checkpoint for the next execution. A checkpoint belongs to the run ID, not to the code:
changing the operation does not discard it (bump the experiment's ``version`` to start
every run afresh).

Format
------
``metalab-checkpoint-v1\\n`` + one line of JSON (run ID, time, the state tree with
arrays/bytes replaced by ``{"$array": i}`` / ``{"$bytes": i}`` references, segment lengths)
+ the segments: raw bytes, and arrays in NumPy's ``.npy`` format read back with
``allow_pickle=False``.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

from metalab.errors import CaptureError
from metalab.keys import checkpoint_key
from metalab.records import utc_now

__all__ = ["MAGIC", "checkpoint_key", "decode_checkpoint", "encode_checkpoint", "encode_cleared"]

MAGIC = b"metalab-checkpoint-v1\n"
"""First bytes of every checkpoint blob."""

_MAX_DEPTH = 200
_ALLOWED = (
    "None, bool, int, float, str, bytes, list, tuple, dict with str keys, or a NumPy "
    "array or scalar (not of object dtype)"
)
# Reserved single keys of the JSON tree; a user dict with a key starting with "$" is
# wrapped as {"$dict": {...}}, so no user dict is ever mistaken for a reference.
_ARRAY, _SCALAR, _BYTES, _TUPLE, _DICT = "$array", "$scalar", "$bytes", "$tuple", "$dict"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _refuse(path: str, value: object, why: str = "") -> CaptureError:
    kind = f"{type(value).__module__}.{type(value).__qualname__}".removeprefix("builtins.")
    detail = f" ({why})" if why else ""
    return CaptureError(
        f"checkpoint {path} is {_short(value)} of type {kind}{detail}; expected {_ALLOWED}"
    )


class _Encoder:
    """Turns a state into a JSON tree plus binary segments, validating every value."""

    def __init__(self) -> None:
        self.segments: list[bytes] = []
        # Looked up, never imported: without NumPy loaded no value can be an array,
        # and a worker whose runs do not use NumPy should not pay for importing it.
        self.numpy: Any = sys.modules.get("numpy")

    def segment(self, data: bytes) -> int:
        self.segments.append(data)
        return len(self.segments) - 1

    def encode(self, value: Any, path: str, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise _refuse(path, value, f"nested deeper than {_MAX_DEPTH} levels: a cycle?")
        kind = type(value)
        if value is None or kind in (bool, int, str, float):
            return value
        if kind in (bytes, bytearray):
            return {_BYTES: self.segment(bytes(value))}
        if kind is list or kind is tuple:
            items = [self.encode(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
            return {_TUPLE: items} if kind is tuple else items
        if kind is dict:
            tree = {}
            for key, item in value.items():
                if type(key) is not str:
                    raise _refuse(f"{path} key", key, "dict keys must be str")
                tree[key] = self.encode(item, f"{path}[{key!r}]", depth + 1)
            return {_DICT: tree} if any(k.startswith("$") for k in tree) else tree
        np = self.numpy
        if np is not None and kind is np.ndarray:
            return {_ARRAY: self.segment(self.npy(value, path))}
        if np is not None and isinstance(value, np.generic) and kind.__module__ == "numpy":
            return {_SCALAR: self.segment(self.npy(np.asarray(value), path))}
        why = (
            "use numpy.asarray() for array subclasses"
            if np is not None and isinstance(value, np.ndarray)
            else ""
        )
        raise _refuse(path, value, why)

    def npy(self, array: Any, path: str) -> bytes:
        if array.dtype.hasobject:
            raise _refuse(path, array, f"dtype {array.dtype} holds Python objects")
        buffer = io.BytesIO()
        self.numpy.lib.format.write_array(buffer, array, allow_pickle=False)
        return buffer.getvalue()


def encode_checkpoint(state: Any, run_id: str) -> bytes:
    """The blob that stores ``state`` as the checkpoint of ``run_id``.

    Raises:
        CaptureError: a value in ``state`` is not one of the allowed kinds; the message
            names its place (``state['model'][2]``), its value and type.
    """
    encoder = _Encoder()
    tree = encoder.encode(state, "state", 0)
    header = {
        "run_id": run_id,
        "saved_at": utc_now().isoformat(timespec="milliseconds"),
        "state": tree,
        "segments": [len(s) for s in encoder.segments],
    }
    return b"".join([MAGIC, json.dumps(header).encode(), b"\n", *encoder.segments])


def encode_cleared(run_id: str) -> bytes:
    """The blob that marks the checkpoint of ``run_id`` as cleared (its run succeeded)."""
    header = {"run_id": run_id, "saved_at": utc_now().isoformat(timespec="milliseconds")}
    return MAGIC + json.dumps({**header, "cleared": True}).encode() + b"\n"


def decode_checkpoint(blob: bytes, run_id: str, what: str) -> tuple[bool, Any]:
    """``(True, state)`` from a checkpoint blob of ``run_id``; ``(False, None)`` if cleared.

    Args:
        blob: the stored bytes.
        run_id: the run asking (a blob of another run is refused).
        what: how to name the blob in errors (key and store).

    Raises:
        CaptureError: the blob is not a checkpoint of ``run_id`` or is damaged; says which.
    """
    if not blob.startswith(MAGIC):
        raise CaptureError(f"{what} is not a metalab checkpoint (it does not start {MAGIC!r})")
    end = blob.find(b"\n", len(MAGIC))
    try:
        header = json.loads(blob[len(MAGIC) : end if end >= 0 else len(blob)])
        stored_run = header["run_id"]
        if header.get("cleared") is True:
            lengths: list[int] = []
        else:
            lengths = [int(n) for n in header["segments"]]
        if any(n < 0 for n in lengths):
            raise ValueError(f"negative segment length in {lengths}")
    except (ValueError, KeyError, TypeError) as exc:
        raise CaptureError(f"{what} has a damaged header: {exc}") from None
    if stored_run != run_id:
        raise CaptureError(f"{what} belongs to run {stored_run!r}, not to run {run_id!r}")
    if end < 0 or end + 1 + sum(lengths) != len(blob):
        raise CaptureError(
            f"{what} is truncated or has extra bytes: {len(blob)} bytes, the header "
            f"describes {end + 1 + sum(lengths)}"
        )
    if header.get("cleared") is True:
        return False, None
    segments: list[bytes] = []
    offset = end + 1
    for length in lengths:
        segments.append(blob[offset : offset + length])
        offset += length
    try:
        return True, _Decoder(segments).decode(header["state"])
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, EOFError) as exc:
        raise CaptureError(f"{what} has a damaged state: {type(exc).__name__}: {exc}") from None


class _Decoder:
    """Rebuilds a state from the JSON tree and its segments."""

    def __init__(self, segments: list[bytes]) -> None:
        self.segments = segments

    def decode(self, tree: Any) -> Any:
        if isinstance(tree, list):
            return [self.decode(item) for item in tree]
        if not isinstance(tree, dict):
            return tree
        if len(tree) == 1:
            ((key, inner),) = tree.items()
            if key == _BYTES:
                return self.segments[inner]
            if key == _TUPLE:
                return tuple(self.decode(item) for item in inner)
            if key == _DICT:
                return {k: self.decode(v) for k, v in inner.items()}
            if key == _ARRAY:
                return self.npy(inner)
            if key == _SCALAR:
                return self.npy(inner)[()]
        return {k: self.decode(v) for k, v in tree.items()}

    def npy(self, index: int) -> Any:
        import numpy

        segment = self.segments[index]
        try:
            # allow_pickle=False: an object array (which would unpickle) is refused.
            return numpy.lib.format.read_array(io.BytesIO(segment), allow_pickle=False)
        except Exception as exc:  # NumPy's header parser raises SyntaxError, TokenError...
            raise ValueError(f"segment {index} is not a .npy array: {exc}") from None
