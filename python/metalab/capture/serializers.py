"""Artifact serializers: choose a format for an object, and read it back.

Automatic choice, in order: NumPy array (``.npy``), dict of NumPy arrays (``.npz``),
pandas DataFrame (``.json``, pandas "table" orient that keeps dtypes), raw bytes
(``.bin``), and JSON-able values (``.json``). Anything else needs ``kind="pickle"``
explicitly, and reading a pickle back needs ``allow_pickle=True``: unpickling runs
arbitrary code, so metalab never does it implicitly from a shared store.

A pickle artifact is sealed (:mod:`metalab.signing`) for its artifact name when written,
so ``allow_pickle=True`` means "pickles this account wrote": one written or altered by
anyone else (a co-user of the store) is refused with :class:`SignatureError` before it is
unpickled. ``allow_pickle="unverified"`` is the explicit way to load a pickle that cannot
be verified (stored by a metalab without signing, or by a colleague): it runs the
writer's code as you.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass
from typing import Any, Literal

from metalab.errors import CaptureError, UnsafeLoadError
from metalab.signing import open_sealed, seal, unseal_unverified

__all__ = ["KINDS", "AllowPickle", "Serialized", "deserialize", "serialize"]

KINDS = ("numpy", "npz", "pandas", "bytes", "json", "pickle")

AllowPickle = bool | Literal["unverified"]
"""``False`` (refuse pickles), ``True`` (pickles sealed by this account) or
``"unverified"`` (any pickle: runs whoever wrote it's code)."""


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
    """Serialize ``obj`` with ``kind`` (or the automatic choice); pickles are sealed.

    Raises:
        CaptureError: ``kind`` is unknown or ``obj`` cannot be stored with it.
        UnsafeLoadError: ``kind="pickle"`` and the signing key cannot be used safely.
    """
    chosen = kind or _auto_kind(obj)
    if chosen not in KINDS:
        raise CaptureError(f"artifact {name!r}: unknown kind {chosen!r}; expected one of {KINDS}")
    try:
        packed = _SERIALIZERS[chosen](obj)
        if chosen == "pickle":  # carries code: sealed, see the module docstring
            packed = Serialized(packed.kind, packed.ext, seal(packed.data, _purpose(name)))
        return packed
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


def _numpy_scalar_value(obj: Any) -> Any:
    """``json.dumps`` hook: a NumPy bool/int/float scalar (or 0-d array) as its Python value.

    NumPy scalars are everyday values in results dicts; anything else still fails as
    ``json`` would (and becomes a CaptureError that suggests ``kind="pickle"``).
    """
    if type(obj).__module__ == "numpy" and getattr(obj, "ndim", None) == 0:
        value = obj.item()
        if isinstance(value, bool | int | float):
            return value
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _json(obj: Any) -> Serialized:
    text = json.dumps(obj, allow_nan=True, default=_numpy_scalar_value)
    return Serialized("json", ".json", text.encode())


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


def _purpose(name: str) -> str:
    return f"artifact:{name}"


def deserialize(
    kind: str, data: bytes, *, allow_pickle: AllowPickle = False, name: str | None = None
) -> Any:
    """Read back bytes produced by :func:`serialize`.

    Args:
        kind: the artifact's kind.
        data: its stored bytes.
        allow_pickle: see :data:`AllowPickle`; only consulted for ``kind="pickle"``.
        name: the artifact's name, needed to verify a pickle (its seal is bound to it).

    Raises:
        UnsafeLoadError: ``kind`` is ``"pickle"`` and ``allow_pickle`` is False.
        SignatureError: ``allow_pickle=True`` and the pickle was not sealed by this account
            as artifact ``name`` (another account wrote or altered it); not unpickled.
        CaptureError: ``kind`` is unknown, ``allow_pickle`` is not one of its values, or a
            pickle is to be verified without ``name``.
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
        return pickle.loads(_pickle_payload(data, allow_pickle, name))
    raise CaptureError(f"unknown artifact kind {kind!r}; expected one of {KINDS}")


def _pickle_payload(data: bytes, allow_pickle: AllowPickle, name: str | None) -> bytes:
    """The pickle bytes to load, once ``allow_pickle`` and the seal allow it."""
    if allow_pickle is False:
        raise UnsafeLoadError(
            "this artifact is a pickle; unpickling runs arbitrary code, so only load it "
            "from a store you trust, with run.artifact(name, allow_pickle=True)"
        )
    if allow_pickle == "unverified":
        return unseal_unverified(data)
    if allow_pickle is not True:
        raise CaptureError(
            f"allow_pickle must be False, True or 'unverified', got {allow_pickle!r}"
        )
    if name is None:
        raise CaptureError(
            "deserialize() of a pickle with allow_pickle=True needs name=<artifact name>: "
            "its signature is bound to the name"
        )
    return open_sealed(data, _purpose(name), f"pickle artifact {name!r}")
