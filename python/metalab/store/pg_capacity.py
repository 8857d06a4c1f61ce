"""Can a PostgreSQL server admit the array tasks of a SLURM submission at once?

Asked once per process and server before the first ``sbatch``: ``max_connections`` minus
the slots an ordinary login never gets. Too few is a note, not an error: connections are
short-lived and a task waits its turn on a full server (:mod:`metalab.store.pg_backoff`).
"""

from __future__ import annotations

from typing import Any

from metalab.store.pg_backoff import FULL_PATIENCE_S

__all__ = ["admission_notes", "server_capacity"]

_capacity: dict[str, tuple[int, int] | None] = {}


def server_capacity(config: Any) -> tuple[int, int] | None:
    """``(max_connections, reserved)`` of the server of ``config``, asked once per process.

    ``reserved`` counts ``superuser_reserved_connections`` (and PostgreSQL 16's
    ``reserved_connections``): slots an ordinary login never gets. None when the server
    does not answer (the store says so itself when used).
    """
    shown = config.locator()
    if shown in _capacity:
        return _capacity[shown]
    import psycopg

    from metalab.errors import StoreError
    from metalab.store.credentials import connect_checked

    found: tuple[int, int] | None = None
    try:
        with connect_checked(config) as conn:
            rows = conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('max_connections', 'superuser_reserved_connections', 'reserved_connections')"
            ).fetchall()
            settings = {str(name): int(value) for name, value in rows}
            superuser = bool(
                conn.execute(
                    "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                ).fetchone()[0]
            )
        reserved = 0 if superuser else settings.get("superuser_reserved_connections", 0)
        found = (settings["max_connections"], reserved + settings.get("reserved_connections", 0))
    except (StoreError, psycopg.Error, KeyError, ValueError, TypeError):
        found = None
    _capacity[shown] = found
    return found


def admission_notes(configs: list[Any], concurrent: int) -> list[str]:
    """What to say before ``concurrent`` array tasks write to these PostgreSQL servers.

    One note per server that admits fewer ordinary connections than ``concurrent`` (its
    ``max_connections`` minus the reserved slots). Not an error: connections are
    short-lived and a task waits its turn on a full server, so no run is lost; but
    writes queue, and the numbers tell what to raise or lower.
    """
    notes = []
    for config in configs:
        capacity = server_capacity(config)
        if capacity is None:
            continue
        most, reserved = capacity
        admitted = most - reserved
        if concurrent > admitted:
            notes.append(
                f"up to {concurrent} array tasks may write to PostgreSQL store "
                f"{config.locator()} at once; its server admits {admitted} connections "
                f"(max_connections={most} minus {reserved} reserved). Each task holds a "
                f"connection only while it writes and waits its turn when the server is "
                f"full (up to {FULL_PATIENCE_S / 60:.0f} min), so no run is lost; to avoid "
                f"the waits lower max_concurrent, raise max_connections or put a pooler "
                f"(PgBouncer in transaction mode) in front"
            )
    return notes
