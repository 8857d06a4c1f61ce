"""Canonical encoding and fingerprints: Rust vs the pure-Python reference."""

from __future__ import annotations

import json
import math
import random
import struct
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference as ref
from core_strategies import floats, scalars, texts, values
from metalab import _core, errors
from metalab.errors import EncodingError


@given(values)
def test_encode_matches_reference(v: Any) -> None:
    assert _core.canonical_encode(v) == ref.encode(v)


@given(values)
def test_fingerprint_matches_reference(v: Any) -> None:
    fp = _core.fingerprint(v)
    assert fp == ref.fingerprint(v)
    assert len(fp) == _core.FINGERPRINT_HEX_CHARS
    assert int(fp, 16) >= 0


@given(st.lists(values, max_size=6))
def test_fingerprint_many_matches_singles(vs: list[Any]) -> None:
    assert _core.fingerprint_many(vs) == [ref.fingerprint(v) for v in vs]


@given(floats)
def test_float_text_round_trips_and_matches(x: float) -> None:
    enc = _core.canonical_encode(x)
    assert enc[:1] == b"f"
    (n,) = struct.unpack(">I", enc[1:5])
    text = enc[5:].decode("ascii")
    assert len(text) == n
    assert text == ref.float_text(x)
    back = float(text)
    assert back == x and math.copysign(1.0, back) == math.copysign(1.0, x)


@given(values, values)
def test_equal_encodings_mean_equal_values(a: Any, b: Any) -> None:
    def tagged(v: Any) -> Any:
        if isinstance(v, bool) or v is None:
            return ("b", v)
        if isinstance(v, int):
            return ("i", v)
        if isinstance(v, float):
            return ("f", v.hex())
        if isinstance(v, str):
            return ("s", v)
        if isinstance(v, (list, tuple)):
            return ("l", tuple(tagged(x) for x in v))
        return ("d", tuple(sorted((k, tagged(x)) for k, x in v.items())))

    assert (_core.canonical_encode(a) == _core.canonical_encode(b)) == (tagged(a) == tagged(b))


def test_float_text_bulk() -> None:
    """Random bit patterns, dyadic ties and short decimals, all in one encoding."""
    rng = random.Random(20240601)
    xs: list[float] = []
    for i in range(30_000):
        kind = i % 3
        if kind == 0:
            x = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        elif kind == 1:
            x = math.ldexp(rng.randrange(1, 2**53), -rng.randrange(0, 64))
        else:
            x = float(f"{rng.randrange(1, 10 ** rng.randrange(1, 18))}e{rng.randrange(-30, 30)}")
        if math.isfinite(x):
            xs.append(x)
    assert _core.canonical_encode(xs) == ref.encode(xs)
    # The tie Rust's own `{:e}` breaks upwards; Python's repr (and the spec) go to even.
    assert _core.canonical_encode(8796093022208.0625) == b"f\x00\x00\x00\x148.796093022208062e12"


def test_types_never_alias() -> None:
    encs = [
        _core.canonical_encode(v) for v in (1, 1.0, True, "1.0", "1", None, False, 0, 0.0, -0.0)
    ]
    assert len(set(encs)) == len(encs)
    assert _core.canonical_encode((1, 2)) == _core.canonical_encode([1, 2])
    assert _core.canonical_encode({"b": 1, "a": 2}) == _core.canonical_encode({"a": 2, "b": 1})


def test_golden_encodings() -> None:
    assert _core.canonical_encode(None) == b"N"
    assert _core.canonical_encode(True) == b"T"
    assert _core.canonical_encode(False) == b"F"
    assert _core.canonical_encode(1) == b"i\x00\x00\x00\x00\x00\x00\x00\x01"
    assert _core.canonical_encode(-1) == b"i" + b"\xff" * 8
    assert _core.canonical_encode(1.0) == b"f\x00\x00\x00\x031e0"
    assert _core.canonical_encode(0.1) == b"f\x00\x00\x00\x041e-1"
    assert _core.canonical_encode(-0.0) == b"f\x00\x00\x00\x04-0e0"
    assert _core.canonical_encode(2**64) == b"I\x00\x00\x00\x1418446744073709551616"
    assert _core.canonical_encode("é") == b"s\x00\x00\x00\x02\xc3\xa9"
    assert _core.canonical_encode([None]) == b"l\x00\x00\x00\x01N"
    assert (
        _core.canonical_encode(
            {"lr": 0.1, "layers": [64, 64], "act": "relu", "dropout": None}
        ).hex()
        == "64000000047300000003616374730000000472656c75730000000764726f706f75744e73000000066c61"
        "796572736c0000000269000000000000004069000000000000004073000000026c72660000000431652d31"
    )


