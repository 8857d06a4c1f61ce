"""SLURM array task entry point: ``python -m metalab.worker --store LOC --experiment ID ...``.

One process runs a contiguous block of ``--runs-per-task`` runs. Which ones follows from the
array index alone: global task ``g = SLURM_ARRAY_TASK_ID + --offset`` covers positions
``[g*K, (g+1)*K)`` of the submission's task list (the identity, or the ``--tasks`` blob).
The spec blob is read once, the plan rebuilt with the driver's context fingerprint (files
are not stat-ed again on the node), and each run goes through
:func:`metalab.execution.execute_task`, which writes its record then its ``.done`` marker.
Runs already done are skipped (one batched check), so a requeued or resubmitted task only
runs what is missing.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType, SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metalab.executors.claimed import ClaimedTasks
    from metalab.plan import RunPlan
    from metalab.records import StoredState as _StoredState
    from metalab.store.base import Store

__all__ = ["main", "open_store", "select_tasks"]


def select_tasks(
    array_task: int, offset: int, runs_per_task: int, todo: Sequence[int] | None, total: int
) -> list[int]:
    """Task indices of array task ``array_task`` of the shard starting at ``offset``.

    Args:
        array_task: ``SLURM_ARRAY_TASK_ID``.
        offset: global index of the shard's array task 0.
        runs_per_task: runs per array task (K).
        todo: the submission's task list, or None for every task (identity).
        total: tasks in the plan (bounds the identity mapping).
    """
    size = total if todo is None else len(todo)
    start = (offset + array_task) * runs_per_task
    stop = min(start + runs_per_task, size)
    if todo is None:
        return list(range(start, stop))
    return [int(todo[pos]) for pos in range(start, stop)]


# The options the batch script passes, and how each value converts (see _parse).
_OPTIONS: dict[str, type] = {
    "--store": str,
    "--experiment": str,
    "--offset": int,
    "--runs-per-task": int,
    "--tasks": str,
    "--derived": str,
    "--timeout": float,
    "--passfile": str,
    "--array-task": int,
    "--signal-lead": int,
}
_DEFAULTS: dict[str, Any] = {"offset": 0, "runs_per_task": 1, "signal_lead": 0}


def _parse(argv: Sequence[str] | None) -> SimpleNamespace:
    """The worker's options; argparse only for what the batch script never writes.

    Building an ArgumentParser imports shutil (with zlib, bz2, lzma) and gettext/locale,
    ~5 ms of every array task. The command line the batch script writes (``--name value``
    pairs of known options) is read directly; anything else (``--help``, an unknown or
    abbreviated option, a missing or malformed value) goes to argparse, which answers
    exactly as it always did.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    found = _parse_plain(args)
    return found if found is not None else _parse_with_argparse(args)


def _parse_plain(args: list[str]) -> SimpleNamespace | None:
    """``args`` as argparse would read them, or None if they need argparse itself."""
    if len(args) % 2:
        return None
    values: dict[str, Any] = {name.lstrip("-").replace("-", "_"): None for name in _OPTIONS}
    values.update(_DEFAULTS)
    for name, text in zip(args[::2], args[1::2], strict=True):
        convert = _OPTIONS.get(name)
        if convert is None or text.startswith("-"):
            return None
        try:
            values[name[2:].replace("-", "_")] = convert(text)
        except ValueError:
            return None
    if values["store"] is None or values["experiment"] is None:
        return None
    return SimpleNamespace(**values)


