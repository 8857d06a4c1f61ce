"""``metalab postgres start|status|stop``: manage a PostgreSQL server for metalab."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metalab.cli import register_command
from metalab.errors import MetalabError
from metalab.store.postgres_config import redact

__all__ = ["add_postgres_command"]


def _service_dir(args: argparse.Namespace) -> Path:
    from metalab.service import default_service_dir

    if args.service_dir:
        return Path(args.service_dir).expanduser().absolute()
    return default_service_dir(args.store)


def _handle(args: argparse.Namespace) -> int:
    from metalab import service

    directory = _service_dir(args)
    try:
        if args.pg_action == "start":
            extra = ["--partition", args.partition] if args.partition else []
            extra += ["--time", args.time] if args.time else []
            info = service.start_service(
                directory,
                slurm=args.slurm,
                port=args.port,
                engine=args.engine,
                sbatch_args=extra,
                timeout=args.timeout,
            )
            print(f"started {info.describe()}")
            print(f"locator: {service.service_locator(directory, args.store)}")
            print(
                "  (use it as the store of metalab.run, load_results and metalab ls/status; "
                "its passfile= holds the password, readable by you only)"
            )
            print(f"service file: {directory / 'service.json'} (mode 0600, holds the password)")
            print(f"data directory: {info.data_dir}")
            return 0
        if args.pg_action == "status":
            up, found = service.service_status(directory)
            if found is None:
                print(f"no PostgreSQL service in {directory}")
                return 3
            print(f"{'running' if up else 'NOT responding'}: {found.describe()}")
            print(f"locator: {service.service_locator(directory, args.store)}")
            return 0 if up else 3
        stopped = service.stop_service(directory)
        print(f"stopped {stopped.describe()}" if stopped else f"no service in {directory}")
        return 0
    except (MetalabError, OSError) as exc:
        print(f"metalab postgres {args.pg_action}: {redact(str(exc))}", file=sys.stderr)
        return 1


def add_postgres_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``postgres start|status|stop`` to the CLI."""
    parser = sub.add_parser("postgres", help="manage a PostgreSQL service")
    actions = parser.add_subparsers(dest="pg_action", required=True)
    for name, help_text in (
        ("start", "start PostgreSQL (container, native binaries, or a SLURM job)"),
        ("status", "report whether the service answers (exit 3 when it does not)"),
        ("stop", "stop the service"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("--store", default=None, help="use {store}/services/postgres")
        action.add_argument("--service-dir", default=None, help="explicit service directory")
        if name == "start":
            action.add_argument("--slurm", action="store_true", help="run as a SLURM job")
            action.add_argument("--port", type=int, default=None, help="default: a free port")
            action.add_argument(
                "--engine",
                choices=["auto", "native", "docker", "podman"],
                default="auto",
                help="auto: a container engine if one answers, else native binaries",
            )
            action.add_argument("--partition", default=None, help="SLURM partition")
            action.add_argument("--time", default=None, help="SLURM time limit")
            action.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
        action.set_defaults(handler=_handle)


register_command(add_postgres_command)
