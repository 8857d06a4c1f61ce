"""The Experiment: one operation swept over parameters and seed replicates."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from metalab.errors import ExperimentError
from metalab.identity import experiment_id, to_plain
from metalab.operation import Operation, operation
from metalab.params.base import ParamSource
from metalab.seeds import SeedPlan

__all__ = ["Experiment"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _check_token(label: str, value: object) -> str:
    if not isinstance(value, str):
        raise ExperimentError(f"Experiment {label} must be a str, got {value!r}")
    # ".." is refused too: stores use the name in file names and must never see a
    # component that could climb out of their folders.
    if not _SAFE_NAME.fullmatch(value) or len(value) > 128 or ".." in value:
        raise ExperimentError(
            f"Experiment {label} {value!r} is not usable in a path; expected 1-128 characters "
            f"from letters, digits, '_', '.', '-', starting with a letter or digit, no '..'"
        )
    return value


class Experiment:
    """Everything that defines a sweep: what to run, over which params and seeds.

    ``metadata`` is persisted in the manifest and given to operations as
    ``runtime.metadata`` but is never fingerprinted: changing it creates no new runs.

    Raises:
        ExperimentError: a name/version is not path-safe, or an argument has the wrong type.
        EncodingError: ``metadata`` holds a value JSON cannot store (NaN, an object, a
            set...); the message names its path, e.g. ``metadata['groups'][1]``.
    """

    def __init__(
        self,
        name: str,
        version: str,
        context: Any,
        operation: Operation | Callable[..., Any],
        params: ParamSource,
        seeds: SeedPlan,
        description: str | None = None,
        tags: Iterable[str] = (),
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.name = _check_token("name", name)
        self.version = _check_token("version", version)
        self.context = context
        self.operation = _as_operation(operation)
        if not isinstance(params, ParamSource):
            raise ExperimentError(
                f"Experiment params must come from metalab.grid(), random() or manual(), "
                f"got {params!r}"
            )
        self.params = params
        if not isinstance(seeds, SeedPlan):
            raise ExperimentError(
                f"Experiment seeds must come from metalab.seeds(base=..., replicates=...), "
                f"got {seeds!r}"
            )
        self.seeds = seeds
        if description is not None and not isinstance(description, str):
            raise ExperimentError(f"Experiment description must be a str, got {description!r}")
        self.description = description
        if isinstance(tags, str):
            raise ExperimentError(f"Experiment tags must be a list of str, got the str {tags!r}")
        self.tags = tuple(tags)
        for tag in self.tags:
            if not isinstance(tag, str):
                raise ExperimentError(f"Experiment tag {tag!r} must be a str")
        if metadata is not None and not isinstance(metadata, dict):
            raise ExperimentError(f"Experiment metadata must be a dict, got {metadata!r}")
        # Checked now, before anything is written: the manifest and the worker spec store
        # it as JSON. NumPy values become the Python values they equal.
        self.metadata: dict[str, Any] = dict(to_plain(dict(metadata or {}), "metadata"))

    @property
    def experiment_id(self) -> str:
        """``"{name}:{version}"``."""
        return experiment_id(self.name, self.version)

    @property
    def total_runs(self) -> int:
        """Number of runs: parameter configurations times replicates."""
        return len(self.params) * self.seeds.replicates

    def __repr__(self) -> str:
        return (
            f"Experiment({self.experiment_id!r}, operation={self.operation.reference}, "
            f"runs={self.total_runs})"
        )


def _as_operation(candidate: object) -> Operation:
    if isinstance(candidate, Operation):
        return candidate
    if callable(candidate):
        return operation(candidate)
    raise ExperimentError(f"Experiment operation must be a function, got {candidate!r}")
