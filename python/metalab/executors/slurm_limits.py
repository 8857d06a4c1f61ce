"""What the SLURM site allows, discovered at submission with a handful of batched calls.

Production sites cap array sizes (``MaxArraySize``), the jobs a user may have queued (QOS
``MaxSubmitJobsPerUser``, association ``MaxSubmitJobs``, the controller's ``MaxJobCount``)
and walltimes (partition ``MaxTime``). A submission that ignores them is refused by sbatch
after planning, or worse half-way through its shards. :func:`discover` asks once per
process (``scontrol show config``, ``scontrol show partition -o`` and, when accounting
answers, ``sacctmgr`` for the user's association and the QOS table), all four at once
(``slurm_limits_wave``: the first submission waits for the slowest call, not their sum),
and caches the answer; :func:`queued_jobs` counts what the user has queued now (one
``squeue``, taken in that same wave by a process's first submission), which changes
between submissions and is therefore not cached. Every value is read as any user can,
without root.

Parsing is tolerant by design: a field that is missing, ``UNLIMITED``, ``N/A``,
``(null)`` or unreadable means "no known limit" (``None``), never an exception, because a
site's odd output must not stop a submission that sbatch itself would accept.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from metalab.errors import SlurmConfigError
from metalab.executors.slurm_config import parse_time
from metalab.executors.slurm_limits_wave import Call, wave

__all__ = [
    "PartitionLimits",
    "SiteLimits",
    "discover",
    "discover_for",
    "parse_config",
    "parse_partitions",
    "parse_qos_table",
    "parse_user_assocs",
    "queued_for",
    "queued_jobs",
]

_NO_LIMIT = frozenset({"", "UNLIMITED", "INFINITE", "NONE", "N/A", "(NULL)", "-1"})
_CONFIG_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def _int_or_none(text: str | None) -> int | None:
    """A positive count from SLURM's text, or None for "no limit" and anything unreadable."""
    if text is None:
        return None
    value = text.strip()
    if value.upper() in _NO_LIMIT or not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    return number if number > 0 else None


def _seconds_or_none(text: str | None) -> int | None:
    """A walltime in seconds from SLURM's text (``12:00:00``, ``1-00:00:00``), else None."""
    if text is None or text.strip().upper() in _NO_LIMIT:
        return None
    try:
        return parse_time(text.strip())
    except SlurmConfigError:
        return None


@dataclass(frozen=True)
class PartitionLimits:
    """Limits of one partition, from ``scontrol show partition -o``."""

    name: str
    default: bool = False
    max_time_s: int | None = None
    """``MaxTime`` in seconds; None when unlimited."""
    default_time_s: int | None = None
    """``DefaultTime`` in seconds; None when not set."""
    state: str = "UP"
    total_cpus: int | None = None
    """``TotalCPUs`` of the partition's nodes (how many 1-CPU tasks can run at once)."""


