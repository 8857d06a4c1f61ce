"""Open the store a SLURM job writes to, logged in with its submission's passwords.

Array tasks (``python -m metalab.worker``), retry jobs and wave jobs all start the same
way: install the submission's password file, open the store, check the login. A job that
cannot write its records must say why in its log rather than run operations in vain (or,
behind a FallbackStore, send every record to the fallback), so the failure is printed and
the job exits without executing anything.
"""

from __future__ import annotations

import sys

from metalab.errors import MetalabError
from metalab.store.base import Store
from metalab.store.locator import create_store

__all__ = ["open_task_store"]


def open_task_store(locator: str, passfile: str | None, program: str) -> Store | None:
    """The store, logged in; None (the reason printed to stderr) if it cannot be used.

    Args:
        locator: the store's locator (never holding a password).
        passfile: the submission's private password file, if its stores need logins.
        program: the job's name for the message (``"metalab.worker"``).
    """
    try:
        if passfile is not None:
            from metalab.store import credentials

            credentials.install(credentials.read_passfile(passfile))
        store = create_store(locator)
        # Only a store with PostgreSQL logins has one to check: a FileStore task (every
        # array task of a file sweep) need not load the credentials machinery at all.
        if store.connection_configs():
            from metalab.store import credentials

            credentials.verify_login(store)
    except MetalabError as exc:
        print(f"{program}: cannot open the store, nothing was executed: {exc}", file=sys.stderr)
        return None
    return store
