"""The site-like SLURM profile for tests that need accounting or memory enforcement.

``scripts/slurm-local-cluster.sh --profile site`` runs it next to the permissive cluster,
with its configuration in ``/etc/slurm-site``; CI exports ``SLURM_CONF`` to it. A test that
needs ``sacct`` or cgroup memory limits asks for :func:`use_site_cluster`: it points
``SLURM_CONF`` at the site profile when nothing chose a cluster yet, and skips (fails under
``METALAB_REQUIRE_SERVICES=1``) when accounting does not answer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from services import _unavailable

SITE_CONF = Path("/etc/slurm-site/slurm.conf")


def use_site_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point this test (and the jobs it submits) at a cluster with working accounting."""
    if "SLURM_CONF" not in os.environ and SITE_CONF.exists():
        monkeypatch.setenv("SLURM_CONF", str(SITE_CONF))
    if shutil.which("sacct") is None:
        _unavailable("sacct not found (run scripts/slurm-local-cluster.sh --profile site)")
    done = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-S", "now", "--format=JobID"],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    if done.returncode != 0 or "disabled" in done.stderr:
        _unavailable(
            f"SLURM accounting does not answer ({done.stderr.strip() or done.returncode}); "
            f"start the site profile: scripts/slurm-local-cluster.sh --profile site"
        )
    # Accounting's answer is cached per process; a test that ran before on a cluster
    # without it must not leave that verdict behind.
    from metalab.executors import slurm_reasons

    monkeypatch.setattr(slurm_reasons, "_accounting_disabled", False)
