"""Seed roots, seed fingerprints and derived seeds vs the reference."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference as ref
from metalab import _core
from metalab.errors import SeedSpecError

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
bases = st.integers(I64_MIN, I64_MAX) | st.integers(-3, 3)
replicates = st.integers(0, I64_MAX) | st.integers(0, 5)


@given(bases, replicates, st.text())
def test_seeds_match_reference(base: int, rep: int, name: str) -> None:
    assert _core.seed_fingerprint(base, rep) == ref.seed_fingerprint(base, rep)
    root = _core.seed_root(base, rep)
    assert root == ref.seed_root(base, rep) and len(root) == 32
    pre = _core.preprocessing_root(base)
    assert pre == ref.preprocessing_root(base) and len(pre) == 32
    assert pre != root
    for r in (root, pre):
        s = _core.derive_seed(r, name)
        assert s == ref.derive_seed(r, name) and 0 <= s < 2**32
        e = _core.derive_entropy(r, name)
        assert e == ref.derive_entropy(r, name) and 0 <= e < 2**128


@given(bases, replicates, bases, replicates)
def test_roots_never_alias(b1: int, r1: int, b2: int, r2: int) -> None:
    assert (_core.seed_root(b1, r1) == _core.seed_root(b2, r2)) == ((b1, r1) == (b2, r2))
    assert (_core.seed_fingerprint(b1, r1) == _core.seed_fingerprint(b2, r2)) == (
        (b1, r1) == (b2, r2)
    )


def test_negative_base_does_not_alias_unsigned() -> None:
    assert _core.seed_root(-1, 0) != _core.seed_root(2**32 - 1, 0)
    assert _core.seed_root(-1, 0) != _core.seed_root(I64_MAX, 0)


GOLDEN_ROOT_42_0 = "313628a54a1fd5f1520548168901569975d8eccf3bcbe9f28078c8421c79dad3"


def test_golden_seeds() -> None:
    root = _core.seed_root(42, 0)
    assert root.hex() == GOLDEN_ROOT_42_0
    assert (
        _core.seed_root(-1, 3).hex()
        == "ff225ce0237a35084fdcbf35a3732df093669bb5f494b19442cc22d97c34bf80"
    )
    assert _core.preprocessing_root(42).hex() == (
        "3ba9b9078e8c3d90b90b779f43524256953b84a9227c04d72aa25259de972623"
    )
    assert _core.seed_fingerprint(42, 0) == "57c32735e06edd2a6323d938d74968b7"
    assert _core.derive_seed(root, "torch") == 220852492
    assert _core.derive_entropy(root, "numpy") == 49977533823087154431904618171070037705
    assert ref.seed_root(42, 0).hex() == GOLDEN_ROOT_42_0


def test_derived_values_accepted_by_rngs() -> None:
    root = _core.seed_root(7, 1)
    random.seed(_core.derive_seed(root, "python"))
    random.Random(_core.derive_entropy(root, "python"))
    np = pytest.importorskip("numpy")
    np.random.RandomState(_core.derive_seed(root, "legacy"))
    np.random.default_rng(_core.derive_entropy(root, "numpy"))


@pytest.mark.parametrize("base", [2**63, -(2**63) - 1, 10**40])
def test_base_out_of_range(base: int) -> None:
    for call in (
        lambda: _core.seed_root(base, 0),
        lambda: _core.preprocessing_root(base),
        lambda: _core.seed_fingerprint(base, 0),
    ):
        with pytest.raises(SeedSpecError, match=str(base)):
            call()


@pytest.mark.parametrize("rep", [-1, 2**63])
def test_replicate_out_of_range(rep: int) -> None:
    with pytest.raises(SeedSpecError, match=str(rep)):
        _core.seed_root(0, rep)
    with pytest.raises(SeedSpecError, match=str(rep)):
        _core.seed_fingerprint(0, rep)


def test_non_int_seed_rejected() -> None:
    with pytest.raises(SeedSpecError, match="'float'"):
        _core.seed_root(1.5, 0)  # type: ignore[arg-type]
    with pytest.raises(SeedSpecError, match="'bool'"):
        _core.seed_root(True, 0)


def test_bad_root_length() -> None:
    with pytest.raises(SeedSpecError, match="5 bytes"):
        _core.derive_seed(b"short", "x")
    with pytest.raises(SeedSpecError, match="33 bytes"):
        _core.derive_entropy(b"x" * 33, "x")
