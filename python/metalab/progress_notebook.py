"""Progress in a Jupyter notebook: one output, updated in place, kept in the saved file.

rich draws live displays in notebooks through ipywidgets. Without ipywidgets every
refresh warns (``install "ipywidgets" for Jupyter support``, once per refresh) and leaves
an empty ``<pre>``; with them the bar is a widget, which a saved notebook does not keep.

Here the display is an ordinary output: a ``text/html`` bundle with a ``text/plain``
twin, created with ``display(..., display_id=True)`` and replaced through its handle
(``update_display_data``). Jupyter and nbclient both replace that one output, so the
cell shows a single display whose last state is what the ``.ipynb`` file keeps. No
widget, no script, no warning.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from metalab.errors import ExperimentError

__all__ = ["UPDATE_INTERVAL", "NotebookProgress", "in_notebook"]

UPDATE_INTERVAL = 0.25
"""Minimum seconds between two updates of the display (forced ones excepted): each update
is a message to the browser, and thousands of fast runs would otherwise flood it."""

Bundle = dict[str, str]
"""A display bundle: mimetype -> content (``text/html`` and ``text/plain``)."""


def in_notebook() -> bool:
    """True inside a Jupyter kernel (ipykernel), False in a terminal IPython or plain Python.

    IPython is never imported here: a process in a kernel has already imported it. A
    kernel's shell has a ``kernel``; a terminal IPython's shell does not.
    """
    if "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - a half-imported IPython
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class NotebookProgress:
    """One updating display in the current notebook cell.

    Args:
        render: builds the bundle to show; called with ``final=True`` for the last one.
        interval: minimum seconds between unforced updates.

    Raises:
        ExperimentError: IPython is not installed or not running.

    Updates may come from any thread (executors report runs from their own threads); they
    are serialised so that the final state is never overwritten by a late update.
    """

    def __init__(self, render: Callable[[bool], Bundle], interval: float = UPDATE_INTERVAL) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            raise ExperimentError(
                "Progress(notebook=True) needs IPython: it draws in a Jupyter notebook"
            ) from None
        if get_ipython() is None:
            # Outside IPython, display() would print the bundle's dict and return no handle.
            raise ExperimentError(
                "Progress(notebook=True) needs a running IPython (a Jupyter kernel); "
                "use Progress(notebook=None) to choose the display automatically"
            )
        self._render = render
        self._interval = interval
        self._lock = threading.Lock()
        self._closed = False
        self._last = time.monotonic()
        self._handle: Any = display(render(False), raw=True, display_id=True)  # type: ignore[no-untyped-call]

    def show(self, force: bool = False) -> None:
        """Redraw, at most every ``interval`` seconds unless ``force``; no-op once closed."""
        with self._lock:
            now = time.monotonic()
            if self._closed or (not force and now - self._last < self._interval):
                return
            self._last = now
            self._handle.update(self._render(False), raw=True)

    def close(self) -> None:
        """Draw the final state; later :meth:`show` calls change nothing (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._handle.update(self._render(True), raw=True)
