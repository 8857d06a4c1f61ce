"""Limits discovery (``metalab.executors.slurm_limits``) on the site-profile cluster.

The live tests compare what :func:`discover` reports with the cluster's own config file
(the one ``SLURM_CONF`` names, written by ``scripts/slurm-local-cluster.sh --profile
site``) and with ``sacctmgr``; the parser tests feed synthesised ``scontrol``/``sacctmgr``
text in the shapes SLURM prints.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalab.executors import slurm_limits, slurm_limits_wave
from metalab.executors.slurm_limits import (
    SiteLimits,
    discover,
    parse_config,
    parse_partitions,
    parse_qos_table,
    parse_user_assocs,
)

pytestmark = [pytest.mark.slurm]


def _conf_value(key: str) -> str:
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text()
    match = re.search(rf"^{key}=(\S+)", conf, re.MULTILINE)
    assert match is not None, f"{key} not in the cluster's slurm.conf"
    return match.group(1)


def test_discovers_the_site_limits(site: SiteLimits) -> None:
    assert site.max_array_size == int(_conf_value("MaxArraySize")) == 1001
    assert site.max_job_count == int(_conf_value("MaxJobCount"))
    assert set(site.partitions) >= {"low", "high"}
    low, high = site.partitions["low"], site.partitions["high"]
    assert low.default and not high.default and site.default_partition == low
    assert (low.max_time_s, low.default_time_s, high.max_time_s) == (12 * 3600, 3600, 4 * 3600)
    qos_line = subprocess.run(
        ["sacctmgr", "-nP", "show", "qos", "normal", "format=MaxSubmitJobsPerUser"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert site.qos == "normal"
    assert site.qos_max_submit_per_user == int(qos_line)
    assert site.submit_limit == int(qos_line)
    assert site.submit_limit_name() == "QOS normal MaxSubmitJobsPerUser"
    assert site.problems == ()
    text = "\n".join(site.describe())
    assert "MaxArraySize=1001" in text and f"MaxSubmitJobsPerUser={qos_line}" in text


def test_discovery_is_asked_once_per_process(
    site: SiteLimits, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    real_popen = subprocess.Popen

    def counting_popen(argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        calls.append(list(argv))
        return real_popen(argv, **kwargs)

    monkeypatch.setattr(slurm_limits_wave.subprocess, "Popen", counting_popen)
    fresh = discover(refresh=True)
    assert fresh == site
    # scontrol config + partitions, sacctmgr user associations + QOS table: a handful.
    assert [argv[:2] for argv in calls] == [
        ["scontrol", "show"],
        ["scontrol", "show"],
        ["sacctmgr", "-nP"],
        ["sacctmgr", "-nP"],
    ]
    calls.clear()
    for _ in range(5):
        assert discover() is fresh
    assert calls == []


def test_queued_jobs_counts_each_array_task(site: SiteLimits) -> None:
    before = slurm_limits.queued_jobs()
    assert before is not None
    done = subprocess.run(
        ["sbatch", "--parsable", "--hold", "--array=0-6", "--mem=50M", "--wrap", "true"],
        capture_output=True,
        text=True,
        check=True,
    )
    job = done.stdout.strip().split(";")[0]
    try:
        assert slurm_limits.queued_jobs() == before + 7
    finally:
        subprocess.run(["scancel", job], check=False)


class _LoggedPopen(subprocess.Popen[str]):
    """A Popen that logs when each command starts and when its answer is read."""

    events: list[tuple[str, str]] = []

    def __init__(self, argv: list[str], **kwargs: Any) -> None:
        _LoggedPopen.events.append(("start", " ".join(argv[:3])))
        super().__init__(argv, **kwargs)

    def communicate(self, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        _LoggedPopen.events.append(("read", " ".join(self.args[:3])))  # type: ignore[index]
        return super().communicate(*args, **kwargs)


@pytest.fixture
def logged_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every command discovery starts and reads from now on, in order (a fresh cache)."""
    monkeypatch.setattr(_LoggedPopen, "events", [])
    monkeypatch.setattr(slurm_limits_wave.subprocess, "Popen", _LoggedPopen)
    monkeypatch.setattr(slurm_limits, "_CACHE", {})
    monkeypatch.setattr(slurm_limits, "_WAVE_QUEUE", [])
    return _LoggedPopen.events


def test_discovery_starts_every_call_before_reading_any(
    site: SiteLimits, logged_calls: list[tuple[str, str]]
) -> None:
    # One wave: the first submission waits for the slowest call, not for their sum.
    assert discover() == site
    kinds = [kind for kind, _name in logged_calls]
    assert kinds == ["start"] * 4 + ["read"] * 4, logged_calls
    assert [name for _kind, name in logged_calls[:4]] == [
        "scontrol show config",
        "scontrol show partition",
        "sacctmgr -nP show",
        "sacctmgr -nP show",
    ]