GOLDEN_FINGERPRINTS = [
    (None, "a12301538aeef45bfd8b781ed8b2b255"),
    (1, "4bbbea84d602a08085f1cc6dacbc6985"),
    (1.0, "743c80937d6bc7ad98bda141fdee70be"),
    (True, "18622aa83e44bc4d2cc0f8ba59ade393"),
    ("1.0", "f991b23858021f16af6a9534667cc0f4"),
    (-0.0, "344d9ca1506fff9646245d9cc6ff77d4"),
    (2**64, "572d5947bfc5f205b530ce18349c53e3"),
    (0.1, "9dd33adfa05e1f5bc1157d1283cfaf74"),
    (
        {"lr": 0.1, "layers": [64, 64], "act": "relu", "dropout": None},
        "6ca284325362d6a8e13b926d0c527865",
    ),
]


@pytest.mark.parametrize(("value", "expected"), GOLDEN_FINGERPRINTS)
def test_golden_fingerprints(value: Any, expected: str) -> None:
    assert _core.fingerprint(value) == expected
    assert ref.fingerprint(value) == expected


def test_golden_run_id() -> None:
    ctx = _core.fingerprint({"dataset": "iris"})
    params = _core.fingerprint({"lr": 0.1})
    seed = _core.seed_fingerprint(42, 0)
    assert (ctx, params, seed) == (
        "3ca24cd42a9182c035389262f9d64b5b",
        "ee798fca16cca60c9b0a0ede9fd6c2ce",
        "57c32735e06edd2a6323d938d74968b7",
    )
    assert _core.run_id("exp1", ctx, params, seed) == "94183226a8c801a4849633c4cf237a4f"
    assert ref.run_id("exp1", ctx, params, seed) == "94183226a8c801a4849633c4cf237a4f"


@given(st.text(), st.text(), st.text(), st.text())
def test_run_id_matches_reference(e: str, c: str, p: str, s: str) -> None:
    assert _core.run_id(e, c, p, s) == ref.run_id(e, c, p, s)


def test_module_constants() -> None:
    assert _core.ENCODING_VERSION == 1
    assert _core.FINGERPRINT_HEX_CHARS == 32
    assert isinstance(_core.__version__, str) and _core.__version__


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_float_names_nested_path(bad: float) -> None:
    with pytest.raises(EncodingError) as ei:
        _core.fingerprint({"a": [1, {"b": bad}]})
    msg = str(ei.value)
    assert "value['a'][1]['b']" in msg
    assert repr(bad) in msg
    assert "finite" in msg


def test_non_str_key_names_path_and_key() -> None:
    with pytest.raises(EncodingError) as ei:
        _core.canonical_encode({"outer": {17: "x"}})
    msg = str(ei.value)
    assert "value['outer']" in msg and "17" in msg and "'int'" in msg and "str keys" in msg


def test_unsupported_type_names_path_and_type() -> None:
    with pytest.raises(EncodingError) as ei:
        _core.canonical_encode({"x": [0, {1, 2}]})
    msg = str(ei.value)
    assert "'set'" in msg and "value['x'][1]" in msg
    assert "expected None, bool, int, float, str, list, tuple or dict with str keys" in msg
    with pytest.raises(EncodingError, match="'object'"):
        _core.fingerprint(object())
    with pytest.raises(EncodingError, match="'bytes'"):
        _core.fingerprint(b"raw")


def test_fingerprint_many_names_item() -> None:
    with pytest.raises(EncodingError, match=r"values\[1\]\['k'\]"):
        _core.fingerprint_many([1, {"k": math.nan}])


def test_surrogates_rejected() -> None:
    with pytest.raises(EncodingError, match="UTF-8"):
        _core.canonical_encode(["\ud800"])


