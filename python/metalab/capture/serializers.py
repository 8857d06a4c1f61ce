"""Artifact serializers: choose a format for an object, and read it back.

Automatic choice, in order: NumPy array (``.npy``), dict of NumPy arrays (``.npz``),
pandas DataFrame (``.json``, pandas "table" orient that keeps dtypes), raw bytes
(``.bin``), and JSON-able values (``.json``). Anything else needs ``kind="pickle"``
explicitly, and reading a pickle back needs ``allow_pickle=True``: unpickling runs
arbitrary code, so metalab never does it implicitly from a shared store.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass
from typing import Any

from metalab.errors import CaptureError, UnsafeLoadError

__all__ = ["KINDS", "Serialized", "deserialize", "serialize"]

KINDS = ("numpy", "npz", "pandas", "bytes", "json", "pickle")


@dataclass(frozen=True)
class Serialized:
    """An artifact's bytes and how to read them back."""

    kind: str
    ext: str
    data: bytes


def _is_ndarray(obj: object) -> bool:
    return type(obj).__module__ == "numpy" and type(obj).__name__ == "ndarray"


def _is_dataframe(obj: object) -> bool:
    return type(obj).__name__ == "DataFrame" and type(obj).__module__.startswith("pandas")


def _auto_kind(obj: object) -> str:
    if _is_ndarray(obj):
        return "numpy"
    if isinstance(obj, dict) and obj and all(_is_ndarray(v) for v in obj.values()):
        return "npz"
    if _is_dataframe(obj):
        return "pandas"
    if isinstance(obj, bytes | bytearray):
        return "bytes"
    return "json"


def serialize(name: str, obj: Any, kind: str | None = None) -> Serialized:
    """Serialize ``obj`` with ``kind`` (or the automatic choice).

    Raises:
        CaptureError: ``kind`` is unknown or ``obj`` cannot be stored with it.
    """
    chosen = kind or _auto_kind(obj)
    if chosen not in KINDS:
        raise CaptureError(f"artifact {name!r}: unknown kind {chosen!r}; expected one of {KINDS}")
    try:
        return _SERIALIZERS[chosen](obj)
    except CaptureError:
        raise
    except (TypeError, ValueError, AttributeError) as exc:
        hint = "" if kind else "; pass kind='pickle' to store it with pickle"
        raise CaptureError(
            f"artifact {name!r}: cannot serialize {type(obj).__name__} as {chosen} ({exc}){hint}"
        ) from None


def _numpy(obj: Any) -> Serialized:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(obj), allow_pickle=False)
    return Serialized("numpy", ".npy", buffer.getvalue())


def _npz(obj: Any) -> Serialized:
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **{str(k): np.asarray(v) for k, v in obj.items()})
    return Serialized("npz", ".npz", buffer.getvalue())


def _pandas(obj: Any) -> Serialized:
    return Serialized("pandas", ".json", obj.to_json(orient="table", date_format="iso").encode())


def _bytes(obj: Any) -> Serialized:
    return Serialized("bytes", ".bin", bytes(obj))


def _json(obj: Any) -> Serialized:
    return Serialized("json", ".json", json.dumps(obj, allow_nan=True).encode())


def _pickle(obj: Any) -> Serialized:
    import cloudpickle

    # cloudpickle also handles lambdas and classes defined inside functions or notebooks.
    try:
        data = cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError) as exc:
        raise CaptureError(f"cannot pickle {type(obj).__name__}: {exc}") from None
    return Serialized("pickle", ".pkl", data)


_SERIALIZERS = {
    "numpy": _numpy,
    "npz": _npz,
    "pandas": _pandas,
    "bytes": _bytes,
    "json": _json,
    "pickle": _pickle,
}


def deserialize(kind: str, data: bytes, *, allow_pickle: bool = False) -> Any:
    """Read back bytes produced by :func:`serialize`.

    Raises:
        UnsafeLoadError: ``kind`` is ``"pickle"`` and ``allow_pickle`` is False.
        CaptureError: ``kind`` is unknown.
    """
    if kind == "numpy":
        import numpy as np

        return np.load(io.BytesIO(data), allow_pickle=False)
    if kind == "npz":
        import numpy as np

        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    if kind == "pandas":
        import pandas as pd

        return pd.read_json(io.StringIO(data.decode()), orient="table")
    if kind == "bytes":
        return data
    if kind == "json":
        return json.loads(data)
    if kind == "pickle":
        if not allow_pickle:
            raise UnsafeLoadError(
                "this artifact is a pickle; unpickling runs arbitrary code, so only load it "
                "from a store you trust, with run.artifact(name, allow_pickle=True)"
            )
        return pickle.loads(data)
    raise CaptureError(f"unknown artifact kind {kind!r}; expected one of {KINDS}")
