"""The π sweep the dashboard tests look at, and a real uvicorn server on a loopback port.

The experiment is examples/pi_mc.py's estimate with a failing corner (``n_samples=13``
raises ``ValueError``), a stepped metric (``running_estimate`` at 4 steps), a figure
artifact, an array artifact and log lines, so every page has something real to show.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import metalab

SIZES = [100, 1000, 10000]
BAD_SIZE = 13  # the runs with this size fail with ValueError
REPLICATES = 3
STEPS = 4
EXPERIMENT_ID = "pi_ui:0.1"


@metalab.operation
def estimate_pi(params: dict[str, Any], seeds: Any, capture: Any) -> None:
    import matplotlib.figure

    n = params["n_samples"]
    capture.log(f"estimating pi with n={n}")
    if n == BAD_SIZE:
        raise ValueError(f"n_samples={n} is unlucky")
    rng = seeds.numpy()
    x, y = rng.random(n), rng.random(n)
    inside = x**2 + y**2 <= 1
    for step in range(STEPS):
        upto = max(1, n * (step + 1) // STEPS)
        capture.metric("running_estimate", 4.0 * float(inside[:upto].mean()), step=step)
    pi_est = 4.0 * float(inside.mean())
    capture.metric("pi_estimate", pi_est)
    capture.metric("abs_error", abs(pi_est - 3.141592653589793))
    fig = matplotlib.figure.Figure(figsize=(2, 2), dpi=50)
    ax = fig.add_subplot()
    ax.scatter(x[:200], y[:200], s=2, c=inside[:200])
    capture.figure("samples", fig)
    capture.artifact("inside", inside[:100].astype(float))
    capture.log(f"done: pi ~ {pi_est:.4f}")


def experiment(sizes: list[int], name: str = "pi_ui") -> metalab.Experiment:
    """The π sweep over ``sizes`` with 3 replicates."""
    return metalab.Experiment(
        name=name,
        version="0.1",
        context={},
        operation=estimate_pi,
        params=metalab.grid(n_samples=sizes),
        seeds=metalab.seeds(base=42, replicates=REPLICATES),
        metadata={"author": "tests/ui", "notes": "pi for the dashboard"},
    )


def make_store(root: Path) -> Path:
    """A FileStore holding the π sweep with its failing size: 12 runs, 3 failed."""
    metalab.run(experiment([*SIZES, BAD_SIZE]), store=root, progress=False).result()
    return root


def free_port() -> int:
    """A TCP port free on the loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """The dashboard of a store served by uvicorn in a thread of the test process."""

    def __init__(
        self, store: Any, host: str = "127.0.0.1", token: str | None = None, refresh_s: float = 0.5
    ) -> None:
        import uvicorn

        from metalab.store.locator import create_store, to_locator
        from metalab.ui.app import create_app
        from metalab.ui.data import StoreData

        opened = create_store(store)
        self.data = StoreData(opened, refresh_s=refresh_s)
        app = create_app(self.data, to_locator(opened), token)
        self.port = free_port()
        self.base = f"http://{host if ':' not in host else f'[{host}]'}:{self.port}"
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the dashboard server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def get(
        self, path: str, headers: dict[str, str] | None = None, **params: Any
    ) -> tuple[int, bytes, dict[str, str]]:
        """GET ``path`` with query ``params`` (lists repeat); status, body, headers."""
        query = urllib.parse.urlencode(params, doseq=True)
        url = f"{self.base}{path}" + (f"?{query}" if query else "")
        request = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)

    def json(self, path: str, expect: int = 200, **params: Any) -> Any:
        """GET ``path`` and parse its JSON body, asserting the status."""
        status, body, _ = self.get(path, **params)
        assert status == expect, (status, body[:500])
        return json.loads(body)


@contextlib.contextmanager
def serving(store: Any, **kwargs: Any) -> Iterator[Server]:
    """``with serving(store) as server:`` a started dashboard, stopped afterwards."""
    with Server(store, **kwargs) as server:
        yield server


@metalab.operation
def slow_square(params: dict[str, Any], capture: Any) -> None:
    """A run that takes ~50 ms, so a sweep is still being written while it is watched."""
    time.sleep(0.05)
    capture.metric("square", params["k"] ** 2)


def slow_experiment(runs: int) -> metalab.Experiment:
    """``runs`` runs of :func:`slow_square` (one replicate each)."""
    return metalab.Experiment(
        name="live",
        version="1",
        context={},
        operation=slow_square,
        params=metalab.grid(k=list(range(runs))),
        seeds=metalab.seeds(base=1, replicates=1),
    )


GATE = threading.Event()  # held closed, runs of gated_experiment() wait for it


@metalab.operation
def gated(params: dict[str, Any], capture: Any) -> None:
    """A run that waits until :data:`GATE` opens (at most 60 s)."""
    GATE.wait(timeout=60)
    capture.metric("k", params["k"])


def gated_experiment() -> metalab.Experiment:
    """Two runs of :func:`gated`."""
    return metalab.Experiment(
        name="gated",
        version="1",
        context={},
        operation=gated,
        params=metalab.grid(k=[1, 2]),
        seeds=metalab.seeds(base=1, replicates=1),
    )


HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"  # markup in a param and a log


@metalab.operation
def hostile_op(params: dict[str, Any], capture: Any) -> None:
    """Echo a param holding markup into a metric name's neighbour, the log and an error."""
    capture.log(f"label is {params['label']}")
    capture.metric("size", len(params["label"]))


def hostile_experiment() -> metalab.Experiment:
    """One run whose string param is HTML markup."""
    return metalab.Experiment(
        name="hostile",
        version="1",
        context={},
        operation=hostile_op,
        params=metalab.manual([{"label": HOSTILE}]),
        seeds=metalab.seeds(base=1, replicates=1),
    )
