"""Context specs: small, frozen, serialisable manifests shared by every run.

Files are referenced with :class:`FilePath` / :class:`DirPath`. Their fingerprints come from
metadata (size, mtime, inode) — O(1) in the file's size — and are computed lazily when
:func:`metalab.run` resolves the context, so the file need not exist when the spec is built.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any, TypeVar

from metalab.errors import ContextError
from metalab.identity import fingerprint, to_plain

__all__ = [
    "DirPath",
    "FilePath",
    "context_from_json",
    "context_spec",
    "context_to_json",
    "fresh_copy",
    "is_context_spec",
    "resolve_context",
]

T = TypeVar("T")
_SPEC_MARK = "__metalab_context_spec__"


class _PathRef(os.PathLike[str]):
    """A path whose identity is taken from file-system metadata at run time."""

    kind = "path"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        if not isinstance(self.path, str) or not self.path:
            raise ContextError(f"{type(self).__name__} needs a non-empty path, got {path!r}")

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _PathRef) and type(other) is type(self) and other.path == self.path

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.path))

    def metadata(self, field_name: str) -> dict[str, Any]:
        """Return the metadata fingerprinted for this path.

        Raises:
            ContextError: the path does not exist or has the wrong type.
        """
        raise NotImplementedError


def _stat_fields(st: os.stat_result) -> dict[str, Any]:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


class FilePath(_PathRef):
    """A file referenced by a context spec; changing the file changes the fingerprint."""

    kind = "file"

    def metadata(self, field_name: str) -> dict[str, Any]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise ContextError(
                f"context field {field_name!r}: file {self.path!r} does not exist "
                f"(resolved from {os.getcwd()!r})"
            ) from None
        if not os.path.isfile(self.path):
            raise ContextError(f"context field {field_name!r}: {self.path!r} is not a file")
        return {"kind": "file", "path": self.path, **_stat_fields(st)}


class DirPath(_PathRef):
    """A directory; its fingerprint covers the metadata of every entry below it."""

    kind = "dir"

    def metadata(self, field_name: str) -> dict[str, Any]:
        if not os.path.isdir(self.path):
            raise ContextError(
                f"context field {field_name!r}: directory {self.path!r} does not exist"
            )
        entries = []
        for top, dirs, files in os.walk(self.path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(top, name)
                st = os.stat(full)
                entries.append([os.path.relpath(full, self.path), *_stat_fields(st).values()])
        return {"kind": "dir", "path": self.path, "entries": entries}


def _check_value(where: str, value: Any) -> None:
    if isinstance(value, _PathRef) or is_context_spec(value):
        return
    try:
        fingerprint(value)
    except ValueError as exc:
        raise ContextError(
            f"context field {where!r} holds {value!r}, which is not JSON-like "
            f"(str, int, float, bool, None, list, dict, FilePath, DirPath or a context "
            f"spec); load big or complex data inside the operation instead: {exc}"
        ) from None


def context_spec(cls: type[T]) -> type[T]:
    """Turn a class with annotated fields into a frozen, serialisable context spec.

    Field values must be JSON-like, :class:`FilePath`/:class:`DirPath` or nested context
    specs, so the spec can be fingerprinted and shipped to workers as JSON; a bad value
    raises :class:`~metalab.errors.ContextError` naming the field when the spec is built.

    Raises:
        ContextError: ``cls`` is not a class.
    """
    if not isinstance(cls, type):
        raise ContextError(f"@context_spec decorates a class, got {cls!r}")
    user_post_init = getattr(cls, "__post_init__", None)

    def __post_init__(self: Any) -> None:
        for spec_field in dataclasses.fields(self):
            _check_value(spec_field.name, getattr(self, spec_field.name))
        if user_post_init is not None:
            user_post_init(self)

    cls.__post_init__ = __post_init__  # type: ignore[attr-defined]
    frozen = dataclass(frozen=True)(cls)
    setattr(frozen, _SPEC_MARK, True)
    return frozen


def is_context_spec(obj: object) -> bool:
    """Return True if ``obj`` is an instance of a ``@context_spec`` class."""
    return dataclasses.is_dataclass(obj) and getattr(type(obj), _SPEC_MARK, False)


def _field_manifest(name: str, value: Any, resolve: bool) -> Any:
    if isinstance(value, _PathRef):
        if resolve:
            return value.metadata(name)
        return {"__metalab_path__": value.kind, "path": value.path}
    if is_context_spec(value):
        return _spec_manifest(value, resolve, prefix=f"{name}.")
    return to_plain(value)  # JSON-ready (NumPy values as Python ones), same fingerprint


def _importable(cls: type[Any]) -> bool:
    module = sys.modules.get(cls.__module__)
    if module is None or cls.__module__ == "__main__" or getattr(module, "__spec__", 1) is None:
        return False
    target: Any = module
    for part in cls.__qualname__.split("."):
        target = getattr(target, part, None)
    return target is cls


def _spec_manifest(spec: Any, resolve: bool, prefix: str = "") -> dict[str, Any]:
    cls = type(spec)
    manifest: dict[str, Any] = {
        "__metalab_context__": f"{cls.__module__}:{cls.__qualname__}",
        "fields": {
            f.name: _field_manifest(prefix + f.name, getattr(spec, f.name), resolve)
            for f in dataclasses.fields(spec)
        },
    }
    if prefix and not resolve and not _importable(cls):
        # A nested spec class from a script or notebook cannot be imported by a worker:
        # its code (never the data, which stays JSON) travels along by value.
        import cloudpickle

        manifest["__metalab_class__"] = base64.b64encode(cloudpickle.dumps(cls)).decode()
    return manifest


def resolve_context(context: Any) -> str:
    """Return the context fingerprint, stat-ing every FilePath/DirPath now.

    Raises:
        ContextError: a referenced file or directory is missing; names field and path.
        EncodingError: a context value has no canonical encoding.
    """
    if is_context_spec(context):
        return fingerprint(_spec_manifest(context, resolve=True))
    return fingerprint(context)


def context_to_json(context: Any) -> dict[str, Any] | None:
    """Return a JSON form of a context spec or plain JSON-like context, else ``None``."""
    if is_context_spec(context):
        return _spec_manifest(context, resolve=False)
    try:
        plain = to_plain(context)  # NumPy values as Python ones: same fingerprint, JSON-ready
    except ValueError:
        return None
    return {"__metalab_plain__": plain}


def _rebuild_field(value: Any) -> Any:
    if isinstance(value, dict) and "__metalab_path__" in value:
        return {"file": FilePath, "dir": DirPath}[value["__metalab_path__"]](value["path"])
    if isinstance(value, dict) and "__metalab_context__" in value:
        return context_from_json(value)
    return value


def context_from_json(data: dict[str, Any], cls: type[Any] | None = None) -> Any:
    """Rebuild a context from :func:`context_to_json` output.

    ``cls`` overrides the class lookup (used when the class was shipped by value).
    """
    if "__metalab_plain__" in data:
        return data["__metalab_plain__"]
    if cls is None and "__metalab_class__" in data:
        import pickle

        cls = pickle.loads(base64.b64decode(data["__metalab_class__"]))
    if cls is None:
        module_name, _, qualname = data["__metalab_context__"].partition(":")
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
        cls = target
    assert cls is not None
    return cls(**{name: _rebuild_field(v) for name, v in data["fields"].items()})


def fresh_copy(context: T) -> T:
    """Return a deep copy so that one run's mutations never reach another run."""
    if type(context) is dict and not context:
        # The usual metadata, and many contexts: a new empty dict is what deepcopy
        # would build, at a tenth of its cost per run.
        return {}  # type: ignore[return-value]
    return copy.deepcopy(context)
