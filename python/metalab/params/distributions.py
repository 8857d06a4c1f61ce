"""Distributions for :func:`metalab.random`; sampling itself happens in the Rust core."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from metalab.errors import EncodingError, ParamSpecError
from metalab.identity import canonical_encode, to_plain

__all__ = [
    "Choice",
    "Distribution",
    "LogUniform",
    "LogUniformInt",
    "Normal",
    "RandInt",
    "Uniform",
    "choice",
    "distribution_from_spec",
    "loguniform",
    "loguniform_int",
    "normal",
    "randint",
    "uniform",
]


def unwrap_numpy(value: object) -> object:
    """A NumPy scalar as the Python value it equals (``np.int64(3)`` -> ``3``), else ``value``."""
    if type(value).__module__ != "numpy":
        return value
    try:
        return to_plain(value)
    except EncodingError:  # datetime64, complex, ...: left for the caller to refuse
        return value


def _finite(kind: str, name: str, value: object) -> float:
    number = unwrap_numpy(value)
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise ParamSpecError(f"{kind}() {name} must be a number, got {value!r}")
    if not math.isfinite(number):
        raise ParamSpecError(f"{kind}() {name} must be finite, got {value!r}")
    return float(number)


def _integer(kind: str, name: str, value: object) -> int:
    number = unwrap_numpy(value)
    if isinstance(number, bool) or not isinstance(number, int):
        raise ParamSpecError(f"{kind}() {name} must be an int, got {value!r}")
    return number


def _plain_fields(dist: Distribution, *names: str) -> None:
    """Store NumPy-typed bounds as Python numbers (specs are JSON; frozen dataclasses)."""
    for name in names:
        object.__setattr__(dist, name, unwrap_numpy(getattr(dist, name)))


class Distribution:
    """A one-dimensional distribution sampled by index-addressed random sources."""

    kind: str = ""

    def core_args(self) -> tuple[float | int, ...]:
        """Return the numeric arguments handed to the Rust sampler."""
        raise NotImplementedError

    def to_value(self, raw: float | int) -> Any:
        """Map a raw sample from the Rust core to the user-facing value."""
        return raw

    def spec(self) -> dict[str, Any]:
        """Return a JSON-serialisable description of this distribution."""
        return {"kind": self.kind, "args": list(self.core_args())}


@dataclass(frozen=True)
class Uniform(Distribution):
    """Uniform on ``[low, high)``."""

    low: float
    high: float
    kind = "uniform"

    def __post_init__(self) -> None:
        _plain_fields(self, "low", "high")
        low, high = _finite("uniform", "low", self.low), _finite("uniform", "high", self.high)
        if not low < high:
            raise ParamSpecError(f"uniform() needs low < high, got low={low!r}, high={high!r}")

    def core_args(self) -> tuple[float, ...]:
        return (float(self.low), float(self.high))


@dataclass(frozen=True)
class LogUniform(Distribution):
    """Log-uniform on ``[low, high)``, both bounds strictly positive."""

    low: float
    high: float
    kind = "loguniform"

    def __post_init__(self) -> None:
        _plain_fields(self, "low", "high")
        low, high = _finite("loguniform", "low", self.low), _finite("loguniform", "high", self.high)
        if low <= 0:
            raise ParamSpecError(f"loguniform() needs low > 0, got low={low!r}")
        if not low < high:
            raise ParamSpecError(f"loguniform() needs low < high, got low={low!r}, high={high!r}")

    def core_args(self) -> tuple[float, ...]:
        return (float(self.low), float(self.high))


@dataclass(frozen=True)
class Normal(Distribution):
    """Normal with mean ``mu`` and standard deviation ``sigma > 0``."""

    mu: float
    sigma: float
    kind = "normal"

    def __post_init__(self) -> None:
        _plain_fields(self, "mu", "sigma")
        _finite("normal", "mu", self.mu)
        if _finite("normal", "sigma", self.sigma) <= 0:
            raise ParamSpecError(f"normal() needs sigma > 0, got sigma={self.sigma!r}")

    def core_args(self) -> tuple[float, ...]:
        return (float(self.mu), float(self.sigma))


@dataclass(frozen=True)
class RandInt(Distribution):
    """Uniform integer on ``[low, high]`` (both inclusive)."""

    low: int
    high: int
    kind = "randint"

    def __post_init__(self) -> None:
        _plain_fields(self, "low", "high")
        low, high = _integer("randint", "low", self.low), _integer("randint", "high", self.high)
        if low > high:
            raise ParamSpecError(f"randint() needs low <= high, got low={low!r}, high={high!r}")

    def core_args(self) -> tuple[int, ...]:
        return (self.low, self.high)


@dataclass(frozen=True)
class LogUniformInt(Distribution):
    """Integer on ``[low, high]`` (inclusive) with log-uniform density, ``low >= 1``."""

    low: int
    high: int
    kind = "loguniform_int"

    def __post_init__(self) -> None:
        _plain_fields(self, "low", "high")
        low = _integer("loguniform_int", "low", self.low)
        high = _integer("loguniform_int", "high", self.high)
        if low < 1:
            raise ParamSpecError(f"loguniform_int() needs low >= 1, got low={low!r}")
        if low > high:
            raise ParamSpecError(
                f"loguniform_int() needs low <= high, got low={low!r}, high={high!r}"
            )

    def core_args(self) -> tuple[int, ...]:
        return (self.low, self.high)


class Choice(Distribution):
    """Uniform choice among a list of distinct, canonically encodable options."""

    kind = "choice"

    def __init__(self, options: Iterable[Any]) -> None:
        if isinstance(options, str | bytes | dict):
            raise ParamSpecError(f"choice() expects a list of options, got {options!r}")
        self.options = list(options)
        if not self.options:
            raise ParamSpecError("choice() needs at least one option, got an empty list")
        seen: dict[bytes, Any] = {}
        for option in self.options:
            encoded = canonical_encode(option)
            if encoded in seen:
                raise ParamSpecError(f"choice() lists the option {option!r} more than once")
            seen[encoded] = option
        # NumPy options (choice(np.arange(3))) become the Python values they encode as.
        self.options = [to_plain(option) for option in self.options]

    def core_args(self) -> tuple[int, ...]:
        return (len(self.options),)

    def to_value(self, raw: float | int) -> Any:
        return self.options[int(raw)]

    def spec(self) -> dict[str, Any]:
        return {"kind": "choice", "options": list(self.options)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Choice) and self.options == other.options

    def __hash__(self) -> int:
        return hash(tuple(map(repr, self.options)))

    def __repr__(self) -> str:
        return f"Choice({self.options!r})"


def uniform(low: float, high: float) -> Uniform:
    """Uniform float on ``[low, high)``. Raises ParamSpecError unless ``low < high``."""
    return Uniform(low, high)


def loguniform(low: float, high: float) -> LogUniform:
    """Log-uniform float on ``[low, high)``. Raises ParamSpecError unless ``0 < low < high``."""
    return LogUniform(low, high)


def normal(mu: float, sigma: float) -> Normal:
    """Normal float. Raises ParamSpecError unless ``sigma > 0``."""
    return Normal(mu, sigma)


def randint(low: int, high: int) -> RandInt:
    """Integer on ``[low, high]`` inclusive. Raises ParamSpecError unless ``low <= high``."""
    return RandInt(low, high)


def loguniform_int(low: int, high: int) -> LogUniformInt:
    """Log-uniform integer on ``[low, high]``. Raises ParamSpecError unless ``1 <= low <= high``."""
    return LogUniformInt(low, high)


def choice(options: Iterable[Any]) -> Choice:
    """Uniform choice among ``options``. Raises ParamSpecError if empty or repeated."""
    return Choice(options)


_BY_KIND: dict[str, type[Distribution]] = {
    "uniform": Uniform,
    "loguniform": LogUniform,
    "normal": Normal,
    "randint": RandInt,
    "loguniform_int": LogUniformInt,
}


def distribution_from_spec(spec: dict[str, Any]) -> Distribution:
    """Rebuild a distribution from :meth:`Distribution.spec` output."""
    kind = spec.get("kind")
    if kind == "choice":
        return Choice(spec["options"])
    if kind not in _BY_KIND:
        raise ParamSpecError(f"unknown distribution kind {kind!r}")
    return _BY_KIND[kind](*spec["args"])
