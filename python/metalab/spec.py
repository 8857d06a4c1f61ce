"""Ship an experiment to workers (process pools, SLURM tasks) and rebuild it there.

Parameters, seeds and context specs travel as JSON. The operation travels with
cloudpickle: by reference when its module is importable, by value when it was defined in
a script's ``__main__`` or a notebook cell. Plain contexts that JSON cannot hold are
cloudpickled too. The driver's ``sys.path`` travels along so the worker can import what
the driver could.

A spec stored in a store, and the derived-metric functions shipped with a SLURM
submission, carry code: they are sealed (:mod:`metalab.signing`) when written and checked
before anything in them is used, so a co-user who can write the store cannot make the
driver's account run their code. Specs handed to a ProcessExecutor's own children never
pass through a store and need no seal.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from metalab.context import context_from_json, context_to_json, is_context_spec
from metalab.errors import CorruptRecordError
from metalab.experiment import Experiment
from metalab.params import source_from_spec
from metalab.seeds import SeedPlan
from metalab.signing import open_sealed, seal

__all__ = [
    "SPEC_VERSION",
    "derived_from_bytes",
    "derived_to_bytes",
    "experiment_from_spec",
    "experiment_to_spec",
    "spec_from_bytes",
    "spec_to_bytes",
]

SPEC_VERSION = 1


def _pickle_b64(obj: object) -> str:
    # cloudpickle is needed to encode only: its output is plain pickle (pickle.loads
    # imports cloudpickle itself for a by-value function), so a worker that decodes a
    # spec of importable operations never loads it.
    import cloudpickle

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


def spec_to_bytes(spec: dict[str, Any], experiment_id: str) -> bytes:
    """Encode ``spec`` as a store blob, sealed as the spec of ``experiment_id``.

    Raises:
        UnsafeLoadError: the signing key cannot be created or read safely.
    """
    return seal(json.dumps(spec).encode(), f"spec:{experiment_id}")


def spec_from_bytes(data: bytes, experiment_id: str, what: str | None = None) -> dict[str, Any]:
    """Check and decode a spec blob written by :func:`spec_to_bytes`.

    Args:
        data: the blob.
        experiment_id: the experiment whose spec it must be (bound into the seal).
        what: names the blob in errors (default: ``"the spec of <experiment_id>"``).

    Raises:
        SignatureError: the blob was not sealed by this account as this experiment's
            spec (written by someone else, or altered): nothing in it was used.
        CorruptRecordError: the sealed blob is not a JSON object.
    """
    name = what or f"the spec of {experiment_id}"
    payload = open_sealed(data, f"spec:{experiment_id}", name)
    try:
        document = json.loads(payload)
    except ValueError as exc:
        raise CorruptRecordError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CorruptRecordError(f"{name} is a JSON {type(document).__name__}, expected an object")
    return document


def derived_to_bytes(functions: Sequence[Any], key: str) -> bytes:
    """Pickle derived-metric functions for the blob ``key``, sealed for that key.

    Raises:
        UnsafeLoadError: the signing key cannot be created or read safely.
    """
    import cloudpickle

    return seal(cloudpickle.dumps(list(functions)), f"derived:{key}")


def derived_from_bytes(data: bytes, key: str) -> list[Any]:
    """Check, then unpickle, a blob written by :func:`derived_to_bytes` under ``key``.

    Raises:
        SignatureError: not sealed by this account for ``key``; it was not unpickled.
    """
    import pickle

    functions: list[Any] = pickle.loads(open_sealed(data, f"derived:{key}", f"blob {key!r}"))
    return functions
