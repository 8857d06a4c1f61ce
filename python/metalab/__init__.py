"""metalab: a reproducible experiment runner.

``(Context, Params, SeedBundle) -> RunRecord + Artifacts``: write one operation, sweep its
parameters, control every random number through seed bundles, and get resume,
deduplication and parallel execution on a laptop, a process pool or SLURM.
"""

from __future__ import annotations

try:
    from metalab import _core
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        "metalab's compiled Rust core (metalab._core) is missing or broken; reinstall "
        "metalab (e.g. `uv sync` or `pip install .`) to build it"
    ) from exc

from typing import TYPE_CHECKING

from metalab import lazy_exports
from metalab.context import DirPath, FilePath, context_spec
from metalab.errors import MetalabError
from metalab.experiment import Experiment
from metalab.operation import Runtime, operation
from metalab.params import grid, manual
from metalab.reconnect import reconnect
from metalab.seeds import SeedBundle, SeedPlan, seeds

if TYPE_CHECKING:
    # The type checker sees the real names; at runtime they load on first use (below).
    from metalab.executors.base import Executor
    from metalab.executors.process import ProcessExecutor
    from metalab.executors.slurm import SlurmExecutor
    from metalab.executors.slurm_config import SlurmConfig
    from metalab.executors.thread import ThreadExecutor
    from metalab.params import (
        choice,
        loguniform,
        loguniform_int,
        normal,
        randint,
        random,
        uniform,
    )
    from metalab.progress import Progress
    from metalab.results import Results, Run, load_results
    from metalab.runner import RunHandle, RunStatus, run

__version__: str = _core.__version__

__all__ = [
    "DirPath",
    "Executor",
    "Experiment",
    "FilePath",
    "MetalabError",
    "ProcessExecutor",
    "Progress",
    "Results",
    "Run",
    "RunHandle",
    "RunStatus",
    "Runtime",
    "SeedBundle",
    "SeedPlan",
    "SlurmConfig",
    "SlurmExecutor",
    "ThreadExecutor",
    "__version__",
    "choice",
    "context_spec",
    "grid",
    "load_results",
    "loguniform",
    "loguniform_int",
    "manual",
    "normal",
    "operation",
    "randint",
    "random",
    "reconnect",
    "run",
    "seeds",
    "uniform",
]


# Loaded on first use: every SLURM array task imports metalab (the worker, and the
# user's module defining the operation), and needs none of these to execute its runs.
# (``reconnect`` stays a plain import: it shares its name with its module, which would
# shadow a lazy attribute once imported; reconnect.py itself imports little.)
_LAZY = {
    "Executor": "metalab.executors.base",
    "ThreadExecutor": "metalab.executors.thread",
    **dict.fromkeys(
        ("choice", "loguniform", "loguniform_int", "normal", "randint", "random", "uniform"),
        "metalab.params",
    ),
    "Progress": "metalab.progress",
    "Results": "metalab.results",
    "Run": "metalab.results",
    "load_results": "metalab.results",
    "RunHandle": "metalab.runner",
    "RunStatus": "metalab.runner",
    "run": "metalab.runner",
    # Executors with heavier imports (multiprocessing, subprocess plumbing).
    "ProcessExecutor": "metalab.executors.process",
    "SlurmConfig": "metalab.executors.slurm_config",
    "SlurmExecutor": "metalab.executors.slurm",
}


__getattr__ = lazy_exports.loader(__name__, _LAZY)
