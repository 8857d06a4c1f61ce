"""Taking over a lost FileStore claim: exactly one taker wins, whatever the interleaving.

CI once saw two racers both win one expired claim with hard-link claims (reverted in
a2898a8). ``link(2)`` looks its source path up *before* it locks the directory to create
the new name; a taker that linked the claim itself to its lock name could therefore link
the inode the claim named before a faster taker renamed its own claim over it and
unlocked — an inode that, being a launch's anchor, still had other links — and its check
of that link passed. The deterministic tests here pause one taker before each system call
of its take-over (a ``link`` is split where the kernel may split it: its source looked up
at once, the name created after the pause) while a second taker runs, itself paused at
each of its calls in turn, and check that exactly one of them holds the run. The calls
are real: the file system decides every outcome; only their timing is forced. The stress
test races real processes onto many expired claims for many rounds.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from metalab.store.claims import new_owner
from metalab.store.file import FileStore

RUN = "ab" * 16
OTHER = "ab" + "cd" * 15  # same shard: the lost owner's anchor is shared by two claims
THIRD = "ab" + "ef" * 15
_CALLS = ("link", "open", "replace", "rename", "unlink", "utime", "lstat", "stat")
_REAL: dict[str, Callable[..., Any]] = {name: getattr(os, name) for name in _CALLS}


class _Pause:
    """Stops one thread before its ``at``-th intercepted system call until resumed."""

    def __init__(self, at: int | None) -> None:
        self.at, self.count = at, 0
        self.thread: threading.Thread | None = None
        self.reached, self.go = threading.Event(), threading.Event()

    def due(self) -> bool:
        if threading.current_thread() is not self.thread:
            return False
        self.count += 1
        return self.count - 1 == self.at

    def wait(self) -> None:
        self.reached.set()
        assert self.go.wait(30), "never resumed"


_LIBC = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD, _AT_EMPTY_PATH = -100, 0x1000


def _link_fd(fd: int, target: Any) -> None:
    """``linkat(fd, "", AT_EMPTY_PATH)``: link the inode ``fd`` was opened on, as link(2)
    does with the source it looked up (ENOENT when the inode has no link left)."""
    if _LIBC.linkat(fd, b"", _AT_FDCWD, os.fsencode(target), _AT_EMPTY_PATH) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), os.fspath(target))


def _can_link_fds() -> bool:
    """Whether linkat(AT_EMPTY_PATH) works here (it needs CAP_DAC_READ_SEARCH)."""
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "a")
        Path(source).touch()
        fd = os.open(source, os.O_PATH | os.O_CLOEXEC)
        try:
            _link_fd(fd, os.path.join(tmp, "b"))
        except OSError:
            return False
        finally:
            os.close(fd)
    return True


@contextlib.contextmanager
def _paused_calls(pauses: list[_Pause]) -> Iterator[None]:
    """Route os's file calls through the pauses (``os`` is restored afterwards)."""

    def wrap(name: str) -> Callable[..., Any]:
        real = _REAL[name]

        def call(*args: Any, **kwargs: Any) -> Any:
            pause = next((p for p in pauses if p.due()), None)
            if pause is None:
                return real(*args, **kwargs)
            if name != "link":
                pause.wait()
                return real(*args, **kwargs)
            # link(src, dst): the kernel resolves src, then locks dst's directory; another
            # process may rename and unlink in between. Resolve now, create after.
            try:
                fd = _REAL["open"](args[0], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                pause.wait()
                raise
            try:
                pause.wait()
                return _link_fd(fd, args[1])
            finally:
                os.close(fd)

        return call

    saved = {name: getattr(os, name) for name in _CALLS}
    for name in _CALLS:
        setattr(os, name, wrap(name))
    try:
        yield
    finally:
        for name, real in saved.items():
            setattr(os, name, real)


def _dead_owner() -> str:
    code = "from metalab.store.claims import new_owner; print(new_owner())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


_DEAD = _dead_owner()  # a launch whose process has exited: its claims are lost at once


def _lost_claim(root: Path, how: str) -> None:
    """Claims on RUN and OTHER (one anchor) that are lost: expired, or of a dead owner."""
    store = FileStore(root)
    assert store.claim([RUN, OTHER], _DEAD if how == "dead" else new_owner(), 60.0) == [
        RUN,
        OTHER,
    ]
    if how == "expired":
        old = time.time() - 600
        os.utime(store.layout.claim(RUN), (old, old))  # the anchor: both claims expire


def _race(root: Path, first_at: int | None, second_at: int | None) -> tuple[bool, bool, int]:
    """Taker A starts and pauses before its call ``first_at``; B runs, pausing before its
    call ``second_at``; then A finishes, then B. Whether each won, and A's call count."""
    stores = [FileStore(root), FileStore(root)]
    owners = [new_owner(), new_owner()]
    pauses = [_Pause(first_at), _Pause(second_at)]
    won = [False, False]

    def take(i: int) -> None:
        won[i] = stores[i].claim([RUN], owners[i], 60.0) == [RUN]

    threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
    with _paused_calls(pauses):
        for pause, thread in zip(pauses, threads, strict=True):
            pause.thread = thread
            thread.start()
            # Until it pauses or finishes: the other starts only then.
            while not pause.reached.wait(0.001) and thread.is_alive():
                pass
        for pause, thread in zip(pauses, threads, strict=True):
            pause.go.set()
            thread.join(30)
            assert not thread.is_alive()
    holders = FileStore(root).claim_holders([RUN])
    winners = [o for o, w in zip(owners, won, strict=True) if w]
    assert list(holders.values()) == winners, (holders, owners, won)
    return won[0], won[1], pauses[0].count


@pytest.mark.skipif(
    not _can_link_fds(), reason="linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH (root)"
)
@pytest.mark.parametrize("how", ["expired", "dead"])
def test_one_taker_wins_whichever_call_the_other_is_paused_at(tmp_path: Path, how: str) -> None:
    """Every pause point of taker A against a whole take-over of B, and against B paused
    at each of its own calls: one winner, never two, never none."""
    pairs, at = 0, 0
    while True:
        root = tmp_path / f"a{at}"
        _lost_claim(root, how)
        first, second, calls = _race(root, at, None)
        assert first + second == 1, f"A paused before call {at}: A won {first}, B {second}"
        if calls <= at:  # A made fewer calls than that: every pause point of A was tried
            break
        for second_at in range(12):
            root = tmp_path / f"a{at}b{second_at}"
            _lost_claim(root, how)
            first, second, _ = _race(root, at, second_at)
            assert first + second == 1, f"A paused at {at}, B at {second_at}: {first}, {second}"
            pairs += 1
        at += 1
    assert at >= 4 and pairs >= 48  # the take-over was really interleaved


def test_the_lock_of_a_taker_is_a_link_to_its_own_anchor_never_to_the_claim(
    tmp_path: Path,
) -> None:
    """The shape of the fix: a claim name is never a link() source during a take-over."""
    root = tmp_path / "s"
    _lost_claim(root, "expired")
    sources: list[str] = []
    real = _REAL["link"]

    def record(src: Any, dst: Any, **kwargs: Any) -> None:
        sources.append(os.fspath(src))
        real(src, dst, **kwargs)

    os.link = record
    try:
        assert FileStore(root).claim([RUN], new_owner(), 60.0) == [RUN]
    finally:
        os.link = real
    assert sources and not [s for s in sources if s.endswith(".claim")]


def _locked_by(root: Path, taker: str | None, generations: int = 1) -> tuple[FileStore, Path]:
    """RUN's claim lost, with its lock name(s) left by ``taker`` (None: an older metalab's
    lock, a link of the claim itself). ``taker``'s anchor comes from its claim of THIRD."""
    _lost_claim(root, "expired")
    store = FileStore(root)
    claim = store.layout.claim(RUN)
    source = claim
    if taker is not None:
        assert FileStore(root).claim([THIRD], taker, 60.0) == [THIRD]
        source = store.layout.claim(THIRD)
    first = store.layout.claim_taking(RUN, os.stat(claim).st_ino)
    for generation in range(generations):
        suffix = "" if not generation else f".{generation}"
        os.link(source, first.with_name(f"{first.name[: -len('.taking')]}{suffix}.taking"))
    return store, first


@pytest.mark.parametrize("generations", [1, 3])
def test_a_taker_killed_holding_the_lock_leaves_the_claim_takeable(
    tmp_path: Path, generations: int
) -> None:
    """Locks left by dead takers (their lock links their anchor: who they were is known)
    are skipped, not removed: the next lock name is taken and the run is claimed."""
    store, first = _locked_by(tmp_path / "s", _DEAD, generations)
    me = new_owner()
    assert store.claim([RUN], me, 60.0) == [RUN]
    assert store.claim_holders([RUN]) == {RUN: me}
    left = sorted(p.name for p in first.parent.glob(".*.taking"))
    assert len(left) == generations  # the dead takers' locks stay; ours is gone


@pytest.mark.parametrize("taker", ["live", "older metalab"])
def test_a_lock_held_by_a_live_or_unknown_taker_is_respected(tmp_path: Path, taker: str) -> None:
    store, _ = _locked_by(tmp_path / "s", new_owner() if taker == "live" else None)
    assert store.claim([RUN], new_owner(), 60.0) == []


RACER = textwrap.dedent(
    """
    import sys, time
    from metalab.store.claims import new_owner
    from metalab.store.file import FileStore

    # One line per round: the instant to start at and the runs. A fresh store object and
    # owner per round: a new anchor, as a new launch would have.
    for line in sys.stdin:
        at, ids = line.split()
        store, owner = FileStore(sys.argv[1]), new_owner()
        while time.time() < float(at):
            pass
        print(",".join(store.claim(ids.split(","), owner, 60.0)), flush=True)
    """
)


@pytest.mark.slow
def test_many_racers_many_rounds_onto_expired_claims(tmp_path: Path) -> None:
    """The CI failure's situation, many times over: 8 live processes released at one
    instant onto 40 expired claims (claims of one earlier owner share its anchor), each
    round's winners expired again for the next. ``METALAB_CLAIMS_STRESS_ROUNDS`` sets the
    number of rounds (default 150)."""
    rounds = int(os.environ.get("METALAB_CLAIMS_STRESS_ROUNDS", "150"))
    root = tmp_path / "store"
    store = FileStore(root)
    run_ids = [f"{i:02x}" * 16 for i in range(20)] + [f"{i:02x}" + "ee" * 15 for i in range(20)]
    assert store.claim(run_ids, new_owner(), 60.0) == run_ids
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    racers = [
        subprocess.Popen(
            [sys.executable, str(script), str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    try:
        for number in range(rounds):
            old = time.time() - 600
            for run_id in run_ids:
                os.utime(store.layout.claim(run_id), (old, old))
            line = f"{time.time() + 0.02} {','.join(run_ids)}\n"
            for racer in racers:
                assert racer.stdin is not None
                racer.stdin.write(line)
                racer.stdin.flush()
            wins: collections.Counter[str] = collections.Counter()
            for racer in racers:
                assert racer.stdout is not None
                wins.update(x for x in racer.stdout.readline().strip().split(",") if x)
            assert wins == collections.Counter(run_ids), f"round {number}: {wins}"
    finally:
        for racer in racers:
            assert racer.stdin is not None
            racer.stdin.close()
        for racer in racers:
            racer.wait(60)
