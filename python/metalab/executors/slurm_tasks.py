"""The task-list blob of a partial SLURM submission: little-endian uint32 task indices.

Kept apart from the launch machinery because every array task of a resumed submission
decodes it (:mod:`metalab.worker`) and must not pay for importing what only the
submitting side needs (subprocess, the SLURM commands, the log paths).
"""

from __future__ import annotations

import array
import sys
from collections.abc import Sequence

__all__ = ["decode_task_list", "encode_task_list"]


def encode_task_list(indices: Sequence[int]) -> bytes:
    """Pack task indices as little-endian uint32 (4 bytes a task, 1.2 MB for 300k)."""
    packed = array.array("I", indices)
    if packed.itemsize != 4:  # pragma: no cover - every mainstream platform has 4-byte I
        packed = array.array("L", indices)
    if sys.byteorder != "little":  # pragma: no cover - the blob format is little-endian
        packed.byteswap()
    return packed.tobytes()


def decode_task_list(data: bytes) -> array.array[int]:
    """Unpack :func:`encode_task_list` output (indexable without building a list)."""
    packed = array.array("I")
    packed.frombytes(data)
    if sys.byteorder != "little":  # pragma: no cover
        packed.byteswap()
    return packed
