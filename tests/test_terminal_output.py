"""What a researcher sees in a real terminal: live progress, then a plain failure summary.

The script runs on a pseudo-terminal, so rich draws its live display exactly as it would
for a person; the screen is compared after stripping escape sequences.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = """
import sys, time, metalab

def op(params, capture):
    time.sleep(0.02)
    if params["x"] == 3:
        raise KeyError("missing thing")
    capture.metric("y", params["x"] * 2.0)

exp = metalab.Experiment(name="term", version="1", context={}, operation=op,
    params=metalab.grid(x=list(range(12))), seeds=metalab.seeds(base=1))
handle = metalab.run(exp, store=sys.argv[1], progress=metalab.Progress(display_metrics=["y:.1f"]))
results = handle.result()
print("RESULTS", len(results), len(results.failed))
"""


def _on_terminal(argv: list[str], cwd: Path) -> tuple[int, str]:
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "110", "TERM": "xterm"}
    proc = subprocess.Popen(
        argv, stdin=follower, stdout=follower, stderr=follower, env=env, cwd=cwd
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    screen = b"".join(chunks).decode(errors="replace")
    return proc.wait(timeout=30), re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)


def test_terminal_shows_live_progress_then_one_failure_summary(tmp_path: Path) -> None:
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT)
    code, screen = _on_terminal([sys.executable, str(script), str(tmp_path / "s")], tmp_path)
    assert code == 0, screen
    assert "12/12" in screen  # the live bar reached the end
    assert "completed 11 failed 1" in screen and "y=22.0" in screen  # counts and metric
    summary = [line for line in screen.splitlines() if "did not succeed" in line]
    assert summary == ["metalab: 1 of 12 runs of term:1 did not succeed:"], screen
    error_line = next(line for line in screen.splitlines() if "KeyError (1 run)" in line)
    assert "'missing thing'" in error_line and "metalab show " in error_line
    assert "Traceback" not in screen  # a failed run is reported, not dumped
    assert "RESULTS 12 1" in screen
