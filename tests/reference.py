"""Pure-Python reference of ``metalab._core``: slow, small and obviously correct.

Every function mirrors one in the Rust core bit for bit (see docs/run-identity.md). The
differential tests compare the two on generated inputs.
"""

from __future__ import annotations

import decimal
import hashlib
import itertools
import math
import os
import re
import struct
from typing import Any

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
MAX_DEPTH = 200

FP_DOMAIN = b"metalab.fp.v1\0"
RUN_DOMAIN = b"metalab.run.v1\0"
RANDOM_DOMAIN = b"metalab.random.v1\0"
REPLICATE_DOMAIN = b"metalab.seed.replicate.v1\0"
PREPROCESSING_DOMAIN = b"metalab.seed.preprocessing.v1\0"
DERIVE_DOMAIN = b"metalab.derive.v1\0"
ENTROPY_DOMAIN = b"metalab.entropy.v1\0"


class RefEncodingError(ValueError):
    pass


def blake2b(data: bytes, size: int) -> bytes:
    return hashlib.blake2b(data, digest_size=size).digest()


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def float_text(x: float) -> str:
    """Shortest round-trip digits in Rust's ``{:e}`` form: 1.0 -> '1e0', 0.1 -> '1e-1'."""
    sign, digits, exp = decimal.Decimal(float.__repr__(x)).as_tuple()
    assert isinstance(exp, int)
    ds = list(digits)
    while len(ds) > 1 and ds[-1] == 0:  # drop trailing zeros, keeping the value
        ds.pop()
        exp += 1
    while len(ds) > 1 and ds[0] == 0:  # repr never gives these, but be safe
        ds.pop(0)
    if ds == [0]:
        exp = 0
    point_exp = exp + len(ds) - 1
    mant = str(ds[0]) + ("." + "".join(map(str, ds[1:])) if len(ds) > 1 else "")
    return ("-" if sign else "") + mant + "e" + str(point_exp)


def quote(s: str) -> str:
    out = "'"
    for c in s:
        if c == "\\":
            out += "\\\\"
        elif c == "'":
            out += "\\'"
        elif c == "\n":
            out += "\\n"
        elif c == "\r":
            out += "\\r"
        elif c == "\t":
            out += "\\t"
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out += f"\\x{ord(c):02x}"
        else:
            out += c
    return out + "'"


# NumPy kinds whose .item()/.tolist() is exactly the value (bool, ints, floats <= 64 bits,
# str, objects); datetime64/timedelta64 (-> bare ints), complex, bytes, void and longdouble
# are refused.
NUMPY_KINDS = "biufUO"
_UNCHANGED = object()


def _normalise_numpy(v: Any) -> Any:
    """The plain form of a NumPy value, or _UNCHANGED if ``v`` is not an accepted one."""
    if type(v).__module__ != "numpy":
        return _UNCHANGED
    ndim, dtype = getattr(v, "ndim", None), getattr(v, "dtype", None)
    kind, size = getattr(dtype, "kind", ""), getattr(dtype, "itemsize", 0)
    if kind not in NUMPY_KINDS or len(kind) != 1 or (kind == "f" and size > 8):
        return _UNCHANGED
    if ndim == 0 and hasattr(v, "item"):
        return v.item()
    if isinstance(ndim, int) and ndim > 0 and hasattr(v, "tolist"):
        return v.tolist()
    return _UNCHANGED


