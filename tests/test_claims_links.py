"""FileStore claims as hard links to one anchor file per owner (``metalab.store.claims``).

A claim costs one ``link`` instead of a new file, a launch's claims share one inode (one
``utime`` renews them all) and nothing is left behind once its claims are released.
The claims of real store objects are checked against a model of the lease rules in a
hypothesis state machine: several owners, one of them dead (its PID exited), expiries.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import metalab
from metalab.execution import base_record
from metalab.executors.base import Job
from metalab.executors.claimed import ClaimedTasks
from metalab.plan import RunPlan
from metalab.records import RunState
from metalab.store.claim_files import HeldClaims
from metalab.store.claims import new_owner
from metalab.store.file import FileStore

# Run IDs in several shards (and some sharing one).
RUN_IDS = [f"{i:02x}" * 16 for i in range(6)] + ["00" * 15 + "ff", "01" * 15 + "ff"]


def _dead_owner() -> str:
    """The owner name of a launch whose process (on this host) has exited."""
    code = "from metalab.store.claims import new_owner; print(new_owner())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


DEAD = _dead_owner()


def _files(store: FileStore) -> list[Path]:
    claims = store.layout.claims_dir
    return sorted(p for p in claims.rglob("*") if not p.is_dir()) if claims.exists() else []


def _anchors(store: FileStore) -> list[Path]:
    return [p for p in _files(store) if p.name.endswith(".tmp")]


def test_a_launchs_claims_share_one_inode_so_one_utime_renews_them_all(tmp_path: Path) -> None:
    store, other = FileStore(tmp_path / "s"), FileStore(tmp_path / "s")
    me = new_owner()
    assert store.claim(RUN_IDS, me, 30.0) == RUN_IDS
    stats = [os.stat(store.layout.claim(r)) for r in RUN_IDS]
    assert len({s.st_ino for s in stats}) == 1
    assert stats[0].st_nlink == len(RUN_IDS) + 1  # the claims and their anchor
    (anchor,) = _anchors(store)
    assert anchor.read_text() == f"{me}\n30.000\n"
    # The lease of every claim is the anchor's modification time: one old mtime expires
    # them all, one renewal brings them all back.
    old = time.time() - 60
    os.utime(store.layout.claim(RUN_IDS[0]), (old, old))
    assert other.claim_holders(RUN_IDS) == {}
    assert store.renew(RUN_IDS, me, 30.0) == RUN_IDS
    assert other.claim_holders(RUN_IDS) == dict.fromkeys(RUN_IDS, me)
    assert other.claim(RUN_IDS, new_owner(), 30.0) == []


def test_released_claims_leave_no_file_and_the_anchor_goes_with_the_last(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s")
    me = new_owner()
    assert store.claim(RUN_IDS, me, 30.0) == RUN_IDS
    store.release(RUN_IDS[:-1], me)
    assert [p.name for p in _files(store) if not p.name.endswith(".tmp")] == [
        RUN_IDS[-1] + ".claim"
    ]
    assert len(_anchors(store)) == 1  # still linked to by the last claim
    store.release(RUN_IDS[-1:], me)
    assert _files(store) == []
    # A later claim makes a new anchor.
    assert store.claim(RUN_IDS[:2], me, 30.0) == RUN_IDS[:2]
    assert len(_anchors(store)) == 1


def test_a_dead_owners_claims_are_taken_over_one_by_one(tmp_path: Path) -> None:
    dead_store, store = FileStore(tmp_path / "s"), FileStore(tmp_path / "s")
    assert dead_store.claim(RUN_IDS[:3], DEAD, 600.0) == RUN_IDS[:3]
    me = new_owner()
    assert store.claim_holders(RUN_IDS[:3]) == {}  # its PID is gone: lost at once
    assert store.claim([RUN_IDS[0], RUN_IDS[5]], me, 30.0) == [RUN_IDS[0], RUN_IDS[5]]
    taken, fresh, left = (
        os.stat(store.layout.claim(r)) for r in RUN_IDS[:1] + RUN_IDS[5:6] + [RUN_IDS[1]]
    )
    assert taken.st_ino == fresh.st_ino != left.st_ino  # linked to the taker's anchor
    assert store.claim_holders(RUN_IDS) == {RUN_IDS[0]: me, RUN_IDS[5]: me}
    store.release([RUN_IDS[0], RUN_IDS[5]], me)
    # What is left is the dead owner's: its two other claims and its anchor.
    assert {p.name for p in _files(store) if not p.name.endswith(".tmp")} == {
        RUN_IDS[1] + ".claim",
        RUN_IDS[2] + ".claim",
    }
    assert [p.read_text().split()[0] for p in _anchors(store)] == [DEAD]
    assert store.claim(RUN_IDS[1:3], me, 30.0) == RUN_IDS[1:3]


def test_a_launch_keeps_one_anchor_from_its_first_claim_to_its_last(tmp_path: Path) -> None:
    """Claims of finished runs go with the next batch's claim, so no batch leaves the
    launch holding nothing (which would remove the anchor and make a new one)."""
    exp = metalab.Experiment(
        name="anchored",
        version="1",
        context={},
        operation=metalab.operation(lambda capture: None),
        params=metalab.grid(x=list(range(30))),
        seeds=metalab.seeds(base=1),
    )
    plan = RunPlan(exp)
    store = FileStore(tmp_path / "s")
    claims = ClaimedTasks(Job(plan, store, list(range(30))), lambda t, s: None)
    seen: set[str] = set()
    executed = []
    try:
        while (task := claims.take()) is not None:
            seen.update(p.name for p in _anchors(store))
            store.put_record(base_record(plan, plan.task(task), RunState.SUCCESS))
            store.mark(plan.run_ids[task], RunState.SUCCESS)
            claims.done(task)
            executed.append(task)
    finally:
        claims.close()
    assert executed == list(range(30))
    assert len(seen) == 1
    assert _files(store) == []


class ClaimsModel(RuleBasedStateMachine):
    """Owners (one store object each, like separate launches) claim, renew and release;
    every answer and ``claim_holders`` must match the model of the lease rules."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.root = Path(tempfile.mkdtemp(prefix="metalab-claims-model-"))
        self.owners = [new_owner(), new_owner(), DEAD]
        self.stores = {o: FileStore(self.root / "s") for o in self.owners}
        # run -> holder; a holder is live unless it is DEAD or its lease was expired.
        self.holder: dict[str, str] = {}
        self.expired: set[str] = set()

    def _free_for(self, owner: str, run_id: str) -> bool:
        holder = self.holder.get(run_id)
        return holder is None or holder in (owner, DEAD) or holder in self.expired

    @rule(owner=st.sampled_from([0, 1, 2]), runs=st.lists(st.sampled_from(RUN_IDS), unique=True))
    def claim(self, owner: int, runs: list[str]) -> None:
        name = self.owners[owner]
        expected = [r for r in runs if self._free_for(name, r)]
        assert self.stores[name].claim(runs, name, 60.0) == expected
        for run_id in expected:
            self.holder[run_id] = name
        # A claim call first refreshes the owner's anchor when it is older than ttl/10
        # (all its claims), so that a new link to it gets a whole lease.
        self.expired.discard(name)

    @rule(owner=st.sampled_from([0, 1]), runs=st.lists(st.sampled_from(RUN_IDS), unique=True))
    def renew(self, owner: int, runs: list[str]) -> None:
        name = self.owners[owner]
        expected = [r for r in runs if self.holder.get(r) == name]
        assert self.stores[name].renew(runs, name, 60.0) == expected
        if expected:
            self.expired.discard(name)

    @rule(owner=st.sampled_from([0, 1]), runs=st.lists(st.sampled_from(RUN_IDS), unique=True))
    def release(self, owner: int, runs: list[str]) -> None:
        name = self.owners[owner]
        self.stores[name].release(runs, name)
        for run_id in runs:
            if self.holder.get(run_id) == name:
                del self.holder[run_id]

    @precondition(lambda self: any(h != DEAD for h in self.holder.values()))
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        """An owner stops renewing (on another host): all its leases run out together."""
        holding = set(self.holder.values())
        # Drawn by index: owner names are random, their order differs between examples.
        name = self.owners[
            data.draw(st.sampled_from([i for i in (0, 1) if self.owners[i] in holding]))
        ]
        run_id = next(r for r, h in self.holder.items() if h == name)
        old = time.time() - 600
        os.utime(self.stores[name].layout.claim(run_id), (old, old))
        self.expired.add(name)
        # Its store object does not know: make it refresh on its next claim.
        for anchor in self.stores[name]._held.anchors.values():
            anchor.touched = old

    @invariant()
    def holders_match(self) -> None:
        live = {r: h for r, h in self.holder.items() if h != DEAD and h not in self.expired}
        assert self.stores[self.owners[0]].claim_holders(RUN_IDS) == live

    def teardown(self) -> None:
        try:
            for name in self.owners[:2]:
                self.stores[name].release(RUN_IDS, name)
            dead_store = self.stores[DEAD]
            left = _files(dead_store)
            # Only the dead owner's files may be left: its claims nobody took and anchor.
            for path in left:
                assert path.read_text().split()[0] == DEAD, path
            assert len([p for p in left if p.name.endswith(".tmp")]) <= 1
        finally:
            import shutil

            shutil.rmtree(self.root, ignore_errors=True)


