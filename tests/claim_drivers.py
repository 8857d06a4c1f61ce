"""Driver processes that launch one experiment together, counting executions in a side file.

The operation appends one line per execution (``O_APPEND``, one ``write`` per line, so
concurrent processes never interleave a line): ``{run_id} {pid}``.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap
from pathlib import Path

DRIVER = textwrap.dedent(
    """
    import os, sys, time
    import metalab

    LOG = sys.argv[3]

    @metalab.operation
    def counted(params, runtime, capture):
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{runtime.run_id} {os.getpid()}\\n".encode())
        finally:
            os.close(fd)
        time.sleep(float(sys.argv[4]))
        capture.metric("i", params["i"])

    exp = metalab.Experiment(
        name="claimed", version="1", context={}, operation=counted,
        params=metalab.grid(i=list(range(int(sys.argv[5])))), seeds=metalab.seeds(base=1),
    )
    executor = metalab.ProcessExecutor(max_workers=2) if sys.argv[2] == "process" else None
    handle = metalab.run(exp, store=sys.argv[1], executor=executor)
    if len(sys.argv) > 6:  # report the status after that many seconds
        time.sleep(float(sys.argv[6]))
        print("ELSEWHERE", handle.status.elsewhere, flush=True)
    results = handle.result(timeout=300)
    print("RESULT", len(results.successful), len(results), flush=True)
    """
)


def write_driver(tmp_path: Path) -> Path:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    return script


def drivers(
    script: Path, store: str, executor: str, log: Path, n: int, sleep: float, runs: int
) -> list[subprocess.Popen[str]]:
    args = [str(store), executor, str(log), str(sleep), str(runs)]
    return [
        subprocess.Popen(
            [sys.executable, str(script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for _ in range(n)
    ]


def executions(log: Path) -> collections.Counter[str]:
    lines = log.read_text().splitlines() if log.exists() else []
    return collections.Counter(line.split()[0] for line in lines)


def concurrent_drivers_execute_once(
    tmp_path: Path, store: str, executor: str, runs: int = 40
) -> None:
    """8 real driver processes launch one experiment on one store together."""
    script, log = write_driver(tmp_path), tmp_path / "executions.log"
    procs = drivers(script, store, executor, log, 8, 0.02, runs)
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        outputs.append(out)
    executed = executions(log)
    assert len(executed) == runs
    twice = {run_id: n for run_id, n in executed.items() if n > 1}
    assert not twice, f"runs executed more than once: {twice}"
    for out in outputs:
        # Every driver's result() has every run, those executed by the others included.
        assert f"RESULT {runs} {runs}" in out
