"""Pure-Python reference of what ``rust/src/index/frame.rs`` computes.

:func:`frame_of` is the array ``pandas.DataFrame`` infers from one column's values
(``None`` where a run lacks the key or holds ``null``), for the cases the loader builds
natively; ``None`` where pandas is left to decide from the list. Written from the rules,
not from the Rust code; ``tests/test_results_frames.py`` checks it against pandas too.
"""

from __future__ import annotations

import math
import struct
from typing import Any

__all__ = ["frame_of"]

_EXACT_IN_F64 = 2**53
_I64 = range(-(2**63), 2**63)


def frame_of(values: list[Any]) -> tuple[str, bytes] | None:
    """``(numpy dtype name, native bytes)`` of the column, or ``None``."""
    if not values:
        return None
    if any(type(v) not in (type(None), bool, int, float) for v in values):
        return None  # text, JSON
    if any(type(v) is int and v not in _I64 for v in values):
        return None  # past int64: pandas keeps objects or unsigned
    if any(type(v) is bool for v in values):
        if all(type(v) is bool for v in values):
            return "bool", bytes(int(v) for v in values)
        return None
    if all(v is None for v in values):
        return None
    if all(type(v) is int for v in values):
        return "int64", b"".join(struct.pack("=q", v) for v in values)
    if any(type(v) is int and abs(v) > _EXACT_IN_F64 for v in values):
        return None
    floats = [math.nan if v is None else float(v) for v in values]
    return "float64", b"".join(struct.pack("=d", f) for f in floats)