TestClaimsModel = ClaimsModel.TestCase


@pytest.fixture(autouse=True)
def _no_ttl_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METALAB_CLAIM_TTL", raising=False)


def test_without_hard_links_each_claim_is_a_file_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that refuses hard links (vfat answers EPERM; none is mountable
    here, so ``link`` is made to answer as vfat does) still gets exclusive claims."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    store, other = FileStore(tmp_path / "s"), FileStore(tmp_path / "s")
    me, you = new_owner(), new_owner()
    assert store.claim(RUN_IDS[:3], me, 30.0) == RUN_IDS[:3]
    assert other.claim(RUN_IDS[:4], you, 30.0) == RUN_IDS[3:4]
    inodes = {os.stat(store.layout.claim(r)).st_ino for r in RUN_IDS[:4]}
    assert len(inodes) == 4 and _anchors(store) == []
    assert store.claim_holders(RUN_IDS[:4]) == {**dict.fromkeys(RUN_IDS[:3], me), RUN_IDS[3]: you}
    assert store.renew(RUN_IDS[:4], me, 30.0) == RUN_IDS[:3]
    store.release(RUN_IDS[:4], me)
    other.release(RUN_IDS[:4], you)
    assert _files(store) == []


@given(st.lists(st.from_regex(r"[0-9a-f]{32}", fullmatch=True), min_size=1, max_size=20))
def test_the_paths_of_a_claim_are_the_layouts(run_ids: list[str]) -> None:
    """The shard directories are cached from the layout; every path is still its own."""
    layout = FileStore(Path("/nonexistent/store")).layout
    held = HeldClaims(os.getpid())
    for run_id in run_ids + run_ids:
        assert held.paths(layout, run_id) == (
            str(layout.claim(run_id)),
            str(layout.done_marker(run_id)),
            str(layout.record(run_id)),
        )
