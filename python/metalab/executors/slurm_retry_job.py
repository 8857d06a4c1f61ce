"""The retry job: ``python -m metalab.executors.slurm_retry_job`` (see ``slurm_retry``).

Run on the cluster by the small job that ``SlurmConfig(retries=N)`` submits after a
submission's arrays (``--dependency=afterany``), so no driver process has to stay alive. It

1. records, for array tasks that left the queue without finishing their runs, why
   (``sacct`` or the task's log, :mod:`metalab.executors.slurm_reasons`) — what the
   submitting process does too when it is alive, so nothing depends on it;
2. reads the reason of every run of the submission that did not succeed and keeps those
   the infrastructure broke (:data:`~metalab.executors.slurm_retry.RETRYABLE`;
   ``exception`` too with ``retry_exceptions=True``; never ``cancelled``, nor anything
   once the submission was cancelled);
3. resubmits them through :class:`~metalab.executors.slurm.SlurmExecutor` with escalated
   resources and ``retries - 1``, so the resubmission brings its own retry job;
4. writes the new submissions' launch info to the blob ``slurm-<submission>-retried``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from metalab.errors import SlurmError
from metalab.executors.base import Job
from metalab.executors.slurm import SlurmExecutor
from metalab.executors.slurm_config import config_from_json
from metalab.executors.slurm_launch import SlurmLaunch, reattach
from metalab.executors.slurm_retry import RETRYABLE, escalate, retried_key, retry_key
from metalab.executors.task_store import open_task_store
from metalab.keys import slurm_cancelled_key
from metalab.plan import RunPlan
from metalab.plan_loading import load_plan
from metalab.records import FailureReason, StoredState
from metalab.spec import derived_from_bytes
from metalab.store.base import Store

__all__ = ["main", "plan_retries"]

_MODULE = "metalab.executors.slurm_retry_job"
_SQUEUE_ATTEMPTS = 5


def _record_crashes(launch: SlurmLaunch) -> None:
    """Let the launch record why its unfinished tasks ended (all have: afterany)."""
    for attempt in range(_SQUEUE_ATTEMPTS):
        launch.poll(force=True)
        if launch.finished:
            return
        time.sleep(2.0 * (attempt + 1))  # squeue failed or lags: ask again, gently


def plan_retries(
    store: Store, plan: RunPlan, launch: SlurmLaunch, retry_exceptions: bool
) -> dict[frozenset[FailureReason], list[int]]:
    """Task indices to retry, grouped by the reasons that decide their escalation."""
    indices = launch.task_indices()
    run_ids = [plan.task(t).run_id for t in indices]
    states = store.states(run_ids)
    unfinished = [
        (t, r)
        for t, r, s in zip(indices, run_ids, states, strict=True)
        if s is not StoredState.DONE
    ]
    if not unfinished:
        return {}
    loaded = store.load_records(run_ids=[r for _t, r in unfinished]).records
    reasons = {record.run_id: record.reason for record in loaded}
    wanted = set(RETRYABLE) | ({FailureReason.EXCEPTION} if retry_exceptions else set())
    groups: dict[frozenset[FailureReason], list[int]] = {}
    for task_index, run_id in unfinished:
        # No record at all: the task died so hard that not even the crash was recorded.
        reason = reasons.get(run_id) or FailureReason.CRASHED
        if reason not in wanted:
            continue
        key = frozenset({reason} & {FailureReason.TIMEOUT, FailureReason.OUT_OF_MEMORY})
        groups.setdefault(key, []).append(task_index)
    return groups


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {_MODULE}", description=__doc__)
    parser.add_argument("--store", required=True, help="store locator")
    parser.add_argument("--experiment", required=True, help="experiment id name:version")
    parser.add_argument("--submission", required=True, help="submission whose runs to retry")
    parser.add_argument("--passfile", default=None, help="password file of the store's logins")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Retry one submission's broken runs; return the exit status (0 also when none)."""
    args = _parse(argv)
    store = open_task_store(args.store, args.passfile, _MODULE)
    if store is None:
        return 2
    launched: list[dict[str, Any]] = []
    try:
        raw = store.get_blob(retry_key(args.submission))
        if raw is None:
            print(f"{_MODULE}: no retry settings for {args.submission}", file=sys.stderr)
            return 2
        settings = json.loads(raw)
        plan = load_plan(store, args.experiment)
        pointer = dict(settings["launch"], experiment_id=args.experiment)
        pointer.pop("retry_job", None)  # this process is that job: do not wait for itself
        launch = reattach(pointer, store, plan)
        if store.get_blob(slurm_cancelled_key(args.submission)) is not None:
            print(f"{_MODULE}: {args.submission} was cancelled: nothing is retried")
            return 0
        _record_crashes(launch)
        config = config_from_json(settings["config"], "retry settings")
        groups = plan_retries(store, plan, launch, config.retry_exceptions)
        key = settings.get("derived_key")
        blob = store.get_blob(key) if key else None
        derived = derived_from_bytes(blob, key) if key and blob is not None else []
        for reasons, indices in sorted(groups.items(), key=lambda item: sorted(item[0])):
            attempt = escalate(config, set(reasons))
            executor = SlurmExecutor(attempt, python=settings["python"])
            job = Job(plan, store, sorted(indices), derived, settings.get("timeout"))
            retry = executor.submit(job)
            launched.append(retry.reconnect_info)
            what = ", ".join(sorted(reasons)) or "other infrastructure failures"
            print(
                f"{_MODULE}: resubmitted {len(indices)} run(s) of {args.submission} "
                f"({what}) as {' '.join(retry.job_ids)} with time={attempt.time} "
                f"memory={attempt.memory}, {attempt.retries} retries left",
                flush=True,
            )
        store.put_blob(retried_key(args.submission), json.dumps(launched).encode())
        launch.paths.release()
    except SlurmError as exc:
        # What was resubmitted before the failure is still followed by watchers.
        store.put_blob(retried_key(args.submission), json.dumps(launched).encode())
        print(f"{_MODULE}: resubmission of {args.submission} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
