"""``slurm_layout.plan_layout``: a submission fitted to a site's limits (no cluster needed).

The limits are the site profile's (``scripts/slurm-local-cluster.sh --profile site``)
written as a :class:`SiteLimits`; the cluster tests in ``test_site_waves.py`` run the same
layouts for real.
"""

from __future__ import annotations

import math

import pytest

from metalab.errors import SlurmConfigError
from metalab.executors.slurm_config import SlurmConfig
from metalab.executors.slurm_layout import (
    DEFAULT_RUN_SECONDS,
    OVERHEAD_FRACTION,
    RUN_RECORD_S,
    TASK_START_S,
    WALLTIME_FILL,
    plan_layout,
)
from metalab.executors.slurm_limits import PartitionLimits, SiteLimits

SITE = SiteLimits(
    max_array_size=1001,
    max_job_count=5000,
    partitions={
        "low": PartitionLimits("low", default=True, max_time_s=12 * 3600, total_cpus=8),
        "high": PartitionLimits("high", max_time_s=4 * 3600, total_cpus=8),
    },
    accounting=True,
    qos="normal",
    qos_max_submit_per_user=200,
)
PERMISSIVE = SiteLimits(max_array_size=100001, max_job_count=200000)
LARGE_SWEEP = SlurmConfig(time="1:00:00", max_array_size=10000, max_concurrent=500)


def test_permissive_site_changes_nothing() -> None:
    layout = plan_layout(100_000, LARGE_SWEEP, PERMISSIVE, queued=0)
    assert (layout.runs_per_task, layout.array_size, layout.n_tasks) == (1, 10000, 100_000)
    assert layout.waves == 1 and layout.wave_tasks == 100_000 and layout.notes == ()
    # MaxJobCount caps queued jobs too: 300,000 tasks would block sbatch at 200,000.
    assert plan_layout(300_000, LARGE_SWEEP, PERMISSIVE, queued=0).waves == 2


def test_array_size_is_lowered_to_the_site_limit_and_said() -> None:
    big_qos = SiteLimits(**{**SITE.__dict__, "qos_max_submit_per_user": 2000})
    layout = plan_layout(1500, LARGE_SWEEP, big_qos, queued=0)
    assert layout.array_size == 1001 and layout.waves == 1
    assert layout.notes == ("max_array_size=10000 lowered to the site's MaxArraySize=1001",)
    assert layout.config(LARGE_SWEEP).max_array_size == 1001


def test_the_default_array_size_is_fitted_to_the_site_silently() -> None:
    big_qos = SiteLimits(**{**SITE.__dict__, "qos_max_submit_per_user": 2000})
    default = SlurmConfig(time="1:00:00")
    assert default.max_array_size == 10000  # the documented default, unchanged
    layout = plan_layout(1500, default, big_qos, queued=0)
    assert layout.array_size == 1001 and layout.notes == ()
    # The same value given explicitly is the user's choice: lowering it is said.
    explicit = plan_layout(
        1500, SlurmConfig(time="1:00:00", max_array_size=10000), big_qos, queued=0
    )
    assert explicit.notes == ("max_array_size=10000 lowered to the site's MaxArraySize=1001",)


@pytest.mark.parametrize(("queued", "wave"), [(0, 198), (50, 148), (197, 1)])
def test_waves_leave_room_for_the_wave_job(queued: int, wave: int) -> None:
    layout = plan_layout(1000, LARGE_SWEEP, SITE, queued=queued)
    assert layout.wave_tasks == wave and layout.array_size == wave
    assert layout.waves == 1 + math.ceil((1000 - wave) / wave)
    # Queued + this wave + its wave job (pending, then running while it submits).
    assert queued + layout.wave_tasks + 2 <= 200
    assert layout.wave_runs(1000) == wave
    assert any("released in waves of at most" in note for note in layout.notes)


def test_retry_job_takes_room_too() -> None:
    layout = plan_layout(1000, LARGE_SWEEP, SITE, queued=0, followers=1)
    assert layout.wave_tasks == 197


def test_a_submission_that_fits_is_one_wave() -> None:
    layout = plan_layout(200, LARGE_SWEEP, SITE, queued=0)
    assert layout.waves == 1 and layout.wave_tasks == 200


