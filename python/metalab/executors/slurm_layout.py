"""How a submission fits the site: array size, runs per task and waves, decided before sbatch.

:func:`plan_layout` takes the runs to submit, the user's :class:`SlurmConfig` and the
site's :class:`~metalab.executors.slurm_limits.SiteLimits` and returns a :class:`Layout`,
or raises :class:`~metalab.errors.SlurmConfigError` naming a setting that would fit —
always before the first ``sbatch``, so nothing is ever half-submitted.

- **Array size.** A ``max_array_size`` above the site's ``MaxArraySize`` is lowered to it
  (said once, in :attr:`Layout.notes`).
- **Waves.** Array tasks count one job each against the user's submit limit (QOS
  ``MaxSubmitJobsPerUser`` and friends). When the submission has more tasks than the
  headroom (limit minus what is queued now), only a first wave is submitted, followed by
  a small *wave job* that depends on it and submits the rest when it ended (see
  :mod:`metalab.executors.slurm_waves`); no process has to stay alive. A wave leaves
  :data:`WAVE_RESERVE` jobs of headroom for the wave job (pending, then running while it
  submits the next wave), plus one per extra follower job (``retries``), so the limit is
  never exceeded.
- **Automatic packing** (``runs_per_task="auto"``). A task costs about
  :data:`TASK_START_S` of slot time before its first run (scheduling, Python start-up);
  the block of runs per task is chosen so that this stays under :data:`OVERHEAD_FRACTION`
  of the task's work, never fills more than :data:`WALLTIME_FILL` of the walltime, keeps
  :data:`SLOT_OVERSUBSCRIPTION` tasks per slot the partition can run at once (so slots
  stay busy to the end), and — when the walltime allows — is large enough that the whole
  submission fits the headroom in one wave. The duration of a run is the median of up to
  :data:`MEASURE_SAMPLE` finished runs of the experiment in the store, else
  :data:`DEFAULT_RUN_SECONDS`.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from metalab.errors import SlurmConfigError
from metalab.executors.slurm_config import DEFAULT_MAX_ARRAY_SIZE, SlurmConfig, parse_time
from metalab.executors.slurm_limits import SiteLimits

if TYPE_CHECKING:
    from metalab.plan import RunPlan
    from metalab.store.base import Store

__all__ = [
    "AUTO",
    "DEFAULT_RUN_SECONDS",
    "Layout",
    "measured_run_seconds",
    "plan_layout",
]

AUTO = "auto"
"""``SlurmConfig(runs_per_task=AUTO)``: let :func:`plan_layout` choose the block."""
TASK_START_S = 1.0
"""Slot time an array task costs before its first run (0.5-1 s measured on the test cluster)."""
OVERHEAD_FRACTION = 0.05
"""Largest share of a packed task's slot time that its start may take."""
WALLTIME_FILL = 0.5
"""Largest share of the walltime a packed task's runs may fill (runs vary; tasks must end)."""
SLOT_OVERSUBSCRIPTION = 4
"""Tasks per slot that automatic packing keeps, so that no slot idles at the end."""
DEFAULT_RUN_SECONDS = 1.0
"""Duration assumed for a run when the store has none finished to measure."""
RUN_RECORD_S = 0.002
"""Time a worker spends recording one run (record + marker), added to a measured duration."""
MEASURE_SAMPLE = 50
"""Finished runs read to measure the duration of a run."""
WAVE_RESERVE = 2
"""Jobs of submit headroom each wave leaves to its wave job (queued, then running)."""


