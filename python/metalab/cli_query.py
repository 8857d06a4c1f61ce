"""What the inspection commands (``metalab ls|status|show|logs|cancel``) ask a store.

Everything here goes through the public :class:`~metalab.store.base.Store` API. The run
IDs of an experiment are recomputed from its manifest (params spec, seed plan, context
fingerprint: one batched Rust call, ~0.3 s for 300,000 runs), and its counts come from the
stores' batched marker scans (``completed``/``failed``), so no record is read to list or
count runs. Manifests are plain JSON and nothing but :class:`StatusSource` (through
:func:`metalab.reconnect`, which checks a spec's seal first) unpickles code, which keeps
``ls``, ``show`` and ``logs`` safe on a store other people write to.
"""

from __future__ import annotations

import json
import socket
import string
from collections.abc import Sequence
from typing import Any

from metalab import _core
from metalab.errors import StoreError, StoreUnavailableError, UnsafeLoadError
from metalab.records import StoredState
from metalab.staleness import manifest_plan_key, manifest_run_ids
from metalab.store.base import Store
from metalab.store.capabilities import LaunchBook, RecordReader, StatusIndex

__all__ = [
    "EXIT_ERROR",
    "EXIT_FAILURES",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "MAX_FAILED_IDS",
    "STATUS_KEYS",
    "CommandError",
    "ExperimentView",
    "StatusSource",
    "cancel_launch",
    "experiments",
    "failed_runs",
    "launch_pointer",
    "marker_counts",
    "resolve_experiment",
    "resolve_run",
]

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_ERROR = 4
EXIT_INTERRUPTED = 130

_HEX = frozenset(string.hexdigits.lower())
_MAX_CANDIDATES = 20
MAX_FAILED_IDS = 100
#: The counts of ``status --json`` (``status.*``), a documented shape: new fields of
#: RunStatus (e.g. failure reasons) do not change it unannounced.
STATUS_KEYS = ("total", "completed", "running", "pending", "failed", "skipped", "cancelled")