def _parse_with_argparse(argv: Sequence[str]) -> SimpleNamespace:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m metalab.worker", description=__doc__)
    parser.add_argument("--store", required=True, help="store locator")
    parser.add_argument("--experiment", required=True, help="experiment id name:version")
    parser.add_argument("--offset", type=int, default=0, help="global index of array task 0")
    parser.add_argument("--runs-per-task", type=int, default=1, help="runs per array task")
    parser.add_argument("--tasks", default=None, help="blob key of the task list")
    parser.add_argument("--derived", default=None, help="blob key of derived-metric functions")
    parser.add_argument("--timeout", type=float, default=None, help="per-run limit (s)")
    parser.add_argument(
        "--passfile", default=None, help="password file of the store's logins (a path only)"
    )
    parser.add_argument(
        "--array-task", type=int, default=None, help="array index (default: $SLURM_ARRAY_TASK_ID)"
    )
    parser.add_argument(
        "--signal-lead", type=int, default=0, help="seconds of --signal=B:USR1 before walltime"
    )
    return SimpleNamespace(**vars(parser.parse_args(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run this array task's block of runs; return the process exit status.

    Exit status 0 when every run of the block was executed (whatever its outcome), 1 when
    the task was terminated, 2 on a usage or spec error, 3 when the spec or derived blob
    fails its signature check (:mod:`metalab.signing`): then nothing is unpickled or run,
    4 when the store failed to write a run's output (disk full...): the rest of the block
    is not run, and nothing of the failed run is recorded, so resume runs it again.
    """
    args = _parse(argv)
    array_env = os.environ.get("SLURM_ARRAY_TASK_ID")
    array_task = (
        args.array_task
        if args.array_task is not None
        else (int(array_env) if array_env and array_env.isdigit() else None)
    )
    if array_task is None or args.runs_per_task < 1 or args.offset < 0:
        print(
            "metalab.worker: no SLURM_ARRAY_TASK_ID (or bad --offset/--runs-per-task)",
            file=sys.stderr,
        )
        return 2

    from metalab.capture import output
    from metalab.errors import StoreError, UnsafeLoadError
    from metalab.execution import execute_task, worker_identity
    from metalab.plan_loading import load_plan
    from metalab.records import StoredState

    store = open_store(args.store, args.passfile)
    if store is None:
        return 2
    try:
        # Both blobs carry code: each is checked against this account's key before it is
        # unpickled (the derived functions after the spec, whose sys_path they may need).
        plan = load_plan(store, args.experiment)
        derived = _load_derived(store, args.derived)
    except UnsafeLoadError as exc:
        print(
            f"metalab.worker: refusing to run {args.experiment}, nothing was executed: "
            f"{type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        store.close()
        return 3
    except StoreError as exc:  # no spec (or a garbled one): nothing to run
        print(f"metalab.worker: nothing was executed: {exc}", file=sys.stderr)
        store.close()
        return 2

    todo: Sequence[int] | None = None
    if args.tasks:
        from metalab.executors.slurm_tasks import decode_task_list

        data = store.get_blob(args.tasks)
        if data is None:
            print(
                f"metalab.worker: store {store.locator} has no blob {args.tasks}", file=sys.stderr
            )
            store.close()
            return 2
        todo = decode_task_list(data)

    indices = select_tasks(array_task, args.offset, args.runs_per_task, todo, plan.total)
    states = store.states([plan.task(t).run_id for t in indices])
    done = [state is StoredState.DONE for state in states]
    job = os.environ.get("SLURM_ARRAY_JOB_ID", "local")
    worker_id = worker_identity(f"{job}_{array_task}")
    from metalab.execution import RunInterrupted
    from metalab.executors.slurm_signals import WorkerSignals

    # scancel, requeue, preemption and the walltime send SIGTERM (or SIGUSR1 first), then
    # SIGKILL after KillWait: the running run is recorded with the reason before that.
    signals = WorkerSignals(args.signal_lead)
    signals.install()
    running: list[str] = []  # the run id the alarm interrupts, while one runs
    if args.timeout is not None:
        _install_timeout(args.timeout, running)
    # Each run's prints and warnings also go to its log (and to the shard log as before).
    output.install()
    claims = _claims(plan, store, [t for t, d in zip(indices, done, strict=True) if not d])
    try:
        # A run claimed by another launch is waited for until it lands (then it is not
        # executed) or its claim is lost (a killed earlier attempt still exiting: then it
        # is executed here); skipping it would leave it for the launch to call crashed.
        while (task_index := claims.take()) is not None:
            at = indices.index(task_index)
            if args.timeout is not None:
                running[:] = [plan.task(task_index).run_id]
                signal.setitimer(signal.ITIMER_REAL, args.timeout)
            record = execute_task(
                plan,
                task_index,
                store,
                executor="slurm",
                worker_id=worker_id,
                derived_metrics=derived,
            )
            if args.timeout is not None:
                signal.setitimer(signal.ITIMER_REAL, 0)
            claims.done(task_index)
            if record.status.value == "cancelled" or signals.reason is not None:
                # Terminated while running: leave the rest of the block to the retry.
                signals.abandon(plan, store, claims.not_elsewhere(indices[at + 1 :]), worker_id)
                return 1
    except RunInterrupted:
        signals.abandon(plan, store, claims.not_elsewhere(indices), worker_id)
        return 1
    except StoreError as exc:
        # Every later run of the block would fail the same way: stop computing in vain.
        print(
            f"metalab.worker: stopping: the store failed, the rest of this task's runs "
            f"were not started: {exc}",
            file=sys.stderr,
        )
        return 4
    finally:
        claims.close()
        output.uninstall()
        store.close()
    return 0


def _claims(plan: RunPlan, store: Store, todo: list[int]) -> ClaimedTasks:
    """The block's runs behind claims, owned by this array task's slot.

    The owner's launch part is derived from ``SLURM_JOB_ID`` (one per array task, kept
    across a requeue): a requeued attempt takes over what its killed predecessor held
    at once, even from another node, instead of waiting out the lease.
    """
    from metalab.executors.claimed import ClaimedTasks
    from metalab.executors.job import Job
    from metalab.store.claims import new_owner

    slot = os.environ.get("SLURM_JOB_ID")
    return ClaimedTasks(Job(plan, store, todo), _ignore, owner=new_owner(slot=slot))


def _ignore(task_index: int, state: _StoredState) -> None:
    """A run another launch finished: its own launch counts it, not this task."""


def _load_derived(store: Any, key: str | None) -> list[Any]:
    """The submission's derived-metric functions (none without ``--derived``).

    Raises:
        SignatureError: the blob was not sealed by this account for ``key``.
    """
    if not key:
        return []
    from metalab.spec import derived_from_bytes

    data = store.get_blob(key)
    return derived_from_bytes(data, key) if data is not None else []


def open_store(locator: str, passfile: str | None) -> Store | None:
    """The store, logged in with the submission's passwords; None (reason printed) if not.

    The login is checked here, before anything runs (see
    :mod:`metalab.executors.task_store`).
    """
    from metalab.executors.task_store import open_task_store

    return open_task_store(locator, passfile, "metalab.worker")


def _install_timeout(limit: float, running: list[str]) -> None:
    """Make SIGALRM stop the running run with a :class:`RunTimeoutError` naming it.

    ``running`` holds the id of the run the alarm was armed for (the loop updates it).
    """
    from metalab.errors import RunTimeoutError

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        run_id = running[0] if running else None
        raise RunTimeoutError(
            f"run {run_id} exceeded its time limit of {limit:g}s", run_id=run_id, timeout=limit
        )

    signal.signal(signal.SIGALRM, on_alarm)


if __name__ == "__main__":
    sys.exit(main())
