"""SLURM client commands started together and read when needed (limits discovery).

:func:`wave` starts every command at once; each :class:`Call` is then read, waited for up
to the wave's deadline, or cancelled when its answer turns out not to be needed. A call
that cannot start, times out or exits non-zero answers ``(None, why)``, never raises:
discovery turns that into an unknown limit.
"""

from __future__ import annotations

import subprocess
import time

__all__ = ["CALL_TIMEOUT_S", "Call", "wave"]

CALL_TIMEOUT_S = 20.0
"""Longest wait for one discovery call; a controller that slow gives no limits, not a hang."""


class Call:
    """One client command of a discovery wave, started at once and read when needed.

    Every command of a wave runs at the same time: the two ``sacctmgr`` calls each take
    ~0.19 s on a site (slurmdbd's answers arrive in 40 ms steps), the ``scontrol`` and
    ``squeue`` calls 15-30 ms, so a wave takes about as long as its slowest call instead
    of their sum (~0.45 s asked one after another).
    """

    def __init__(self, argv: list[str], deadline: float) -> None:
        self.argv = argv
        self.deadline = deadline
        self.proc: subprocess.Popen[str] | None = None
        self.why: str | None = None
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        except OSError as exc:
            self.why = f"{self._name()}: {exc}"

    def _name(self) -> str:
        return " ".join(self.argv[:3])

    def result(self) -> tuple[str | None, str | None]:
        """(stdout, None) or (None, why it failed); waits until the wave's deadline."""
        if self.proc is None:
            return None, self.why
        try:
            out, err = self.proc.communicate(timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired as exc:
            self.cancel()
            return None, f"{self._name()}: {exc}"
        if self.proc.returncode != 0:
            said = (err.strip() or out.strip()).splitlines()[:1]
            return None, f"{self._name()} exited {self.proc.returncode}: {' '.join(said)}"
        return out, None

    def cancel(self) -> None:
        """Stop a call whose answer is not needed (and reap it: no zombie, no open pipe)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            self.proc.communicate()


def wave(*argvs: list[str]) -> list[Call]:
    """Start every command now; each must answer within :data:`CALL_TIMEOUT_S` of this."""
    deadline = time.monotonic() + CALL_TIMEOUT_S
    return [Call(argv, deadline) for argv in argvs]