@dataclass(frozen=True)
class SiteLimits:
    """The limits of a SLURM site that shape a submission (None: no known limit).

    ``max_array_size`` is the most tasks of one array (``MaxArraySize``: indices
    ``0..MaxArraySize-1``). ``submit_limit`` combines every cap on queued jobs; array tasks
    count one each against all of them.
    """

    max_array_size: int | None = None
    max_job_count: int | None = None
    partitions: dict[str, PartitionLimits] = field(default_factory=dict)
    accounting: bool = False
    """True when ``sacctmgr`` answered (limits below come from the accounting database)."""
    qos: str | None = None
    """The QOS the user's jobs get by default."""
    qos_max_submit_per_user: int | None = None
    qos_max_jobs_per_user: int | None = None
    qos_grp_submit: int | None = None
    assoc_max_submit: int | None = None
    assoc_max_jobs: int | None = None
    problems: tuple[str, ...] = ()
    """Calls that failed (said in dry runs); their limits are unknown, not zero."""

    @property
    def default_partition(self) -> PartitionLimits | None:
        """The partition sbatch uses without ``--partition``, if the site names one."""
        return next((p for p in self.partitions.values() if p.default), None)

    def partition(self, name: str | None) -> PartitionLimits | None:
        """Limits of partition ``name`` (None or "default": the default partition)."""
        if name is None or name == "default":
            return self.default_partition
        return self.partitions.get(name)

    @property
    def submit_limit(self) -> int | None:
        """Most jobs (array tasks) the user may have queued at once, or None."""
        caps = [
            c
            for c in (
                self.qos_max_submit_per_user,
                self.qos_grp_submit,
                self.assoc_max_submit,
                self.max_job_count,
            )
            if c is not None
        ]
        return min(caps) if caps else None

    def submit_limit_name(self) -> str:
        """The setting behind :attr:`submit_limit`, for messages."""
        named = [
            (self.qos_max_submit_per_user, f"QOS {self.qos} MaxSubmitJobsPerUser"),
            (self.qos_grp_submit, f"QOS {self.qos} GrpSubmitJobs"),
            (self.assoc_max_submit, "association MaxSubmitJobs"),
            (self.max_job_count, "MaxJobCount"),
        ]
        known = [(c, name) for c, name in named if c is not None]
        return min(known)[1] if known else "no limit"

    def describe(self) -> list[str]:
        """One line per discovered limit (dry runs)."""

        def show(value: int | None) -> str:
            return "unlimited" if value is None else str(value)

        lines = [
            f"MaxArraySize={show(self.max_array_size)}, MaxJobCount={show(self.max_job_count)}",
        ]
        for part in self.partitions.values():
            mark = " (default)" if part.default else ""
            max_t = "unlimited" if part.max_time_s is None else _hms(part.max_time_s)
            lines.append(f"partition {part.name}{mark}: MaxTime={max_t}")
        if self.accounting:
            lines.append(
                f"QOS {self.qos}: MaxSubmitJobsPerUser={show(self.qos_max_submit_per_user)}, "
                f"MaxJobsPerUser={show(self.qos_max_jobs_per_user)}; association "
                f"MaxSubmitJobs={show(self.assoc_max_submit)}, "
                f"MaxJobs={show(self.assoc_max_jobs)}"
            )
        else:
            lines.append("accounting: not answering (no QOS/association limits known)")
        lines += [f"not discovered: {p}" for p in self.problems]
        return lines