def plain(v: Any) -> Any:
    """``v`` with NumPy values replaced (after ``encode(v)`` succeeded): mirrors to_plain."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, (int, float, str)):
        if type(v).__module__ != "numpy":
            return v
        return next(t(v) for t in (int, float, str) if isinstance(v, t))
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, tuple):
        return tuple(plain(x) for x in v)
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    norm = _normalise_numpy(v)
    return v if norm is _UNCHANGED else plain(norm)


def encode(v: Any, path: str = "value", depth: int = 0) -> bytes:
    if v is None:
        return b"N"
    if v is True:
        return b"T"
    if v is False:
        return b"F"
    if isinstance(v, int):
        n = int(v)
        if I64_MIN <= n <= I64_MAX:
            return b"i" + struct.pack(">q", n)
        text = str(n).encode("ascii")
        return b"I" + u32(len(text)) + text
    if isinstance(v, float):
        if not math.isfinite(v):
            raise RefEncodingError(f"cannot encode float {v!r} at {path}")
        text = float_text(v).encode("ascii")
        return b"f" + u32(len(text)) + text
    if isinstance(v, str):
        b = v.encode("utf-8")
        return b"s" + u32(len(b)) + b
    if isinstance(v, (list, tuple)):
        if depth >= MAX_DEPTH:
            raise RefEncodingError(f"too deep at {path}")
        items = [encode(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(v)]
        return b"l" + u32(len(v)) + b"".join(items)
    if isinstance(v, dict):
        if depth >= MAX_DEPTH:
            raise RefEncodingError(f"too deep at {path}")
        pairs = []
        for k, x in v.items():
            if not isinstance(k, str):
                raise RefEncodingError(f"dict key {k!r} of type {type(k).__name__!r} at {path}")
            pairs.append((k.encode("utf-8"), encode(x, f"{path}[{quote(k)}]", depth + 1)))
        pairs.sort(key=lambda p: p[0])
        body = b"".join(b"s" + u32(len(k)) + k + x for k, x in pairs)
        return b"d" + u32(len(pairs)) + body
    norm = _normalise_numpy(v)
    if norm is not _UNCHANGED:
        if depth >= MAX_DEPTH:
            raise RefEncodingError(f"too deep at {path}")
        return encode(norm, path, depth + 1)
    raise RefEncodingError(f"cannot encode value of type {type(v).__name__!r} at {path}")


def fingerprint(v: Any) -> str:
    return blake2b(FP_DOMAIN + encode(v), 16).hex()


def run_id(experiment_id: str, context_fp: str, params_fp: str, seed_fp: str) -> str:
    return blake2b(RUN_DOMAIN + encode([experiment_id, context_fp, params_fp, seed_fp]), 16).hex()


# --- grid -------------------------------------------------------------------------------


def grid_points(keys: list[str], axes: list[list[Any]]) -> list[tuple[list[int], dict[str, Any]]]:
    """Every grid point in itertools.product order: (axis positions, params dict)."""
    out = []
    for pos in itertools.product(*[range(len(a)) for a in axes]):
        params = {k: axes[i][p] for i, (k, p) in enumerate(zip(keys, pos, strict=True))}
        out.append((list(pos), params))
    return out


# --- random search ----------------------------------------------------------------------


def draw(seed: int, index: int, key: str) -> tuple[int, int]:
    d = blake2b(RANDOM_DOMAIN + encode([seed, index, key]), 16)
    return int.from_bytes(d[:8], "big"), int.from_bytes(d[8:], "big")


def clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def sample(kind: str, args: tuple[Any, ...], a: int, b: int) -> float | int:
    u = (a >> 11) * 2.0**-53
    if kind == "uniform":
        lo, hi = float(args[0]), float(args[1])
        return clamp(lo + (hi - lo) * u, lo, hi)
    if kind == "loguniform":
        lo, hi = float(args[0]), float(args[1])
        llo, lhi = math.log(lo), math.log(hi)
        return clamp(math.exp(llo + (lhi - llo) * u), lo, hi)
    if kind == "randint":
        lo, hi = args
        return lo + ((a * (hi - lo + 1)) >> 64)
    if kind == "choice":
        return (a * args[0]) >> 64
    if kind == "normal":
        mu, sigma = float(args[0]), float(args[1])
        u2 = (b >> 11) * 2.0**-53
        z = math.sqrt(-2.0 * math.log(1.0 - u)) * math.cos(math.tau * u2)
        return mu + sigma * z
    if kind == "loguniform_int":
        lo, hi = args
        llo, lhi = math.log(float(lo)), math.log(float(hi) + 1.0)
        v = math.floor(math.exp(llo + (lhi - llo) * u))
        return max(lo, min(hi, v))
    raise ValueError(kind)


def trial(
    seed: int, space: list[tuple[str, str, tuple[Any, ...]]], index: int
) -> list[float | int]:
    return [sample(kind, args, *draw(seed, index, key)) for key, kind, args in space]


# --- seeds ------------------------------------------------------------------------------


def seed_fingerprint(base: int, replicate: int) -> str:
    return fingerprint({"base": base, "replicate": replicate, "scheme": 1})


def seed_root(base: int, replicate: int) -> bytes:
    return blake2b(REPLICATE_DOMAIN + encode([base, replicate]), 32)


def preprocessing_root(base: int) -> bytes:
    return blake2b(PREPROCESSING_DOMAIN + encode([base]), 32)


def derive_seed(root: bytes, name: str) -> int:
    return int.from_bytes(blake2b(DERIVE_DOMAIN + root + encode(name), 4), "big")


def derive_entropy(root: bytes, name: str) -> int:
    return int.from_bytes(blake2b(ENTROPY_DOMAIN + root + encode(name), 16), "big")


# --- planning and scans -----------------------------------------------------------------


def plan_run_ids(
    experiment_id: str, context_fp: str, params_fps: list[str], seed_fps: list[str]
) -> list[str]:
    return [run_id(experiment_id, context_fp, p, s) for p in params_fps for s in seed_fps]


def _has(root: str, run_id: str, suffix: str, shard_width: int) -> bool:
    """Whether the run's visible file ``{root}/{shard}/{run_id}{suffix}`` exists."""
    if not run_id or run_id.startswith("."):
        return False
    return os.path.lexists(os.path.join(root, run_id[:shard_width], run_id + suffix))


