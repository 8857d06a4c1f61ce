"""Which code produced each stored run, read from launch manifests without opening records.

Run IDs do not depend on the operation's code (the spec defines them from experiment,
context, params and seeds), so resume rightly matches a run computed by an older version
of the operation. What it must not do is stay silent about it. Every launch's manifest
records the operation's ``code_hash``, metalab's version and the set of tasks it launched
(``launched_tasks``: a compressed bitmap over its plan's task indices). Resume only
launches unfinished tasks, so the stored result of a task comes from the *latest* launch
that launched it: if that launch ran other code (or another metalab major version) than
the current operation, the run is **stale**.

Everything here is bitmask arithmetic on Python ints (one bit per task): 300,000 tasks
cost a few big-int operations, not 300,000 record reads. A manifest of another plan
(params or replicates changed, same context) is mapped through its run IDs, which are
rebuilt from the manifest in one batched Rust call; manifests written before launched
sets were recorded count as having launched every task of their plan.

Known limit: a launch that re-executes finished runs (``rerun="stale"``,
``resume=False``) and is killed before reaching some of them is taken to have produced
them; the next resume then misses their staleness.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from metalab import _core
from metalab.errors import MetalabError

if TYPE_CHECKING:
    from metalab.plan import RunPlan

__all__ = [
    "Generation",
    "StaleRuns",
    "current_generation",
    "decode_tasks",
    "encode_tasks",
    "flags_of",
    "generation",
    "generation_of",
    "indices_of",
    "latest_generations",
    "manifest_run_ids",
    "mask_of",
    "plan_key",
    "stale_flags",
    "stale_runs",
]

_ENCODING = "zlib-bitmap-b64"
_TO_DIGITS = bytes.maketrans(b"\x00\x01", b"01")
_FROM_DIGITS = bytes.maketrans(b"01", b"\x00\x01")


# -- task sets as bitmasks (bit t = task t) -------------------------------------------
def mask_of(flags: Sequence[bool] | bytes | bytearray) -> int:
    """The bitmask whose bit ``t`` is ``flags[t]`` (linear, in C: no per-item Python)."""
    if not flags:
        return 0
    digits = bytes(flags).translate(_TO_DIGITS)
    return int(digits[::-1], 2)


def flags_of(mask: int, size: int) -> bytes:
    """``size`` bytes, byte ``t`` being 1 where bit ``t`` of ``mask`` is set, else 0."""
    if size <= 0:
        return b""
    digits = format(mask & ((1 << size) - 1), f"0{size}b").encode("ascii")
    return digits[::-1].translate(_FROM_DIGITS)


def indices_of(mask: int, size: int) -> list[int]:
    """The set bits of ``mask`` below ``size``, ascending."""
    return list(itertools.compress(range(size), flags_of(mask, size)))


def encode_tasks(mask: int, size: int) -> dict[str, Any]:
    """The manifest form of a set of task indices (a launch of ``size`` tasks)."""
    raw = (mask & ((1 << size) - 1)).to_bytes((size + 7) // 8, "little")
    data = base64.b64encode(zlib.compress(raw)).decode("ascii")
    return {"encoding": _ENCODING, "size": size, "data": data}


def decode_tasks(entry: object, size: int) -> int | None:
    """The bitmask stored by :func:`encode_tasks`, or ``None`` when it is unusable.

    A manifest may come from a co-user of a shared store: anything malformed (wrong
    shape, size, base64 or zlib data, or a zlib bomb) is refused, never trusted.
    """
    if not isinstance(entry, dict) or entry.get("encoding") != _ENCODING:
        return None
    data = entry.get("data")
    if entry.get("size") != size or not isinstance(data, str):
        return None
    expected = (size + 7) // 8
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(base64.b64decode(data, validate=True), expected + 1)
    except (binascii.Error, zlib.error, ValueError):
        return None
    if len(raw) != expected:
        return None
    return int.from_bytes(raw, "little") & ((1 << size) - 1)


# -- which code a launch ran ------------------------------------------------------------
@dataclass(frozen=True)
class Generation:
    """The code a launch ran: the operation's code hash and metalab's major version."""

    code_hash: str
    metalab_major: str


def _major(version: object) -> str:
    return str(version).split(".", 1)[0]


def current_generation(code_hash: str) -> Generation:
    """The generation of an operation with ``code_hash`` run by this metalab."""
    return Generation(code_hash, _major(_core.__version__))


def generation(code_hash: str, metalab_version: str) -> Generation:
    """The generation of a run recorded with this code hash and metalab version."""
    return Generation(code_hash, _major(metalab_version))


def latest_generations(manifests: Iterable[dict[str, Any]]) -> dict[str, Generation]:
    """Each experiment's current code: the generation of its latest manifest.

    ``manifests`` are oldest first, as ``Store.list_manifests`` returns them.
    """
    latest: dict[str, Generation] = {}
    for manifest in manifests:
        gen = generation_of(manifest)
        if gen is not None:
            latest[str(manifest.get("experiment_id"))] = gen
    return latest


def generation_of(manifest: dict[str, Any]) -> Generation | None:
    """The generation recorded in a launch manifest (``None``: it records none)."""
    operation = manifest.get("operation")
    code_hash = operation.get("code_hash") if isinstance(operation, dict) else None
    if not isinstance(code_hash, str):
        return None
    return Generation(code_hash, _major(manifest.get("metalab_version", "")))


def plan_key(params_spec: object, seeds_spec: object, context_fp: object) -> str:
    """A string equal for two launches exactly when their task indices mean the same runs."""
    return json.dumps([params_spec, seeds_spec, context_fp], sort_keys=True, default=str)


def manifest_plan_key(manifest: dict[str, Any]) -> str:
    """:func:`plan_key` of a launch manifest: equal for manifests of the same plan."""
    return plan_key(
        manifest.get("params"), manifest.get("seeds"), manifest.get("context_fingerprint")
    )


def manifest_run_ids(manifest: dict[str, Any]) -> list[str] | None:
    """Run IDs of the plan a manifest describes, in task order (``None``: it describes none)."""
    from metalab.params import source_from_spec
    from metalab.seeds import SeedPlan

    try:
        params = source_from_spec(manifest["params"])
        seeds = SeedPlan(**manifest["seeds"])
        ids: list[str] = _core.plan_run_ids(
            str(manifest["experiment_id"]),
            str(manifest["context_fingerprint"]),
            params.fingerprints(),
            seeds.fingerprints(),
        )
    except (MetalabError, KeyError, TypeError, ValueError):
        return None
    return ids


def _total(manifest: dict[str, Any]) -> int | None:
    total = manifest.get("total_runs")
    return total if isinstance(total, int) and not isinstance(total, bool) and total >= 0 else None


def _launched(manifest: dict[str, Any], size: int) -> int:
    """Tasks of its own plan a manifest launched; all of them for pre-bitmap manifests."""
    if "launched_tasks" not in manifest:
        return (1 << size) - 1
    return decode_tasks(manifest["launched_tasks"], size) or 0


class _Target:
    """The runs staleness is asked about: a plan's tasks, or any list of run IDs."""

    def __init__(self, run_ids: Sequence[str], key: str | None, context_fp: str | None) -> None:
        self.run_ids = run_ids
        self.key = key
        self.context_fp = context_fp
        self._index: dict[str, int] | None = None
        self._plans: dict[str, list[str] | None] = {}

    def launched(self, manifest: dict[str, Any]) -> int:
        """Positions of the target that ``manifest``'s launch launched, as a bitmask."""
        size = _total(manifest)
        if size is None:
            return 0
        if self.context_fp is not None and manifest.get("context_fingerprint") != self.context_fp:
            return 0  # another context: other run IDs, none of them in this plan
        key = manifest_plan_key(manifest)
        if key == self.key:
            return _launched(manifest, size)
        if key not in self._plans:
            self._plans[key] = manifest_run_ids(manifest)
        ids = self._plans[key]
        if ids is None or len(ids) != size:
            return 0
        if self._index is None:
            self._index = {run_id: at for at, run_id in enumerate(self.run_ids)}
        index = self._index
        hits = bytearray(len(self.run_ids))
        for run_id in itertools.compress(ids, flags_of(_launched(manifest, size), size)):
            at = index.get(run_id)
            if at is not None:
                hits[at] = 1
        return mask_of(hits)


