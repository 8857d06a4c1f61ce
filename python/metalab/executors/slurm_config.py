"""``SlurmConfig``: the resources and environment of SLURM array tasks, validated up front.

Every value is checked when the config is built, so a typo (``time="1h"``, ``memory="4 GB"``)
fails in the submitting process with a :class:`~metalab.errors.SlurmConfigError` naming the
bad value, instead of as an ``sbatch`` error after planning a large experiment.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from metalab.errors import SlurmConfigError

__all__ = [
    "DEFAULT_MAX_ARRAY_SIZE",
    "DEFAULT_PARTITION",
    "EXECUTOR_NAME",
    "SlurmConfig",
    "config_from_json",
    "config_to_json",
    "parse_memory",
    "parse_time",
]


class _UnchosenDefault(int):
    """An ``int`` default that remembers nobody chose it (``is`` tells it from the value)."""


DEFAULT_MAX_ARRAY_SIZE: int = _UnchosenDefault(10000)
"""``SlurmConfig.max_array_size`` when not given: fitted to the site's ``MaxArraySize``
silently, where an explicit larger value is lowered and said."""

EXECUTOR_NAME = "slurm"
"""The SLURM executor's name in run records and manifests."""

DEFAULT_PARTITION = "default"
"""Partition value meaning "let SLURM use the cluster's default" (no ``--partition``)."""

# Partition names end up in an ``#SBATCH`` line, which sbatch parses without a shell; a
# restricted character set keeps them unambiguous there (a comma separates alternatives).
# Every pattern is ASCII-only: these values reach sbatch as text, and sbatch refuses what
# Python's Unicode-aware `\d`, `str.isdigit()` or IGNORECASE would let through
# ('\u0661:00:00' with an Arabic-Indic digit, '4\u212a' with a Kelvin sign matching K).
_PARTITION = re.compile(r"[A-Za-z0-9_.\-]+(,[A-Za-z0-9_.\-]+)*", re.ASCII)
_MEMORY = re.compile(r"([0-9]+)([KMGT])?B?", re.IGNORECASE | re.ASCII)
_TIME_FORMATS = (
    # (pattern, field names) -- the formats sbatch accepts for --time.
    (re.compile(r"([0-9]+)", re.ASCII), ("m",)),
    (re.compile(r"([0-9]+):([0-9]+)", re.ASCII), ("m", "s")),
    (re.compile(r"([0-9]+):([0-9]+):([0-9]+)", re.ASCII), ("h", "m", "s")),
    (re.compile(r"([0-9]+)-([0-9]+)", re.ASCII), ("d", "h")),
    (re.compile(r"([0-9]+)-([0-9]+):([0-9]+)", re.ASCII), ("d", "h", "m")),
    (re.compile(r"([0-9]+)-([0-9]+):([0-9]+):([0-9]+)", re.ASCII), ("d", "h", "m", "s")),
)
_TIME_HELP = "expected MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
_ASCII_BLANKS = " \t"


def _not_ascii(value: str) -> str:
    """A hint for error messages when ``value`` holds look-alike non-ASCII characters."""
    if value.isascii():
        return ""
    return f" (only ASCII digits and letters are accepted; it contains {value!a})"


def parse_time(value: object) -> int:
    """Return the walltime ``value`` (an sbatch ``--time`` string) in seconds.

    Raises:
        SlurmConfigError: not a string in one of the sbatch formats, a field out of range
            (minutes/seconds after the first field must be < 60, hours after a day < 24),
            or a zero duration (which SLURM would read as "no limit").
    """
    if not isinstance(value, str):
        raise SlurmConfigError(f"SlurmConfig time must be a str like '1:00:00', got {value!r}")
    text = value.strip(_ASCII_BLANKS)
    for pattern, names in _TIME_FORMATS:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        parts = dict(zip(names, (int(g) for g in match.groups()), strict=True))
        first = names[0]
        # Only the leading field may exceed its usual range ("90" minutes is fine).
        for name, limit in (("h", 24), ("m", 60), ("s", 60)):
            if name in parts and name != first and parts[name] >= limit:
                raise SlurmConfigError(
                    f"SlurmConfig time {value!r}: {name} field {parts[name]} must be < {limit}"
                )
        seconds = (
            parts.get("d", 0) * 86400
            + parts.get("h", 0) * 3600
            + parts.get("m", 0) * 60
            + parts.get("s", 0)
        )
        if seconds == 0:
            raise SlurmConfigError(f"SlurmConfig time {value!r} is zero; give a positive walltime")
        return seconds
    raise SlurmConfigError(
        f"SlurmConfig time {value!r} is not a walltime; {_TIME_HELP}{_not_ascii(value)}"
    )