def _hms(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


# -- parsers (pure: tested on this cluster's output and on synthesised text) ---------------
def parse_config(text: str) -> dict[str, str]:
    """``scontrol show config`` -> ``{key: value}`` (``Key = Value`` lines; others skipped)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = _CONFIG_LINE.match(line)
        if match is not None:
            values.setdefault(match.group(1), match.group(2))
    return values


def _fields(line: str) -> dict[str, str]:
    """``Key=Value Key=Value`` tokens of a one-line scontrol record."""
    out: dict[str, str] = {}
    for token in line.split():
        key, sep, value = token.partition("=")
        if sep and key:
            out.setdefault(key, value)
    return out


def parse_partitions(text: str) -> dict[str, PartitionLimits]:
    """``scontrol show partition -o`` (one partition a line) -> limits by name."""
    parts: dict[str, PartitionLimits] = {}
    for line in text.splitlines():
        fields = _fields(line)
        name = fields.get("PartitionName")
        if not name:
            continue
        parts[name] = PartitionLimits(
            name=name,
            default=fields.get("Default", "NO").upper() == "YES",
            max_time_s=_seconds_or_none(fields.get("MaxTime")),
            default_time_s=_seconds_or_none(fields.get("DefaultTime")),
            state=fields.get("State", "UP"),
            total_cpus=_int_or_none(fields.get("TotalCPUs")),
        )
    return parts


def _pipe_rows(text: str, width: int) -> list[list[str]]:
    """``sacctmgr -nP`` rows of exactly ``width`` ``|``-separated fields (others skipped)."""
    rows = []
    for line in text.splitlines():
        cells = line.split("|")
        if len(cells) == width:
            rows.append([c.strip() for c in cells])
    return rows


USER_ASSOC_FORMAT = "DefaultAccount,Account,QOS,DefaultQOS,MaxSubmit,MaxJobs"
"""``format=`` of the ``sacctmgr show user ... withassoc`` call :func:`parse_user_assocs` reads."""
QOS_FORMAT = "Name,MaxSubmitJobsPerUser,MaxJobsPerUser,GrpSubmitJobs"
"""``format=`` of the ``sacctmgr show qos`` call :func:`parse_qos_table` reads."""


def parse_user_assocs(text: str) -> tuple[str | None, int | None, int | None]:
    """The user's default association -> ``(qos, MaxSubmitJobs, MaxJobs)``.

    Reads rows of :data:`USER_ASSOC_FORMAT`. The association of the default account is the
    one jobs use without ``--account``; its QOS is ``DefaultQOS``, else the only QOS
    allowed, else ``normal`` (SLURM's own rule).
    """
    rows = _pipe_rows(text, 6)
    if not rows:
        return None, None, None
    chosen = next((r for r in rows if r[0] and r[1] == r[0]), rows[0])
    allowed = [q for q in chosen[2].split(",") if q]
    if chosen[3]:
        qos: str | None = chosen[3]
    elif len(allowed) == 1:
        qos = allowed[0]
    else:
        qos = "normal"
    return qos, _int_or_none(chosen[4]), _int_or_none(chosen[5])


def parse_qos_table(text: str) -> dict[str, tuple[int | None, int | None, int | None]]:
    """Rows of :data:`QOS_FORMAT` -> ``{name: (MaxSubmitPU, MaxJobsPU, GrpSubmitJobs)}``."""
    return {
        r[0]: (_int_or_none(r[1]), _int_or_none(r[2]), _int_or_none(r[3]))
        for r in _pipe_rows(text, 4)
        if r[0]
    }


# -- discovery ----------------------------------------------------------------------------
def _user() -> str:
    return os.environ.get("USER") or getpass.getuser()


_CACHE: dict[tuple[str, str, str], SiteLimits] = {}
_SQUEUE = ["squeue", "--me", "-h", "-r", "-o", "%i %q"]
_QUEUE_FRESH_S = 1.0
"""How long the queue answer of a discovery wave stands in for a new ``squeue``."""
_WAVE_QUEUE: list[tuple[tuple[str, str, str], str, float]] = []
"""The ``squeue`` output of the last discovery wave: (cache key, output, when); at most one."""


def _cache_key() -> tuple[str, str, str]:
    return (os.environ.get("SLURM_CONF", ""), _user(), os.environ.get("SBATCH_QOS", ""))


def discover(refresh: bool = False) -> SiteLimits:
    """The site's limits, asked once per process (per ``SLURM_CONF``, user and ``SBATCH_QOS``).

    Four calls at most, all at once (``scontrol show config`` and ``show partition``,
    ``sacctmgr`` for the user's associations and for the QOS table); none of them is
    repeated per task or per shard. A call that fails leaves its limits unknown (listed
    in :attr:`SiteLimits.problems`).
    """
    return _discover(refresh, with_queue=False)


def _discover(refresh: bool, with_queue: bool) -> SiteLimits:
    cache_key = _cache_key()
    if not refresh and cache_key in _CACHE:
        return _CACHE[cache_key]
    conf = os.environ.get("SLURM_CONF")
    if conf and not os.path.exists(conf):
        # The clients would retry for a minute before failing: say it at once instead.
        limits = SiteLimits(problems=(f"SLURM_CONF={conf} does not exist",))
    elif shutil.which("scontrol") is None:
        limits = SiteLimits(problems=("scontrol not found on PATH",))
    else:
        limits = _ask_site(with_queue)
    _CACHE[cache_key] = limits
    return limits


def _ask_site(with_queue: bool) -> SiteLimits:
    """One wave of every discovery call (and ``squeue`` when ``with_queue``)."""
    # The sacctmgr calls start with the others although only the config says whether
    # accounting answers: they name the cluster of each association instead of asking
    # for the config's ClusterName, and are stopped unanswered when the cluster keeps no
    # accounting (where sacctmgr fails in ~5 ms anyway).
    user_argv = [
        "sacctmgr", "-nP", "show", "user", _user(), "withassoc",
        f"format=Cluster,{USER_ASSOC_FORMAT}",
    ]  # fmt: skip
    qos_argv = ["sacctmgr", "-nP", "show", "qos", f"format={QOS_FORMAT}"]
    argvs = [["scontrol", "show", "config"], ["scontrol", "show", "partition", "-o"]]
    argvs += [user_argv, qos_argv] + ([_SQUEUE] if with_queue else [])
    calls = wave(*argvs)
    try:
        return _read_site(calls, with_queue)
    finally:
        # Whatever was not read (a parse that raised, accounting the config denies)
        # is stopped and reaped here.
        for call in calls:
            call.cancel()


def _read_site(calls: list[Call], with_queue: bool) -> SiteLimits:
    """The limits from the wave of :func:`_ask_site` (calls in its order)."""
    problems: list[str] = []

    def answer(call: Call) -> str | None:
        out, why = call.result()
        if why:
            problems.append(why)
        return out

    out = answer(calls[0])
    config = parse_config(out) if out is not None else {}
    out = answer(calls[1])
    limits = SiteLimits(
        max_array_size=_int_or_none(config.get("MaxArraySize")),
        max_job_count=_int_or_none(config.get("MaxJobCount")),
        partitions=parse_partitions(out) if out is not None else {},
    )
    if config.get("AccountingStorageType", "").endswith("slurmdbd"):
        limits = _with_accounting(limits, config.get("ClusterName"), calls[2], calls[3], problems)
    limits = SiteLimits(**{**limits.__dict__, "problems": tuple(problems)})
    if with_queue:
        queue, _why = calls[4].result()
        _WAVE_QUEUE.clear()
        if queue is not None:
            _WAVE_QUEUE.append((_cache_key(), queue, time.monotonic()))
    return limits


def _of_cluster(text: str, cluster: str | None) -> str:
    """``Cluster|...`` rows -> the rows of ``cluster`` (all when unknown), cluster cut off."""
    kept = []
    for line in text.splitlines():
        name, sep, rest = line.partition("|")
        if sep and (cluster is None or name.strip().lower() == cluster.lower()):
            kept.append(rest)
    return "\n".join(kept)


def _with_accounting(
    limits: SiteLimits, cluster: str | None, user: Call, qos_table: Call, problems: list[str]
) -> SiteLimits:
    out, why = user.result()
    if out is None:
        problems.append(why or "sacctmgr show user failed")
        return limits
    qos, assoc_submit, assoc_jobs = parse_user_assocs(_of_cluster(out, cluster))
    # sbatch takes the QOS from SBATCH_QOS when the user sets it (as sites document).
    qos = os.environ.get("SBATCH_QOS") or qos
    out, why = qos_table.result()
    table = parse_qos_table(out) if out is not None else {}
    if why:
        problems.append(why)
    submit_pu, jobs_pu, grp_submit = table.get(qos or "", (None, None, None))
    return SiteLimits(
        max_array_size=limits.max_array_size,
        max_job_count=limits.max_job_count,
        partitions=limits.partitions,
        accounting=True,
        qos=qos,
        qos_max_submit_per_user=submit_pu,
        qos_max_jobs_per_user=jobs_pu,
        qos_grp_submit=grp_submit,
        assoc_max_submit=assoc_submit,
        assoc_max_jobs=assoc_jobs,
    )


def discover_for(partitions: Sequence[str]) -> SiteLimits:
    """:func:`discover` for a submission to ``partitions``, with the queue count it needs.

    Partitions can be created while a process runs (``scontrol create``): when the cached
    answer knows none of ``partitions`` by name, the partitions (only they) are asked
    again. The first call of a process also takes ``squeue`` in its wave, which the
    :func:`queued_for` that follows uses instead of asking again.
    """
    limits = _discover(refresh=False, with_queue=True)
    if limits.partitions and any(name not in limits.partitions for name in partitions):
        out, why = wave(["scontrol", "show", "partition", "-o"])[0].result()
        fresh = parse_partitions(out) if out is not None else {}
        problems = limits.problems + ((why,) if why else ())
        limits = SiteLimits(**{**limits.__dict__, "partitions": fresh, "problems": problems})
        _CACHE[_cache_key()] = limits
    return limits


def _count_queued(text: str, qos: str | None) -> int:
    rows = [line.split() for line in text.splitlines() if line.strip()]
    return sum(1 for row in rows if qos is None or (len(row) > 1 and row[1] == qos))


def queued_jobs(qos: str | None = None) -> int | None:
    """Jobs (array tasks, each counted) the user has queued now; None if squeue failed.

    Only those of QOS ``qos`` when given (a QOS limit counts its own jobs only). One
    ``squeue`` call per submission: unlike the limits, this changes all the time.
    """
    out, _why = wave(_SQUEUE)[0].result()
    return None if out is None else _count_queued(out, qos)


def queued_for(limits: SiteLimits) -> int | None:
    """Jobs queued against the binding submit limit of ``limits`` (None: no limit/unknown).

    A QOS cap counts the jobs of that QOS; an association cap or ``MaxJobCount`` all of
    the user's jobs. Right after the wave that discovered ``limits`` (:func:`discover_for`)
    its ``squeue`` answer is used, once; otherwise ``squeue`` is asked now.
    """
    taken = _WAVE_QUEUE.pop() if _WAVE_QUEUE else None
    if limits.submit_limit is None:
        return None
    binding = limits.submit_limit_name()
    qos = limits.qos if binding.startswith("QOS ") else None
    fresh = taken is not None and time.monotonic() - taken[2] < _QUEUE_FRESH_S
    if taken is not None and fresh and taken[0] == _cache_key():
        return _count_queued(taken[1], qos)
    return queued_jobs(qos)
