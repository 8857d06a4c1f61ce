"""The launch of a reconnected local sweep whose driver is gone (nothing runs any more)."""

from __future__ import annotations

from metalab.executors.base import Launch, LaunchCounts

__all__ = ["EndedLaunch"]


class EndedLaunch(Launch):
    """A local launch whose driver process is gone: nothing runs any more.

    Status comes from the store's markers; unfinished runs stay pending until a new
    ``run(..., resume=True)`` executes them, and ``result()`` returns at once.
    """

    def counts(self) -> LaunchCounts:
        return LaunchCounts()

    def wait(self, timeout: float | None = None) -> bool:
        return True

    def cancel(self) -> None:
        """Nothing is running, so nothing to cancel."""

    @property
    def tracks_store(self) -> bool:
        return True
