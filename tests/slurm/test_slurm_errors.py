"""SLURM failures carry what SLURM said: the command, its exit status, its stderr."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab.errors import SlurmError
from metalab.executors.slurm import SlurmConfig, SlurmExecutor
from metalab.executors.slurm_commands import scancel


@metalab.operation
def noop(params: dict[str, Any], capture: Any) -> None:
    capture.metric("x", params["x"])


def _exp() -> metalab.Experiment:
    return metalab.Experiment(
        name="refused",
        version="1",
        context={},
        operation=noop,
        params=metalab.grid(x=[0, 1]),
        seeds=metalab.seeds(0),
    )


def test_sbatch_refusal_keeps_the_command_exit_code_and_stderr(slurm: None, tmp_path: Path) -> None:
    # A partition that exists but is INACTIVE: the real sbatch refuses the job. (One the
    # cluster does not have is refused before sbatch, by metalab's limits discovery.)
    subprocess.run(
        ["scontrol", "create", "PartitionName=refusing", "Nodes=ALL", "State=INACTIVE"],
        check=True,
        capture_output=True,
    )
    try:
        executor = SlurmExecutor(SlurmConfig(partition="refusing"))
        with pytest.raises(SlurmError) as info:
            metalab.run(_exp(), store=tmp_path / "s", executor=executor)
    finally:
        subprocess.run(["scontrol", "delete", "PartitionName=refusing"], check=False)
    error = info.value
    assert error.command is not None and error.command[0] == "sbatch"
    assert error.exit_code is not None and error.exit_code != 0
    assert error.stderr is not None and "partition" in error.stderr.lower()
    # The message still says all of it, for whoever only prints the error.
    assert f"exit {error.exit_code}" in str(error) and error.stderr.strip() in str(error)
    # Nothing was left queued under this experiment's name.
    queued = subprocess.run(
        ["squeue", "--me", "-h", "-o", "%j"], capture_output=True, text=True, check=True
    )
    assert "refused" not in queued.stdout


def test_scancel_failure_keeps_its_exit_code(slurm: None) -> None:
    with pytest.raises(SlurmError) as info:
        scancel(["not-a-job-id"])
    error = info.value
    assert error.command == ("scancel", "not-a-job-id")
    assert error.exit_code not in (None, 0)
    assert error.stderr is not None and error.stderr.strip() != ""