def test_no_room_fails_before_sbatch_naming_the_limit() -> None:
    with pytest.raises(SlurmConfigError) as info:
        plan_layout(1000, LARGE_SWEEP, SITE, queued=198)
    message = str(info.value)
    assert "198 job(s) of yours are queued" in message
    assert "QOS normal MaxSubmitJobsPerUser=200" in message


def test_walltime_above_partition_max_time_names_the_time_that_fits() -> None:
    config = SlurmConfig(partition="high", time="6:00:00")
    with pytest.raises(SlurmConfigError, match=r"MaxTime of partition 'high'.*time='4:00:00'"):
        plan_layout(10, config, SITE, queued=0)
    # The default partition's MaxTime applies without --partition.
    with pytest.raises(SlurmConfigError, match=r"partition 'low'.*time='12:00:00'"):
        plan_layout(10, SlurmConfig(time="1-00:00:00"), SITE, queued=0)


def test_unknown_partition_names_the_known_ones() -> None:
    with pytest.raises(SlurmConfigError, match=r"'cpu' does not exist.*high, low"):
        plan_layout(10, SlurmConfig(partition="cpu"), SITE, queued=0)


def test_packed_task_longer_than_the_walltime_names_a_block_that_fits() -> None:
    config = SlurmConfig(time="10:00", runs_per_task=100)
    with pytest.raises(SlurmConfigError, match=r"runs_per_task=100 .* use runs_per_task=") as info:
        plan_layout(1000, config, SITE, queued=0, run_seconds=30.0)
    fits = int(str(info.value).split("use runs_per_task=")[1].split(" ")[0])
    assert fits * (30.0 + RUN_RECORD_S) <= 600


def test_auto_packs_trivial_runs_into_few_tasks() -> None:
    auto = SlurmConfig(
        time="1:00:00", max_array_size=10000, max_concurrent=500, runs_per_task="auto"
    )
    layout = plan_layout(300_000, auto, SITE, queued=0, run_seconds=0.001)
    run_s = 0.001 + RUN_RECORD_S
    # The start-up cost stays under OVERHEAD_FRACTION of a task's work ...
    assert OVERHEAD_FRACTION * layout.runs_per_task * run_s >= TASK_START_S
    # ... enough tasks remain for the partition's 8 slots, and all fit in one wave.
    assert 32 <= layout.n_tasks <= 200 and layout.waves == 1
    assert layout.runs_per_task * run_s <= WALLTIME_FILL * 3600
    assert layout.measured and layout.config(auto).runs_per_task == layout.runs_per_task


@pytest.mark.parametrize("queued", [0, 20])
def test_auto_leaves_room_for_the_retry_job_in_one_wave(queued: int) -> None:
    # With retries a follower job queues with the tasks: sized to the whole headroom,
    # 300,000 runs became 200 tasks + the retry job > 200, i.e. a wave of 197 and a
    # second wave of 3 tasks behind a wave job.
    auto = SlurmConfig(time="1:00:00", max_concurrent=500, retries=2, runs_per_task="auto")
    layout = plan_layout(300_000, auto, SITE, queued=queued, followers=1)
    assert layout.waves == 1 and layout.wave_tasks == layout.n_tasks
    assert queued + layout.n_tasks + 1 <= 200
    assert layout.n_tasks * layout.runs_per_task >= 300_000


def test_auto_respects_the_walltime_for_long_runs() -> None:
    auto = SlurmConfig(time="1:00:00", runs_per_task="auto")
    layout = plan_layout(1000, auto, SITE, queued=0, run_seconds=500.0)
    assert layout.runs_per_task == 3  # 3 x 500 s fill at most half of the hour
    assert layout.waves > 1  # 334 tasks > 200: waves rather than tasks past the walltime


def test_auto_without_measurement_assumes_the_default_duration() -> None:
    auto = SlurmConfig(time="1:00:00", runs_per_task="auto")
    layout = plan_layout(100, auto, PERMISSIVE, queued=None)
    assert not layout.measured and layout.run_seconds == DEFAULT_RUN_SECONDS
    assert layout.runs_per_task == math.ceil(
        TASK_START_S / (OVERHEAD_FRACTION * DEFAULT_RUN_SECONDS)
    )


def test_runs_per_task_must_be_an_int_or_auto() -> None:
    with pytest.raises(SlurmConfigError, match="positive int or 'auto', got 'fast'"):
        SlurmConfig(runs_per_task="fast")  # type: ignore[arg-type]
