"""The README's install-from-a-checkout path works on a fresh virtual environment.

This builds the Rust core from source, exactly as a user's ``uv add --editable`` or
``pip install`` would, and checks what the README promises: the build's progress is
visible with ``-v`` and the installed package runs an experiment outside this checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_install_from_checkout_into_a_fresh_venv_shows_build_progress(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    assert uv is not None, "uv is needed to follow the README's install instructions"
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {**os.environ, "CARGO_TARGET_DIR": str(REPO / "target")}  # reuse compiled crates
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        [uv, "pip", "install", "-v", "--python", str(python), str(REPO)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    # -v shows cargo at work, not just "Building metalab".
    assert "Compiling metalab-core" in log or "Finished `release` profile" in log, log[-4000:]
    script = tmp_path / "use_it.py"
    script.write_text(
        textwrap.dedent(
            """
            import metalab

            @metalab.operation
            def double(params, capture):
                capture.metric("y", params["x"] * 2)

            exp = metalab.Experiment(
                name="installed", version="1", context={}, operation=double,
                params=metalab.grid(x=[1, 2, 3]), seeds=metalab.seeds(base=1),
            )
            results = metalab.run(exp, store="./runs/installed").result()
            print(sorted(r.metrics["y"] for r in results), metalab.__file__)
            """
        )
    )
    ran = subprocess.run(
        [str(python), str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    values, location = ran.stdout.split("] ")
    assert values == "[2, 4, 6"
    assert str(venv) in location  # the installed copy, not this checkout's python/
