"""Cartesian-product parameter grids decoded in O(1) by the Rust core."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from metalab import _core
from metalab.errors import ParamSpecError
from metalab.identity import to_plain
from metalab.params.base import ParamSource

__all__ = ["GridSource", "grid"]


class GridSource(_core.GridCore, ParamSource):
    """The Cartesian product of named axes; the last axis varies fastest.

    The order matches ``itertools.product(*axes.values())``: ``grid(a=[1, 2], b=[3, 4])``
    yields ``{a:1,b:3}, {a:1,b:4}, {a:2,b:3}, {a:2,b:4}``.

    ``len()`` and ``[i]`` are answered by the Rust base class itself (a Python method in
    between tripled the cost of an indexed lookup); ``[i]`` keeps the contract of
    :meth:`ParamSource.__getitem__`.
    """

    def __new__(cls, axes: dict[str, list[Any]]) -> GridSource:
        # Validates; errors name grid['key'][i].
        return super().__new__(cls, list(axes), [list(values) for values in axes.values()])

    def __init__(self, axes: dict[str, list[Any]]) -> None:
        self._keys = list(axes)
        # NumPy values become the Python values they fingerprint as, so the spec and the
        # manifest are plain JSON and operations see the same types on every executor.
        self._axes = [to_plain(list(values)) for values in axes.values()]

    def _get(self, index: int) -> dict[str, Any]:
        return _core.GridCore.__getitem__(self, index)

    __repr__ = ParamSource.__repr__

    def fingerprints(self, start: int = 0, stop: int | None = None) -> list[str]:
        """Return params fingerprints of ``[start, stop)`` computed entirely in Rust."""
        return _core.GridCore.fingerprints(self, start, len(self) if stop is None else stop)

    def spec(self) -> dict[str, Any]:
        """Return ``{"kind": "grid", "axes": {name: values}}``."""
        return {"kind": "grid", "axes": dict(zip(self._keys, self._axes, strict=True))}

    @property
    def axes(self) -> dict[str, list[Any]]:
        """The axes in declaration order (a copy)."""
        return {key: list(values) for key, values in zip(self._keys, self._axes, strict=True)}


def _axis_values(name: str, values: object) -> list[Any]:
    if isinstance(values, str | bytes | bytearray):
        raise ParamSpecError(
            f"grid axis {name!r} is the string {values!r}; expected a list of values "
            f"(write {name}=[{values!r}] for a single value)"
        )
    if isinstance(values, dict):
        raise ParamSpecError(
            f"grid axis {name!r} is a dict; expected a list of values (a dict would sweep "
            f"only its keys)"
        )
    if not isinstance(values, Iterable):
        raise ParamSpecError(
            f"grid axis {name!r} is {values!r} of type {type(values).__name__}; "
            f"expected a list of values"
        )
    return list(values)


def grid(**axes: Iterable[Any]) -> GridSource:
    """Sweep the Cartesian product of the given axes.

    Example: ``grid(learning_rate=[0.001, 0.01, 0.1], batch_size=[32, 64])`` has 6 entries.
    An axis may be a NumPy array (``grid(x=np.arange(3))``); NumPy values are taken as the
    Python values they equal (``np.int64(3)`` as ``3``), with the same run IDs.

    Raises:
        ParamSpecError: no axes, an axis is a string/dict/non-iterable, an axis is empty,
            or an axis repeats a value.
        EncodingError: a value has no canonical encoding (NaN, an object...).
    """
    if not axes:
        raise ParamSpecError("grid() needs at least one axis, e.g. grid(lr=[0.1, 0.01])")
    return GridSource({name: _axis_values(name, values) for name, values in axes.items()})
