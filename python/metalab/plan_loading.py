"""Rebuild an experiment's :class:`~metalab.plan.RunPlan` from what ``metalab.run`` stored.

``metalab.run`` seals the experiment's spec into the blob :func:`metalab.keys.spec_key`
(with the driver's context fingerprint, so files are not stat-ed again elsewhere). Every
process that must run or watch the experiment later — a SLURM array task
(:mod:`metalab.worker`), :func:`metalab.reconnect`, a reattached SLURM launch — rebuilds
the plan through :func:`load_plan`; a ProcessExecutor worker, which receives the spec in
a message rather than from the store, through :func:`plan_from_spec`. One path, so the
signature check can never be skipped by one of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from metalab.errors import CorruptRecordError, StoreError
from metalab.keys import spec_key
from metalab.plan import RunPlan
from metalab.spec import experiment_from_spec, spec_from_bytes

if TYPE_CHECKING:
    from metalab.store.base import Store

__all__ = ["load_plan", "plan_from_spec"]


def plan_from_spec(spec: dict[str, Any], what: str = "the spec") -> RunPlan:
    """The plan of a decoded spec, with the context fingerprint it was stored with.

    Args:
        spec: :func:`metalab.spec.experiment_to_spec` output plus ``context_fingerprint``.
        what: names the spec in errors.

    Raises:
        CorruptRecordError: the spec has no ``context_fingerprint``.
    """
    context_fp = spec.get("context_fingerprint")
    if not isinstance(context_fp, str):
        raise CorruptRecordError(
            f"{what} has no str 'context_fingerprint' (got {context_fp!r}); "
            f"run the experiment again to rewrite it"
        )
    return RunPlan(experiment_from_spec(spec), context_fp=context_fp)


def load_plan(store: Store, experiment_id: str) -> RunPlan:
    """The plan of ``experiment_id``, rebuilt from the sealed spec blob in ``store``.

    The seal is checked before anything in the spec is unpickled.

    Raises:
        StoreError: ``store`` holds no spec of the experiment (``path`` is the blob key;
            in-process executors store none when the experiment cannot be pickled).
        SignatureError: the spec was not sealed by this account for this experiment
            (another user or role wrote or altered it); nothing of it was used.
        CorruptRecordError: the sealed spec is not a usable JSON document.
    """
    key = spec_key(experiment_id)
    blob = store.get_blob(key)
    if blob is None:
        raise StoreError(
            f"store {store.locator} lacks the spec of {experiment_id} (blob {key!r}); "
            f"was it launched into this store?",
            locator=store.locator,
            path=key,
        )
    what = f"spec blob {key!r} of {store.locator}"
    return plan_from_spec(spec_from_bytes(blob, experiment_id, what), what)
