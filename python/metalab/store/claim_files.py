"""The files of FileStore run claims: anchors and links (see :mod:`metalab.store.claims`).

:class:`HeldClaims` is what one store object, in one process, knows of the claims it
made: the anchor each owner's new claims link to, the claim names it linked (so a release
is an ``lstat`` and an ``unlink``, never a read), and the shard directories the layout
named, so the hot loop builds no pathlib path.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from metalab.store.atomic import temp_name
from metalab.store.layout import CLAIM_SUFFIX, DONE_SUFFIX, RECORD_SUFFIX, FileLayout, shard_of

__all__ = ["Anchor", "HeldClaims", "create_claim_file", "unlink_quietly"]

_SUFFIXES = (CLAIM_SUFFIX, DONE_SUFFIX, RECORD_SUFFIX)


def unlink_quietly(path: str) -> None:
    """Remove ``path`` unless it is gone already."""
    try:  # a plain try: suppress() costs a context manager per released claim
        os.unlink(path)
    except FileNotFoundError:
        return  # already gone: what unlinking is for


# What link() fails with where a file system has no hard links (vfat: EPERM).
_NO_HARD_LINKS = frozenset(
    {errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}
)


def create_claim_file(path: str, content: bytes) -> int | None:
    """Create a claim file of its own with ``O_EXCL``: its inode, or None if it exists."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        return None
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, flags, 0o644)
        except FileExistsError:
            return None
    try:
        os.write(fd, content)
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


@dataclass(eq=False)
class Anchor:
    """The file an owner's claims are hard links to (see the module docstring)."""

    path: str
    inode: int
    content: bytes
    #: ``time.time()`` when this store object last set its modification time.
    touched: float
    #: Claim names linked to it by this store object and not released yet.
    links: int = 0


@dataclass
class HeldClaims:
    """What one store object, in one process, knows of the claims it made."""

    pid: int
    #: ``{run_id: (owner, claim path, inode)}`` of the claims made here.
    made: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    #: The anchor new claims link to, per claim content (owner and lease length).
    anchors: dict[bytes, Anchor] = field(default_factory=dict)
    #: Every anchor of this store object still linked to, by inode.
    by_inode: dict[int, Anchor] = field(default_factory=dict)
    #: The file system refused a hard link: claims are files of their own.
    no_links: bool = False
    #: ``{shard: (claims dir, done dir, records dir)}``, from the layout (see paths()).
    dirs: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    def paths(self, layout: FileLayout, run_id: str) -> tuple[str, str, str]:
        """A run's claim, done marker and record paths, as the layout builds them: its
        answer for a shard's first run gives the shard's directories, reused for the
        others (three pathlib paths per run cost half a claim's Python time)."""
        shard = shard_of(run_id)  # validates the run ID
        dirs = self.dirs.get(shard)
        if dirs is None:
            built = (layout.claim(run_id), layout.done_marker(run_id), layout.record(run_id))
            claims, done, records = (str(p.parent) for p in built)
            if [p.name for p in built] != [run_id + x for x in _SUFFIXES]:
                return str(built[0]), str(built[1]), str(built[2])  # not {dir}/{id}{suffix}
            dirs = self.dirs[shard] = (claims, done, records)
        sep = os.sep
        return (
            f"{dirs[0]}{sep}{run_id}{CLAIM_SUFFIX}",
            f"{dirs[1]}{sep}{run_id}{DONE_SUFFIX}",
            f"{dirs[2]}{sep}{run_id}{RECORD_SUFFIX}",
        )

    def remember(self, run_id: str, owner: str, path: str, inode: int) -> None:
        entry = (owner, path, inode)
        old = self.made.get(run_id)
        if old == entry:
            return
        if old is not None:
            # Its name now points elsewhere (taken over, or released and made again).
            self.forget_link(old[2])
        self.made[run_id] = entry
        anchor = self.by_inode.get(inode)
        if anchor is not None:
            anchor.links += 1

    def forget_link(self, inode: int) -> None:
        anchor = self.by_inode.get(inode)
        if anchor is not None:
            anchor.links -= 1

    def prune(self) -> None:
        """Remove the anchors no claim of this store object links to any more."""
        for anchor in list(self.by_inode.values()):
            if anchor.links <= 0:
                self.drop(anchor)
                unlink_quietly(anchor.path)

    def drop(self, anchor: Anchor) -> None:
        """Stop linking new claims to ``anchor`` (its file is gone or full)."""
        if self.anchors.get(anchor.content) is anchor:
            del self.anchors[anchor.content]
        if anchor.links <= 0:
            self.by_inode.pop(anchor.inode, None)

    def link(self, content: bytes, target: str) -> int | None:
        """Hard-link ``target`` to the anchor of ``content``: its inode, or ``None`` when
        ``target`` exists. Makes the anchor (and the shard directory) when missing."""
        anchor = self.anchors.get(content)
        for attempt in range(4):
            if self.no_links:
                return create_claim_file(target, content)
            if anchor is None:
                anchor = self._new_anchor(content, target)
            try:
                os.link(anchor.path, target, follow_symlinks=False)
                return anchor.inode
            except FileExistsError:
                return None
            except FileNotFoundError:
                if attempt == 0:
                    # The shard's first claim: one mkdir per shard and store.
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                else:
                    self.drop(anchor)  # removed by someone else: link to a new one
                    anchor = None
            except OSError as exc:
                if exc.errno in _NO_HARD_LINKS:
                    # A file system without hard links (vfat, some FUSE mounts): every
                    # claim is a file of its own, created with O_EXCL (one create per run).
                    self.no_links = True
                elif exc.errno == errno.EMLINK:
                    self.drop(anchor)  # the file system's limit of links per inode
                    anchor = None
                else:
                    raise
        raise OSError(errno.EIO, f"cannot link the run claim {target!r} to a claim anchor")

    def _new_anchor(self, content: bytes, near: str) -> Anchor:
        name = str(temp_name(Path(near)))
        inode = create_claim_file(name, content)
        if inode is None:  # pragma: no cover - temporary names are unique per writer
            raise FileExistsError(errno.EEXIST, "claim anchor exists already", name)
        anchor = Anchor(name, inode, content, time.time())
        self.anchors[content] = anchor
        self.by_inode[inode] = anchor
        return anchor
