"""``metalab store export|import|clean|reindex``: copy runs, sweep leftovers, rebuild the index.

Exit codes: 0 done; 1 failed (nothing or only part was done, the message says why);
3 (``EXIT_SKIPPED``) done, but some items of the source were unsafe and were skipped —
each one is printed as a ``warning:`` line on stderr; 5 (``EXIT_NO_MATCH``) the
``--experiment`` filter matched nothing in the source (nothing was copied; the
experiments the source holds are listed).
"""

from __future__ import annotations

import argparse
import json
import sys

from metalab.cli import register_command
from metalab.errors import MetalabError
from metalab.store.postgres_config import redact

__all__ = ["EXIT_NO_MATCH", "EXIT_SKIPPED", "add_store_command"]

#: Exit code of an export/import that copied everything except skipped unsafe items.
EXIT_SKIPPED = 3
#: Exit code of an export/import whose ``--experiment`` matched nothing in the source.
EXIT_NO_MATCH = 5


def _transfer(args: argparse.Namespace) -> int:
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
    if report.matched_nothing:
        held = ", ".join(report.available) if report.available else "none"
        print(
            f"metalab store {args.store_action}: no run, manifest or blob of experiment "
            f"{args.experiment!r} in {redact(report.source)}; nothing was copied. "
            f"Experiments there: {held}",
            file=sys.stderr,
        )
        return EXIT_NO_MATCH
    for line in report.skipped:
        print(f"warning: skipped {redact(line)}", file=sys.stderr)
    print(redact(str(report)))
    if report.skipped:
        print(
            f"metalab store {args.store_action}: {len(report.skipped)} unsafe items were "
            f"skipped (listed above); everything else was copied",
            file=sys.stderr,
        )
        return EXIT_SKIPPED
    return 0


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count} bytes"


def _clean(args: argparse.Namespace) -> int:
    from metalab.store.file import FileStore
    from metalab.store.locator import create_store

    try:
        store = create_store(args.store)
        if not isinstance(store, FileStore):
            raise MetalabError(f"{store!r} is not a FileStore: only file stores have temporaries")
        if not store.root.is_dir():
            raise MetalabError(f"no store at {str(store.root)!r}")
        sweep = store.clean_temporaries(dry_run=args.dry_run)
    except (MetalabError, OSError) as exc:
        print(f"metalab store clean: {redact(str(exc))}", file=sys.stderr)
        return 1
    if args.json:
        doc = {
            "store": str(store.root),
            "dry_run": args.dry_run,
            "removed": len(sweep.removed),
            "bytes_freed": sweep.bytes_freed,
            "kept": sweep.kept,
            "files": [{"path": path, "bytes": size} for path, size in sweep.removed],
            "errors": sweep.errors,
        }
        print(json.dumps(doc, indent=2))
    else:
        verb = "would remove" if args.dry_run else "removed"
        print(
            f"{verb} {len(sweep.removed)} stale temporaries of dead writers "
            f"({_size(sweep.bytes_freed)}) from {store.root}; kept {sweep.kept} of live "
            f"writers or of writers on other hosts younger than 24 h"
        )
        for error in sweep.errors:
            print(f"warning: {error}", file=sys.stderr)
    return 1 if sweep.errors else 0


def _reindex(args: argparse.Namespace) -> int:
    from metalab.store.file import FileStore
    from metalab.store.locator import create_store

    try:
        store = create_store(args.store)
        if not isinstance(store, FileStore):
            raise MetalabError(
                f"{store!r} is not a FileStore: only file stores have a results index "
                f"(PostgreSQL answers the same queries in SQL)"
            )
        if not store.root.is_dir():
            raise MetalabError(f"no store at {str(store.root)!r}")
        report = store.reindex(args.experiment)
    except (MetalabError, OSError, ValueError) as exc:
        print(f"metalab store reindex: {redact(str(exc))}", file=sys.stderr)
        return 1
    if args.experiment is not None and not report.experiments:
        print(
            f"metalab store reindex: no record of experiment {args.experiment!r} in "
            f"{store.root}; nothing was indexed",
            file=sys.stderr,
        )
        return EXIT_NO_MATCH
    runs = sum(report.experiments.values())
    print(
        f"indexed {runs} runs of {len(report.experiments)} experiments in {store.root}; "
        f"removed {report.removed_segments} old segments"
    )
    for path in report.skipped:
        print(f"warning: skipped the corrupt or unreadable record {path}", file=sys.stderr)
    return EXIT_SKIPPED if report.skipped else 0


def add_store_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``store export``, ``store import``, ``store clean`` and ``store reindex``."""
    parser = sub.add_parser("store", help="copy runs between stores, clean up a store")
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
        action = actions.add_parser(
            name,
            help=help_text,
            epilog=f"Exit codes: 0 copied; 1 failed; {EXIT_SKIPPED} copied, but unsafe names "
            f"in the source were skipped (each printed as a warning); {EXIT_NO_MATCH} "
            f"--experiment matched nothing in the source (nothing copied).",
        )
        action.add_argument("--from", dest="source", required=True, help=src_help)
        action.add_argument("--to", dest="destination", required=True, help=dst_help)
        action.add_argument(
            "--experiment",
            default=None,
            help=f"only this experiment ID (exit code {EXIT_NO_MATCH} if the source has none)",
        )
        action.set_defaults(handler=_transfer)
    clean = actions.add_parser(
        "clean",
        help="remove temporary files left by killed writers",
        description="Remove the hidden temporaries of writes whose process is dead (one "
        "walk of the store). A temporary of a live process is kept; one written on another "
        "host is removed only when it is older than 24 hours.",
    )
    clean.add_argument("store", help="FileStore directory or file:// locator")
    clean.add_argument("--dry-run", action="store_true", help="report, remove nothing")
    clean.add_argument("--json", action="store_true", help="print the report as JSON")
    clean.set_defaults(handler=_clean)
    reindex = actions.add_parser(
        "reindex",
        help="rebuild a FileStore's results index from its records",
        description="Rebuild the results index (index/{experiment}/*.seg) from the run "
        "records, e.g. after a segment was reported corrupt: new segments are written "
        "under temporary names and renamed into place before the old ones are removed.",
        epilog=f"Exit codes: 0 rebuilt; 1 failed; {EXIT_SKIPPED} rebuilt, but corrupt "
        f"records were skipped (each printed as a warning; loading reports them); "
        f"{EXIT_NO_MATCH} --experiment matched no record.",
    )
    reindex.add_argument("store", help="FileStore directory or file:// locator")
    reindex.add_argument("--experiment", default=None, help="only this experiment ID")
    reindex.set_defaults(handler=_reindex)


register_command(add_store_command)
