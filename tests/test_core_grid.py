"""GridCore: mixed-radix decoding and composed params fingerprints vs enumeration."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference as ref
from core_strategies import scalars, texts, values
from metalab import _core
from metalab.errors import EncodingError, ParamSpecError


@st.composite
def grids(
    draw: st.DrawFn, max_axes: int = 4, max_len: int = 4
) -> tuple[list[str], list[list[Any]]]:
    keys = draw(st.lists(texts, min_size=1, max_size=max_axes, unique=True))
    axes = [
        draw(st.lists(values, min_size=1, max_size=max_len, unique_by=ref.encode)) for _ in keys
    ]
    return keys, axes


@given(grids())
def test_grid_matches_product_enumeration(spec: tuple[list[str], list[list[Any]]]) -> None:
    keys, axes = spec
    g = _core.GridCore(keys, axes)
    points = ref.grid_points(keys, axes)
    assert len(g) == math.prod(len(a) for a in axes) == len(points)
    assert g.indices_range(0, len(g)) == [pos for pos, _ in points]
    fps = g.fingerprints(0, len(g))
    assert fps == [ref.fingerprint(d) for _, d in points]
    assert fps == [_core.fingerprint(d) for _, d in points]


@given(grids(max_axes=5, max_len=6), st.data())
def test_grid_random_access(spec: tuple[list[str], list[list[Any]]], data: st.DataObject) -> None:
    keys, axes = spec
    g = _core.GridCore(keys, axes)
    n = len(g)
    enumerated = [list(p) for p in itertools.product(*[range(len(a)) for a in axes])]
    full = g.fingerprints(0, n)
    for _ in range(5):
        i = data.draw(st.integers(min_value=-n, max_value=n - 1))
        assert g.indices(i) == enumerated[i]
        start = data.draw(st.integers(min_value=0, max_value=n))
        stop = data.draw(st.integers(min_value=start, max_value=n))
        assert g.fingerprints(start, stop) == full[start:stop]
        assert g.indices_range(start, stop) == enumerated[start:stop]


def test_last_axis_varies_fastest() -> None:
    g = _core.GridCore(["a", "b"], [[1, 2], ["x", "y", "z"]])
    assert [g.indices(i) for i in range(6)] == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    assert g.indices(-1) == [1, 2]
    assert g.indices(-6) == [0, 0]


def test_fingerprint_independent_of_key_order_and_large_grid() -> None:
    a = _core.GridCore(["lr", "bs"], [[0.1, 0.01], [16, 32]])
    b = _core.GridCore(["bs", "lr"], [[16, 32], [0.1, 0.01]])
    assert sorted(a.fingerprints(0, 4)) == sorted(b.fingerprints(0, 4))
    big = _core.GridCore(["i", "j", "k"], [list(range(1000)), list(range(1000)), list(range(1000))])
    assert len(big) == 10**9
    i = 123_456_789
    assert big.indices(i) == [123, 456, 789]
    assert big.fingerprints(i, i + 1) == [ref.fingerprint({"i": 123, "j": 456, "k": 789})]


def test_values_that_differ_only_in_type_are_distinct() -> None:
    g = _core.GridCore(["x"], [[1, 1.0, True, "1", None, 0, False, -0.0, 0.0]])
    assert len(set(g.fingerprints(0, len(g)))) == len(g) == 9


# --- errors -----------------------------------------------------------------------------


def test_index_errors() -> None:
    g = _core.GridCore(["a"], [[1, 2, 3]])
    for bad in (3, -4, 10**30, -(10**30)):
        with pytest.raises(IndexError, match=str(bad)):
            g.indices(bad)
    for start, stop in ((0, 4), (2, 1), (-1, 2)):
        with pytest.raises(IndexError):
            g.fingerprints(start, stop)
        with pytest.raises(IndexError):
            g.indices_range(start, stop)
    assert g.fingerprints(3, 3) == []
    with pytest.raises(TypeError):
        g.indices("0")  # type: ignore[arg-type]


def test_empty_axis_names_key() -> None:
    with pytest.raises(ParamSpecError, match=r"'beta'.*empty"):
        _core.GridCore(["alpha", "beta"], [[1], []])


def test_no_axes() -> None:
    with pytest.raises(ParamSpecError, match="at least one axis"):
        _core.GridCore([], [])


def test_duplicate_value_names_key_and_value() -> None:
    with pytest.raises(ParamSpecError) as ei:
        _core.GridCore(["lr"], [[0.125, 0.5, 0.125]])
    msg = str(ei.value)
    assert "'lr'" in msg and "0.125" in msg and "0 and 2" in msg
    with pytest.raises(ParamSpecError, match=r"\(1, 2\) at positions 0 and 1"):
        _core.GridCore(["x"], [[[1, 2], (1, 2)]])


def test_duplicate_and_bad_keys() -> None:
    with pytest.raises(ParamSpecError, match="'k' appears twice"):
        _core.GridCore(["k", "k"], [[1], [2]])
    with pytest.raises(ParamSpecError, match="3 keys but 2 axes"):
        _core.GridCore(["a", "b", "c"], [[1], [2]])
    with pytest.raises(ParamSpecError, match="'int'"):
        _core.GridCore([5], [[1]])  # type: ignore[list-item]


def test_unencodable_value_names_grid_path() -> None:
    with pytest.raises(EncodingError) as ei:
        _core.GridCore(["a", "lr"], [[1], [0.1, 0.2, math.nan]])
    assert "grid['lr'][2]" in str(ei.value) and "nan" in str(ei.value)
    with pytest.raises(EncodingError, match=r"'set' at grid\['opt'\]\[0\]\['x'\]"):
        _core.GridCore(["opt"], [[{"x": {1}}]])


@given(st.lists(scalars, min_size=2, max_size=6))
def test_duplicates_detected_exactly_by_encoding(axis: list[Any]) -> None:
    encs = [ref.encode(v) for v in axis]
    if len(set(encs)) == len(encs):
        assert len(_core.GridCore(["k"], [axis])) == len(axis)
    else:
        with pytest.raises(ParamSpecError, match="duplicate value"):
            _core.GridCore(["k"], [axis])
