"""Store locators: URI-style strings that name a store, and back.

``./runs/exp`` and ``file:///abs/path`` name a :class:`FileStore`;
``postgresql://user@host:5432/db?schema=s&artifact_root=/data`` a PostgreSQL store.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from metalab.errors import LocatorError
from metalab.store.base import Store
from metalab.store.file import FileStore

__all__ = ["create_store", "register_scheme", "to_locator"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_FACTORIES: dict[str, Callable[[str], Store]] = {}


def register_scheme(scheme: str, factory: Callable[[str], Store]) -> None:
    """Make ``create_store`` build stores for locators starting with ``scheme://``."""
    _FACTORIES[scheme.lower()] = factory


def _file_store(locator: str) -> Store:
    parts = urlsplit(locator)
    if parts.netloc not in ("", "localhost"):
        raise LocatorError(
            f"file locator {locator!r} names host {parts.netloc!r}; expected file:///abs/path"
        )
    if parts.query or parts.fragment:
        raise LocatorError(f"file locator {locator!r} must not have a query or fragment")
    path = unquote(parts.path)
    if not path:
        raise LocatorError(f"file locator {locator!r} has no path")
    return FileStore(path)


def _postgres_store(locator: str) -> Store:
    from metalab.store.postgres import PostgresStore

    return PostgresStore.from_locator(locator)


def _fallback_store(locator: str) -> Store:
    from metalab.store.fallback import FallbackStore

    return FallbackStore.from_locator(locator)


register_scheme("file", _file_store)
register_scheme("fallback", _fallback_store)
register_scheme("postgresql", _postgres_store)
register_scheme("postgres", _postgres_store)


def create_store(locator: Any) -> Store:
    """Return the store a locator, path or store object names.

    Raises:
        LocatorError: the scheme is unknown or the locator is malformed (names it).
    """
    if isinstance(locator, Store):
        return locator
    if isinstance(locator, Path | os.PathLike):
        return FileStore(os.fspath(locator))
    if not isinstance(locator, str):
        raise LocatorError(
            f"store must be a path, a locator string or a Store, got {type(locator).__name__}"
        )
    text = locator.strip()
    if not text:
        raise LocatorError("store locator is empty; expected a path or scheme://...")
    match = _SCHEME.match(text)
    if match is None:
        if "://" in text or "\x00" in text:
            raise LocatorError(f"malformed store locator {locator!r}")
        return FileStore(text)
    scheme = match.group(1).lower()
    factory = _FACTORIES.get(scheme)
    if factory is None:
        known = ", ".join(sorted(_FACTORIES))
        raise LocatorError(f"unknown store scheme {scheme!r} in {locator!r}; known: {known}")
    return factory(text)


def to_locator(store: Store) -> str:
    """Return a locator that recreates ``store`` (never includes a password)."""
    if not isinstance(store, Store):
        raise LocatorError(f"to_locator() needs a Store, got {type(store).__name__}")
    return store.locator