def test_cycles_and_depth_rejected() -> None:
    cyc: list[Any] = []
    cyc.append(cyc)
    with pytest.raises(EncodingError, match="nested"):
        _core.canonical_encode(cyc)
    deep: Any = None
    for _ in range(ref.MAX_DEPTH):
        deep = [deep]
    assert _core.canonical_encode(deep) == ref.encode(deep)
    with pytest.raises(EncodingError):
        _core.canonical_encode([deep])


def test_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        _core.fingerprint(math.nan)


# --- numpy ------------------------------------------------------------------------------


def test_numpy_normalised() -> None:
    np = pytest.importorskip("numpy")
    cases = [
        (np.int64(3), 3),
        (np.int8(-2), -2),
        (np.uint64(2**64 - 1), 2**64 - 1),
        (np.float32(0.1), float(np.float32(0.1))),
        (np.float64(2.5), 2.5),
        (np.bool_(True), True),
        (np.array(7), 7),
        (np.arange(3), [0, 1, 2]),
        (np.array([[1.5, 2.0], [3.0, 4.0]]), [[1.5, 2.0], [3.0, 4.0]]),
        ({"w": np.array([True, False])}, {"w": [True, False]}),
        (np.str_("abc"), "abc"),
    ]
    for npv, plain in cases:
        assert _core.canonical_encode(npv) == _core.canonical_encode(plain)
        assert _core.canonical_encode(npv) == ref.encode(npv)
    with pytest.raises(EncodingError, match=r"value\[1\]"):
        _core.fingerprint([0, np.float64("nan")])


# --- numpy values vs their Python equivalents and the oracle ----------------------------

try:
    import numpy
except ImportError:  # pragma: no cover - numpy is part of the dev environment (all extras)
    numpy = None  # type: ignore[assignment]

needs_numpy = pytest.mark.skipif(numpy is None, reason="needs numpy")

_INT_TYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def _int_pair(name: str) -> st.SearchStrategy[tuple[Any, Any]]:
    info = numpy.iinfo(name)
    return st.integers(int(info.min), int(info.max)).map(lambda n: (numpy.dtype(name).type(n), n))


def _numpy_leaves() -> st.SearchStrategy[tuple[Any, Any]]:
    """(NumPy value, the Python value it must count as), the second built without NumPy."""
    f64 = st.floats(allow_nan=False, allow_infinity=False)
    f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
    f16 = st.floats(width=16, allow_nan=False, allow_infinity=False)
    small_ints = st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)
    return st.one_of(
        *[_int_pair(name) for name in _INT_TYPES],
        f64.map(lambda x: (numpy.float64(x), x)),
        f32.map(lambda x: (numpy.float32(x), x)),
        f16.map(lambda x: (numpy.float16(x), x)),
        st.booleans().map(lambda b: (numpy.bool_(b), b)),
        texts.map(lambda s: (numpy.str_(s), s)),
        f64.map(lambda x: (numpy.array(x), x)),  # 0-d arrays count as their scalar
        st.integers(-(2**63), 2**63 - 1).map(lambda n: (numpy.array(n, dtype=numpy.int64), n)),
        small_ints.map(lambda xs: (numpy.array(xs, dtype=numpy.int64), xs)),
        st.lists(st.booleans(), max_size=4).map(lambda xs: (numpy.array(xs, dtype=bool), xs)),
        st.lists(f64, min_size=1, max_size=3).map(
            lambda xs: (numpy.array([xs, xs]), [list(xs), list(xs)])
        ),
        # Object arrays hold NumPy scalars of their own: normalised all the way down.
        st.lists(st.integers(-100, 100), max_size=3).map(
            lambda xs: (numpy.array([numpy.int16(x) for x in xs] + ["a"], dtype=object), [*xs, "a"])
        ),
    )


def _pairs(inner: st.SearchStrategy[tuple[Any, Any]]) -> st.SearchStrategy[tuple[Any, Any]]:
    def as_dict(items: dict[str, tuple[Any, Any]]) -> tuple[Any, Any]:
        return {k: a for k, (a, _) in items.items()}, {k: b for k, (_, b) in items.items()}

    return st.one_of(
        st.lists(inner, max_size=4).map(lambda ps: ([a for a, _ in ps], [b for _, b in ps])),
        st.lists(inner, max_size=3).map(
            lambda ps: (tuple(a for a, _ in ps), tuple(b for _, b in ps))
        ),
        st.dictionaries(texts, inner, max_size=4).map(as_dict),
    )


