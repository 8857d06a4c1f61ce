"""Layout of a SLURM submission (shards, concurrency lanes) and its batch scripts.

Index addressing: array task ``a`` of a shard with offset ``o`` handles the *global* array
task ``g = o + a``, i.e. positions ``[g*K, (g+1)*K)`` of the submission's task list (``K`` =
runs per task). The task list is the identity (every task of the experiment) or a
per-submission index blob; nothing is written per run.

Concurrency across shards (``max_concurrent``): shards are dealt round-robin into
``L = min(shards, max_concurrent)`` *lanes*; the budget is split between the lanes (their
``%N`` throttles add up to ``max_concurrent``) and the shards of one lane are chained with
``--dependency=afterany:<previous shard of the lane>``. So the cap holds for the whole
experiment at every moment, every lane stays busy until its last shard, and no process has
to stay alive to release the next shard.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from metalab.executors.slurm_config import SlurmConfig

__all__ = [
    "Shard",
    "environment_lines",
    "follow_up_script",
    "job_name",
    "plan_shards",
    "render_script",
    "sbatch_options",
]

WORKER_MODULE = "metalab.worker"
JOB_NAME_CHARS = 40
"""Most characters of the experiment name kept in a job name (squeue's NAME column)."""
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]")
BYTECODE_CACHE_LINES = [
    "# Imports from cached bytecode. With PYTHONDONTWRITEBYTECODE set (containers, CI) and",
    "# an install that shipped no .pyc (uv, editable installs), every array task would",
    "# compile each module it imports from source again: ~4x the CPU of its start-up. The",
    "# cache goes to this user's cache directory, never next to the sources; a",
    "# PYTHONPYCACHEPREFIX of the user's own (e.g. from setup) is left alone.",
    'if [ -n "${PYTHONDONTWRITEBYTECODE:-}" ] && [ -z "${PYTHONPYCACHEPREFIX:-}" ] \\',
    '    && [ -n "${HOME:-}" ]; then',
    '    export PYTHONPYCACHEPREFIX="${XDG_CACHE_HOME:-$HOME/.cache}/metalab/pycache"',
    "    unset PYTHONDONTWRITEBYTECODE",
    "fi",
]
"""Batch-script lines before the worker's ``exec``: where its interpreter caches bytecode."""


def job_name(experiment_name: str, run_ids: Sequence[str]) -> str:
    """The SLURM job name of an experiment's arrays: ``metalab-<name>-<6 hex>``.

    The hex digits hash the experiment's run set (every run ID in task order), so two
    experiments of the same name (another version, grid or context) are told apart in
    ``squeue`` while every submission of one experiment shares its name. The name is
    made safe for ``squeue -o``/``--name`` (which split on commas and spaces): ASCII
    letters, digits, ``_``, ``.`` and ``-``, anything else becomes ``_``, at most
    :data:`JOB_NAME_CHARS` of it.
    """
    digest = hashlib.blake2b("\n".join(run_ids).encode(), digest_size=3).hexdigest()
    safe = _UNSAFE_IN_NAME.sub("_", experiment_name)[:JOB_NAME_CHARS] or "experiment"
    return f"metalab-{safe}-{digest}"


@dataclass(frozen=True)
class Shard:
    """One array job of a submission."""

    number: int
    offset: int
    """Global array index of this shard's array task 0."""
    count: int
    """Array tasks in the shard (``--array=0-{count-1}``)."""
    throttle: int | None
    """``%N`` concurrency limit of the array, or None."""
    after: int | None
    """Number of the shard this one waits for (same lane), or None."""

    @property
    def array_spec(self) -> str:
        """The ``--array`` value, e.g. ``0-9999%250``."""
        spec = f"0-{self.count - 1}"
        return f"{spec}%{self.throttle}" if self.throttle is not None else spec


def plan_shards(n_array_tasks: int, config: SlurmConfig) -> list[Shard]:
    """Split ``n_array_tasks`` into arrays of at most ``max_array_size`` and assign lanes."""
    if n_array_tasks <= 0:
        return []
    size = config.max_array_size
    counts = [min(size, n_array_tasks - start) for start in range(0, n_array_tasks, size)]
    limit = config.max_concurrent
    lanes = len(counts) if limit is None else min(len(counts), limit)
    shards = []
    for number, count in enumerate(counts):
        lane = number % lanes
        throttle: int | None = None
        if limit is not None:
            budget = limit // lanes + (1 if lane < limit % lanes else 0)
            # A throttle at least as large as the array changes nothing: leave it out.
            throttle = budget if budget < count else None
        after = number - lanes if number >= lanes and limit is not None else None
        shards.append(Shard(number, number * size, count, throttle, after))
    return shards


