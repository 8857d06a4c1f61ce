"""Run claims: a lease on a run taken just before it executes, so it executes once.

Two launches of one experiment on one store (8 drivers started together, a relaunch
while the first still runs) would otherwise both execute every unfinished run. A launch
therefore *claims* a run before executing it: a lease held by an **owner** (the writer
identity of :mod:`metalab.store.atomic` — host, PID, boot/namespace scope, PID start
time — plus 8 random hex naming the launch) that lasts ``ttl`` seconds unless renewed.
A claim is lost when it expired (its owner stopped renewing: a crash on another host)
or, at once, when its owner provably died on this host (a PID that no longer runs with
its start time), so crashes are still retried.

FileStore claims (:class:`FileClaims`) are names ``claims/{shard}/{run_id}.claim``, each
a hard link to its owner's **anchor**: one file per owner (and lease length) holding
``{owner}\n{ttl}\n``, written once when the owner's first claim is made, beside it,
under a temporary name of its writer (:func:`~metalab.store.atomic.temp_name`). ``link``
fails when the claim name exists, so exactly one claimer wins (as ``O_EXCL`` would) — and
no inode is created per run: on this project's ext4 disk a file create cost 0.06-0.6 ms
of kernel CPU, a link 0.01 ms. A claim's expiry is its inode's modification time plus
the ``ttl`` written inside; the inode is the anchor's, shared by all the owner's claims,
so one ``utime`` renews them all. The anchor is removed once the last claim this store
object linked to it is released (a killed owner leaves it behind: one small file). Where
the file system has no hard links (vfat, some FUSE mounts) each claim is a file of its
own, created with ``O_EXCL``.

A lost claim is taken over without a lock server: the taker creates the name
``.{run_id}.{inode}.taking`` (a link to its own anchor; it exists for one taker at a
time; past a dead taker's, the next generation's name), reads the claim again and judges
it afresh, and only if it is still the inode it judged lost, and still lost, renames a
link to its own anchor over it (the argument that exactly one taker wins is in
docs/reliability.md). A claim file that does not parse (a planted file, or one an
older metalab created with ``O_EXCL`` and had not written yet) is judged as before: empty
means "being written" for a few seconds, anything else is expired. PostgreSQL claims live
in :mod:`metalab.store.postgres_claims`.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

from metalab.errors import ExperimentError
from metalab.store.atomic import TempInfo, parse_temp_name, temp_name, writer_alive
from metalab.store.claim_files import HeldClaims, unlink_quietly
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

# Lock names tried for one lost claim (.{run_id}.{inode}[.{n}].taking): each further one
# only after a taker killed holding the one before (see FileClaims._lock).
_LOCK_GENERATIONS = 8

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
        import secrets  # here: a SLURM task (which has a slot) never draws one

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


def _read(path: str) -> tuple[int, float, str, float] | None:
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
    """Run claims of a FileStore (mixed into it); one ``link`` per claimed run."""

    layout: FileLayout

    @property
    def _held(self) -> HeldClaims:
        held: HeldClaims | None = self.__dict__.get("_claims_held")
        if held is None or held.pid != os.getpid():
            # A forked child starts afresh: the parent's anchors are the parent's to remove.
            held = self.__dict__["_claims_held"] = HeldClaims(os.getpid())
        return held

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
        held = self._held
        content = _content(owner, ttl)
        anchor = held.anchors.get(content)
        now = time.time()
        if anchor is not None and now - anchor.touched > ttl / 10:
            # A link shares the anchor's modification time: refresh it, so that a claim
            # made now lasts (nearly) the whole ttl, renewed or not.
            try:
                os.utime(anchor.path, follow_symlinks=False)
                anchor.touched = now
            except FileNotFoundError:
                held.drop(anchor)
        layout = self.layout
        granted = []
        try:
            for run_id in run_ids:
                path, done, record = held.paths(layout, run_id)
                if not self._claim_one(held, run_id, path, owner, content):
                    continue
                # What states() calls DONE, for one run: a stat or two, no shard listing.
                # access(F_OK) answers as exists() does, without raising and catching an
                # exception per missing marker (1.3 of its 4.5 us on tmpfs).
                if unless_done and os.access(done, os.F_OK) and os.access(record, os.F_OK):
                    # Finished (and released) by another launch since this one planned:
                    # checked after taking the lease, so no finish can slip in between.
                    self._unclaim(held, run_id, owner)
                    continue
                granted.append(run_id)
        finally:
            held.prune()
        return granted

    def _claim_one(
        self, held: HeldClaims, run_id: str, path: str, owner: str, content: bytes
    ) -> bool:
        for _ in range(3):  # a claim released under our feet: try linking it again
            inode = held.link(content, path)
            if inode is not None:
                held.remember(run_id, owner, path, inode)
                return True
            found = _read(path)
            if found is None:
                continue
            inode, mtime, holder, ttl = found
            if holder == owner:
                os.utime(path, follow_symlinks=False)
                held.remember(run_id, owner, path, inode)
                return True
            if not same_slot(holder, owner) and not _lost(holder, mtime, ttl, time.time()):
                return False
            return self._take_over(held, run_id, path, inode, owner, content)
        return False

    def _take_over(
        self, held: HeldClaims, run_id: str, path: str, inode: int, owner: str, content: bytes
    ) -> bool:
        """Replace the claim at ``path``, judged lost when it was ``inode``, with ours.

        Exactly one taker of a lost claim wins (docs/reliability.md, "Taking over").
        """
        # The lock: the name .{run_id}.{inode}.taking, which only one taker at a time can
        # create. It is a link to OUR anchor, never to the claim: link() looks its source
        # up before it locks the directory to create the new name, so linking the claim
        # could link the inode the claim named a moment ago — a faster taker may have
        # renamed over it and unlinked its lock meanwhile — and with a shared anchor that
        # inode still has links, so a check of the link would pass and both would win.
        # (One O_EXCL file per claim was safe only because the replaced inode had no link
        # left: the kernel refuses to link an inode with none.)
        taking = self._lock(held, run_id, inode, content)
        if taking is None:
            return False  # another taker holds the lock of this claim: it decides
        try:
            # Judged afresh, from a read that starts after the lock is ours, so after the
            # rename and unlock of every earlier holder of this lock: a faster taker's
            # claim is seen here (another inode, or a live owner) and stands. Only a taker
            # holding the lock of the claim's current inode renames over it, so no two
            # takers replace one claim, and the name never disappears (rename is atomic).
            found = _read(path)
            if found is None:
                # Released meanwhile: a plain claim (link fails if another made one first).
                mine = held.link(content, path)
                if mine is None:
                    return False
                held.remember(run_id, owner, path, mine)
                return True
            now_inode, mtime, holder, ttl = found
            if now_inode != inode or holder == owner:
                return False
            if not same_slot(holder, owner) and not _lost(holder, mtime, ttl, time.time()):
                return False
            temp = str(temp_name(Path(path)))
            mine = held.link(content, temp)
            if mine is None:  # pragma: no cover - temporaries are unique per writer
                return False
            os.replace(temp, path)
            held.remember(run_id, owner, path, mine)
            return True
        finally:
            unlink_quietly(taking)

    def _lock(self, held: HeldClaims, run_id: str, inode: int, content: bytes) -> str | None:
        """Take the lock of ``run_id``'s claim judged lost as ``inode``: its name, or
        ``None`` while a live taker holds it.

        A taker killed inside its critical section leaves its lock name behind, which
        would keep that claim from ever being taken over (its run waited for forever).
        The lock is a link to its holder's anchor, so it is judged like a claim: one whose
        holder is lost (dead, or expired) is left in place — never removed, so no two
        takers can disagree about it — and the next generation's name is the lock.
        """
        first = str(self.layout.claim_taking(run_id, inode))
        for generation in range(_LOCK_GENERATIONS):
            name = first if not generation else f"{first[: -len('.taking')]}.{generation}.taking"
            for _ in range(3):  # its holder unlocking under our feet: try again
                if held.link(content, name) is not None:
                    return name
                found = _read(name)
                if found is not None:
                    break
            else:
                return None
            lock_inode, mtime, holder, ttl = found
            # A lock linking the claim itself is an older metalab's: its content names the
            # lost owner, not its taker, so it cannot be judged: held.
            if lock_inode == inode or not _lost(holder, mtime, ttl, time.time()):
                return None
        return None

    def renew(self, run_ids: Sequence[str], owner: str, ttl: float) -> list[str]:
        """Extend the leases ``owner`` holds on ``run_ids``; return those it still holds.

        A run missing from the answer was taken over (this owner was judged dead). The
        lease length is the one written at :meth:`claim`. Claims sharing an anchor share
        its modification time: one ``utime`` per anchor renews them all, and each run
        costs one ``lstat`` (its name still links to the anchor).
        """
        held_here = self._held
        now = time.time()
        renewed: set[int] = set()
        held = []
        for run_id in run_ids:
            entry = held_here.made.get(run_id)
            if entry is not None and entry[0] == owner:
                path, inode = entry[1], entry[2]
                try:
                    if os.lstat(path).st_ino != inode:
                        continue
                except FileNotFoundError:
                    continue
            else:
                path = str(self.layout.claim(run_id))
                found = _read(path)
                if found is None or found[2] != owner:
                    continue
                inode = found[0]
            if inode not in renewed:
                # Our own anchor by its own name where we know it: a claim name taken
                # over since the lstat would renew the taker's anchor instead.
                anchor = held_here.by_inode.get(inode)
                try:
                    os.utime(path if anchor is None else anchor.path, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                renewed.add(inode)
                if anchor is not None:
                    anchor.touched = now
            held.append(run_id)
        return held

    def release(self, run_ids: Sequence[str], owner: str) -> None:
        """Drop the claims ``owner`` holds on ``run_ids`` (others' claims are left alone).

        A claim made by this store object is an ``lstat`` (still our link?) and an
        ``unlink``; the anchor goes with the last of them.
        """
        held = self._held
        try:
            for run_id in run_ids:
                self._unclaim(held, run_id, owner)
        finally:
            held.prune()

    def _unclaim(self, held: HeldClaims, run_id: str, owner: str) -> None:
        entry = held.made.get(run_id)
        if entry is not None and entry[0] == owner:
            del held.made[run_id]
            path = entry[1]
            try:
                ours = os.lstat(path).st_ino == entry[2]
            except FileNotFoundError:
                ours = False
            held.forget_link(entry[2])
        else:
            path = str(self.layout.claim(run_id))
            found = _read(path)
            ours = found is not None and found[2] == owner
        if ours:
            unlink_quietly(path)

    def claim_holders(self, run_ids: Sequence[str]) -> dict[str, str]:
        """``{run_id: owner}`` of the runs whose claim is held (not lost) right now."""
        now = time.time()
        held = {}
        for run_id in run_ids:
            found = _read(str(self.layout.claim(run_id)))
            if found is not None and not _lost(found[2], found[1], found[3], now):
                held[run_id] = found[2]
        return held