numpy_pairs: st.SearchStrategy[tuple[Any, Any]] = st.deferred(
    lambda: st.recursive(
        st.one_of(_numpy_leaves(), scalars.map(lambda v: (v, v))), _pairs, max_leaves=12
    )
)


def _exact(v: Any) -> Any:
    """A comparison key that tells types apart (np.float64(1) vs 1.0, tuple vs list)."""
    if isinstance(v, list | tuple):
        return (type(v).__name__, tuple(_exact(x) for x in v))
    if isinstance(v, dict):
        return ("dict", tuple((k, _exact(x)) for k, x in v.items()))
    if isinstance(v, float):
        return (type(v).__name__, v.hex())
    return (type(v).__name__, v)


@needs_numpy
@given(numpy_pairs)
def test_numpy_values_encode_like_their_python_values(pair: tuple[Any, Any]) -> None:
    with_numpy, plain = pair
    expected = ref.encode(plain)
    assert _core.canonical_encode(with_numpy) == expected
    assert ref.encode(with_numpy) == expected
    assert _core.fingerprint(with_numpy) == _core.fingerprint(plain)


@needs_numpy
@given(numpy_pairs)
def test_to_plain_gives_python_values_matching_the_oracle(pair: tuple[Any, Any]) -> None:
    with_numpy, plain = pair
    out = _core.to_plain(with_numpy, "params")
    assert _exact(out) == _exact(plain) == _exact(ref.plain(with_numpy))
    assert _core.canonical_encode(out) == _core.canonical_encode(with_numpy)
    json.dumps(out, allow_nan=False)  # JSON-ready: no TypeError for NumPy leftovers


@given(values)
def test_to_plain_keeps_values_without_numpy_as_they_are(v: Any) -> None:
    assert _core.to_plain(v) is v


@needs_numpy
def test_numpy_scalars_fingerprint_like_python_golden() -> None:
    assert _core.fingerprint(numpy.float64(0.5)) == _core.fingerprint(0.5)
    assert _core.fingerprint(numpy.int64(3)) == _core.fingerprint(3)
    assert _core.fingerprint(numpy.bool_(True)) == _core.fingerprint(True)
    assert _core.fingerprint(numpy.array(0.5)) == _core.fingerprint(0.5)
    assert _core.fingerprint(numpy.arange(3)) == GOLDEN_ARANGE_FP == ref.fingerprint([0, 1, 2])
    assert type(_core.to_plain(numpy.float64(0.5))) is float  # a float subclass made exact
    assert type(_core.to_plain(numpy.str_("a"))) is str


GOLDEN_ARANGE_FP = _core.fingerprint([0, 1, 2])


def _refused_numpy() -> list[Any]:
    if numpy is None:
        return []
    return [
        numpy.datetime64("2020-01-01T00:00:00.000000000"),  # .item() is a bare int of ns
        numpy.datetime64("NaT"),  # .item() is None
        numpy.timedelta64(5, "ns"),
        numpy.complex128(1 + 2j),
        numpy.longdouble(0.5),  # .item() is a longdouble again
        numpy.bytes_(b"x"),
        numpy.array([numpy.datetime64("2020-01-01T00:00:00.000000000")]),
        numpy.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),  # fields would be lost
    ]


@needs_numpy
@pytest.mark.parametrize("bad", _refused_numpy(), ids=lambda v: f"{type(v).__name__}")
def test_numpy_kinds_without_an_exact_python_value_are_refused(bad: Any) -> None:
    for call in (_core.canonical_encode, _core.fingerprint, _core.to_plain):
        with pytest.raises(EncodingError) as info:
            call({"k": [1, bad]})
        message = str(info.value)
        assert f"'{type(bad).__name__}' at value['k'][1]" in message, message
        assert "NumPy bool, integer, float" in message
    with pytest.raises(ref.RefEncodingError):
        ref.encode({"k": [1, bad]})


# --- exceptions raised from Rust --------------------------------------------------------


# The calls below pass deliberately ill-typed arguments.
_untyped: Any = _core


