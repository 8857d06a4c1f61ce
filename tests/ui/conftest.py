"""Fixtures of the dashboard tests: one π store per module, served on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="metalab[ui] is not installed")

from dashboard_helpers import Server, make_store


@pytest.fixture(scope="module")
def pi_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FileStore with the π sweep: 12 runs, 9 successful, 3 failed (ValueError)."""
    return make_store(tmp_path_factory.mktemp("ui") / "store")


@pytest.fixture(scope="module")
def server(pi_store: Path) -> Iterator[Server]:
    """The dashboard of ``pi_store`` on 127.0.0.1 (no token)."""
    with Server(pi_store) as running:
        yield running
