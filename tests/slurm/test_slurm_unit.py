"""SLURM executor without a cluster: config validation, sharding, scripts, dry runs."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

import metalab
from metalab.errors import SlurmConfigError
from metalab.executors.slurm import decode_task_list, encode_task_list
from metalab.executors.slurm_config import SlurmConfig, parse_memory, parse_time
from metalab.executors.slurm_script import plan_shards, render_script
from metalab.worker import select_tasks

GOLDEN = Path(__file__).parent / "golden"


def test_defaults_match_the_spec_table() -> None:
    config = metalab.SlurmConfig()
    assert (config.partition, config.time, config.cpus, config.memory, config.gpus) == (
        "default",
        "1:00:00",
        1,
        "4G",
        0,
    )
    assert config.max_concurrent is None and config.max_array_size == 10000
    assert config.modules == [] and config.conda_env is None and config.setup == []
    assert config.runs_per_task == 1
    assert isinstance(metalab.SlurmExecutor(config), metalab.Executor)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 1800),
        ("90", 5400),
        ("10:30", 630),
        ("1:00:00", 3600),
        ("2-12", 216000),
        ("1-02:30", 95400),
        ("1-00:00:01", 86401),
    ],
)
def test_time_formats(text: str, seconds: int) -> None:
    assert parse_time(text) == seconds
    SlurmConfig(time=text)


@pytest.mark.parametrize("bad", ["1h", "", "0", "1:60:00", "1-24:00", "1:2:3:4", "-5", "1.5", 60])
def test_bad_time_names_the_value(bad: object) -> None:
    with pytest.raises(SlurmConfigError, match=repr(bad).replace("(", r"\(")) as info:
        SlurmConfig(time=bad)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("4G", "4G"),
        ("16GB", "16G"),
        ("512m", "512M"),
        ("2tb", "2T"),
        ("100K", "100K"),
        ("4096", "4096M"),
    ],
)
def test_memory_units(text: str, normal: str) -> None:
    assert parse_memory(text) == normal
    assert SlurmConfig(memory=text).sbatch_memory == normal


@pytest.mark.parametrize("bad", ["4 GB", "4X", "G", "0G", "-1G", "4.5G", 4])
def test_bad_memory_names_the_value(bad: object) -> None:
    with pytest.raises(SlurmConfigError, match="memory"):
        SlurmConfig(memory=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("cpus", 0),
        ("cpus", 1.5),
        ("cpus", True),
        ("gpus", -1),
        ("max_concurrent", 0),
        ("max_array_size", 0),
        ("runs_per_task", 0),
        ("runs_per_task", "3"),
        ("partition", "gpu; rm -rf /"),
        ("partition", ""),
        ("modules", "gcc"),
        ("modules", ["ok", "a\nb"]),
        ("setup", [""]),
        ("conda_env", ""),
        ("conda_env", "a\nb"),
    ],
)
def test_bad_values_are_rejected_by_name(field: str, bad: object) -> None:
    with pytest.raises(SlurmConfigError, match=field) as info:
        SlurmConfig(**{field: bad})  # type: ignore[arg-type]
    named = bad[-1] if isinstance(bad, list) else bad  # a list names its bad entry
    assert repr(named) in str(info.value)


def test_shards_split_the_concurrency_budget() -> None:
    # 8 array tasks, 4 per array, at most 4 at once: two arrays of 2 each, side by side.
    shards = plan_shards(8, SlurmConfig(max_array_size=4, max_concurrent=4))
    assert [(s.offset, s.count, s.array_spec, s.after) for s in shards] == [
        (0, 4, "0-3%2", None),
        (4, 4, "4-3%2".replace("4-3", "0-3"), None),
    ]
    # More arrays than the budget: lanes of one, chained, so at most 2 run at any time.
    shards = plan_shards(25, SlurmConfig(max_array_size=5, max_concurrent=2))
    assert [s.after for s in shards] == [None, None, 0, 1, 2]
    assert all(s.throttle == 1 for s in shards)
    # No limit: no throttles, no chaining; a last partial array.
    shards = plan_shards(30000, SlurmConfig())
    assert [(s.offset, s.count, s.array_spec) for s in shards] == [
        (0, 10000, "0-9999"),
        (10000, 10000, "0-9999"),
        (20000, 10000, "0-9999"),
    ]
    assert plan_shards(0, SlurmConfig()) == []
    # 300k runs, spec example: 30 arrays side by side whose throttles add up to 500.
    shards = plan_shards(300000, SlurmConfig(max_array_size=10000, max_concurrent=500))
    assert len(shards) == 30 and sum(s.throttle or 0 for s in shards) == 500
    assert all(s.after is None for s in shards)


def test_select_tasks_identity_and_list() -> None:
    assert select_tasks(0, 0, 3, None, 8) == [0, 1, 2]
    assert select_tasks(2, 0, 3, None, 8) == [6, 7]
    assert select_tasks(1, 4, 1, None, 8) == [5]
    todo = decode_task_list(encode_task_list([3, 9, 10, 200000]))
    assert list(todo) == [3, 9, 10, 200000]
    assert select_tasks(0, 1, 2, todo, 10**6) == [10, 200000]
    assert len(encode_task_list(range(300000))) == 1_200_000


def _golden_config() -> SlurmConfig:
    return SlurmConfig(
        partition="gpu",
        time="2:00:00",
        cpus=4,
        memory="16GB",
        gpus=1,
        max_concurrent=100,
        modules=["python/3.11", "cuda/12.1"],
        conda_env="my env",
        setup=["export OMP_NUM_THREADS=4"],
        runs_per_task=3,
    )


def test_script_matches_golden_file() -> None:
    script = render_script(
        _golden_config(),
        python="/opt/venv/bin/python",
        store_locator="file:///scratch/runs/my_exp",
        experiment_id="my_exp:1.0",
        offset=10000,
        tasks_key="slurm-20250101T000000-abcdef-tasks",
        job_name="metalab-my_exp",
    )
    golden = GOLDEN / "gpu_shard1.sbatch"
    if os.environ.get("METALAB_UPDATE_GOLDEN"):
        golden.write_text(script)
    assert script == golden.read_text()


def test_default_partition_is_omitted() -> None:
    script = render_script(
        SlurmConfig(),
        python="/p",
        store_locator="file:///s",
        experiment_id="e:1",
        offset=0,
        tasks_key=None,
        job_name="metalab-e",
    )
    assert "--partition" not in script and "--gres" not in script and "--tasks" not in script


HOSTILE = "/tmp/we ird'\"$(touch pwned);`id` & x"


def test_hostile_values_are_quoted(tmp_path: Path) -> None:
    script = render_script(
        SlurmConfig(conda_env="env; echo bad"),
        python=HOSTILE + "/python",
        store_locator=HOSTILE,
        experiment_id="e:1",
        offset=0,
        tasks_key=None,
        job_name="j",
    )
    exec_line = next(line for line in script.splitlines() if line.startswith("exec "))
    assert shlex.split(exec_line)[1] == HOSTILE + "/python"
    assert shlex.split(exec_line)[shlex.split(exec_line).index("--store") + 1] == HOSTILE
    # Run the script with stand-ins for conda and the interpreter: it must pass every
    # value through literally and execute nothing embedded in them.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "conda").write_text("#!/bin/sh\nprintf 'conda %s\\n' \"$*\" >&2\n")
    (fake / "conda").chmod(0o755)
    script = script.replace("exec " + shlex.quote(HOSTILE + "/python"), "exec printf '%s\\n'")
    done = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": f"{fake}:/usr/bin:/bin"},
        check=True,
    )
    assert HOSTILE in done.stdout.splitlines()
    assert "activate env; echo bad" in done.stderr
    assert not (tmp_path / "pwned").exists()


def _large_exp() -> metalab.Experiment:
    def my_operation(params, seeds, capture):  # type: ignore[no-untyped-def]
        capture.metric("v", params["gene"])

    return metalab.Experiment(
        name="large_sweep",
        version="0.1",
        context={},
        operation=my_operation,
        params=metalab.grid(gene=list(range(2000)), expr_val=list(range(50))),
        seeds=metalab.seeds(base=42, replicates=3),
    )


def test_dry_run_of_300k_runs_prints_arrays_and_scripts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = _large_exp()
    assert exp.total_runs == 300000
    handle = metalab.run(
        exp,
        store=str(tmp_path / "large"),
        dry_run=True,
        executor=metalab.SlurmExecutor(
            metalab.SlurmConfig(
                partition="cpu", time="1:00:00", max_array_size=10000, max_concurrent=500
            )
        ),
    )
    out = capsys.readouterr().out
    assert "300000 total, 300000 to run" in out
    assert "array tasks: 300000" in out and "arrays: 30" in out
    assert out.count("10000 tasks, offset") == 30
    assert "--offset 0 " in out and "--offset 290000 " in out
    assert "#SBATCH --partition=cpu" in out and "sbatch --parsable --array=0-9999%17" in out
    assert handle.status.total == 300000
    assert not (tmp_path / "large" / "blobs").exists()  # nothing submitted, nothing written