_RUST_RAISES: list[tuple[str, Any, type[BaseException]]] = [
    ("canonical_encode NaN", lambda: _core.canonical_encode(math.nan), errors.EncodingError),
    ("fingerprint set", lambda: _core.fingerprint({1, 2}), errors.EncodingError),
    ("fingerprint_many", lambda: _core.fingerprint_many([{"k": math.inf}]), errors.EncodingError),
    ("to_plain", lambda: _core.to_plain([object()]), errors.EncodingError),
    ("grid value", lambda: _core.GridCore(["a"], [[math.nan]]), errors.EncodingError),
    ("grid key", lambda: _untyped.GridCore([1], [[0]]), errors.ParamSpecError),
    ("grid empty axis", lambda: _core.GridCore(["a"], [[]]), errors.ParamSpecError),
    ("random seed", lambda: _untyped.RandomCore(True, [], 1), errors.ParamSpecError),
    (
        "random arg",
        lambda: _untyped.RandomCore(0, [("x", "uniform", ["a", 1])], 1),
        errors.ParamSpecError,
    ),
    (
        "random kind",
        lambda: _untyped.RandomCore(0, [("x", "nope", [0, 1])], 1),
        errors.ParamSpecError,
    ),
    ("seed base type", lambda: _untyped.seed_root("1", 0), errors.SeedSpecError),
    ("seed replicate range", lambda: _core.seed_fingerprint(0, -1), errors.SeedSpecError),
    ("derive root length", lambda: _core.derive_seed(b"short", "x"), errors.SeedSpecError),
    ("grid index", lambda: _core.GridCore(["a"], [[0]]).indices(5), IndexError),
    ("trial index", lambda: _core.RandomCore(0, [], 1).trial(10**30), IndexError),
]


@pytest.mark.parametrize(("what", "call", "cls"), _RUST_RAISES, ids=[r[0] for r in _RUST_RAISES])
def test_rust_raises_the_exact_metalab_error_class(
    what: str, call: Any, cls: type[BaseException]
) -> None:
    with pytest.raises(BaseException) as ei:
        call()
    # Exactly the class, not a parent such as ValueError that a failed lookup would give.
    assert type(ei.value) is cls, (what, type(ei.value), ei.value)
    assert str(ei.value)


def test_store_errors_from_rust_scans_are_store_errors(tmp_path: Any) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    layout = _core.ScanLayout(
        runs_dir=tmp_path / "runs",
        done_dir=f,
        failed_dir=tmp_path / "failed",
        record_suffix=".json",
        done_suffix=".done",
        failed_suffix=".failed",
        shard_width=2,
    )
    for call in (lambda: _core.scan_done(layout, ["ab12"]), lambda: _core.list_done(layout)):
        with pytest.raises(errors.StoreError) as ei:
            call()
        assert type(ei.value) is errors.StoreError


def test_python_errors_inside_a_value_propagate_unchanged() -> None:
    """An exception raised while a value is inspected is not turned into EncodingError."""

    class Exploding:
        # Looks like a NumPy scalar to the probe, whose `.item()` then fails.
        __module__ = "numpy"
        ndim = 0

        class dtype:  # mimics numpy's attribute name
            kind = "f"
            itemsize = 8

        def item(self) -> float:
            raise RuntimeError("item() exploded")

    with pytest.raises(RuntimeError, match="item\\(\\) exploded"):
        _core.canonical_encode({"a": [Exploding()]})


_BROKEN_ERRORS_MODULE = """
import importlib.util, sys, types
from pathlib import Path

# metalab as a bare package, so only metalab.errors is loaded before metalab._core.
pkg = Path(importlib.util.find_spec("metalab").origin).parent
shell = types.ModuleType("metalab")
shell.__path__ = [str(pkg)]
sys.modules["metalab"] = shell
import metalab.errors as errors

del errors.{name}
try:
    import metalab._core
except ImportError as e:
    print("ImportError:", e)
else:
    print("imported")
"""


@pytest.mark.parametrize("name", ["EncodingError", "ParamSpecError", "SeedSpecError", "StoreError"])
def test_core_import_fails_when_a_bound_error_class_is_missing(name: str) -> None:
    """Every class Rust raises is resolved when `_core` loads, not at its first raise."""
    out = subprocess.run(
        [sys.executable, "-c", _BROKEN_ERRORS_MODULE.format(name=name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.startswith("ImportError:"), out
    assert f"metalab.errors.{name}" in out
