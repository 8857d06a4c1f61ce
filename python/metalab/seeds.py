"""Seed plans and seed bundles: every random number of a run flows from here.

A run's :class:`SeedBundle` root is derived from ``(base, replicate)`` with domain
separation (``docs/run-identity.md``). The root does not depend on the parameters, so all
configurations of one replicate share common random numbers — differences between
configurations then come from the parameters, not from sampling noise. Replicates are
independent streams. ``SeedBundle.for_preprocessing(base)`` lives in its own domain and
never collides with a replicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from metalab import _core
from metalab.errors import SeedSpecError

if TYPE_CHECKING:
    import random as _stdlib_random

    import numpy as np

__all__ = ["SeedBundle", "SeedPlan", "seeds"]

_INT64 = (-(2**63), 2**63 - 1)


def _check_base(base: object) -> int:
    if isinstance(base, bool) or not isinstance(base, int):
        raise SeedSpecError(f"seed base must be an int, got {base!r}")
    if not _INT64[0] <= base <= _INT64[1]:
        raise SeedSpecError(f"seed base {base} is outside the signed 64-bit range")
    return base


def _check_name(name: object) -> str:
    if name is None:
        return ""
    if not isinstance(name, str):
        raise SeedSpecError(f"seed stream name must be a str, got {name!r}")
    return name


class SeedBundle:
    """The randomness of one run: named, independent, reproducible streams.

    ``numpy(name)`` and ``rng(name)`` build fresh generators seeded with 128 bits of
    entropy; ``derive(name)`` returns an int in ``[0, 2**32)`` for libraries that take an
    integer seed (``random.seed``, ``np.random.RandomState``, scikit-learn's
    ``random_state``, ``torch.manual_seed``). Different names give independent streams.
    """

    __slots__ = ("_root", "base", "label", "replicate")

    def __init__(self, root: bytes, base: int, replicate: int | None, label: str) -> None:
        self._root = root
        self.base = base
        self.replicate = replicate
        self.label = label

    @classmethod
    def for_replicate(cls, base: int, replicate: int) -> SeedBundle:
        """Return the bundle of replicate ``replicate`` under base seed ``base``."""
        _check_base(base)
        return cls(_core.seed_root(base, replicate), base, replicate, f"replicate {replicate}")

    @classmethod
    def for_preprocessing(cls, base_seed: int) -> SeedBundle:
        """Return a bundle for preprocessing that never collides with replicate streams.

        Raises:
            SeedSpecError: ``base_seed`` is not an int within 64-bit range.
        """
        base = _check_base(base_seed)
        return cls(_core.preprocessing_root(base), base, None, "preprocessing")

    def derive(self, name: str) -> int:
        """Return a deterministic int seed in ``[0, 2**32)`` for the stream ``name``."""
        return _core.derive_seed(self._root, _check_name(name))

    def entropy(self, name: str | None = None) -> int:
        """Return the 128-bit entropy of the stream ``name`` (for custom generators)."""
        return _core.derive_entropy(self._root, _check_name(name))

    def numpy(self, name: str | None = None) -> np.random.Generator:
        """Return a fresh ``numpy.random.Generator`` for the stream ``name``."""
        import numpy as np

        return np.random.default_rng(self.entropy(name))

    def rng(self, name: str | None = None) -> _stdlib_random.Random:
        """Return a fresh ``random.Random`` for the stream ``name``."""
        import random  # here: most operations take NumPy generators or plain seeds

        return random.Random(self.entropy(name))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SeedBundle) and self._root == other._root

    def __hash__(self) -> int:
        return hash(self._root)

    def __repr__(self) -> str:
        return f"SeedBundle(base={self.base}, {self.label})"


@dataclass(frozen=True)
class SeedPlan:
    """``replicates`` independent seed bundles per parameter configuration."""

    base: int
    replicates: int = 1

    def __post_init__(self) -> None:
        _check_base(self.base)
        reps = self.replicates
        if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
            raise SeedSpecError(f"replicates must be a positive int, got {reps!r}")

    def bundle(self, replicate: int) -> SeedBundle:
        """Return the bundle of one replicate.

        Raises:
            SeedSpecError: ``replicate`` is outside ``[0, replicates)``.
        """
        if not 0 <= replicate < self.replicates:
            raise SeedSpecError(
                f"replicate {replicate} out of range for a plan with {self.replicates} replicates"
            )
        return SeedBundle.for_replicate(self.base, replicate)

    def fingerprints(self) -> list[str]:
        """Return the seed fingerprint of every replicate, in order."""
        return [_core.seed_fingerprint(self.base, r) for r in range(self.replicates)]

    def spec(self) -> dict[str, Any]:
        """Return ``{"base": base, "replicates": n}``."""
        return {"base": self.base, "replicates": self.replicates}


def seeds(base: int = 0, replicates: int = 1) -> SeedPlan:
    """Plan ``replicates`` independent runs per configuration from one base seed.

    Raises:
        SeedSpecError: ``base`` is not a 64-bit int or ``replicates < 1``.
    """
    return SeedPlan(base=base, replicates=replicates)