def render_script(
    config: SlurmConfig,
    *,
    python: str,
    store_locator: str,
    experiment_id: str,
    offset: int,
    tasks_key: str | None,
    derived_key: str | None = None,
    timeout: float | None = None,
    job_name: str,
    passfile: str | None = None,
) -> str:
    """Return the batch script of one shard (given to ``sbatch`` on stdin).

    Every value that reaches the shell is ``shlex.quote``-d; the ``#SBATCH`` values are
    validated to a safe character set (sbatch reads those lines without a shell) and
    quoted too, which leaves them unchanged. ``setup`` lines are shell by intent and are
    copied verbatim.

    Args:
        passfile: path of the submission's password file (see
            :mod:`metalab.store.credentials`); only the path is in the script.
    """
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={q(job_name)}",
        f"#SBATCH --time={q(config.time)}",
        f"#SBATCH --cpus-per-task={config.cpus}",
        f"#SBATCH --mem={q(config.sbatch_memory)}",
    ]
    if not config.uses_default_partition:
        lines.append(f"#SBATCH --partition={q(config.partition)}")
    if config.gpus:
        lines.append(f"#SBATCH --gres=gpu:{config.gpus}")
    # The worker hears of the walltime before it is killed (it is exec-ed, so the batch
    # shell's signal reaches it) and records the running run as timed out.
    lines.append(f"#SBATCH --signal=B:USR1@{config.warning_lead}")
    if config.requeue:
        # A preempted/requeued task starts again and appends to its log, not truncates it.
        lines += ["#SBATCH --requeue", "#SBATCH --open-mode=append"]
    else:
        # Said explicitly: a site's JobRequeue=1 (SLURM's default) would requeue it anyway.
        lines.append("#SBATCH --no-requeue")
    lines += [
        "# Generated by metalab. Each array task recomputes its runs from",
        "# SLURM_ARRAY_TASK_ID + --offset; nothing per run was written at submission.",
        "set -eo pipefail",
    ]
    lines += environment_lines(config)
    lines += BYTECODE_CACHE_LINES
    command = [
        python,
        "-m",
        WORKER_MODULE,
        "--store",
        store_locator,
        "--experiment",
        experiment_id,
        "--offset",
        str(offset),
        "--runs-per-task",
        str(config.runs_per_task),
        "--signal-lead",
        str(config.warning_lead),
    ]
    if tasks_key is not None:
        command += ["--tasks", tasks_key]
    if derived_key is not None:
        command += ["--derived", derived_key]
    if timeout is not None:
        command += ["--timeout", repr(float(timeout))]
    if passfile is not None:
        command += ["--passfile", passfile]
    lines.append("exec " + " ".join(q(part) for part in command))
    return "\n".join(lines) + "\n"


def environment_lines(config: SlurmConfig) -> list[str]:
    """The lines that give a job the array tasks' interpreter: modules, conda, ``setup``."""
    q = shlex.quote
    lines = [f"module load {q(module)}" for module in config.modules]
    if config.conda_env is not None:
        # `conda activate` only works once conda's shell hook is loaded in this shell.
        lines += ['eval "$(conda shell.bash hook)"', f"conda activate {q(config.conda_env)}"]
    return lines + list(config.setup)


def follow_up_script(
    config: SlurmConfig,
    *,
    name: str,
    time: str,
    memory: str,
    purpose: str,
    command: Sequence[str],
) -> str:
    """The batch script of a small job that follows a submission (its retry or wave job).

    The same environment as the array tasks (:func:`environment_lines`), so it finds the
    same interpreter, and small fixed resources of its own: ``time``, ``memory``, one CPU,
    no GPU, the config's partition.

    Args:
        purpose: one line saying what the job does, for whoever reads the script.
        command: the program and its arguments (``exec``-ed, every part quoted).
    """
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={q(name)}",
        f"#SBATCH --time={time}",
        "#SBATCH --cpus-per-task=1",
        f"#SBATCH --mem={memory}",
    ]
    if not config.uses_default_partition:
        lines.append(f"#SBATCH --partition={q(config.partition)}")
    lines += [f"# Generated by metalab: {purpose}", "set -eo pipefail"]
    lines += environment_lines(config)
    lines.append("exec " + " ".join(q(part) for part in command))
    return "\n".join(lines) + "\n"


def sbatch_options(shard: Shard, output: str | None, after_job: str | None) -> list[str]:
    """Command-line options of the ``sbatch`` call of ``shard`` (argv: no shell involved).

    The log path goes here rather than into an ``#SBATCH`` line because it contains the
    store path, which may hold any character; see
    :func:`metalab.executors.slurm_paths.output_pattern`.
    """
    options = ["--parsable", f"--array={shard.array_spec}"]
    if output is not None:
        options.append(f"--output={output}")
    if after_job is not None:
        options.append(f"--dependency=afterany:{after_job}")
    return options
