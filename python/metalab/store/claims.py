"""Run claims: a lease on a run taken just before it executes, so it executes once.

Two launches of one experiment on one store (8 drivers started together, a relaunch
while the first still runs) would otherwise both execute every unfinished run. A launch
therefore *claims* a run before executing it: a lease held by an **owner** (the writer
identity of :mod:`metalab.store.atomic` — host, PID, boot/namespace scope, PID start
time — plus 8 random hex naming the launch) that lasts ``ttl`` seconds unless renewed.
A claim is lost when it expired (its owner stopped renewing: a crash on another host)
or, at once, when its owner provably died on this host (a PID that no longer runs with
its start time), so crashes are still retried.

FileStore claims (:class:`FileClaims`) are files ``claims/{shard}/{run_id}.claim``
created with ``O_EXCL`` (exactly one creator wins); their modification time plus the
``ttl`` written inside is the expiry, so a renewal is one ``utime``. An expired claim is
taken over without a lock: the taker hard-links the claim file to a name derived from
its inode (``.{run_id}.{inode}.taking``); ``link`` fails for every other taker of that
same claim, and the winner checks that the inode it linked is still the one it judged
expired (a faster taker may already have replaced it) before renaming its own claim
over it. PostgreSQL claims live in :mod:`metalab.store.postgres_claims`.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

from metalab.errors import ExperimentError
from metalab.store.atomic import TempInfo, atomic_write, parse_temp_name, temp_name, writer_alive
from metalab.store.layout import FileLayout, check_claim_owner

__all__ = [
    "CLAIM_TTL_ENV",
    "DEFAULT_CLAIM_TTL",
    "FileClaims",
    "claim_ttl",
    "new_owner",
    "owner_alive",
    "same_slot",
]

#: Lease length in seconds when ``METALAB_CLAIM_TTL`` is unset. A holder renews every
#: third of it (one ``utime`` or one UPDATE per held claim), so a crashed holder on
#: another host delays its runs' retry by at most this long.
DEFAULT_CLAIM_TTL = 120.0
CLAIM_TTL_ENV = "METALAB_CLAIM_TTL"

# How long an empty claim file (its creator has not written it yet) still counts as held.
_BEING_WRITTEN = 5.0

_OWNER = re.compile(
    r"(?P<host>[A-Za-z0-9_\-]{1,40})\.(?P<pid>[0-9]{1,10})\.(?P<scope>[0-9a-f]{8})"
    r"-(?P<start>[0-9]{1,20})\.[0-9a-f]{8}"
)


def claim_ttl() -> float:
    """The lease length: ``METALAB_CLAIM_TTL`` seconds, else :data:`DEFAULT_CLAIM_TTL`.

    Raises:
        ExperimentError: the variable is set to anything but a positive number.
    """
    text = os.environ.get(CLAIM_TTL_ENV)
    if text is None or text == "":
        return DEFAULT_CLAIM_TTL
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise ExperimentError(
            f"{CLAIM_TTL_ENV}={text!r}: expected a positive number of seconds (the lease "
            f"of a run claim), e.g. {DEFAULT_CLAIM_TTL:g}"
        )
    return value


def new_owner(slot: str | None = None) -> str:
    """A fresh owner name for one launch: ``{host}.{pid}.{scope}-{start}.{8 hex}``.

    The 8 hex are random, or derived from ``slot`` (a SLURM array task's job id): two
    owners of one slot are successive attempts of one task, never alive together, so a
    later one takes over the claims of an earlier one (:func:`same_slot`).
    """
    # The writer fields of a temporary's name are this process's identity (one builder).
    info = parse_temp_name(temp_name(Path("claim")).name)
    assert info is not None
    writer = f"{info.host}.{info.pid}.{info.scope}-{info.start}"
    if slot:
        nonce = hashlib.blake2b(f"slot:{slot}".encode(), digest_size=4).hexdigest()
    else:
        nonce = secrets.token_hex(4)
    return f"{writer}.{nonce}"


def same_slot(holder: str, owner: str) -> bool:
    """Whether ``holder`` is an earlier attempt of ``owner``'s slot (same launch part)."""
    return holder != owner and holder[-9:] == owner[-9:] and holder[-9:-8] == "."


def owner_alive(owner: str) -> bool | None:
    """Whether the process behind ``owner`` still runs; ``None`` when this host cannot tell."""
    found = _OWNER.fullmatch(owner)
    if found is None:
        return None
    info = TempInfo("", found["host"], int(found["pid"]), found["scope"], int(found["start"]))
    return writer_alive(info)


def _content(owner: str, ttl: float) -> bytes:
    return f"{owner}\n{ttl:.3f}\n".encode()


def _read(path: Path) -> tuple[int, float, str, float] | None:
    """``(inode, mtime, owner, ttl)`` of a claim file, or ``None`` if it is gone.

    A file that does not parse (truncated by a full disk, planted) reads as an owner
    nobody has with a zero ttl: it is expired, so it can be taken over.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        data = os.read(fd, 256)
    finally:
        os.close(fd)
    if not data:
        # Created (O_EXCL) but not written yet: a claimer is between two system calls.
        return st.st_ino, st.st_mtime, "", _BEING_WRITTEN
    owner, _, rest = data.decode("utf-8", "replace").partition("\n")
    try:
        ttl = float(rest.strip())
    except ValueError:
        ttl = 0.0
    return st.st_ino, st.st_mtime, owner, ttl


def _lost(owner: str, mtime: float, ttl: float, now: float) -> bool:
    """Whether a claim no longer protects its run: expired, or its owner died here."""
    return now >= mtime + ttl or owner_alive(owner) is False


class FileClaims:
    """Run claims of a FileStore (mixed into it); one file operation per claimed run."""

    layout: FileLayout

    def claim(
        self, run_ids: Sequence[str], owner: str, ttl: float, unless_done: bool = True
    ) -> list[str]:
        """Claim each run for ``owner`` for ``ttl`` seconds; return the granted ones.

        A run already claimed by ``owner`` is granted again (its lease renewed); one
        claimed by a live other owner is not; a lost claim (expired, dead owner) is
        taken over; with ``unless_done`` a run already done (success marker and record)
        is refused.
        Run IDs are validated by the layout.

        Raises:
            UnsafeNameError: a run ID or ``owner`` is malformed.
            OSError: the claim directory cannot be written.
        """
        check_claim_owner(owner)
        content = _content(owner, ttl)
        granted = []
        for run_id in run_ids:
            if self._claim_one(run_id, owner, content):
                if unless_done and self._is_done(run_id):
                    # Finished (and released) by another launch since this one planned:
                    # checked after taking the lease, so no finish can slip in between.
                    self.release([run_id], owner)
                    continue
                granted.append(run_id)
        return granted

    def _is_done(self, run_id: str) -> bool:
        # What states() calls DONE, for one run: a stat or two, no shard listing.
        layout = self.layout
        return layout.done_marker(run_id).exists() and layout.record(run_id).exists()

    @property
    def _made(self) -> dict[str, int]:
        """Inodes of the claim files this store object created, by run ID.

        Releasing such a claim is a ``stat`` and an ``unlink`` instead of reading the
        file's owner back (measured: the read was most of a claim's cost).
        """
        made: dict[str, int] | None = self.__dict__.get("_claims_made")
        if made is None:
            made = self.__dict__["_claims_made"] = {}
        return made

    def _claim_one(self, run_id: str, owner: str, content: bytes) -> bool:
        path = self.layout.claim(run_id)
        for _ in range(3):  # a claim released under our feet: try creating it again
            inode = _create(path, content)
            if inode is not None:
                self._made[run_id] = inode
                return True
            found = _read(path)
            if found is None:
                continue
            inode, mtime, holder, ttl = found
            if holder == owner:
                os.utime(path)
                return True
            if not same_slot(holder, owner) and not _lost(holder, mtime, ttl, time.time()):
                return False
            return self._take_over(run_id, path, inode, holder, content)
        return False

    def _take_over(self, run_id: str, path: Path, inode: int, holder: str, content: bytes) -> bool:
        """Replace the lost claim ``inode`` of ``holder`` with ours; exactly one taker wins."""
        taking = self.layout.claim_taking(run_id, inode)
        try:
            os.link(path, taking, follow_symlinks=False)
        except FileExistsError:
            return False  # another launch is taking this very claim over right now
        except FileNotFoundError:
            return _create(path, content) is not None  # released meanwhile: a plain claim
        try:
            linked = _read(taking)
            if linked is None or linked[0] != inode or linked[2] != holder:
                # A faster taker replaced the lost claim before our link: theirs stands.
                return False
            atomic_write(path, content)
            return True
        finally:
            taking.unlink(missing_ok=True)

    def renew(self, run_ids: Sequence[str], owner: str, ttl: float) -> list[str]:
        """Extend the leases ``owner`` holds on ``run_ids``; return those it still holds.

        A run missing from the answer was taken over (this owner was judged dead). The
        lease length is the one written at :meth:`claim` (a renewal is one ``utime``).
        """
        held = []
        for run_id in run_ids:
            path = self.layout.claim(run_id)
            found = _read(path)
            if found is not None and found[2] == owner:
                try:
                    os.utime(path)
                except FileNotFoundError:
                    continue
                held.append(run_id)
        return held

    def release(self, run_ids: Sequence[str], owner: str) -> None:
        """Drop the claims ``owner`` holds on ``run_ids`` (others' claims are left alone)."""
        made = self._made
        for run_id in run_ids:
            path = self.layout.claim(run_id)
            inode = made.pop(run_id, None)
            if inode is not None:
                try:
                    # Still the very file created here: ours, unless taken over since.
                    ours = os.stat(path, follow_symlinks=False).st_ino == inode
                except FileNotFoundError:
                    continue
            else:
                found = _read(path)
                ours = found is not None and found[2] == owner
            if ours:
                path.unlink(missing_ok=True)

    def claim_holders(self, run_ids: Sequence[str]) -> dict[str, str]:
        """``{run_id: owner}`` of the runs whose claim is held (not lost) right now."""
        now = time.time()
        held = {}
        for run_id in run_ids:
            found = _read(self.layout.claim(run_id))
            if found is not None and not _lost(found[2], found[1], found[3], now):
                held[run_id] = found[2]
        return held


def _create(path: Path, content: bytes) -> int | None:
    """Create the claim file with ``O_EXCL``; its inode, or None when it exists already."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        return None
    except FileNotFoundError:
        # The shard directory is made on its first claim only: one mkdir per shard.
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, flags, 0o644)
        except FileExistsError:
            return None
    try:
        os.write(fd, content)
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)
