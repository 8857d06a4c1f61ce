"""The wave job: ``python -m metalab.executors.slurm_wave_job`` (see ``slurm_waves``).

Run on the cluster by the small job a submission cut into waves leaves behind its wave
(``--dependency=afterany``). It

1. reads the submission's wave settings (blob ``slurm-<submission>-waves``: the config,
   interpreter, timeout, derived-metric key) and the runs not yet submitted (blob
   ``slurm-<submission>-rest``, little-endian uint32 task indices);
2. submits them through :class:`~metalab.executors.slurm.SlurmExecutor` — laid out again
   against the limits and the queue as they are now, so the next wave brings its own wave
   job when more remain; while the submit limit leaves no room (the user queued other
   jobs meanwhile) it waits and tries again, up to :data:`WAIT_FOR_ROOM_S`;
3. writes the new submission's launch info to blob ``slurm-<submission>-next`` — always,
   last, also on failure or cancellation — which a watching launch reads once this job
   left the queue.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from metalab.errors import SlurmConfigError, SlurmError
from metalab.executors.base import Job
from metalab.executors.slurm import SlurmExecutor
from metalab.executors.slurm_config import config_from_json
from metalab.executors.slurm_launch import SlurmLaunch
from metalab.executors.slurm_tasks import decode_task_list
from metalab.executors.slurm_waves import next_key, rest_key, wave_paths, waves_key
from metalab.executors.task_store import open_task_store
from metalab.keys import slurm_cancelled_key
from metalab.plan import RunPlan
from metalab.plan_loading import load_plan
from metalab.spec import derived_from_bytes
from metalab.store.base import Store

__all__ = ["WAIT_FOR_ROOM_S", "main"]

WAIT_FOR_ROOM_S = 600.0
"""How long a wave job waits for room under the submit limit before it gives up."""
_MODULE = "metalab.executors.slurm_wave_job"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {_MODULE}", description=__doc__)
    parser.add_argument("--store", required=True, help="store locator")
    parser.add_argument("--experiment", required=True, help="experiment id name:version")
    parser.add_argument("--submission", required=True, help="submission whose next wave to submit")
    parser.add_argument("--passfile", default=None, help="password file of the store's logins")
    return parser.parse_args(argv)


def _launch_rest(
    store: Store, plan: RunPlan, settings: dict[str, Any], rest: list[int]
) -> SlurmLaunch:
    """Submit ``rest``, waiting while the submit limit leaves no room."""
    key = settings.get("derived_key")
    blob = store.get_blob(key) if key else None
    derived = derived_from_bytes(blob, key) if key and blob is not None else []
    executor = SlurmExecutor(
        config_from_json(settings["config"], "wave settings"), python=settings["python"]
    )
    deadline = time.monotonic() + WAIT_FOR_ROOM_S
    pause = 10.0
    while True:
        try:
            return executor.submit(Job(plan, store, rest, derived, settings.get("timeout")))
        except (SlurmConfigError, SlurmError) as exc:
            # Other jobs of the user fill the limit (seen by the layout, or by sbatch when
            # they were submitted meanwhile: launch cancelled what it had submitted).
            full = "no room" in str(exc) or "MaxSubmitJob" in str(exc)
            if not full or time.monotonic() + pause > deadline:
                raise
            print(f"{_MODULE}: {exc}; trying again in {pause:.0f}s", flush=True)
        time.sleep(pause)
        pause = min(pause * 2, 120.0)


def main(argv: Sequence[str] | None = None) -> int:
    """Submit one submission's next wave; return the exit status."""
    args = _parse(argv)
    store = open_task_store(args.store, args.passfile, _MODULE)
    if store is None:
        return 2
    out: dict[str, Any] = {}
    try:
        if store.get_blob(slurm_cancelled_key(args.submission)) is not None:
            out = {"cancelled": True}
            print(f"{_MODULE}: {args.submission} was cancelled: no further wave is submitted")
            return 0
        raw, data = (
            store.get_blob(waves_key(args.submission)),
            store.get_blob(rest_key(args.submission)),
        )
        if raw is None or data is None:
            out = {"error": f"no wave settings for {args.submission} in {store.locator}"}
            print(f"{_MODULE}: {out['error']}", file=sys.stderr)
            return 2
        plan = load_plan(store, args.experiment)
        rest = [int(t) for t in decode_task_list(data)]
        launch = _launch_rest(store, plan, json.loads(raw), rest)
        out = {"launch": launch.reconnect_info}
        if store.get_blob(slurm_cancelled_key(args.submission)) is not None:
            # Cancelled while this job was submitting: take the new wave back at once.
            launch.cancel()
            out["cancelled"] = True
        print(f"{_MODULE}: submitted {len(rest)} run(s) of {args.submission} as {launch.job_ids}")
    except (SlurmError, SlurmConfigError) as exc:
        out = {"error": str(exc)}
        print(f"{_MODULE}: the next wave of {args.submission} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        # Written last and always: a watching launch reads it once this job left the queue.
        store.put_blob(next_key(args.submission), json.dumps(out).encode())
        store.close()
        wave_paths(store, args.submission).release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
