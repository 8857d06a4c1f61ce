"""Child processes that a test interrupts must start with Ctrl-C handled normally.

A shell runs background jobs with SIGINT ignored, and an ignored signal stays ignored
across ``exec``; Python then installs no KeyboardInterrupt handler. A test that presses
Ctrl-C in a child (``send_signal(SIGINT)``) would see nothing happen whenever the suite
itself was started in the background (``bash .ci/run &``). Pass
``preexec_fn=default_sigint`` to ``subprocess.Popen`` for such children.
"""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """Reset SIGINT to its default in the child, so Python installs its own handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
