"""``load_results`` filters: one experiment (by name or ``name:version``), and a warning
when what was loaded mixes versions of one experiment.

A store's default path (``./runs/{name}``) is shared by every version of an experiment,
so loading it whole can put ``my_exp:v1`` and ``my_exp:0.1`` rows side by side. That is
said once, with how to load one version, instead of leaving look-alike rows unexplained.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

from metalab.errors import ExperimentError
from metalab.experiment import Experiment
from metalab.store.base import Store

__all__ = ["mixed_versions_warning", "select_experiment", "wanted"]


def wanted(experiment_id: str | None, experiment: Any) -> tuple[str | None, str | None]:
    """(exact ``name:version`` or None, bare name or None) that the caller asked for.

    Raises:
        ExperimentError: both filters given, or ``experiment`` of the wrong kind.
    """
    if experiment is None:
        return experiment_id, None
    if experiment_id is not None:
        raise ExperimentError(
            f"give experiment_id= or experiment=, not both (got {experiment_id!r} and "
            f"{experiment!r})"
        )
    if isinstance(experiment, Experiment):
        return experiment.experiment_id, None
    if not isinstance(experiment, str) or not experiment.strip(":"):
        raise ExperimentError(
            f"experiment must be an experiment name ('pi_mc'), a 'name:version' "
            f"('pi_mc:0.1') or a metalab.Experiment, got {experiment!r}"
        )
    return (experiment, None) if ":" in experiment else (None, experiment)


def select_experiment(
    store: Store, experiment: Any, experiment_ids: Sequence[str], name: str | None
) -> list[bool] | None:
    """Which loaded rows to keep (``None``: all), and warnings about what was loaded.

    ``experiment_ids`` are the loaded rows' experiments; ``name`` is the bare name asked
    for (from :func:`wanted`). Warns (attributed to the caller of ``load_results``) when
    ``experiment`` matched nothing, and when the kept rows mix versions of one experiment.
    """
    keep = None if name is None else [eid.partition(":")[0] == name for eid in experiment_ids]
    kept = experiment_ids
    if keep is not None:
        kept = [eid for eid, wanted in zip(experiment_ids, keep, strict=True) if wanted]
    if experiment is not None and not kept:
        known = sorted({str(m.get("experiment_id")) for m in store.list_manifests()})
        holds = ", ".join(known) if known else "no experiment"
        warnings.warn(
            f"load_results: {store.locator} holds no runs of {experiment!r}; it holds: {holds}",
            UserWarning,
            stacklevel=3,
        )
    message = mixed_versions_warning(kept)
    if message:
        warnings.warn(message, UserWarning, stacklevel=3)
    return keep


def mixed_versions_warning(experiment_ids: Sequence[str]) -> str:
    """The warning for runs of several versions of one experiment, or ``""``."""
    counts = Counter(experiment_ids)
    by_name: dict[str, list[str]] = {}
    for experiment_id in sorted(counts):
        by_name.setdefault(experiment_id.partition(":")[0], []).append(experiment_id)
    mixed = {name: ids for name, ids in by_name.items() if len(ids) > 1}
    if not mixed:
        return ""
    name, ids = next(iter(mixed.items()))
    listed = ", ".join(f"{eid} ({counts[eid]} runs)" for eid in ids)
    more = f" (and versions of {len(mixed) - 1} more experiments)" if len(mixed) > 1 else ""
    return (
        f"load_results: these results mix {len(ids)} versions of {name}: {listed}{more}. "
        f"table() shows an experiment_id column and summary()/display() group by it; "
        f"to load one version: metalab.load_results(store, experiment={ids[-1]!r})"
    )