def parse_memory(value: object) -> str:
    """Return ``value`` ("4G", "16GB", "512m", "4096") as an sbatch ``--mem`` value ("4G").

    A bare number means megabytes, as in sbatch.

    Raises:
        SlurmConfigError: not a positive amount with an optional K/M/G/T unit (and optional B).
    """
    if not isinstance(value, str):
        raise SlurmConfigError(f"SlurmConfig memory must be a str like '4G', got {value!r}")
    match = _MEMORY.fullmatch(value.strip(_ASCII_BLANKS))
    if match is None:
        raise SlurmConfigError(
            f"SlurmConfig memory {value!r} is not a memory size; expected a number with an "
            f"optional unit K, M, G or T (optionally followed by B), e.g. '4G' or '16GB'"
            f"{_not_ascii(value)}"
        )
    amount, unit = int(match.group(1)), (match.group(2) or "M").upper()
    if amount <= 0:
        raise SlurmConfigError(f"SlurmConfig memory {value!r} must be positive")
    return f"{amount}{unit}"


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise SlurmConfigError(f"SlurmConfig {name} must be {what}, got {value!r}")
    return value


def _strings(name: str, value: object) -> list[str]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise SlurmConfigError(f"SlurmConfig {name} must be a list of str, got {value!r}")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise SlurmConfigError(
                f"SlurmConfig {name} entries must be non-empty str, got {item!r}"
            )
        if "\n" in item or "\r" in item:
            # One entry is one line of the batch script; a newline would smuggle in another.
            raise SlurmConfigError(f"SlurmConfig {name} entry {item!r} contains a line break")
    return list(value)