def _stale_mask(
    manifests: Sequence[dict[str, Any]], current: Generation, target: _Target
) -> tuple[int, dict[Generation, int]]:
    """Positions whose latest launch ran other code, and that mask split by generation."""
    gens = [generation_of(m) for m in manifests]
    if all(g is None or g == current for g in gens):
        return 0, {}  # the common case: every launch ran today's code, nothing to decode
    claimed = stale = 0
    by_generation: dict[Generation, int] = {}
    for manifest, gen in zip(reversed(manifests), reversed(gens), strict=True):
        launched = target.launched(manifest)
        fresh = launched & ~claimed
        claimed |= launched
        if gen is not None and gen != current and fresh:
            stale |= fresh
            by_generation[gen] = by_generation.get(gen, 0) | fresh
    return stale, by_generation


@dataclass(frozen=True)
class StaleRuns:
    """Finished runs of a plan whose stored results came from other code."""

    mask: int
    current: Generation
    generations: dict[Generation, int]

    @property
    def count(self) -> int:
        """How many runs are stale."""
        return self.mask.bit_count()


def stale_runs(manifests: Sequence[dict[str, Any]], plan: RunPlan, done: int) -> StaleRuns:
    """Which finished tasks of ``plan`` (bitmask ``done``) were computed by other code.

    ``manifests`` are the experiment's launch manifests, oldest first (as
    ``Store.list_manifests`` returns them), before the new launch's is written.
    """
    exp = plan.experiment
    current = current_generation(exp.operation.code_hash)
    if not done:
        return StaleRuns(0, current, {})
    key = plan_key(exp.params.spec(), exp.seeds.spec(), plan.context_fp)
    target = _Target(plan.run_ids, key, plan.context_fp)
    stale, by_generation = _stale_mask(manifests, current, target)
    counts = {gen: mask & done for gen, mask in by_generation.items() if mask & done}
    return StaleRuns(stale & done, current, counts)


def stale_flags(
    manifests: Iterable[dict[str, Any]], experiment_ids: Sequence[str], run_ids: Sequence[str]
) -> bytes:
    """For loaded rows (``experiment_ids``/``run_ids`` aligned), 1 where a row is stale.

    The current code of each experiment is the one its latest launch ran; rows of an
    experiment without manifests are never stale (there is nothing to compare with).
    """
    grouped: dict[str, list[dict[str, Any]]] = {}
    for manifest in manifests:
        grouped.setdefault(str(manifest.get("experiment_id")), []).append(manifest)
    out = bytearray(len(run_ids))
    for experiment_id, ordered in grouped.items():
        current = generation_of(ordered[-1])
        if current is None or all(generation_of(m) in (None, current) for m in ordered):
            continue  # every launch ran the latest code: no row can be stale
        rows = [at for at, eid in enumerate(experiment_ids) if eid == experiment_id]
        if not rows:
            continue
        target = _Target([run_ids[at] for at in rows], None, None)
        stale, _ = _stale_mask(ordered, current, target)
        for at, flag in zip(rows, flags_of(stale, len(rows)), strict=True):
            out[at] = flag
    return bytes(out)
