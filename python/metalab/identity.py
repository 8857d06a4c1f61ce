"""Run identity: canonical fingerprints and run IDs (see ``docs/run-identity.md``).

``run_id = H(experiment_id, context_fp, params_fp, seed_fp)`` where ``experiment_id`` is
``"{name}:{version}"``. The operation's code is deliberately not part of the identity:
bumping ``version`` is how a user says "my results are no longer comparable".
"""

from __future__ import annotations

import hashlib
from typing import Any

from metalab import _core

__all__ = [
    "FINGERPRINT_HEX_CHARS",
    "canonical_encode",
    "experiment_id",
    "fingerprint",
    "fingerprint_many",
    "hash_bytes",
    "run_id",
    "to_plain",
]

FINGERPRINT_HEX_CHARS: int = _core.FINGERPRINT_HEX_CHARS


def canonical_encode(value: Any) -> bytes:
    """Return the versioned canonical byte encoding of a JSON-like value.

    Raises:
        EncodingError: the value (or a nested one) is NaN, infinite or of a type that has
            no canonical form; the message names its key path.
    """
    return _core.canonical_encode(value)


def to_plain(value: Any, root: str = "value") -> Any:
    """Return ``value`` with NumPy scalars and arrays replaced by plain Python values.

    ``np.int64(3)`` becomes ``3``, ``np.float64(0.5)`` ``0.5``, ``np.bool_(True)`` ``True``,
    a 0-d array its scalar and an n-d array nested lists: exactly what the canonical
    encoding already treats them as, so fingerprints and run IDs do not change. The
    result is JSON-serialisable; containers without NumPy values inside are returned as
    they are (tuples stay tuples, dicts keep their order).

    Raises:
        EncodingError: as :func:`canonical_encode`; the path starts at ``root``
            (e.g. ``metadata['batch'][2]``).
    """
    return _core.to_plain(value, root)


def fingerprint(value: Any) -> str:
    """Return the 32-hex-character fingerprint of a JSON-like value.

    Raises:
        EncodingError: as :func:`canonical_encode`.
    """
    return _core.fingerprint(value)


def fingerprint_many(values: list[Any]) -> list[str]:
    """Fingerprint many values in one call (one crossing into Rust)."""
    return _core.fingerprint_many(values)


def run_id(experiment_id: str, context_fp: str, params_fp: str, seed_fp: str) -> str:
    """Return the stable run ID of one (experiment, context, params, seed) combination."""
    return _core.run_id(experiment_id, context_fp, params_fp, seed_fp)


def experiment_id(name: str, version: str) -> str:
    """Return the experiment ID ``"{name}:{version}"`` used in run IDs and store paths."""
    return f"{name}:{version}"


def hash_bytes(data: bytes) -> str:
    """Return a short content hash of raw bytes (operation source code, files)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()
