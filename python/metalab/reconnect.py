"""Rebuild a :class:`RunHandle` from a store alone (new terminal, new notebook kernel)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from metalab.errors import CorruptRecordError, StoreError
from metalab.keys import launch_key
from metalab.plan_loading import load_plan
from metalab.records import StoredState
from metalab.store.locator import create_store

if TYPE_CHECKING:
    # Imported where used: ``import metalab`` loads this module, and every SLURM array
    # task imports metalab without needing handles, progress displays or services.
    from metalab.executors.base import Launch
    from metalab.handle import RunHandle
    from metalab.plan import RunPlan

__all__ = ["reconnect"]


def reconnect(store: Any, experiment_id: str | None = None, progress: Any = None) -> RunHandle:
    """Return a handle on the latest launch recorded in ``store``.

    Status comes from the store's completion markers (and the scheduler, for SLURM).

    Raises:
        StoreError: the store records no launch (of ``experiment_id``).
        SignatureError: the stored spec was not sealed by this account (another user or
            role wrote or altered it); nothing of it was unpickled.
        CorruptRecordError: the launch pointer blob is garbled (names it and the fix).
    """
    from metalab.handle import RunHandle
    from metalab.progress import make_progress

    target = create_store(store)
    key = launch_key(experiment_id)
    pointer_blob = target.get_blob(key)
    if pointer_blob is None:
        which = f"experiment {experiment_id!r}" if experiment_id else "any experiment"
        raise StoreError(
            f"store {target.locator} has no launch of {which} to reconnect to",
            locator=target.locator,
            path=key,
        )
    where = f"launch pointer blob {key!r} of {target.locator}"
    pointer = _launch_pointer(pointer_blob, where, target.locator, key)
    # The spec carries pickled code: load_plan refuses it unless this account sealed it.
    plan = load_plan(target, pointer["experiment_id"])
    try:
        launch = _reattach(pointer, target, plan)
    except (KeyError, TypeError) as exc:  # a field of the right JSON but the wrong shape
        raise CorruptRecordError(
            f"{where} lacks a usable field ({exc!r}); {_POINTER_FIX}",
            locator=target.locator,
            path=key,
        ) from None
    display = make_progress(progress)
    # Only a handle without a launch counts finished runs as skipped; the others read the
    # store on every status (a scan of every run costs 0.4 s at 300,000).
    done = target.states(plan.run_ids).count(StoredState.DONE) if launch is None else 0
    if display is not None:
        display.start(plan.total, 0)
    return RunHandle(plan, target, launch, skipped=done, progress=display)


_POINTER_FIX = (
    "run the experiment again (resume=True skips what finished) to rewrite it, or pass "
    "experiment_id= to reconnect through that experiment's own pointer"
)


def _launch_pointer(data: bytes, where: str, locator: str, key: str) -> dict[str, Any]:
    """Decode a launch pointer written by :func:`metalab.run`.

    Raises:
        CorruptRecordError: not a JSON object with a str ``experiment_id``.
    """
    try:
        pointer = json.loads(data)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise CorruptRecordError(
            f"{where} is not valid JSON ({exc}); {_POINTER_FIX}", locator=locator, path=key
        ) from None
    if not isinstance(pointer, dict) or not isinstance(pointer.get("experiment_id"), str):
        raise CorruptRecordError(
            f"{where} is not a launch pointer (expected a JSON object with a str "
            f"'experiment_id'); {_POINTER_FIX}",
            locator=locator,
            path=key,
        )
    return pointer


def _driver_alive(pointer: dict[str, Any]) -> bool:
    import socket

    from metalab.service import pid_alive

    host, pid = pointer.get("driver_host"), pointer.get("driver_pid")
    if host != socket.gethostname() or not isinstance(pid, int):
        return True  # cannot tell from here: keep watching the store
    return pid_alive(pid)


def _reattach(pointer: dict[str, Any], store: Any, plan: RunPlan) -> Launch | None:
    if pointer.get("executor") == "slurm":
        from metalab.executors.slurm_launch import reattach

        return reattach(pointer, store, plan)
    if not _driver_alive(pointer):
        from metalab.executors.ended import EndedLaunch

        return EndedLaunch()
    return None
