"""``source[i]`` of every parameter source: the ParamSource contract, whatever answers it."""

from __future__ import annotations

import collections
import copy
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import metalab
from metalab.params import ParamSource

SOURCES: dict[str, Callable[[], ParamSource]] = {
    "grid": lambda: metalab.grid(a=[1, 2, 3], b=["x", "y"], c=[[1, 2], None]),
    "random": lambda: metalab.random(
        {
            "u": metalab.uniform(0, 1),
            "k": metalab.choice(["p", [1, 2]]),
            "n": metalab.randint(0, 9),
        },
        n_trials=7,
        seed=3,
    ),
    "manual": lambda: metalab.manual([{"a": 1, "b": [1, {"c": 2}]}, {"a": 2}, {"z": None}]),
}


@pytest.fixture(params=sorted(SOURCES))
def source(request: pytest.FixtureRequest) -> ParamSource:
    return SOURCES[request.param]()


def test_index_matches_iteration_and_counts_from_the_end(source: ParamSource) -> None:
    every = list(source)
    assert len(every) == len(source)
    assert [source[i] for i in range(len(source))] == every
    assert [source[-i] for i in range(1, len(source) + 1)] == every[::-1]


@pytest.mark.parametrize("bad", [True, False, 1.0, "0", None, np.int64(0)])
def test_a_non_int_index_is_a_type_error(source: ParamSource, bad: Any) -> None:
    with pytest.raises(
        TypeError, match=f"parameter index must be an int, got {type(bad).__name__}"
    ):
        source[bad]


@pytest.mark.parametrize("offset", [0, 1, 10**40])
def test_an_index_past_either_end_is_an_index_error(source: ParamSource, offset: int) -> None:
    size = len(source)
    for index in (size + offset, -size - 1 - offset):
        with pytest.raises(IndexError, match=f"parameter index {index} out of range for {size} "):
            source[index]


def test_each_lookup_is_a_fresh_dict(source: ParamSource) -> None:
    first = source[0]
    first["added"] = True
    assert "added" not in source[0]


def test_grid_points_follow_itertools_product_with_plain_values() -> None:
    axes = {"i": np.arange(4), "f": [np.float64(0.5), 1.5], "s": [np.str_("a"), "b", "c"]}
    g = metalab.grid(**axes)
    expected = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    assert [g[i] for i in range(len(g))] == expected
    # NumPy values come back as the Python values they fingerprint as.
    assert {type(v) for i in range(len(g)) for v in g[i].values()} == {int, float, str}
    assert repr(g) == "GridSource(n=24)"
    # Answered by the Rust object itself, with no Python method in between.
    assert type(g).__getitem__ is metalab._core.GridCore.__getitem__
    assert g.fingerprints() == [metalab.identity.fingerprint(p) for p in expected]


@pytest.mark.parametrize(
    ("make", "core"),
    [
        (SOURCES["grid"], metalab._core.GridCore),
        (SOURCES["random"], metalab._core.RandomCore),
        (SOURCES["manual"], metalab._core.ManualCore),
    ],
)
def test_lookups_are_answered_by_the_rust_object(
    make: Callable[[], ParamSource], core: type
) -> None:
    source = make()
    assert isinstance(source, core)
    assert type(source).__getitem__ is core.__getitem__
    assert repr(source) == f"{type(source).__name__}(n={len(source)})"


def test_random_choice_hands_out_the_option_itself() -> None:
    options = [[1, 2], {"k": "v"}, "plain"]
    r = metalab.random({"c": metalab.choice(options), "u": metalab.uniform(0, 1)}, 50, seed=9)
    indices = [row[0] for row in r.trials(0, len(r))]
    assert [r[i]["c"] for i in range(len(r))] == [options[int(k)] for k in indices]
    assert [r[i]["u"] for i in range(len(r))] == [row[1] for row in r.trials(0, len(r))]


def test_random_core_refuses_options_that_do_not_fit_the_space() -> None:
    space = [("c", "choice", (2,)), ("u", "uniform", (0.0, 1.0))]
    with pytest.raises(ValueError, match="options has 1 entries for 2 keys"):
        metalab._core.RandomCore(0, space, 3, [None])
    with pytest.raises(ValueError, match=r"options\['u'\] lists 1 values"):
        metalab._core.RandomCore(0, space, 3, [["a", "b"], [1]])
    with pytest.raises(ValueError, match=r"options\['c'\] lists 3 values"):
        metalab._core.RandomCore(0, space, 3, [["a", "b", "c"], None])
    # Without options a choice holds its option index, as trial() does.
    assert metalab._core.RandomCore(0, space, 3)[0]["c"] in (0, 1)


def test_manual_copies_are_deep_and_keep_container_types() -> None:
    ordered = collections.OrderedDict(x=[1, 2])
    m = metalab.manual([{"nested": {"list": [1, [2, 3]], "tuple": (4, [5])}, "od": ordered}])
    first = m[0]
    first["nested"]["list"][1].append(99)
    first["nested"]["tuple"][1].append(99)
    first["od"]["x"].append(99)
    again = m[0]
    assert again == {"nested": {"list": [1, [2, 3]], "tuple": (4, [5])}, "od": ordered}
    assert again == copy.deepcopy(m[0])
    assert type(again["od"]) is collections.OrderedDict and type(again["nested"]["tuple"]) is tuple