def scan_done(
    done_root: str, run_ids: list[str], suffix: str = ".done", shard_width: int = 2
) -> list[bool]:
    return [os.path.isfile(os.path.join(done_root, r[:shard_width], r + suffix)) for r in run_ids]


def list_done(done_root: str, suffix: str = ".done", shard_width: int = 2) -> list[str]:
    out: list[str] = []
    if not os.path.isdir(done_root):
        return out
    for shard in os.listdir(done_root):
        d = os.path.join(done_root, shard)
        if shard.startswith(".") or not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if name.startswith(".") or not name.endswith(suffix):
                continue
            rid = name[: -len(suffix)]
            if rid and rid[:shard_width] == shard:
                out.append(rid)
    return sorted(out)


def scan_completed(
    done_root: str, runs_root: str, run_ids: list[str]
) -> tuple[list[bool], list[str]]:
    """A run is done when its marker and its record ``{runs_root}/{id[:2]}/{id}.json``
    (a visible file name) both exist; markers without a record are the orphans."""
    marked = scan_done(done_root, run_ids)
    has_record = [
        os.path.lexists(os.path.join(runs_root, r[:2], r + ".json")) and not r.startswith(".")
        for r in run_ids
    ]
    done = [m and h for m, h in zip(marked, has_record, strict=True)]
    orphans = [r for r, m, h in zip(run_ids, marked, has_record, strict=True) if m and not h]
    return done, orphans


def scan_states(
    runs_root: str,
    done_root: str,
    failed_root: str,
    run_ids: list[str],
    *,
    suffixes: tuple[str, str, str] = (".json", ".done", ".failed"),
    shard_width: int = 2,
) -> tuple[list[str], list[str]]:
    """``"done"`` (done marker and record), else ``"failed"`` (a failed marker), else
    ``"absent"``, per run id; and the ids whose done marker has no record (the orphans).

    ``suffixes`` are those of records, done markers and failed markers, in that order."""
    record, done, failed = suffixes
    states: list[str] = []
    orphans: list[str] = []
    for r in run_ids:
        marked = _has(done_root, r, done, shard_width)
        stored = _has(runs_root, r, record, shard_width)
        if marked and stored:
            states.append("done")
        elif _has(failed_root, r, failed, shard_width):
            states.append("failed")
        else:
            states.append("absent")
        if marked and not stored:
            orphans.append(r)
    return states, orphans


# -- results index segments (rust/src/index.rs) ---------------------------------------------
_U64 = re.compile(r"\+?[0-9]+")
_I128 = re.compile(r"[+-]?[0-9]+")


def _ref_index_line(line: bytes) -> tuple[str, int, int, int, str] | None:
    """One line of a segment as ``index::parse_line`` reads it, or ``None``."""
    if len(line) <= 17 or line[16:17] != b" ":
        return None
    body = line[17:]
    if blake2b(body, 8).hex().encode() != line[:16]:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    fields = text.split(" ", 4)
    if len(fields) != 5 or not fields[0] or not fields[4]:
        return None
    run_id, ino, mtime, size, doc = fields
    numbers = []
    for value, pattern, low, high in (
        (ino, _U64, 0, 2**64),
        (mtime, _I128, -(2**127), 2**127),
        (size, _U64, 0, 2**64),
    ):
        if not pattern.fullmatch(value) or not low <= int(value) < high:
            return None
        numbers.append(int(value))
    return run_id, numbers[0], numbers[1], numbers[2], doc


def ref_parse_index_segment(data: bytes) -> tuple[list[tuple[str, int, int, int, str]], int]:
    """``(entries, bad_lines)`` of a segment: newline-ended lines with a valid checksum."""
    end = data.rfind(b"\n")
    if end < 0:
        return [], int(bool(data))
    torn = int(end + 1 < len(data))
    entries, bad = [], 0
    for line in data[:end].split(b"\n"):
        entry = _ref_index_line(line)
        if entry is None:
            bad += 1
        else:
            entries.append(entry)
    return entries, bad + torn
