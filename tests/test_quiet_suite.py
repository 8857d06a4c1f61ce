"""The test suite's own output stays free of alarming noise from crashes made on purpose.

A reader of a CI log should see a "Fatal Python error" only when something really broke.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_intentional_worker_crashes_print_no_fatal_error_dump(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONFAULTHANDLER": ""}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(TESTS / "test_process_executor.py"),
            "-k",
            "hard_crash",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "3 passed" in output, output
    assert "Fatal Python error" not in output, output
    assert "Segmentation fault" not in output, output
