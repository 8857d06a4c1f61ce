"""Random search whose trial ``i`` is a pure function of ``(seed, i, key)``."""

from __future__ import annotations

from typing import Any

from metalab import _core
from metalab.errors import ParamSpecError
from metalab.params.base import ParamSource
from metalab.params.distributions import (
    Choice,
    Distribution,
    distribution_from_spec,
    unwrap_numpy,
)

__all__ = ["RandomSource", "random"]


class RandomSource(_core.RandomCore, ParamSource):
    """``n_trials`` samples from a space of distributions, each addressable in O(1).

    Sampling is counter-based (see ``docs/run-identity.md``): trial ``i`` never depends
    on which other trials were drawn or in what order, so SLURM array tasks agree.
    ``len()`` and ``[i]`` are answered by the Rust base class itself (a choice's option
    included); ``[i]`` keeps the contract of :meth:`ParamSource.__getitem__`.
    """

    _space: dict[str, Distribution]
    _seed: int
    _n_trials: int

    def __new__(cls, space: dict[str, Distribution], n_trials: int, seed: int) -> RandomSource:
        core_space = [(key, dist.kind, dist.core_args()) for key, dist in space.items()]
        # A trial holds a choice's option index; the core hands out the option itself.
        options = [d.options if isinstance(d, Choice) else None for d in space.values()]
        self = super().__new__(cls, seed, core_space, n_trials, list(options))
        self._space, self._seed, self._n_trials = dict(space), seed, n_trials
        return self

    def _get(self, index: int) -> dict[str, Any]:
        return _core.RandomCore.__getitem__(self, index)

    __repr__ = ParamSource.__repr__

    def fingerprints(self, start: int = 0, stop: int | None = None) -> list[str]:
        """Return params fingerprints of trials ``[start, stop)`` (batched draws)."""
        from metalab.identity import fingerprint_many

        end = self._n_trials if stop is None else stop
        dists = list(self._space.items())
        rows = self.trials(start, end)
        return fingerprint_many(
            [{key: d.to_value(v) for (key, d), v in zip(dists, row, strict=True)} for row in rows]
        )

    def spec(self) -> dict[str, Any]:
        """Return ``{"kind": "random", "space": {...}, "n_trials": n, "seed": s}``."""
        return {
            "kind": "random",
            "space": {key: dist.spec() for key, dist in self._space.items()},
            "n_trials": self._n_trials,
            "seed": self._seed,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> RandomSource:
        """Rebuild from :meth:`spec` output."""
        space = {key: distribution_from_spec(d) for key, d in spec["space"].items()}
        return cls(space, spec["n_trials"], spec["seed"])


def random(space: dict[str, Distribution], n_trials: int, seed: int = 0) -> RandomSource:
    """Draw ``n_trials`` parameter dicts from ``space`` reproducibly from ``seed``.

    Raises:
        ParamSpecError: ``space`` is empty or holds a non-distribution, ``n_trials <= 0``,
            or ``seed`` is not an int within 64-bit range.
    """
    if not isinstance(space, dict) or not space:
        raise ParamSpecError(f"random() needs a non-empty dict space, got {space!r}")
    for key, dist in space.items():
        if not isinstance(key, str):
            raise ParamSpecError(f"random() space key {key!r} must be a str")
        if not isinstance(dist, Distribution):
            raise ParamSpecError(
                f"random() space[{key!r}] is {dist!r}; expected a distribution such as "
                f"metalab.uniform(0, 1) or metalab.choice([...])"
            )
    count, base = unwrap_numpy(n_trials), unwrap_numpy(seed)  # np.int64(20) counts as 20
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise ParamSpecError(f"random() n_trials must be a positive int, got {n_trials!r}")
    if isinstance(base, bool) or not isinstance(base, int):
        raise ParamSpecError(f"random() seed must be an int, got {seed!r}")
    return RandomSource(space, count, base)
