"""The house rules of the code base that no linter checks for us.

import-linter (the contract in pyproject.toml, run by .ci/run) checks the layers and that no
sibling modules import each other in a cycle. It cannot check that nothing inside the package
imports ``metalab/__init__``: it records ``from metalab import _core`` (an extension module
it does not see) as an import of the package itself. This file checks that rule from the
source, and that every module stays small enough to read in one sitting.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "metalab"
MAX_LINES = 500


def _python_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _package_of(path: Path, package: Path) -> list[str]:
    """Dotted parts of the package that contains ``path`` (``metalab.store`` -> 2 parts)."""
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return parts if path.name == "__init__.py" else parts[:-1]


def _is_submodule(package_dir: Path, name: str) -> bool:
    """Whether ``from metalab import name`` names a module (no public name of __init__)."""
    return (
        name == "_core"
        or (package_dir / f"{name}.py").is_file()
        or (package_dir / name / "__init__.py").is_file()
    )


def _imports_of_package_root(path: Path, package_dir: Path = PACKAGE) -> list[str]:
    """Import statements in ``path`` that execute ``metalab/__init__`` for one of its names.

    ``from metalab import _core`` (the compiled extension) or ``from metalab import service``
    name modules, which is allowed; any other name taken from the package root (or a bare
    ``import metalab``) goes through the public namespace, which imports half the package
    and makes cycles.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = _package_of(path, package_dir)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name == "metalab"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != "metalab":
                continue
            names = [a.name for a in node.names if not _is_submodule(package_dir, a.name)]
            if names:
                found.append(f"line {node.lineno}: from metalab import {', '.join(names)}")
    return found


@pytest.mark.parametrize(
    "path",
    [p for p in _python_modules() if p != PACKAGE / "__init__.py"],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_module_imports_the_package_root(path: Path) -> None:
    assert _imports_of_package_root(path) == []


def test_the_checker_sees_a_root_import(tmp_path: Path) -> None:
    """The check above is not vacuous: a module taking a public name from the root is found."""
    package = tmp_path / "metalab"
    (package / "store").mkdir(parents=True)
    module = package / "store" / "probe.py"
    source = (
        "from metalab import _core\nfrom .. import Results\nfrom ..store import x\nimport metalab\n"
    )
    module.write_text(source, encoding="utf-8")
    assert _imports_of_package_root(module, package) == [
        "line 2: from metalab import Results",
        "import metalab",
    ]


def _source_files() -> list[Path]:
    return _python_modules() + sorted((ROOT / "rust" / "src").rglob("*.rs"))


@pytest.mark.parametrize("path", _source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_is_small(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (most {MAX_LINES})"
