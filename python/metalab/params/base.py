"""The interface every parameter source implements: O(1) indexed, batch fingerprinted."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

from metalab.identity import fingerprint_many

__all__ = ["ParamSource"]


class ParamSource(ABC):
    """An ordered, finite, index-addressable collection of parameter dicts.

    Index access is O(1) so that a SLURM array task can compute its own parameters from
    its task ID without anything per run being written at submission time.
    """

    @abstractmethod
    def __len__(self) -> int:
        """Return the number of parameter configurations."""

    @abstractmethod
    def _get(self, index: int) -> dict[str, Any]:
        """Return configuration ``index`` (already normalised to ``0 <= index < len``)."""

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """Return a JSON-serialisable description (manifests, workers, reconnect)."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Return a fresh dict for configuration ``index`` (negative counts from the end).

        Raises:
            IndexError: ``index`` is outside ``[-len, len)``.
            TypeError: ``index`` is not an int.
        """
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"parameter index must be an int, got {type(index).__name__}")
        size = len(self)
        position = index + size if index < 0 else index
        if not 0 <= position < size:
            raise IndexError(f"parameter index {index} out of range for {size} configurations")
        return self._get(position)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Iterate over every configuration in index order."""
        for index in range(len(self)):
            yield self._get(index)

    def fingerprints(self, start: int = 0, stop: int | None = None) -> list[str]:
        """Return the params fingerprints of configurations ``[start, stop)`` in one batch."""
        end = len(self) if stop is None else stop
        return fingerprint_many([self._get(i) for i in range(start, end)])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)})"
