"""The ``@metalab.operation`` decorator: inject only the arguments a function names."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from metalab.errors import ExperimentError
from metalab.identity import hash_bytes

__all__ = ["INJECTABLE", "Operation", "Runtime", "operation"]

INJECTABLE: tuple[str, ...] = ("context", "params", "seeds", "runtime", "capture")


@dataclass(frozen=True)
class Runtime:
    """Facts about the current run that are not part of its identity."""

    run_id: str
    experiment_id: str
    task_index: int
    replicate: int
    worker_id: str
    metadata: dict[str, Any] = field(default_factory=dict)


class Operation:
    """A user function wrapped so metalab can call it with the arguments it names."""

    def __init__(self, func: Callable[..., Any]) -> None:
        if not callable(func):
            raise ExperimentError(f"@operation needs a function, got {func!r}")
        self.func = func
        self.name: str = getattr(func, "__name__", type(func).__name__)
        self.wants = self._injected_names(func)
        functools.update_wrapper(self, func)

    @staticmethod
    def _injected_names(func: Callable[..., Any]) -> tuple[str, ...]:
        signature = inspect.signature(func)
        wants = []
        for name, parameter in signature.parameters.items():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise ExperimentError(
                    f"operation {func.__name__!r} takes *{name}; declare the arguments it "
                    f"needs by name from {', '.join(INJECTABLE)}"
                )
            if name not in INJECTABLE:
                raise ExperimentError(
                    f"operation {func.__name__!r} has an argument {name!r} metalab cannot "
                    f"inject; expected only names from {', '.join(INJECTABLE)}"
                )
            wants.append(name)
        return tuple(wants)

    @property
    def reference(self) -> str:
        """``"module:qualname"`` of the wrapped function."""
        return f"{self.func.__module__}:{self.func.__qualname__}"

    @functools.cached_property
    def code_hash(self) -> str:
        """Hash of the function's source (bytecode when the source is unavailable)."""
        try:
            source = inspect.getsource(self.func).encode()
        except (OSError, TypeError):
            code = getattr(self.func, "__code__", None)
            source = code.co_code if code is not None else repr(self.func).encode()
        return hash_bytes(source)

    def invoke(self, **available: Any) -> Any:
        """Call the function with the subset of ``available`` it declared."""
        return self.func(**{name: available[name] for name in self.wants})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped function directly (useful in tests and notebooks)."""
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Operation({self.reference})"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as ``module:qualname`` when that name is this operation, else by value.

        The decorated name in the user's module is this Operation, not the function it
        wraps, so a pickler looking the function up by name would not find it there and
        would ship its code by value, making every SLURM task import cloudpickle
        (~6-9 ms with its logging, platform and uuid) to rebuild it. Shipped by name, a
        task imports the user's module, which it needs anyway, and nothing else.
        Functions of ``__main__`` (scripts, notebooks) and nested ones still travel by
        value (with cloudpickle, as before).
        """
        if _is_found_by_name(self):
            known = (self.code_hash, _source_stamp(self.func))
            return (_operation_named, (self.func.__module__, self.func.__qualname__, known))
        return (Operation, (self.func,))


def _source_stamp(func: Callable[..., Any]) -> tuple[str, int, int, int] | None:
    """Where the function's source is and how that file looked (path, line, size, mtime).

    A task whose source file still has this stamp runs the code that was hashed at
    submission, so it can take that hash instead of tokenizing the file again (~9 ms).
    """
    import os

    code = getattr(func, "__code__", None)
    if code is None:
        return None
    try:
        info = os.stat(code.co_filename)
    except (OSError, ValueError):
        return None
    return (code.co_filename, code.co_firstlineno, info.st_size, info.st_mtime_ns)


def _is_found_by_name(op: Operation) -> bool:
    """True when importing ``op``'s module and following its qualname gives ``op``."""
    import sys

    module_name = getattr(op.func, "__module__", None)
    qualname = getattr(op.func, "__qualname__", "")
    if not module_name or module_name == "__main__" or "<" in qualname:
        return False
    found: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found is op


def _operation_named(
    module_name: str,
    qualname: str,
    known: tuple[str, tuple[str, int, int, int] | None] | None = None,
) -> Operation:
    """The operation ``module:qualname`` (what :meth:`Operation.__reduce__` ships).

    ``known`` is the code hash taken at submission and the stamp of the source file then;
    it is adopted only when the file here still has that stamp (else the hash is taken
    again, from the code that will actually run).
    """
    import importlib

    found: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not isinstance(found, Operation):
        raise ExperimentError(
            f"{module_name}:{qualname} is {type(found).__name__}, not a metalab operation "
            "(was the module changed since the experiment was submitted?)"
        )
    if known is not None and "code_hash" not in found.__dict__:
        code_hash, stamp = known
        if stamp is not None and stamp == _source_stamp(found.func):
            found.__dict__["code_hash"] = code_hash  # what cached_property would store
    return found


def operation(func: Callable[..., Any]) -> Operation:
    """Mark ``func`` as a metalab operation.

    The function may declare any of ``context``, ``params``, ``seeds``, ``runtime`` and
    ``capture``; only those are passed. Returning nothing means success; raising marks the
    run failed (the error is recorded, the sweep goes on).

    Raises:
        ExperimentError: the function declares an argument metalab cannot inject.
    """
    return Operation(func)
