"""The ``capture`` object an operation uses to record metrics, artifacts, figures and logs.

Artifacts and log lines go to the store while the operation runs. When such a write
fails (disk full, quota, database gone) the failure is the store's, not the run's: it is
raised as :class:`~metalab.errors.StoreError` and remembered in
:attr:`Capture.store_failure`, so :func:`metalab.execution.execute_task` stops the launch
even if the operation caught the exception, and never records it as the run's failure.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import Any

from metalab.capture.checkpoint import (
    checkpoint_key,
    decode_checkpoint,
    encode_checkpoint,
    encode_cleared,
)
from metalab.capture.serializers import serialize
from metalab.errors import CaptureError, StoreError
from metalab.records import ArtifactInfo, utc_now
from metalab.store.base import LogSink, Store
from metalab.store.capabilities import Located

__all__ = ["LOG_LEVELS", "Capture", "check_artifact_name", "metric_value", "store_write"]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_METRIC_NAME = re.compile(r"^[^\x00-\x1f]{1,200}$")


def check_artifact_name(name: object) -> str:
    """Return ``name`` if it is a safe artifact/figure name.

    Raises:
        CaptureError: not 1-128 of letters, digits, ``_ . -`` or contains ``..``.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise CaptureError(
            f"invalid artifact name {name!r}: expected 1-128 characters from letters, digits, "
            f"'_', '.', '-' (no path separators, no '..')"
        )
    return name


def metric_value(name: str, value: object) -> int | float:
    """Return ``value`` as a plain int/float (NumPy scalars unwrapped).

    Non-finite floats are allowed and stored with the documented string encoding.

    Raises:
        CaptureError: the value is not a real number.
    """
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value
    raise CaptureError(
        f"metric {name!r} has value {value!r} of type {type(value).__name__}; "
        f"expected an int or float"
    )


