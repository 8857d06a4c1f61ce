"""Explicit lists of parameter dicts."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from metalab.errors import ParamSpecError
from metalab.identity import fingerprint_many, to_plain
from metalab.params.base import ParamSource

__all__ = ["ManualSource", "manual"]


class ManualSource(ParamSource):
    """A fixed list of parameter dicts, fingerprinted once at construction."""

    def __init__(self, cases: list[dict[str, Any]]) -> None:
        self._fingerprints = fingerprint_many(cases)  # validates; errors name values[i]
        # Plain Python values (NumPy scalars unwrapped), identical fingerprints.
        self._cases = [to_plain(case) for case in cases]

    def __len__(self) -> int:
        return len(self._cases)

    def _get(self, index: int) -> dict[str, Any]:
        return copy.deepcopy(self._cases[index])

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
