"""``RunHandle.result()``: typed timeout, launch failures keep their class, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import metalab
from child_signals import default_sigint
from metalab.errors import ExecutorError, MetalabError, ResultTimeoutError, StoreError


def sleepy(context: Any, params: Any, seeds: Any, capture: Any, runtime: Any) -> None:
    """Sleep ``context['sleep']`` seconds, then record a metric."""
    time.sleep(context["sleep"])
    capture.metric("y", params["x"])


def _exp(name: str, sleep: float, n: int = 2, operation: Any = sleepy) -> metalab.Experiment:
    return metalab.Experiment(
        name, "1", {"sleep": sleep}, operation, metalab.grid(x=list(range(n))), metalab.seeds(0)
    )


def test_timeout_is_a_metalab_timeout_error_and_the_runs_go_on(tmp_path: Path) -> None:
    handle = metalab.run(_exp("slow", 1.5), store=str(tmp_path / "s"))
    with pytest.raises(ResultTimeoutError) as info:
        handle.result(timeout=0.2)
    error = info.value
    assert isinstance(error, TimeoutError) and isinstance(error, MetalabError)
    assert type(error) is not TimeoutError
    assert error.experiment_id == "slow:1" and error.timeout == 0.2
    assert "slow:1" in str(error) and "0.2" in str(error)
    # Nothing was stopped: waiting again finishes every run.
    assert len(handle.result(timeout=60).successful) == 2


def test_process_worker_that_cannot_start_keeps_its_executor_error(tmp_path: Path) -> None:
    # A module the driver imports fine but a fresh worker process cannot: the worker's
    # init fails (ExecutorError in the driver), which result() used to turn into StoreError.
    module = tmp_path / "mod_breaks_in_workers.py"
    flag = tmp_path / "broken"
    module.write_text(
        textwrap.dedent(f"""
            import os
            if os.path.exists({str(flag)!r}):
                raise RuntimeError("this module cannot be imported any more")

            def op(context, params, seeds, capture, runtime):
                capture.metric("y", 1)
        """)
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import mod_breaks_in_workers  # type: ignore[import-not-found]

        flag.touch()
        exp = _exp("breaks", 0.0, operation=mod_breaks_in_workers.op)
        handle = metalab.run(
            exp, store=str(tmp_path / "s"), executor=metalab.ProcessExecutor(max_workers=1)
        )
        with pytest.raises(ExecutorError) as info:
            handle.result(timeout=120)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mod_breaks_in_workers", None)
    assert not isinstance(info.value, StoreError)
    text = str(info.value)
    assert text.startswith("experiment breaks:1 stopped: ExecutorError: worker")
    assert "cannot be imported any more" in text and "resume=True" in text
    # A second call raises the same error without stacking the context twice.
    with pytest.raises(ExecutorError) as again:
        handle.result(timeout=10)
    assert str(again.value).count("stopped:") == 1


CTRL_C_SCRIPT = """
import sys, time, metalab
sys.path.insert(0, {tests!r})
from test_result_errors import _exp
handle = metalab.run(_exp("ctrlc", 30.0), store={store!r})
print("WAITING", flush=True)
handle.result()
"""


def test_ctrl_c_in_result_prints_one_line_and_a_short_traceback(tmp_path: Path) -> None:
    script = CTRL_C_SCRIPT.format(tests=str(Path(__file__).parent), store=str(tmp_path / "s"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=default_sigint,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "WAITING"
    time.sleep(1.0)  # inside result()'s wait loop
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode in (-signal.SIGINT, 130), err
    lines = err.strip().splitlines()
    told = [line for line in lines if line.startswith("metalab: interrupted")]
    assert len(told) == 1, err
    assert "go on in this process" in told[0] and "resume=True" in told[0]
    assert lines[-1] == "KeyboardInterrupt"
    # The traceback is the user's line and result(): no frames of the wait loop.
    assert len(lines) <= 8, err
    assert "_wait" not in err and "threading" not in err
