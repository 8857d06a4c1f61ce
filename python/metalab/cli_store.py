"""``metalab store export|import``: copy runs between file and PostgreSQL stores."""

from __future__ import annotations

import argparse
import sys

from metalab.cli import register_command
from metalab.errors import MetalabError
from metalab.store.postgres_config import redact

__all__ = ["add_store_command"]


def _run(args: argparse.Namespace) -> int:
    from metalab.store.transfer import export_store, import_from_filestore

    try:
        if args.store_action == "export":
            report = export_store(args.source, args.destination, args.experiment, progress=True)
        else:
            report = import_from_filestore(
                args.source, args.destination, args.experiment, progress=True
            )
    except (MetalabError, OSError) as exc:
        print(f"metalab store {args.store_action}: {redact(str(exc))}", file=sys.stderr)
        return 1
    print(redact(str(report)))
    return 0


def add_store_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``store export`` and ``store import`` to the CLI."""
    parser = sub.add_parser("store", help="copy runs between stores")
    actions = parser.add_subparsers(dest="store_action", required=True)
    for name, help_text, src_help, dst_help in (
        (
            "export",
            "export a store (e.g. PostgreSQL) into a FileStore directory",
            "source store locator or path",
            "destination directory",
        ),
        (
            "import",
            "import a FileStore directory into a store (e.g. PostgreSQL)",
            "source FileStore directory",
            "destination store locator",
        ),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("--from", dest="source", required=True, help=src_help)
        action.add_argument("--to", dest="destination", required=True, help=dst_help)
        action.add_argument("--experiment", default=None, help="only this experiment ID")
        action.set_defaults(handler=_run)


register_command(add_store_command)