class CommandError(Exception):
    """A request the command cannot answer: the message, its exit code, the candidates.

    Raised for unknown or ambiguous experiments and run IDs (exit code 2); the CLI prints
    the message and candidates and exits with :attr:`exit_code`.
    """

    def __init__(
        self, message: str, exit_code: int = EXIT_USAGE, candidates: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.candidates = list(candidates)


class ExperimentView:
    """One experiment of a store, as its manifests describe it.

    ``run_ids`` are those of the latest launch (``None`` when its manifest cannot be
    turned into a plan); ``plans`` holds the run IDs of every distinct launch, for
    resolving run IDs that an older launch (other params or context) produced. Both are
    computed on first use: listing experiments computes no run ID.
    """

    def __init__(self, experiment_id: str, manifests: Sequence[dict[str, Any]]) -> None:
        latest = manifests[-1]  # list_manifests returns them oldest first
        name, _, version = experiment_id.partition(":")
        stamps = [str(m["submitted_at"]) for m in manifests if m.get("submitted_at")]
        self.experiment_id = experiment_id
        self.name = str(latest.get("name", name))
        self.version = str(latest.get("version", version))
        self.launches = len(manifests)
        self.last_activity = max(stamps) if stamps else None
        distinct: dict[str, dict[str, Any]] = {}
        for manifest in reversed(manifests):  # the latest launch's plan first
            distinct.setdefault(manifest_plan_key(manifest), manifest)
        self._distinct = list(distinct.values())
        self._plans: dict[int, list[str] | None] = {}

    def _plan(self, index: int) -> list[str] | None:
        if index not in self._plans:
            self._plans[index] = manifest_run_ids(self._distinct[index])
        return self._plans[index]

    @property
    def run_ids(self) -> list[str] | None:
        """Run IDs of the latest launch, in task order."""
        return self._plan(0)

    @property
    def plans(self) -> list[list[str]]:
        """Run IDs of every distinct launch (latest first) that describes a plan."""
        return [ids for i in range(len(self._distinct)) if (ids := self._plan(i)) is not None]

    @property
    def total(self) -> int | None:
        """Number of runs of the latest launch's plan (``None`` when unknown)."""
        ids = self.run_ids
        return None if ids is None else len(ids)


def experiments(store: LaunchBook, experiment_id: str | None = None) -> list[ExperimentView]:
    """The experiments recorded in ``store``'s manifests, sorted by experiment ID.

    Raises:
        StoreUnavailableError: the store cannot be reached.
    """
    grouped: dict[str, list[dict[str, Any]]] = {}
    for manifest in store.list_manifests(experiment_id):
        eid = manifest.get("experiment_id")
        if isinstance(eid, str):
            grouped.setdefault(eid, []).append(manifest)
    return [ExperimentView(eid, grouped[eid]) for eid in sorted(grouped)]


def marker_counts(store: StatusIndex, run_ids: Sequence[str]) -> dict[str, int]:
    """``{"success", "failed", "pending"}`` counts from the store's marker scans.

    ``pending`` is every run without a final marker: queued, running, or never executed
    (a store records no marker for a run in progress).
    """
    states = store.states(run_ids)
    n_done = states.count(StoredState.DONE)
    n_failed = states.count(StoredState.FAILED)
    return {"success": n_done, "failed": n_failed, "pending": len(run_ids) - n_done - n_failed}


def resolve_experiment(views: Sequence[ExperimentView], wanted: str) -> ExperimentView:
    """The experiment named by ``wanted``: an experiment ID (``name:version``) or a name.

    Raises:
        CommandError: nothing or more than one experiment matches (lists the candidates).
    """
    for view in views:
        if view.experiment_id == wanted:
            return view
    named = [view for view in views if view.name == wanted]
    if len(named) == 1:
        return named[0]
    if named:
        raise CommandError(
            f"experiment name {wanted!r} is ambiguous: it has {len(named)} versions; "
            f"give one as name:version",
            candidates=[view.experiment_id for view in named],
        )
    known = [view.experiment_id for view in views]
    raise CommandError(
        f"no experiment {wanted!r} in this store"
        + ("; it holds:" if known else " (the store has no experiments)"),
        candidates=known,
    )


def resolve_run(
    store: RecordReader, views: Sequence[ExperimentView], text: str
) -> tuple[str, ExperimentView | None]:
    """The run ID that ``text`` names (a whole ID or a unique prefix, like git) and the
    experiment whose plan holds it (``None`` for a stored run no manifest plans).

    Raises:
        CommandError: ``text`` is not hexadecimal, or matches no run or several runs.
    """
    prefix = text.strip().lower()
    if not prefix or not set(prefix) <= _HEX:
        raise CommandError(f"{text!r} is not a run ID: expected hexadecimal characters")
    full_length = len(prefix) == _core.FINGERPRINT_HEX_CHARS
    matches: dict[str, ExperimentView] = {}
    for view in views:
        for plan in view.plans:
            for run_id in plan:
                if run_id.startswith(prefix):
                    matches.setdefault(run_id, view)
    if len(matches) == 1:
        [(run_id, view)] = matches.items()
        return run_id, view
    if len(matches) > 1:
        shown = sorted(matches)
        listed = [f"{rid}  {matches[rid].experiment_id}" for rid in shown[:_MAX_CANDIDATES]]
        if len(shown) > _MAX_CANDIDATES:
            listed.append(f"... and {len(shown) - _MAX_CANDIDATES} more")
        raise CommandError(
            f"run ID prefix {text!r} is ambiguous: {len(shown)} runs match; give more characters",
            candidates=listed,
        )
    # A run no manifest plans (imported records): only a whole ID can name it.
    if full_length and store.get_record(prefix) is not None:
        return prefix, None
    raise CommandError(f"no run matches {text!r} in this store")


def failed_runs(
    store: StatusIndex, views: Sequence[ExperimentView]
) -> list[tuple[str, ExperimentView]]:
    """``(run_id, experiment)`` of every failed run of each experiment's latest launch."""
    found = []
    for view in views:
        ids = view.run_ids or []
        for run_id, state in zip(ids, store.states(ids), strict=True):
            if state is StoredState.FAILED:
                found.append((run_id, view))
    return found


def launch_pointer(store: LaunchBook, experiment_id: str) -> dict[str, Any] | None:
    """The launch blob ``metalab.run`` saved for ``experiment_id`` (``None``: none)."""
    from metalab.keys import launch_key

    blob = store.get_blob(launch_key(experiment_id))
    if blob is None:
        return None
    try:
        pointer = json.loads(blob)
    except ValueError:
        return None
    return pointer if isinstance(pointer, dict) else None


class StatusSource:
    """Counts of one experiment: a reconnected handle, or its markers when none can be.

    Raises (at construction):
        StoreError: no launch to reconnect to and no manifest plan to count instead.
        StoreUnavailableError: the store cannot be reached.
    """

    def __init__(self, store: Store, view: ExperimentView | None) -> None:
        from metalab.reconnect import reconnect

        self.store = store
        self.note: str | None = None
        self.handle: Any = None
        try:
            self.handle = reconnect(store, view.experiment_id if view else None)
            self.experiment_id: str = self.handle.experiment_id
            self.run_ids: list[str] = self.handle.run_ids
        except (StoreError, UnsafeLoadError) as exc:
            if isinstance(exc, StoreUnavailableError) or view is None or view.run_ids is None:
                raise
            self.note = f"no reconnectable launch ({exc}); counts come from the run markers"
            self.experiment_id, self.run_ids = view.experiment_id, view.run_ids
        self.pointer = launch_pointer(store, self.experiment_id) or {}

    def payload(self) -> dict[str, Any]:
        """The ``status`` payload (see ``metalab.cli_inspect``), counted now."""
        if self.handle is not None:
            counted = self.handle.status
            status = {key: getattr(counted, key) for key in STATUS_KEYS}
        else:
            counts = marker_counts(self.store, self.run_ids)
            status = {
                "total": len(self.run_ids),
                "completed": counts["success"],
                "running": 0,
                "pending": counts["pending"],
                "failed": counts["failed"],
                "skipped": 0,
                "cancelled": 0,
            }
        failed_ids: list[str] = []
        if status["failed"]:
            states = self.store.states(self.run_ids)
            failed_ids = [
                r
                for r, state in zip(self.run_ids, states, strict=True)
                if state is StoredState.FAILED
            ]
        executor = self.pointer.get("executor")
        jobs = self.pointer.get("job_ids") if executor == "slurm" else None
        return {
            "store": self.store.locator,
            "experiment_id": self.experiment_id,
            "executor": executor,
            "launched_at": self.pointer.get("launched_at"),
            "slurm_job_ids": [str(j) for j in jobs] if isinstance(jobs, list) else None,
            "source": "launch" if self.handle is not None else "markers",
            "note": self.note,
            "status": status,
            "complete": status["pending"] == 0 and status["running"] == 0,
            "failed_run_ids": failed_ids[:MAX_FAILED_IDS],
        }


def cancel_launch(store: Store, view: ExperimentView) -> tuple[dict[str, Any], int]:
    """Cancel the live launch of ``view`` (SLURM: scancel); return the payload and exit code.

    A local launch runs inside its driver process, which this process cannot reach: it is
    reported (exit code 4), not killed.

    Raises:
        CommandError: the experiment was never launched into this store.
        SlurmError: scancel failed.
    """
    from metalab.reconnect import reconnect
    from metalab.service import pid_alive

    pointer = launch_pointer(store, view.experiment_id)
    if pointer is None:
        raise CommandError(f"store {store.locator} records no launch of {view.experiment_id}")
    handle = reconnect(store, view.experiment_id)
    before = handle.status
    unfinished = before.pending + before.running
    executor = str(pointer.get("executor"))
    jobs = [str(j) for j in pointer.get("job_ids") or []] if executor == "slurm" else None
    eid, code, cancelled = view.experiment_id, EXIT_OK, False
    if before.is_complete:
        message = (
            f"nothing to cancel: {eid} is complete ({before.completed} ok, {before.failed} failed)"
        )
    elif executor == "slurm":
        handle.cancel()
        cancelled = True
        message = (
            f"cancelled {eid}: scancel-ed SLURM job(s) {', '.join(jobs or [])}; "
            f"{unfinished} run(s) had not finished (resume with metalab.run(..., resume=True))"
        )
    else:
        host, pid = pointer.get("driver_host"), pointer.get("driver_pid")
        here = host == socket.gethostname()
        if here and isinstance(pid, int) and not pid_alive(pid):
            message = (
                f"nothing to cancel: the {executor} launch of {eid} ended with its driver "
                f"process {pid}; {unfinished} run(s) never finished (resume to run them)"
            )
        else:
            code = EXIT_ERROR
            message = (
                f"cannot cancel {eid} from here: its {executor} launch runs inside process "
                f"{pid} on {host}; stop that process (Ctrl-C there) — finished runs are kept"
            )
    payload = {
        "store": store.locator,
        "experiment_id": eid,
        "executor": executor,
        "cancelled": cancelled,
        "slurm_job_ids": jobs,
        "unfinished": unfinished,
        "message": message,
    }
    return payload, code
