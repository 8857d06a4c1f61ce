"""Keep what a run prints and warns in its log: stdout, stderr, ``warnings.warn``.

While an executor runs operations, :func:`installed` puts a proxy on ``sys.stdout`` and
``sys.stderr`` and a hook on ``warnings.showwarning``, once for the whole launch (the
thread executor) or the whole worker process (process and SLURM workers). Both dispatch
by thread: :func:`routed` registers the calling thread for one run, and every write or
warning from that thread is *also* appended to the run's log, marked ``[stdout]``,
``[stderr]`` or ``[warning]``. Writes from any other thread (the driver printing
progress, the user's own threads) reach the wrapped stream unchanged. Nothing is
swallowed: the terminal (or the worker's stream) still receives everything.

A per-thread route rather than ``contextlib.redirect_stdout``/``warnings.catch_warnings``
because those swap a process-wide global: with several runs in threads, one run would
restore the stream while another still prints, and lines would land in the wrong log.

Lines are written when complete (a crash keeps everything printed before it), a partial
line longer than :data:`MAX_PENDING` characters is written as it is (a bounded buffer),
and a carriage return keeps only the text after it, as a terminal shows it (a progress
bar leaves its last state, not every redraw). A run that prints nothing opens nothing:
the log is opened by its first line.

Not captured: output of threads the operation starts itself (they are not the run's
thread) and writes that bypass ``sys.stdout`` (C code or child processes writing to file
descriptor 1), which go to the stream as before.

Warnings: Python shows a given warning once per code location and process (the
``default`` filter action). So that every run's log has its own warnings, the
"already shown" registries are reset when a run starts; the terminal still gets each
distinct warning once per installation, not once per run.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import IO, Any, Protocol, TextIO, cast

from metalab.errors import StoreError

__all__ = ["MAX_PENDING", "LineSink", "RunOutput", "installed", "is_installed", "routed"]

MAX_PENDING = 8192
"""Longest partial line kept in memory before it is written to the log as a line."""


class LineSink(Protocol):
    """Where a run's captured lines go (:class:`~metalab.capture.Capture` is one)."""

    def stream_lines(self, marker: str, lines: list[str]) -> None:
        """Append ``lines`` (without newlines) to the run's log under ``marker``."""


class RunOutput:
    """The captured streams of one run: partial lines per stream, written when complete."""

    def __init__(self, sink: LineSink) -> None:
        self._sink = sink
        self._pending: dict[str, str] = {}
        self._warned: set[tuple[Any, ...]] = set()

    def write(self, stream: str, text: str) -> None:
        """Add ``text`` written to ``stream`` ("stdout"/"stderr"); write complete lines."""
        pending = self._pending.get(stream, "") + text
        if "\n" in pending:
            *complete, pending = pending.split("\n")
            self._emit(stream, [_as_shown(line) for line in complete])
        if "\r" in pending:
            # Only the last redraw matters (a progress bar); keep a trailing \r so the next
            # write overwrites, as it would on a terminal.
            pending = _as_shown(pending) + ("\r" if pending.endswith("\r") else "")
        if len(pending) > MAX_PENDING:
            self._emit(stream, [pending])
            pending = ""
        self._pending[stream] = pending

    def first_time(self, key: tuple[Any, ...]) -> bool:
        """True the first time this run meets ``key`` (a warning's category, text, place)."""
        if key in self._warned:
            return False
        self._warned.add(key)
        return True

    def warning(self, message: str, category: type[Warning], where: str) -> None:
        """Append one warning as ``Category: message (file:line)``."""
        text = message.replace("\n", "\n    ")
        self._emit("warning", [f"{category.__name__}: {text} ({where})"])

    def flush(self) -> None:
        """Write the partial lines still pending (the run is over)."""
        for stream, pending in sorted(self._pending.items()):
            shown = _as_shown(pending)
            if shown:
                self._emit(stream, [shown])
        self._pending.clear()

    def _emit(self, stream: str, lines: list[str]) -> None:
        if not lines:
            return
        # A failed log write is remembered by the sink (Capture.store_failure) and raised
        # once the run is over; raising it out of print() would break the operation at an
        # arbitrary point instead.
        with contextlib.suppress(StoreError):
            self._sink.stream_lines(f"[{stream}]", lines)


def _as_shown(line: str) -> str:
    """``line`` as a terminal leaves it: the last non-empty segment after carriage returns."""
    if "\r" not in line:
        return line
    for segment in reversed(line.split("\r")):
        if segment:
            return segment
    return ""


# -- the process-wide router ------------------------------------------------------------
_lock = threading.Lock()
_routes: dict[int, RunOutput] = {}
_depth = 0
_saved: tuple[Any, Any, Any] | None = None
_shown_warnings: set[tuple[type[Warning], str, str, int]] = set()


