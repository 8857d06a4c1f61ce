"""The ``metalab`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from metalab import _core

__all__ = ["build_parser", "main", "register_command"]

_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = []


def register_command(
    adder: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None],
) -> None:
    """Register a function that adds a sub-command to the parser."""
    _COMMANDS.append(adder)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="metalab", description="Reproducible experiments.")
    parser.add_argument("--version", action="version", version=f"metalab {_core.__version__}")
    sub = parser.add_subparsers(dest="command")
    _load_commands()
    for adder in _COMMANDS:
        adder(sub)
    return parser


def _load_commands() -> None:
    import importlib

    modules = ("metalab.cli_store", "metalab.cli_postgres", "metalab.cli_inspect")
    for module in (*modules, "metalab.ui.server"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    code: int = handler(args)
    return code


if __name__ == "__main__":
    # Run as ``python -m metalab.cli``, this file is ``__main__``, while the command modules
    # register with the importable ``metalab.cli``: dispatch through that one.
    from metalab.cli import main as _main

    sys.exit(_main())
