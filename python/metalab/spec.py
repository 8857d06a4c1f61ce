"""Ship an experiment to workers (process pools, SLURM tasks) and rebuild it there.

Parameters, seeds and context specs travel as JSON. The operation travels with
cloudpickle: by reference when its module is importable, by value when it was defined in
a script's ``__main__`` or a notebook cell. Plain contexts that JSON cannot hold are
cloudpickled too. The driver's ``sys.path`` travels along so the worker can import what
the driver could.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from typing import Any

import cloudpickle

from metalab.context import context_from_json, context_to_json, is_context_spec
from metalab.experiment import Experiment
from metalab.params import source_from_spec
from metalab.seeds import SeedPlan

__all__ = ["SPEC_VERSION", "experiment_from_spec", "experiment_to_spec", "spec_from_bytes"]

SPEC_VERSION = 1


def _pickle_b64(obj: object) -> str:
    return base64.b64encode(cloudpickle.dumps(obj)).decode("ascii")


def _unpickle_b64(text: str) -> Any:
    import pickle

    return pickle.loads(base64.b64decode(text))


def experiment_to_spec(exp: Experiment) -> dict[str, Any]:
    """Return a JSON-serialisable description from which a worker rebuilds ``exp``."""
    context_json = context_to_json(exp.context)
    spec: dict[str, Any] = {
        "spec_version": SPEC_VERSION,
        "name": exp.name,
        "version": exp.version,
        "description": exp.description,
        "tags": list(exp.tags),
        "metadata": exp.metadata,
        "params": exp.params.spec(),
        "seeds": exp.seeds.spec(),
        "operation": _pickle_b64(exp.operation),
        "operation_ref": exp.operation.reference,
        "context": context_json,
        "context_pickle": None if context_json is not None else _pickle_b64(exp.context),
        "context_class": None,
        "sys_path": [p for p in sys.path if p and os.path.isdir(p)],
        "cwd": os.getcwd(),
    }
    if is_context_spec(exp.context):
        spec["context_class"] = _pickle_b64(type(exp.context))
    return spec


def experiment_from_spec(spec: dict[str, Any]) -> Experiment:
    """Rebuild the experiment described by :func:`experiment_to_spec` output."""
    for entry in reversed(spec.get("sys_path", [])):
        if entry not in sys.path and os.path.isdir(entry):
            sys.path.append(entry)
    operation = _unpickle_b64(spec["operation"])
    if spec["context"] is not None:
        cls = _unpickle_b64(spec["context_class"]) if spec.get("context_class") else None
        context = context_from_json(spec["context"], cls)
    else:
        context = _unpickle_b64(spec["context_pickle"])
    return Experiment(
        name=spec["name"],
        version=spec["version"],
        context=context,
        operation=operation,
        params=source_from_spec(spec["params"]),
        seeds=SeedPlan(**spec["seeds"]),
        description=spec.get("description"),
        tags=spec.get("tags", ()),
        metadata=spec.get("metadata") or {},
    )


def spec_from_bytes(data: bytes) -> dict[str, Any]:
    """Decode a spec blob written by the driver."""
    document: dict[str, Any] = json.loads(data)
    return document
