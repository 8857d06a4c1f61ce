"""The public surface: complete, sorted ``__all__`` lists and the console script."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import types

import pytest

import metalab

MODULES = [
    "metalab",
    "metalab.errors",
    "metalab.store",
    "metalab.executors",
    "metalab.params",
    "metalab.capture",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_unique_and_resolves(name: str) -> None:
    # Ordering is enforced by ruff (RUF022); here: no duplicates, every name importable.
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported))
    for attribute in exported:
        if attribute in ("PostgresStore",):
            pytest.importorskip("psycopg")
        assert getattr(module, attribute) is not None, attribute


# Modules whose ``__all__`` must list every public name they hold, and nothing else.
EXACT_MODULES = ["metalab", "metalab.store", "metalab.executors", "metalab.errors"]
# Names a module imports for its own use: ``from __future__ import annotations``,
# ``typing.Any`` and ``TYPE_CHECKING`` (a bool at runtime, so it has no ``__module__``).
_FOREIGN = {"annotations", "Any", "TYPE_CHECKING"}


def _public_names(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in _FOREIGN
    }


@pytest.mark.parametrize("name", EXACT_MODULES)
def test_all_is_exactly_the_public_names(name: str) -> None:
    # Run in a fresh interpreter: here, other tests may already have loaded lazy names.
    code = (
        "import importlib, json, sys\n"
        f"m = importlib.import_module({name!r})\n"
        "print(json.dumps(sorted(k for k in vars(m) if not k.startswith('_'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    module = importlib.import_module(name)
    exported = set(module.__all__)
    held = _public_names(module) & set(json.loads(out.stdout))
    assert held - exported == set(), f"public names of {name} missing from __all__"
    # The rest of __all__ is loaded lazily by the module's __getattr__, and resolves.
    lazy = exported - held - {"__version__"}
    for attribute in sorted(lazy):
        if attribute in ("PostgresStore",):
            pytest.importorskip("psycopg")
        value = getattr(module, attribute)
        assert not isinstance(value, types.ModuleType), attribute
        assert value.__module__.startswith("metalab."), attribute


def test_import_metalab_loads_no_heavy_dependency() -> None:
    # psycopg, pandas, rich and matplotlib are optional extras and cost a noticeable start-up;
    # the lazy exports (ProcessExecutor, PostgresStore, ...) exist so that they load only
    # when used.
    code = (
        "import json, sys\n"
        "import metalab, metalab.store, metalab.executors, metalab.errors, metalab.params\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    heavy = {"psycopg", "psycopg_pool", "pandas", "rich", "matplotlib"}
    assert {m.split(".")[0] for m in loaded} & heavy == set()
    lazy = {"metalab.store.postgres", "metalab.executors.process", "metalab.executors.slurm"}
    assert loaded & lazy == set()


def test_every_error_is_a_metalab_error_and_documented() -> None:
    from metalab import errors

    doc = errors.__doc__ or ""
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.MetalabError)
        assert name in doc, f"{name} missing from the hierarchy drawn in metalab.errors"
        assert cls.__doc__


def test_console_script_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "metalab.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == f"metalab {metalab.__version__}"


def test_missing_rust_core_fails_loudly(tmp_path) -> None:
    code = (
        "import sys; sys.modules['metalab._core'] = None\n"
        "try:\n    import metalab\nexcept ImportError as e:\n    print('LOUD', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.startswith("LOUD") and "Rust core" in out
