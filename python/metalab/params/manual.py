"""Explicit lists of parameter dicts."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from metalab import _core
from metalab.errors import ParamSpecError
from metalab.identity import fingerprint_many, to_plain
from metalab.params.base import ParamSource

__all__ = ["ManualSource", "manual"]


class ManualSource(_core.ManualCore, ParamSource):
    """A fixed list of parameter dicts, fingerprinted once at construction.

    ``len()`` and ``[i]`` (a fresh copy of case ``i``) are answered by the Rust base class
    itself; ``[i]`` keeps the contract of :meth:`ParamSource.__getitem__`.
    """

    _fingerprints: list[str]
    _cases: list[dict[str, Any]]

    def __new__(cls, cases: list[dict[str, Any]]) -> ManualSource:
        fingerprints = fingerprint_many(cases)  # validates; errors name values[i]
        # Plain Python values (NumPy scalars unwrapped), identical fingerprints.
        plain = [to_plain(case) for case in cases]
        self = super().__new__(cls, plain)
        self._fingerprints, self._cases = fingerprints, plain
        return self

    def _get(self, index: int) -> dict[str, Any]:
        return _core.ManualCore.__getitem__(self, index)

    __repr__ = ParamSource.__repr__

    def fingerprints(self, start: int = 0, stop: int | None = None) -> list[str]:
        """Return the cached fingerprints of ``[start, stop)``."""
        return self._fingerprints[start : len(self) if stop is None else stop]

    def spec(self) -> dict[str, Any]:
        """Return ``{"kind": "manual", "cases": [...]}``."""
        return {"kind": "manual", "cases": copy.deepcopy(self._cases)}


def manual(cases: Iterable[dict[str, Any]]) -> ManualSource:
    """Run exactly the given parameter dicts, in order.

    Raises:
        ParamSpecError: ``cases`` is empty or a case is not a dict with str keys.
        EncodingError: a value has no canonical encoding; the message names its path.
    """
    if isinstance(cases, dict | str | bytes):
        raise ParamSpecError(
            f"manual() expects a list of dicts, got a {type(cases).__name__}: {cases!r}"
        )
    items = list(cases)
    if not items:
        raise ParamSpecError("manual() needs at least one parameter dict, got an empty list")
    for position, case in enumerate(items):
        if not isinstance(case, dict):
            raise ParamSpecError(
                f"manual() case {position} is {case!r} of type {type(case).__name__}; "
                f"expected a dict of parameters"
            )
        for key in case:
            if not isinstance(key, str):
                raise ParamSpecError(
                    f"manual() case {position} has key {key!r} of type {type(key).__name__}; "
                    f"expected str keys"
                )
    return ManualSource([copy.deepcopy(case) for case in items])