@dataclass(frozen=True)
class Layout:
    """How a submission is cut into array jobs (see the module docstring)."""

    runs_per_task: int
    array_size: int
    """Most tasks per array job (``max_array_size`` after the site's clamp)."""
    n_tasks: int
    """Array tasks of the whole submission."""
    wave_tasks: int
    """Array tasks submitted now (all of them when there is a single wave)."""
    run_seconds: float
    """Duration of a run used for packing (measured or :data:`DEFAULT_RUN_SECONDS`)."""
    measured: bool
    headroom: int | None
    """Jobs the user may still queue (submit limit minus queued), None when unlimited."""
    notes: tuple[str, ...] = ()
    """What was adjusted to the site (said once, at submission and in dry runs)."""

    @property
    def waves(self) -> int:
        """Number of waves the submission is released in (1: everything at once)."""
        if self.n_tasks <= self.wave_tasks or self.wave_tasks == 0:
            return 1
        return 1 + math.ceil((self.n_tasks - self.wave_tasks) / self.wave_tasks)

    def wave_runs(self, n_runs: int) -> int:
        """Runs of the first wave, out of the submission's ``n_runs``."""
        return min(n_runs, self.wave_tasks * self.runs_per_task)

    def config(self, config: SlurmConfig) -> SlurmConfig:
        """``config`` with the chosen ``runs_per_task`` and array size (for the scripts)."""
        return dataclasses.replace(
            config, runs_per_task=self.runs_per_task, max_array_size=self.array_size
        )

    def describe(self) -> list[str]:
        """Dry-run lines: the chosen layout and why."""
        source = "measured" if self.measured else "assumed, nothing measured yet"
        room = "unlimited" if self.headroom is None else str(self.headroom)
        lines = [
            f"layout: {self.n_tasks} array task(s) of {self.runs_per_task} run(s), arrays of "
            f"at most {self.array_size}; a run takes {self.run_seconds:.3g} s ({source}); "
            f"submit headroom {room}",
        ]
        if self.waves > 1:
            lines.append(
                f"waves: {self.waves} of at most {self.wave_tasks} task(s); each wave's wave "
                f"job submits the next when it ended (no process has to stay alive)"
            )
        return lines + [f"note: {note}" for note in self.notes]


def _partition_names(config: SlurmConfig) -> list[str | None]:
    names: list[str | None] = [None]
    if not config.uses_default_partition:
        names = list(config.partition.split(","))
    return names


def _check_partition(config: SlurmConfig, limits: SiteLimits) -> int | None:
    """TotalCPUs of the config's partition(s), if known; SlurmConfigError if it cannot run."""
    walltime = parse_time(config.time)
    cpus: list[int | None] = []
    for name in _partition_names(config):
        part = limits.partition(name)
        if part is None:
            if name is not None and limits.partitions:
                known = ", ".join(sorted(limits.partitions))
                raise SlurmConfigError(
                    f"SlurmConfig partition {name!r} does not exist on this cluster; "
                    f"expected one of: {known}"
                )
            cpus.append(None)
            continue
        if part.max_time_s is not None and walltime > part.max_time_s:
            raise SlurmConfigError(
                f"SlurmConfig time={config.time!r} exceeds MaxTime of partition {part.name!r} "
                f"({_clock(part.max_time_s)}); use time='{_clock(part.max_time_s)}' or less "
                f"(with runs_per_task lowered to match) or another partition"
            )
        cpus.append(part.total_cpus)
    known_cpus = [c for c in cpus if c is not None]
    return sum(known_cpus) if known_cpus else None


