"""The public surface: complete, sorted ``__all__`` lists and the console script."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import metalab

MODULES = ["metalab", "metalab.errors", "metalab.store", "metalab.params", "metalab.capture"]


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
