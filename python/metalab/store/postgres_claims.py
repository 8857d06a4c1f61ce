"""Run claims of a PostgreSQL store: one row per claimed run, one statement per batch.

``claims(run_id, owner, expires_at)``: a batch is claimed by one ``INSERT ... ON
CONFLICT DO UPDATE WHERE expired`` (SQL in :mod:`metalab.store.postgres_sql`), so the
database decides which of two racing launches gets each run. Claims of an owner that
this host saw die (:func:`metalab.store.claims.owner_alive`) are taken over at once by
an ``UPDATE ... WHERE owner = <the dead one>``, so only one taker can win them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import errors as pg_errors

from metalab.store import postgres_sql as Q
from metalab.store.claims import owner_alive
from metalab.store.layout import check_claim_owner
from metalab.store.postgres_conn import PostgresConnection

__all__ = ["PostgresClaims"]


class PostgresClaims(PostgresConnection):
    """The :class:`~metalab.store.capabilities.RunClaims` of a PostgreSQL store."""

    def _claims_run(self, text: str, params: tuple[Any, ...]) -> list[str]:
        """Run one claims statement; the run IDs it returns."""
        return [str(row[0]) for row in self._claims_rows(text, params)]

    def _claims_rows(self, text: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Run one claims statement (the table is made when missing); its rows."""
        query = self._q(text)

        def op(conn: Any) -> list[tuple[Any, ...]]:
            try:
                cur = conn.execute(query, params)
            except pg_errors.UndefinedTable:
                # A store made before claims existed, or whose first claim this is.
                with conn.transaction():
                    # Serialised: concurrent CREATE ... IF NOT EXISTS can collide.
                    conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtext(%s))",
                        ("metalab-claims:" + self.schema,),
                    )
                    conn.execute(self._q(Q.CLAIMS_TABLE))
                cur = conn.execute(query, params)
            return list(cur.fetchall()) if cur.description else []

        return self._run(op)

    def claim(
        self, run_ids: Sequence[str], owner: str, ttl: float, unless_done: bool = True
    ) -> list[str]:
        """Claim a batch in one statement, then take over what dead local owners held.

        With ``unless_done`` a run already done is refused (in the same statement).

        Raises:
            UnsafeNameError: ``owner`` is malformed.
            StoreUnavailableError: the server cannot be reached.
        """
        check_claim_owner(owner)
        ids = list(run_ids)
        if not ids:
            return []
        take = Q.CLAIMS_TAKE if unless_done else Q.CLAIMS_TAKE_ANY
        granted = set(self._claims_run(take, (owner, ttl, ids)))
        refused = [run_id for run_id in ids if run_id not in granted]
        if refused:
            by_owner: dict[str, list[str]] = {}
            for run_id, holder in self.claim_holders(refused).items():
                by_owner.setdefault(holder, []).append(run_id)
            for holder, held in by_owner.items():
                if owner_alive(holder) is False:
                    stolen = self._claims_run(Q.CLAIMS_STEAL, (owner, ttl, held, holder))
                    granted.update(stolen)
        return [run_id for run_id in ids if run_id in granted]

    def renew(self, run_ids: Sequence[str], owner: str, ttl: float) -> list[str]:
        """Extend ``owner``'s leases in one statement; return the runs it still holds."""
        ids = list(run_ids)
        return self._claims_run(Q.CLAIMS_RENEW, (ttl, ids, owner)) if ids else []

    def release(self, run_ids: Sequence[str], owner: str) -> None:
        """Delete ``owner``'s claims on the runs in one statement."""
        ids = list(run_ids)
        if ids:
            self._claims_run(Q.CLAIMS_DELETE, (ids, owner))

    def claim_holders(self, run_ids: Sequence[str]) -> dict[str, str]:
        """``{run_id: owner}`` of unexpired claims among ``run_ids`` (one query)."""
        ids = list(run_ids)
        if not ids:
            return {}
        return {str(r): str(o) for r, o in self._claims_rows(Q.CLAIMS_HELD, (ids,))}