def _clock(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def _auto_block(
    n_runs: int,
    config: SlurmConfig,
    run_s: float,
    walltime: int,
    slots: int | None,
    headroom: int | None,
    followers: int,
) -> int:
    fill = max(1, math.floor(WALLTIME_FILL * walltime / run_s))
    block = math.ceil(TASK_START_S / (OVERHEAD_FRACTION * run_s))
    if config.max_concurrent is not None:
        slots = config.max_concurrent if slots is None else min(slots, config.max_concurrent)
    if slots is not None:
        # Enough tasks to keep every slot busy to the end: more, smaller tasks.
        block = min(block, math.ceil(n_runs / (SLOT_OVERSUBSCRIPTION * slots)))
    # One wave needs no wave job, but its follower jobs (a retry job) queue with it: the
    # tasks get what they leave, or a tiny second wave would follow a full first one.
    room = None if headroom is None else headroom - followers
    if room is not None and room > 0:
        # Fewer, larger tasks when that avoids waves and the walltime allows it.
        block = max(block, math.ceil(n_runs / room))
    return max(1, min(block, fill, n_runs))


def plan_layout(
    n_runs: int,
    config: SlurmConfig,
    limits: SiteLimits,
    *,
    queued: int | None,
    run_seconds: float | None = None,
    followers: int = 0,
) -> Layout:
    """Fit ``n_runs`` runs under ``config`` to the site ``limits`` (see the module docstring).

    Args:
        n_runs: runs of the submission.
        config: the user's config (``runs_per_task`` an int or :data:`AUTO`).
        limits: the site's limits (:func:`metalab.executors.slurm_limits.discover`).
        queued: jobs the user has queued now (None: unknown, taken as 0).
        run_seconds: measured duration of a run, or None.
        followers: follower jobs (e.g. a retry job) submitted with each wave.

    Raises:
        SlurmConfigError: the submission cannot fit (unknown partition, walltime above the
            partition's MaxTime, a packed task longer than the walltime, or no room left
            under the submit limit); the message names a setting that would fit.
    """
    walltime = parse_time(config.time)
    partition_cpus = _check_partition(config, limits)
    measured = run_seconds is not None and run_seconds >= 0
    # What a run costs its task: the operation plus recording its result.
    run_s = (
        float(run_seconds) + RUN_RECORD_S
        if measured and run_seconds is not None
        else DEFAULT_RUN_SECONDS
    )
    limit = limits.submit_limit
    headroom = None if limit is None else limit - (queued or 0)
    slots = partition_cpus // config.cpus if partition_cpus else None
    notes: list[str] = []

    if config.runs_per_task == AUTO:
        block = _auto_block(n_runs, config, run_s, walltime, slots, headroom, followers)
    else:
        block = int(config.runs_per_task)
        if measured and block * run_s > walltime:
            fits = max(1, math.floor(WALLTIME_FILL * walltime / run_s))
            raise SlurmConfigError(
                f"SlurmConfig runs_per_task={block} runs of about {run_s:.3g} s each (measured "
                f"in the store) need {_clock(math.ceil(block * run_s))}, more than "
                f"time={config.time!r}; use runs_per_task={fits} (or runs_per_task='auto')"
            )
    n_tasks = math.ceil(n_runs / block) if n_runs else 0

    array_size = config.max_array_size
    if limits.max_array_size is not None and array_size > limits.max_array_size:
        if array_size is not DEFAULT_MAX_ARRAY_SIZE:  # the default is fitted, not "lowered"
            notes.append(
                f"max_array_size={array_size} lowered to the site's MaxArraySize="
                f"{limits.max_array_size}"
            )
        array_size = limits.max_array_size

    wave_tasks = n_tasks
    reserve = WAVE_RESERVE + followers
    if headroom is not None and n_tasks + followers > headroom:
        wave_tasks = headroom - reserve
        if wave_tasks < 1:
            name = limits.submit_limit_name()
            raise SlurmConfigError(
                f"no room to submit: {queued or 0} job(s) of yours are queued and {name}="
                f"{limit} leaves {max(headroom, 0)}, while {n_tasks} array task(s) need at "
                f"least {reserve + 1} to be released in waves; wait for queued jobs to end "
                f"(squeue --me) or cancel some"
            )
        array_size = min(array_size, wave_tasks)
        notes.append(
            f"{n_tasks} array tasks exceed the {headroom} job(s) {limits.submit_limit_name()}="
            f"{limit} leaves: released in waves of at most {wave_tasks}"
        )
    return Layout(
        runs_per_task=block,
        array_size=array_size,
        n_tasks=n_tasks,
        wave_tasks=wave_tasks,
        run_seconds=run_s,
        measured=measured,
        headroom=headroom,
        notes=tuple(notes),
    )


def measured_run_seconds(store: Store, plan: RunPlan, todo: Sequence[int]) -> float | None:
    """Median duration of up to :data:`MEASURE_SAMPLE` finished runs of the plan, or None.

    Reads records only of runs not in ``todo`` (those finished before), and only a few.
    """
    if len(todo) >= plan.total:
        return None  # nothing finished yet
    pending = set(todo)
    sample: list[str] = []
    for index in range(plan.total):
        if index not in pending:
            sample.append(plan.task(index).run_id)
            if len(sample) >= MEASURE_SAMPLE:
                break
    if not sample:
        return None
    loaded = store.load_records(run_ids=sample)
    durations = [
        d for d in (record.duration for record in loaded.records) if d is not None and d >= 0
    ]
    return statistics.median(durations) if durations else None
