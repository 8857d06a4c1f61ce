"""Shared helpers of the benchmark scripts: timing, peak memory, table printing.

Benchmarks measure the release build of the Rust core (``uv sync`` builds it with the
release profile configured in pyproject.toml).
"""

from __future__ import annotations

import gc
import resource
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Measurement", "measure", "peak_rss_mb", "print_table"]


@dataclass
class Measurement:
    """One benchmark stage: median wall time of repeats and peak Python memory."""

    stage: str
    size: int
    seconds: list[float]
    peak_mb: float
    floor_seconds: float | None = None
    target: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        """Median of the repeats, in seconds."""
        return statistics.median(self.seconds)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "stage": self.stage,
            "size": self.size,
            "median_s": self.median,
            "repeats_s": self.seconds,
            "peak_mb": self.peak_mb,
            "floor_s": self.floor_seconds,
            "target": self.target,
            **self.extra,
        }


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(
    stage: str,
    size: int,
    fn: Callable[[], Any],
    repeats: int = 3,
    setup: Callable[[], Any] | None = None,
    target: str = "",
    trace_memory: bool = True,
) -> Measurement:
    """Time ``fn`` ``repeats`` times (after ``setup`` each time) and trace its peak memory."""
    seconds = []
    peak = 0.0
    for attempt in range(repeats):
        if setup is not None:
            setup()
        gc.collect()
        tracing = trace_memory and attempt == 0
        if tracing:
            tracemalloc.start()
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
        if tracing:
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    # tracemalloc slows allocation-heavy code; report the untraced repeats when possible.
    if trace_memory and repeats > 1:
        seconds = seconds[1:]
    return Measurement(stage, size, seconds, peak, target=target)


def print_table(title: str, rows: Sequence[Measurement]) -> None:
    """Print measurements as an aligned table."""
    print(f"\n{title}")
    header = f"{'stage':<44} {'size':>9} {'median':>10} {'peak MB':>9} {'floor':>10}  target"
    print(header)
    print("-" * len(header))
    for row in rows:
        floor = f"{row.floor_seconds:.3f}s" if row.floor_seconds is not None else ""
        print(
            f"{row.stage:<44} {row.size:>9} {row.median:>9.3f}s {row.peak_mb:>9.1f} "
            f"{floor:>10}  {row.target}"
        )
