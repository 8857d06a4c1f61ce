"""Hypothesis strategies shared by the ``test_core_*`` differential tests."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1

ints = st.one_of(
    st.integers(min_value=-5, max_value=5),
    st.integers(min_value=I64_MIN, max_value=I64_MAX),
    st.sampled_from([I64_MIN, I64_MAX, I64_MIN - 1, I64_MAX + 1, 2**64, -(2**64), 10**40]),
    st.integers(),
)
# Dyadic rationals with ~17 significant digits: exact ties between two shortest decimal
# candidates happen here (e.g. 8796093022208.0625), which is where float formatters differ.
dyadic = st.builds(
    lambda n, k, neg: (-1.0 if neg else 1.0) * math.ldexp(n, -k),
    st.integers(1, 2**53),
    st.integers(0, 60),
    st.booleans(),
)
floats = st.one_of(
    dyadic,
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(
        allow_nan=False,
        allow_infinity=False,
        allow_subnormal=True,
        min_value=-1e-300,
        max_value=1e-300,
    ),
    st.sampled_from(
        [0.0, -0.0, 0.1, 1.0, 1e16, 1e-5, 5e-324, 1.7976931348623157e308, 2.5, 1e22, 123456789.0]
    ),
)
texts = st.text(st.characters(codec="utf-8"), max_size=12)
scalars: st.SearchStrategy[Any] = st.one_of(st.none(), st.booleans(), ints, floats, texts)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(texts, inner, max_size=5),
    ),
    max_leaves=25,
)
