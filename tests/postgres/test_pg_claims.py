"""Run claims on PostgreSQL: concurrent launches execute each run once; leases expire."""

from __future__ import annotations

from pathlib import Path

import pytest

from claim_drivers import concurrent_drivers_execute_once
from metalab.store.claims import new_owner
from metalab.store.postgres import PostgresStore


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_eight_drivers_on_one_postgres_store_execute_each_run_once(
    tmp_path: Path, pg_locator: str, executor: str
) -> None:
    concurrent_drivers_execute_once(tmp_path, pg_locator, executor)


def test_postgres_claims_refuse_a_live_lease_and_take_an_expired_one(pg_locator: str) -> None:
    store = PostgresStore.from_locator(pg_locator)
    try:
        ids = [f"{i:02x}" * 16 for i in range(3)]
        me, other = new_owner(), new_owner()
        assert store.claim_holders(ids) == {}  # no claims table yet: nothing held
        assert store.claim(ids, me, 60.0) == ids
        assert store.claim(ids, other, 60.0) == []
        assert store.claim_holders(ids) == dict.fromkeys(ids, me)
        assert store.renew(ids[:1], me, 60.0) == ids[:1]
        store.release(ids[:1], me)
        assert store.claim(ids, other, 60.0) == ids[:1]  # the released one only
        # A lease of 0.2 s that is not renewed runs out: the next claimer gets the run.
        assert store.claim(ids[1:2], me, 0.2) == ids[1:2]
        import time

        time.sleep(0.4)
        assert store.claim(ids[1:2], other, 60.0) == ids[1:2]
        assert store.renew(ids[1:2], me, 60.0) == []
    finally:
        store.close()
