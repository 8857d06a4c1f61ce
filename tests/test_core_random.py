"""RandomCore: counter-based trials vs the reference, bit for bit."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference as ref
from metalab import _core
from metalab.errors import ParamSpecError

I64_MIN, I64_MAX = -(2**63), 2**63 - 1

Dim = tuple[str, str, tuple[Any, ...]]


def _ordered(lo: Any, hi: Any, strict: bool) -> tuple[Any, Any]:
    lo, hi = min(lo, hi), max(lo, hi)
    if strict and lo == hi:
        hi = lo + 1 if isinstance(lo, int) else math.nextafter(lo, math.inf)
    return lo, hi


@st.composite
def dims(draw: st.DrawFn, key: str) -> Dim:
    kind = draw(
        st.sampled_from(["uniform", "loguniform", "randint", "choice", "normal", "loguniform_int"])
    )
    if kind == "uniform":
        num = st.floats(-1e6, 1e6) | st.integers(-1000, 1000)
        return key, kind, _ordered(draw(num), draw(num), strict=True)
    if kind == "loguniform":
        num = st.floats(1e-8, 1e6)
        return key, kind, _ordered(draw(num), draw(num), strict=True)
    if kind == "randint":
        num = st.integers(-100, 100) | st.integers(I64_MIN, I64_MAX)
        return key, kind, _ordered(draw(num), draw(num), strict=False)
    if kind == "choice":
        return key, kind, (draw(st.integers(1, 10) | st.integers(1, I64_MAX)),)
    if kind == "normal":
        return key, kind, (draw(st.floats(-1e6, 1e6)), draw(st.floats(1e-6, 1e3)))
    num = st.integers(1, 1000) | st.integers(1, I64_MAX)
    return key, kind, _ordered(draw(num), draw(num), strict=False)


@st.composite
def spaces(draw: st.DrawFn) -> list[Dim]:
    keys = draw(st.lists(st.text(max_size=6), min_size=1, max_size=6, unique=True))
    return [draw(dims(k)) for k in keys]


def reprs(trial: list[float | int]) -> list[str]:
    # repr distinguishes 1 from 1.0 and compares floats exactly.
    return [repr(x) for x in trial]


@given(st.integers(I64_MIN, I64_MAX), spaces(), st.integers(1, 20))
def test_trials_match_reference(seed: int, space: list[Dim], n: int) -> None:
    r = _core.RandomCore(seed, space, n)
    assert len(r) == n
    got = r.trials(0, n)
    want = [ref.trial(seed, space, i) for i in range(n)]
    assert [reprs(t) for t in got] == [reprs(t) for t in want]
    for i in (0, n - 1, -1, -n):
        assert reprs(r.trial(i)) == reprs(want[i])


@given(st.integers(I64_MIN, I64_MAX), spaces(), st.integers(1, 2**40), st.data())
def test_trial_is_pure_function_of_index(
    seed: int, space: list[Dim], n: int, data: st.DataObject
) -> None:
    r = _core.RandomCore(seed, space, n)
    i = data.draw(st.integers(-n, n - 1))
    assert reprs(r.trial(i)) == reprs(ref.trial(seed, space, i % n))
    start = data.draw(st.integers(0, n))
    stop = data.draw(st.integers(start, min(n, start + 5)))
    assert [reprs(t) for t in r.trials(start, stop)] == [
        reprs(ref.trial(seed, space, j)) for j in range(start, stop)
    ]


@given(st.integers(I64_MIN, I64_MAX), spaces())
def test_values_in_range(seed: int, space: list[Dim]) -> None:
    for t in _core.RandomCore(seed, space, 8).trials(0, 8):
        for (_, kind, args), x in zip(space, t, strict=True):
            if kind in ("uniform", "loguniform"):
                assert isinstance(x, float) and args[0] <= x <= args[1]
            elif kind in ("randint", "loguniform_int"):
                assert type(x) is int and args[0] <= x <= args[1]
            elif kind == "choice":
                assert type(x) is int and 0 <= x < args[0]
            else:
                assert isinstance(x, float) and math.isfinite(x)


SPACE: list[Dim] = [
    ("lr", "loguniform", (1e-4, 1e-1)),
    ("dropout", "uniform", (0.0, 0.5)),
    ("layers", "randint", (1, 8)),
    ("act", "choice", (3,)),
    ("noise", "normal", (0.0, 1.0)),
    ("width", "loguniform_int", (16, 1024)),
]
GOLDEN_TRIALS = [
    [0.030110481621651836, 0.4467659394977371, 1, 2, 2.113453200059385, 375],
    [0.0001478926210646358, 0.25188533766433197, 8, 0, -0.32165173369482325, 353],
    [0.005178391299994708, 0.2827731254488711, 4, 2, 0.28425556752841385, 808],
]


def test_golden_trials() -> None:
    assert [hex(x) for x in ref.draw(42, 0, "lr")] == ["0xd3846a18f34cbaa8", "0x6ba1cf7d93013ce1"]
    r = _core.RandomCore(42, SPACE, 3)
    assert [reprs(t) for t in r.trials(0, 3)] == [reprs(t) for t in GOLDEN_TRIALS]
    assert [reprs(ref.trial(42, SPACE, i)) for i in range(3)] == [reprs(t) for t in GOLDEN_TRIALS]


def test_seed_changes_everything() -> None:
    a = _core.RandomCore(1, SPACE, 4).trials(0, 4)
    b = _core.RandomCore(2, SPACE, 4).trials(0, 4)
    assert a != b


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dim", "needle"),
    [
        (("x", "uniform", (2.5, 1.0)), "2.5"),
        (("x", "uniform", (1.0, 1.0)), "lo < hi"),
        (("x", "uniform", (0.0, math.inf)), "inf"),
        (("x", "uniform", (math.nan, 1.0)), "nan"),
        (("x", "loguniform", (0.0, 1.0)), "lo = 0.0"),
        (("x", "loguniform", (-3.5, 1.0)), "-3.5"),
        (("x", "randint", (7, 3)), "lo = 7"),
        (("x", "randint", (0.5, 3)), "0.5"),
        (("x", "randint", (0, 2**64)), "18446744073709551616"),
        (("x", "loguniform_int", (0, 5)), "lo = 0"),
        (("x", "choice", (0,)), "n_options = 0"),
        (("x", "choice", (1, 2)), "expected 1 argument"),
        (("x", "normal", (0.0, -0.25)), "-0.25"),
        (("x", "normal", (0.0, 0.0)), "sigma > 0"),
        (("x", "beta", (1.0, 1.0)), "'beta'"),
        (("x", "uniform", ("a", 1.0)), "'a'"),
        (("x", "uniform", (True, 2.0)), "bool"),
    ],
)
def test_bad_dimension_named(dim: Dim, needle: str) -> None:
    with pytest.raises(ParamSpecError) as ei:
        _core.RandomCore(0, [dim], 1)
    msg = str(ei.value)
    assert needle in msg
    assert "'x'" in msg


@pytest.mark.parametrize("n", [0, -3])
def test_bad_n_trials(n: int) -> None:
    with pytest.raises(ParamSpecError, match=f"n_trials = {n}"):
        _core.RandomCore(0, SPACE, n)


@pytest.mark.parametrize("seed", [2**63, -(2**63) - 1, 10**30])
def test_seed_out_of_range(seed: int) -> None:
    with pytest.raises(ParamSpecError, match=str(seed)):
        _core.RandomCore(seed, SPACE, 1)


def test_duplicate_key() -> None:
    with pytest.raises(ParamSpecError, match="'lr' appears twice"):
        _core.RandomCore(0, [("lr", "uniform", (0, 1)), ("lr", "uniform", (0, 1))], 1)


def test_index_errors() -> None:
    r = _core.RandomCore(0, SPACE, 5)
    for bad in (5, -6, 2**70):
        with pytest.raises(IndexError, match=str(bad)):
            r.trial(bad)
    with pytest.raises(IndexError):
        r.trials(0, 6)
    with pytest.raises(IndexError):
        r.trials(3, 2)
    assert r.trials(5, 5) == []
