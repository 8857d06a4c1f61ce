"""Names a package exports but imports on first use (a PEP 562 module ``__getattr__``).

Every SLURM array task imports ``metalab`` (the worker, and the user's module defining
the operation), so the package namespaces name much that a task never touches: results,
progress displays, executors, random search. They load when first asked for, and the
type checker sees them through each package's ``TYPE_CHECKING`` imports.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["loader"]


def loader(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``names`` maps an exported name to the
    module that defines it. The value found is kept in the package's namespace, so later
    lookups never come here again.
    """

    def __getattr__(name: str) -> Any:
        where = names.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
