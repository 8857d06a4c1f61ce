"""Store locators: URI-style strings that name a store, and back.

``./runs/exp`` and ``file:///abs/path`` name a :class:`FileStore`;
``postgresql://user@host:5432/db?schema=s&artifact_root=/data`` a PostgreSQL store.
The filesystem root is never a store, and ``file:relative`` (no ``//``) is refused
rather than taken as a folder named ``file:relative``. Error messages show locators with
any password masked.
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
from metalab.store.redaction import mask_locator  # not postgres_config: no credentials

__all__ = ["create_store", "register_scheme", "to_locator"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_SCHEME_NO_SLASHES = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):(?!//)")
_FILE_FORMS = "expected file:///abs/path or a plain path such as ./runs/exp or /data/runs"
_FACTORIES: dict[str, Callable[[str], Store]] = {}


def register_scheme(scheme: str, factory: Callable[[str], Store]) -> None:
    """Make ``create_store`` build stores for locators starting with ``scheme://``."""
    _FACTORIES[scheme.lower()] = factory


def _file_store(locator: str) -> Store:
    shown = mask_locator(locator)
    parts = urlsplit(locator)
    if parts.netloc not in ("", "localhost"):
        raise LocatorError(
            f"file locator {shown!r} names host {mask_locator(parts.netloc)!r}; {_FILE_FORMS}"
        )
    if parts.query or parts.fragment:
        raise LocatorError(f"file locator {shown!r} must not have a query or fragment")
    path = unquote(parts.path)
    if not path:
        raise LocatorError(f"file locator {shown!r} has no path; {_FILE_FORMS}")
    return _directory_store(path, shown)


def _directory_store(path: str, shown: str) -> Store:
    """A FileStore at ``path``, unless that is the filesystem root.

    Raises:
        LocatorError: ``path`` is ``/`` (also spelt ``//``, ``/.``, ``/..``...): a store
            there would spread ``runs/``, ``done/`` and ``experiments/`` over the root;
            or it starts with ``~user`` for a user that does not exist.
    """
    if os.path.normpath(path) in ("/", "//"):
        raise LocatorError(
            f"store locator {shown!r} names the filesystem root; {_FILE_FORMS} "
            f"naming a directory for this store"
        )
    try:
        return FileStore(path)
    except RuntimeError as exc:  # Path.expanduser: "~user" of a user that does not exist
        raise LocatorError(f"store path {shown!r} cannot be expanded: {exc}") from None


def _postgres_store(locator: str) -> Store:
    from metalab.store.postgres import PostgresStore

    return PostgresStore.from_locator(locator)


register_scheme("file", _file_store)
# "fallback://" is registered by the package (metalab/store/__init__.py): FallbackStore
# builds its parts with create_store, so this module must not import it back.
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
        path = os.fspath(locator)
        return _directory_store(path if isinstance(path, str) else os.fsdecode(path), str(path))
    if not isinstance(locator, str):
        raise LocatorError(
            f"store must be a path, a locator string or a Store, got {type(locator).__name__}"
        )
    text = locator.strip()
    if not text:
        raise LocatorError("store locator is empty; expected a path or scheme://...")
    shown = mask_locator(text)
    match = _SCHEME.match(text)
    if match is None:
        if "://" in text or "\x00" in text:
            raise LocatorError(f"malformed store locator {shown!r}")
        bare = _SCHEME_NO_SLASHES.match(text)
        if bare is not None and bare.group(1).lower() in _FACTORIES:
            # "file:relative" would silently become a folder named "file:relative".
            scheme = bare.group(1).lower()
            expected = _FILE_FORMS if scheme == "file" else f"expected {scheme}://..."
            raise LocatorError(f"store locator {shown!r} lacks '//' after '{scheme}:'; {expected}")
        return _directory_store(text, shown)
    scheme = match.group(1).lower()
    factory = _FACTORIES.get(scheme)
    if factory is None:
        known = ", ".join(sorted(_FACTORIES))
        raise LocatorError(f"unknown store scheme {scheme!r} in {shown!r}; known: {known}")
    return factory(text)


def to_locator(store: Store) -> str:
    """Return a locator that recreates ``store``, also in a fresh process.

    It never includes a password: a PostgreSQL store given one in its locator gets a
    private 0600 password file that the returned locator names with ``passfile=``
    (:meth:`PostgresStore.portable_locator`), so ``create_store(to_locator(store))``
    logs in as ``store`` does.

    Raises:
        LocatorError: ``store`` is not a Store.
        StoreError: the password file cannot be written.
    """
    if not isinstance(store, Store):
        raise LocatorError(f"to_locator() needs a Store, got {type(store).__name__}")
    return store.portable_locator()
