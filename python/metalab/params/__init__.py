"""Parameter sources: grids, random search and explicit lists, all O(1) indexable."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from metalab import lazy_exports
from metalab.errors import ParamSpecError
from metalab.params.base import ParamSource
from metalab.params.grid import GridSource, grid
from metalab.params.manual import ManualSource, manual

if TYPE_CHECKING:
    # The type checker sees the real names; at runtime they load on first use (below).
    from metalab.params.distributions import (
        Choice,
        Distribution,
        LogUniform,
        LogUniformInt,
        Normal,
        RandInt,
        Uniform,
        choice,
        loguniform,
        loguniform_int,
        normal,
        randint,
        uniform,
    )
    from metalab.params.random_search import RandomSource, random

__all__ = [
    "Choice",
    "Distribution",
    "GridSource",
    "LogUniform",
    "LogUniformInt",
    "ManualSource",
    "Normal",
    "ParamSource",
    "RandInt",
    "RandomSource",
    "Uniform",
    "choice",
    "grid",
    "loguniform",
    "loguniform_int",
    "manual",
    "normal",
    "randint",
    "random",
    "source_from_spec",
    "uniform",
]


def source_from_spec(spec: dict[str, Any]) -> ParamSource:
    """Rebuild a parameter source from its :meth:`ParamSource.spec` (used by workers).

    Raises:
        ParamSpecError: the spec's kind is unknown.
    """
    kind = spec.get("kind")
    if kind == "grid":
        return grid(**spec["axes"])
    if kind == "manual":
        return manual(spec["cases"])
    if kind == "random":
        from metalab.params.random_search import RandomSource

        return RandomSource.from_spec(spec)
    raise ParamSpecError(f"unknown parameter source kind {kind!r} in spec")


# Random search loads on first use: a SLURM array task of a grid or a list never needs
# its distributions (five dataclasses built at import).
_LAZY = {
    **dict.fromkeys(
        (
            "Choice",
            "Distribution",
            "LogUniform",
            "LogUniformInt",
            "Normal",
            "RandInt",
            "Uniform",
            "choice",
            "loguniform",
            "loguniform_int",
            "normal",
            "randint",
            "uniform",
        ),
        "metalab.params.distributions",
    ),
    "RandomSource": "metalab.params.random_search",
    "random": "metalab.params.random_search",
}


__getattr__ = lazy_exports.loader(__name__, _LAZY)