class _StreamProxy:
    """Stands in for ``sys.stdout``/``sys.stderr``: tees a run thread's writes to its log."""

    def __init__(self, name: str, wrapped: IO[str] | None) -> None:
        self._name = name
        self._wrapped = wrapped

    def write(self, text: str) -> int:
        """Write to the wrapped stream, and to the run's log from a run's thread."""
        route = _routes.get(threading.get_ident())
        if route is not None and isinstance(text, str):
            # The log first: a broken terminal (closed pipe) must not lose the line.
            route.write(self._name, text)
        return len(text) if self._wrapped is None else self._wrapped.write(text)

    def writelines(self, lines: Any) -> None:
        """Write each of ``lines`` (no newlines added, as for any text stream)."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Flush the wrapped stream (log lines are written as soon as they are complete)."""
        if self._wrapped is not None:
            self._wrapped.flush()

    def isatty(self) -> bool:
        """Whether the wrapped stream is a terminal (so colours and bars behave as before)."""
        return self._wrapped is not None and self._wrapped.isatty()

    def __getattr__(self, name: str) -> Any:
        # encoding, fileno, buffer, errors...: whatever the wrapped stream offers.
        if self._wrapped is None:
            raise AttributeError(name)
        return getattr(self._wrapped, name)


def _showwarning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` while installed: a run's warnings also go to its log."""
    saved = _saved
    previous = saved[2] if saved is not None else warnings._showwarning_orig  # type: ignore[attr-defined]
    route = _routes.get(threading.get_ident())
    if route is None:
        previous(message, category, filename, lineno, file, line)
        return
    text = str(message)
    registry = _registry_of(filename, lineno)
    # Noted there by a default/module/once action (``always`` notes nothing).
    once = registry is not None and (text, category, lineno) in registry
    if once and registry is not None and len(_routes) > 1:
        _release(registry, text, category, lineno)
    if once and not route.first_time((category, text, filename, lineno)):
        return
    route.warning(text, category, f"{filename}:{lineno}")
    if once:
        with _lock:
            seen = (category, text, filename, lineno) in _shown_warnings
            _shown_warnings.add((category, text, filename, lineno))
        if seen:
            # The terminal keeps Python's usual once-per-location behaviour.
            return
    # The default hook prints to sys.stderr: off the route meanwhile, or the warning
    # would be logged a second time as [stderr] lines.
    ident = threading.get_ident()
    _routes.pop(ident, None)
    try:
        previous(message, category, filename, lineno, file, line)
    finally:
        _routes[ident] = route


def _registry_of(filename: str, lineno: int) -> dict[Any, Any] | None:
    """The ``__warningregistry__`` of the frame a warning names (None if not found)."""
    # Up from the hook to that frame (stacklevel may skip a few).
    frame = sys._getframe(1).f_back
    while frame is not None and not (
        frame.f_lineno == lineno and frame.f_code.co_filename == filename
    ):
        frame = frame.f_back
    registry = frame.f_globals.get("__warningregistry__") if frame is not None else None
    return registry if isinstance(registry, dict) else None


def _release(registry: dict[Any, Any], text: str, category: type[Warning], lineno: int) -> None:
    """Forget that a warning was shown, so runs executing at the same time see it too.

    Python notes a shown warning in the module's registry (and ``warnings.onceregistry``)
    and never shows it again in this process: of several runs executing at once, only
    the first would have it in its log. Once forgotten, every occurrence reaches the hook
    again: :class:`RunOutput` keeps it once per run, the terminal once per installation.
    (Runs one after another need none of this: registries are reset when a run starts.)
    """
    registry.pop((text, category, lineno), None)
    registry.pop((text, category, 0), None)
    warnings.onceregistry.pop((text, category), None)  # type: ignore[attr-defined]


def is_installed() -> bool:
    """True while at least one :func:`installed` block is active in this process."""
    return _depth > 0


def install() -> None:
    """Install the proxies and the warning hook (nested calls only count)."""
    global _depth, _saved
    with _lock:
        _depth += 1
        if _depth > 1:
            return
        _saved = (sys.stdout, sys.stderr, warnings.showwarning)
        _shown_warnings.clear()
        sys.stdout = cast(TextIO, _StreamProxy("stdout", sys.stdout))
        sys.stderr = cast(TextIO, _StreamProxy("stderr", sys.stderr))
        warnings.showwarning = _showwarning


def uninstall() -> None:
    """Undo one :func:`install`; the last one puts the original streams and hook back.

    A stream or hook that someone replaced meanwhile is left as it is (theirs now); the
    proxy they may still hold keeps passing writes through to the original stream.
    """
    global _depth, _saved
    with _lock:
        if _depth == 0:
            return
        _depth -= 1
        if _depth > 0 or _saved is None:
            return
        stdout, stderr, hook = _saved
        _saved = None
        if isinstance(sys.stdout, _StreamProxy):
            sys.stdout = stdout
        if isinstance(sys.stderr, _StreamProxy):
            sys.stderr = stderr
        if warnings.showwarning is _showwarning:
            warnings.showwarning = hook


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Capture runs' output for the duration of the block (restored even on Ctrl-C)."""
    install()
    try:
        yield
    finally:
        uninstall()


def _reset_warning_registries() -> None:
    # The filters' version bump makes every module's __warningregistry__ start afresh
    # (what warnings.filterwarnings does internally); private, hence looked up softly.
    reset = getattr(warnings, "_filters_mutated", None)
    if reset is not None:
        reset()


@contextlib.contextmanager
def routed(sink: LineSink) -> Iterator[RunOutput]:
    """Send this thread's output to ``sink`` for the block; pending lines are written at exit.

    Costs a dictionary entry per run; nothing is opened unless the run prints.
    """
    output = RunOutput(sink)
    ident = threading.get_ident()
    if _depth > 0:
        _reset_warning_registries()
    _routes[ident] = output
    try:
        yield output
    finally:
        _routes.pop(ident, None)
        output.flush()