def test_first_submission_counts_the_queue_in_the_discovery_wave(
    site: SiteLimits, logged_calls: list[tuple[str, str]]
) -> None:
    # What SlurmExecutor asks before its first sbatch: limits, then the queue count (with
    # three held tasks of ours in the queue, so the count is seen to come from squeue).
    held = (
        subprocess.run(
            ["sbatch", "--parsable", "--hold", "--array=0-2", "--mem=50M", "--wrap", "true"],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .split(";")[0]
    )
    try:
        logged_calls.clear()
        limits = slurm_limits.discover_for([])
        queued = slurm_limits.queued_for(limits)
        assert limits == site
        starts = [name for kind, name in logged_calls if kind == "start"]
        assert starts.count("squeue --me -h") == 1 and len(starts) == 5
        assert logged_calls.index(("read", "scontrol show config")) > 4  # all started first
        assert queued is not None and queued >= 3
        # The wave's answer is used once: the next submission asks squeue itself.
        logged_calls.clear()
        assert slurm_limits.queued_for(slurm_limits.discover_for([])) is not None
        assert [name for kind, name in logged_calls if kind == "start"] == ["squeue --me -h"]
    finally:
        subprocess.run(["scancel", held], check=False)


def test_an_unknown_partition_asks_only_the_partitions_again(
    site: SiteLimits, logged_calls: list[tuple[str, str]]
) -> None:
    # As if `high` was created after this process cached the site's limits.
    stale = SiteLimits(**{**site.__dict__, "partitions": {"low": site.partitions["low"]}})
    slurm_limits._CACHE[slurm_limits._cache_key()] = stale
    limits = slurm_limits.discover_for(["high"])
    starts = [name for kind, name in logged_calls if kind == "start"]
    assert starts == ["scontrol show partition"]
    assert limits == site and slurm_limits.discover_for(["high"]) is limits


def test_associations_of_other_clusters_are_not_read() -> None:
    # `sacctmgr show user U withassoc format=Cluster,...` lists every cluster of a
    # shared accounting database; only the config's ClusterName counts.
    text = "other|a|a|big|big|9000|9000\nMetalabSite|a|a|normal|||\n"
    assert slurm_limits._of_cluster(text, "metalabsite") == "a|a|normal|||"
    assert parse_user_assocs(slurm_limits._of_cluster(text, "metalabsite")) == (
        "normal",
        None,
        None,
    )
    assert slurm_limits._of_cluster(text, None).count("\n") == 1


# -- parsers on synthesised text ---------------------------------------------------------
_KEYS = st.from_regex(r"[A-Z][A-Za-z]{2,20}", fullmatch=True)
_LIMIT = st.one_of(
    st.integers(min_value=1, max_value=10**7).map(str),
    st.sampled_from(["UNLIMITED", "N/A", "(null)", "NONE", "0", "-1", ""]),
)


def _expected_int(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) > 0 else None


@given(
    st.dictionaries(_KEYS, _LIMIT, max_size=12),
    st.integers(min_value=1, max_value=8),
    st.lists(st.sampled_from(["", "Configuration data as of 2026-12-01T22:55:02", "  x"])),
)
def test_config_parser_reads_every_key(values: dict[str, str], pad: int, noise: list[str]) -> None:
    lines = [f"{k}{' ' * pad}= {v}" for k, v in values.items()] + noise
    parsed = parse_config("\n".join(lines))
    for key, value in values.items():
        assert parsed[key] == value.strip()
        # The limit readers never raise on what SLURM prints.
        assert slurm_limits._int_or_none(parsed[key]) == _expected_int(value)


_TIMES = st.sampled_from(
    [
        ("UNLIMITED", None),
        ("INFINITE", None),
        ("NONE", None),
        ("01:00:00", 3600),
        ("12:00:00", 43200),
        ("1-00:00:00", 86400),
        ("2-12:30:00", 2 * 86400 + 12 * 3600 + 1800),
        ("30:00", 1800),
        ("garbage", None),
    ]
)


@given(
    st.lists(
        st.tuples(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), st.booleans(), _TIMES),
        min_size=1,
        max_size=6,
        unique_by=lambda p: p[0],
    ),
    st.randoms(use_true_random=False),
)
def test_partition_parser(
    parts: list[tuple[str, bool, tuple[str, int | None]]], rnd: object
) -> None:
    lines = []
    for name, default, (max_time, _seconds) in parts:
        fields = [
            f"Default={'YES' if default else 'NO'}",
            f"MaxTime={max_time}",
            "DefaultTime=NONE",
            "JobDefaults=(null)",
            "TRES=cpu=8,mem=19G,node=1,billing=8",
            "PreemptMode=REQUEUE",
        ]
        rnd.shuffle(fields)  # type: ignore[attr-defined]
        lines.append(" ".join([f"PartitionName={name}", *fields]))
    parsed = parse_partitions("\n".join(lines) + "\n\n")
    assert list(parsed) == [p[0] for p in parts]
    for name, default, (_text, seconds) in parts:
        assert parsed[name].default is default
        assert parsed[name].max_time_s == seconds
        assert parsed[name].default_time_s is None


@given(
    st.lists(
        st.tuples(st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True), _LIMIT, _LIMIT, _LIMIT),
        max_size=6,
        unique_by=lambda r: r[0],
    )
)
def test_qos_table_parser(rows: list[tuple[str, str, str, str]]) -> None:
    text = "\n".join("|".join(r) for r in rows) + "\nnot|a|row\n"
    parsed = parse_qos_table(text)
    assert set(parsed) == {r[0] for r in rows}
    for name, submit, jobs, grp in rows:
        assert parsed[name] == (_expected_int(submit), _expected_int(jobs), _expected_int(grp))


def test_user_assoc_parser_picks_the_default_account_and_its_qos() -> None:
    # Shapes printed by `sacctmgr -nP show user U withassoc format=DefaultAccount,Account,
    # QOS,DefaultQOS,MaxSubmit,MaxJobs` on this cluster and at sites with several QOS.
    text = "metalab|root|normal|||\nmetalab|metalab|normal,long|long|500|100\n"
    assert parse_user_assocs(text) == ("long", 500, 100)
    assert parse_user_assocs("metalab|metalab|normal|||\n") == ("normal", None, None)
    assert parse_user_assocs("a|a|short|||\n") == ("short", None, None)
    assert parse_user_assocs("a|a|short,normal,long|||\n") == ("normal", None, None)
    assert parse_user_assocs("") == (None, None, None)