@dataclass
class SlurmConfig:
    """Resources and environment of every array task of a SLURM submission.

    Args:
        partition: partition name; ``"default"`` leaves the choice to SLURM (no
            ``--partition`` is passed).
        time: walltime of one array task: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``,
            ``D-HH:MM`` or ``D-HH:MM:SS``. With ``runs_per_task=K`` it must cover K runs.
        cpus: CPUs per task.
        memory: memory per task, e.g. ``"4G"``, ``"16GB"``, ``"512M"``.
        gpus: GPUs per task (``--gres=gpu:N``; 0 requests none).
        max_concurrent: most array tasks running at once across the whole experiment
            (all shards together); ``None`` for no limit.
        max_array_size: most tasks per array job; bigger submissions are split into
            several arrays ("shards"). Keep it at most the cluster's ``MaxArraySize``.
        modules: environment modules to ``module load`` before the worker starts.
        conda_env: conda environment to activate before the worker starts.
        setup: extra shell lines run before the worker starts (verbatim, they *are* shell).
        runs_per_task: runs executed one after another by one array task ("packing"),
            to amortise scheduling and Python start-up over several short runs; ``"auto"``
            chooses it from the site's limits, the walltime and the measured duration of
            runs (see :mod:`metalab.executors.slurm_layout`).
        retries: how many times runs that the infrastructure broke (reason ``timeout``,
            ``out_of_memory``, ``preempted``, ``node_fail``, ``crashed``) are resubmitted,
            by a small dependent job rather than by the submitting process (see
            :mod:`metalab.executors.slurm_retry`); each retry after ``out_of_memory``
            doubles ``memory``, after ``timeout`` multiplies ``time`` by 1.5.
        retry_exceptions: also retry runs whose operation raised (off by default: a bug
            fails the same way again).
        requeue: submit the arrays ``--requeue``-able, so a preempted or requeued task
            starts again (and executes only its runs that are not done).
        signal_lead: seconds before the walltime at which SLURM warns the worker
            (``--signal=B:USR1@N``, at most half the walltime) so that the running run is
            recorded as ``timeout`` before the task is killed.

    Raises:
        SlurmConfigError: a value is invalid; the message names it.
    """

    partition: str = DEFAULT_PARTITION
    time: str = "1:00:00"
    cpus: int = 1
    memory: str = "4G"
    gpus: int = 0
    max_concurrent: int | None = None
    max_array_size: int = DEFAULT_MAX_ARRAY_SIZE
    modules: list[str] = field(default_factory=list)
    conda_env: str | None = None
    setup: list[str] = field(default_factory=list)
    runs_per_task: int | Literal["auto"] = 1
    retries: int = 0
    retry_exceptions: bool = False
    requeue: bool = True
    signal_lead: int = 60

    def __post_init__(self) -> None:
        if not isinstance(self.partition, str) or not _PARTITION.fullmatch(self.partition):
            raise SlurmConfigError(
                f"SlurmConfig partition {self.partition!r} is not a partition name; expected "
                f"letters, digits, '_', '.', '-' (comma-separated for several)"
            )
        parse_time(self.time)
        self.time = self.time.strip(_ASCII_BLANKS)  # the script passes it to sbatch as is
        self.cpus = _count("cpus", self.cpus, 1)
        parse_memory(self.memory)
        self.gpus = _count("gpus", self.gpus, 0)
        if self.max_concurrent is not None:
            self.max_concurrent = _count("max_concurrent", self.max_concurrent, 1)
        if self.max_array_size is not DEFAULT_MAX_ARRAY_SIZE:
            self.max_array_size = _count("max_array_size", self.max_array_size, 1)
        self.modules = _strings("modules", self.modules)
        if self.conda_env is not None and (
            not isinstance(self.conda_env, str)
            or not self.conda_env.strip()
            or "\n" in self.conda_env
        ):
            raise SlurmConfigError(
                f"SlurmConfig conda_env must be a non-empty single-line str or None, "
                f"got {self.conda_env!r}"
            )
        self.setup = _strings("setup", self.setup)
        if self.runs_per_task != "auto":
            try:
                self.runs_per_task = _count("runs_per_task", self.runs_per_task, 1)
            except SlurmConfigError:
                raise SlurmConfigError(
                    f"SlurmConfig runs_per_task must be a positive int or 'auto', "
                    f"got {self.runs_per_task!r}"
                ) from None
        self.retries = _count("retries", self.retries, 0)
        self.signal_lead = _count("signal_lead", self.signal_lead, 1)
        for name in ("retry_exceptions", "requeue"):
            if not isinstance(getattr(self, name), bool):
                raise SlurmConfigError(
                    f"SlurmConfig {name} must be True or False, got {getattr(self, name)!r}"
                )

    @property
    def uses_default_partition(self) -> bool:
        """True when ``--partition`` is omitted so that SLURM picks the default."""
        return self.partition == DEFAULT_PARTITION

    @property
    def warning_lead(self) -> int:
        """Seconds of ``--signal=B:USR1@N``: ``signal_lead``, at most half the walltime."""
        return max(min(self.signal_lead, parse_time(self.time) // 2), 1)

    @property
    def sbatch_memory(self) -> str:
        """``memory`` normalised for ``--mem`` ("16GB" -> "16G")."""
        return parse_memory(self.memory)


def config_to_json(config: SlurmConfig) -> dict[str, Any]:
    """The fields of ``config`` as plain JSON values (the retry and wave jobs' settings)."""
    return dataclasses.asdict(config)


def config_from_json(data: Any, what: str) -> SlurmConfig:
    """Rebuild a :class:`SlurmConfig` (validated again) from :func:`config_to_json`.

    Args:
        data: the decoded JSON value.
        what: what held it, for the error (``"retry settings"``).

    Raises:
        SlurmConfigError: ``data`` is not the fields of a SlurmConfig.
    """
    names = {f.name for f in dataclasses.fields(SlurmConfig)}
    if not isinstance(data, dict) or not set(data) <= names:
        raise SlurmConfigError(f"{what} hold no SlurmConfig fields: {data!r}")
    return SlurmConfig(**data)
