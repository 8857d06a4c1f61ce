"""Storage backends, locators and transfer between them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from metalab.store.base import LoadedRecords, LoadProblem, LogSink, Store
from metalab.store.file import FileStore
from metalab.store.layout import FileLayout
from metalab.store.locator import create_store, register_scheme, to_locator

if TYPE_CHECKING:
    # The type checker sees the real objects; at runtime they load on first use (below),
    # so that `import metalab.store` needs no psycopg.
    from metalab.store.fallback import FallbackStore
    from metalab.store.postgres import PostgresStore
    from metalab.store.transfer import export_store, import_from_filestore

__all__ = [
    "FallbackStore",
    "FileLayout",
    "FileStore",
    "LoadProblem",
    "LoadedRecords",
    "LogSink",
    "PostgresStore",
    "Store",
    "create_store",
    "export_store",
    "import_from_filestore",
    "register_scheme",
    "to_locator",
]


def _fallback_store(locator: str) -> Store:
    from metalab.store.fallback import FallbackStore

    return FallbackStore.from_locator(locator)


# Wired here, not in locator.py: FallbackStore resolves its parts with create_store, and
# every import of a metalab.store module runs this file first, so the scheme is always known.
register_scheme("fallback", _fallback_store)


def __getattr__(name: str) -> Any:
    # Optional backends import lazily so psycopg is only needed when used.
    if name == "PostgresStore":
        from metalab.store.postgres import PostgresStore

        return PostgresStore
    if name == "FallbackStore":
        from metalab.store.fallback import FallbackStore

        return FallbackStore
    if name in ("export_store", "import_from_filestore"):
        from metalab.store import transfer

        return getattr(transfer, name)
    raise AttributeError(f"module 'metalab.store' has no attribute {name!r}")