@contextlib.contextmanager
def store_write(what: str, run_id: str, store: Located) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``what`` of a run into a StoreError.

    A store that already raises :class:`StoreError` (PostgreSQL, fallback) passes through.

    Raises:
        StoreError: the write failed; the message names the run, what was written, the
            store and the operating system's reason (``[Errno 28] No space left...``).
    """
    try:
        yield
    except StoreError:
        raise
    except OSError as exc:
        path = None if exc.filename is None else os.fsdecode(exc.filename)
        raise StoreError(
            f"cannot write the {what} of run {run_id} to {store.locator}: {exc}",
            locator=store.locator,
            path=path,
        ) from exc


def _check_metric_name(name: object) -> str:
    if not isinstance(name, str) or not _METRIC_NAME.fullmatch(name):
        raise CaptureError(
            f"invalid metric name {name!r}: expected a non-empty str of at most 200 "
            f"printable characters"
        )
    return name


def _check_step(step: object) -> int | None:
    if step is None:
        return None
    if hasattr(step, "item"):
        step = step.item()
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CaptureError(f"metric step must be a non-negative int, got {step!r}")
    return step


class Capture:
    """Records what one run produces; handed to operations as ``capture``."""

    def __init__(self, store: Store, run_id: str, worker_id: str) -> None:
        self._store = store
        self._run_id = run_id
        self._worker_id = worker_id
        self._log: LogSink | None = None
        self.metrics: dict[str, int | float] = {}
        self.series: dict[str, list[list[int | float]]] = {}
        self.artifacts: dict[str, ArtifactInfo] = {}
        self.store_failure: StoreError | None = None
        """The first failed store write of this run (then every later write fails too)."""
        self._checkpointed = False

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        # After one failure nothing more is written: the store is broken and the run
        # will not be recorded anyway, so the operation should stop as soon as it can.
        if self.store_failure is not None:
            raise self.store_failure
        try:
            with store_write(what, self._run_id, self._store):
                yield
        except StoreError as exc:
            self.store_failure = exc
            raise

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        """Record a scalar metric; with ``step``, append to its series as well.

        The latest value of a stepped metric is also visible in ``run.metrics``.

        Raises:
            CaptureError: bad name, non-numeric value or negative/non-int step.
        """
        key = _check_metric_name(name)
        number = metric_value(key, value)
        position = _check_step(step)
        if position is not None:
            self.series.setdefault(key, []).append([position, number])
        self.metrics[key] = number

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record several metrics at once (all validated before any is stored)."""
        if not isinstance(metrics, dict):
            raise CaptureError(f"log_metrics() expects a dict, got {type(metrics).__name__}")
        checked = {_check_metric_name(k): metric_value(k, v) for k, v in metrics.items()}
        for key, value in checked.items():
            self.metric(key, value, step=step)

    def artifact(self, name: str, obj: Any, kind: str | None = None) -> None:
        """Store an object as an artifact of this run (serializer chosen automatically).

        Raises:
            CaptureError: unsafe name, unknown kind or an object the kind cannot store.
            StoreError: the store could not write it (the launch stops).
        """
        safe = check_artifact_name(name)
        packed = serialize(safe, obj, kind)
        with self._writing(f"artifact {safe!r}"):
            self.artifacts[safe] = self._store.put_artifact(
                self._run_id, safe, packed.data, packed.kind, packed.ext, {}
            )

    def figure(self, name: str, fig: Any, dpi: int = 100) -> None:
        """Save a Matplotlib figure as a PNG artifact, then close it.

        Raises:
            CaptureError: unsafe name or not a figure.
            StoreError: the store could not write it (the launch stops).
        """
        import io

        safe = check_artifact_name(name)
        if not hasattr(fig, "savefig"):
            raise CaptureError(f"figure {safe!r}: expected a Matplotlib figure, got {fig!r}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        try:
            import matplotlib.pyplot as plt

            plt.close(fig)
        except ImportError:  # pragma: no cover - savefig implies matplotlib
            pass
        with self._writing(f"figure {safe!r}"):
            self.artifacts[safe] = self._store.put_artifact(
                self._run_id, safe, buffer.getvalue(), "png", ".png", {}
            )

    def checkpoint(self, state: Any) -> None:
        """Save ``state`` as this run's checkpoint, replacing the previous one atomically.

        A re-execution of the run (after a timeout, preemption, crash or failure, in any
        executor) gets it back from :meth:`restore`. States are data: ``None``, ``bool``,
        ``int``, ``float``, ``str``, ``bytes``, ``list``, ``tuple``, ``dict`` with ``str``
        keys and NumPy arrays/scalars, nested (see :mod:`metalab.capture.checkpoint`).

        Raises:
            CaptureError: a value of ``state`` is of another kind (its place is named);
                nothing is written then.
            StoreError: the store could not write it (the launch stops).
        """
        blob = encode_checkpoint(state, self._run_id)
        with self._writing("checkpoint"):
            self._store.put_blob(checkpoint_key(self._run_id), blob)
        self._checkpointed = True

    def restore(self) -> Any:
        """The state of this run's last :meth:`checkpoint`, or ``None`` if it has none.

        ``None`` on a run's first execution and after the run succeeded (its checkpoint
        is cleared then); otherwise an equal copy of what was saved, of the same types.

        Raises:
            CaptureError: the stored checkpoint is damaged or belongs to another run.
            StoreError: the store could not be read (the launch stops).
        """
        if self.store_failure is not None:
            raise self.store_failure
        key = checkpoint_key(self._run_id)
        try:
            blob = self._store.get_blob(key)
        except StoreError as exc:
            self.store_failure = exc
            raise
        if blob is None:
            return None
        found, state = decode_checkpoint(
            blob, self._run_id, f"checkpoint {key!r} of {self._store.locator}"
        )
        # Restored, so the run's success must clear it even if it saves no new one.
        self._checkpointed = self._checkpointed or found
        return state

    def clear_checkpoint(self) -> None:
        """Mark this run's checkpoint cleared; called by ``execute_task`` on success.

        Nothing is written unless this execution saved or restored a checkpoint. A failed
        write is only remembered in :attr:`store_failure` (``execute_task`` raises it, so
        the run is not recorded as done while a stale checkpoint could remain).
        """
        if not self._checkpointed:
            return
        with contextlib.suppress(StoreError), self._writing("checkpoint"):
            self._store.put_blob(checkpoint_key(self._run_id), encode_cleared(self._run_id))

    def log(self, message: str, level: str = "info") -> None:
        """Append a timestamped, levelled line with the worker's identity to the run log.

        Each line is persisted immediately, so a crash keeps what was logged so far.

        Raises:
            CaptureError: ``level`` is not one of debug, info, warning, error, critical.
            StoreError: the store could not write the line (the launch stops).
        """
        if level not in LOG_LEVELS:
            raise CaptureError(f"log level {level!r} is not one of {LOG_LEVELS}")
        self._write_lines(level.upper(), [str(message).replace("\n", "\n    ")])

    def stream_lines(self, marker: str, lines: list[str]) -> None:
        """Append output the run printed or warned (``[stdout]``, ``[warning]``...).

        Used by :mod:`metalab.capture.output`; the lines share one write (one log line
        each, in the same format as :meth:`log` with ``marker`` in place of the level).

        Raises:
            StoreError: the store could not write them (remembered in store_failure).
        """
        self._write_lines(marker, lines)

    def failure(self, traceback_text: str) -> None:
        """Append the traceback of the run's failure to its log (``ERROR`` lines).

        A failed write is only remembered in :attr:`store_failure` (then raised by
        ``execute_task``), so it never hides the run's own error.
        """
        text = traceback_text.rstrip("\n").replace("\n", "\n    ")
        with contextlib.suppress(StoreError):
            self._write_lines("ERROR", [f"run failed:\n    {text}"])

    def _write_lines(self, marker: str, texts: list[str]) -> None:
        stamp = utc_now().isoformat(timespec="milliseconds")
        prefix = f"{stamp} {marker:<8} [{self._worker_id}] "
        with self._writing("log"):
            if self._log is None:
                self._log = self._store.open_log(self._run_id)
            # Several lines in one write: one file write or one INSERT, not one per line.
            self._log.write_line("\n".join(prefix + text for text in texts))

    def close(self) -> None:
        """Release the log sink; a failure to flush it counts as a failed store write."""
        sink, self._log = self._log, None
        if sink is None:
            return
        try:
            # Closed even after an earlier failure, so no file handle is left open.
            with store_write("log", self._run_id, self._store):
                sink.close()
        except StoreError as exc:
            # Not raised here: execute_task raises store_failure once the run is over.
            if self.store_failure is None:
                self.store_failure = exc
