"""The attacker's tools and the victim's experiment, shared by the payload-tampering tests.

Not a test module. The attacks replace a stored payload with one whose unpickling creates
a marker file (:class:`Touch`), so a test can prove that no attacker code ran.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import pickle
import subprocess
import sys
from pathlib import Path

import metalab
from metalab.executors.slurm import derived_key
from metalab.executors.slurm_config import SlurmConfig
from metalab.executors.slurm_script import render_script
from metalab.plan import RunPlan
from metalab.runner import spec_key
from metalab.spec import derived_to_bytes, experiment_to_spec, spec_to_bytes
from metalab.store.base import Store


class Touch:
    """Unpickling this creates ``path``: proof that attacker-chosen code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def evil_spec(blob: bytes, marker: Path) -> bytes:
    """The attacker's rewrite of a spec blob: same spec, operation replaced, no valid seal."""
    text = blob.split(b"\n", 1)[1] if blob.startswith(b"metalab-sealed") else blob
    spec = json.loads(text)
    spec["operation"] = base64.b64encode(pickle.dumps(Touch(marker))).decode()
    return json.dumps(spec).encode()


@metalab.operation
def square(params, capture):  # type: ignore[no-untyped-def]
    """A legitimate operation."""
    capture.metric("y", params["x"] ** 2)


def experiment() -> metalab.Experiment:
    """The victim's experiment ``tamper:1``: three runs of :func:`square`."""
    return metalab.Experiment(
        name="tamper",
        version="1",
        context={},
        operation=square,
        params=metalab.grid(x=[1, 2, 3]),
        seeds=metalab.seeds(base=1, replicates=1),
    )


def overwrite_in_place(path: Path, data: bytes) -> None:
    """Rewrite a file without changing its owner or mode (FileStore's check still passes)."""
    with open(path, "r+b") as handle:
        handle.truncate(0)
        handle.write(data)


def write_submission(store: Store, derived: list[object] | None = None) -> str | None:
    """What the driver stores before sbatch: the sealed spec (and derived functions)."""
    exp = experiment()
    spec = experiment_to_spec(exp)
    spec["context_fingerprint"] = RunPlan(exp).context_fp
    store.put_blob(spec_key(exp.experiment_id), spec_to_bytes(spec, exp.experiment_id))
    if derived is None:
        return None
    key = derived_key("T1")
    store.put_blob(key, derived_to_bytes(derived, key))
    return key


def run_worker(store: Store, derived: str | None) -> subprocess.CompletedProcess[str]:
    """Run array task 0 with exactly the batch script the SLURM executor submits."""
    script = render_script(
        SlurmConfig(runs_per_task=3),
        python=sys.executable,
        store_locator=store.locator,
        experiment_id="tamper:1",
        offset=0,
        tasks_key=None,
        derived_key=derived,
        job_name="metalab-tamper",
    )
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_JOB_ID": "42"}
    return subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120
    )


def y_plus_one(run: object) -> dict[str, float]:
    """A legitimate derived metric."""
    return {"y1": run.metrics["y"] + 1}  # type: ignore[attr-defined]
