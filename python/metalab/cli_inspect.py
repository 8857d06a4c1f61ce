"""``metalab ls|status|show|logs|cancel``: look into a store from a terminal or a script.

STORE is any locator ``metalab.run`` accepts: a path, ``file:///abs/path``,
``postgresql://user@host/db?schema=...`` or ``fallback://?primary=...&fallback=...``.
Passwords never appear in the output: stores are named by their password-free locator
and every error message is redacted.

Exit codes, the same for every command::

    0    ok
    1    what was asked about has failures: ``status`` of an experiment with failed
         runs, ``show``/``logs`` of a failed or cancelled run, ``logs --failed`` found some
    2    usage error, or the experiment / run is unknown or ambiguous (candidates listed)
    3    the store cannot be reached (StoreUnavailableError)
    4    the store answered but the request failed (a launch that cannot be cancelled
         from here, scancel failed, a spec this account did not write...)
    130  interrupted (Ctrl-C): one line on stderr, no traceback

``--json`` prints exactly one JSON document on stdout (strict JSON: NaN and infinities are
``null``); on an error it is ``{"error": {"exit_code", "message", "candidates"}}`` (argparse
usage errors print only the usage, on stderr). Keys:

- ``ls``: ``store``, ``experiments``: list of ``experiment_id``, ``name``, ``version``,
  ``launches`` (manifests), ``total`` (runs of the latest launch), ``counts``
  (``success``, ``failed``, ``pending``: not finished or never run) and
  ``last_activity`` (ISO time of the latest launch: stores keep no per-run write time
  that could be read without opening every record).
- ``status``: ``store``, ``experiment_id``, ``executor``, ``launched_at``,
  ``slurm_job_ids`` (or null), ``source`` (``"launch"``: :func:`metalab.reconnect`;
  ``"markers"``: no reconnectable launch, counts from markers), ``note``, ``status``
  (``total``, ``completed``, ``running``, ``pending``, ``failed``, ``skipped``,
  ``cancelled``), ``complete``, ``failed_run_ids`` (at most 100).
- ``show``: ``store``, ``run_id``, ``experiment_id``, ``status`` (``"unfinished"`` when
  there is no record yet), ``record`` (the stored record JSON, or null) and ``log``
  (``lines``: total line count, ``tail``: the last lines).
- ``logs``: ``store``, ``runs``: list of ``run_id``, ``experiment_id``, ``status``,
  ``error`` (``type``, ``message``, or null), ``lines``, ``log`` (list of lines shown).
- ``cancel``: ``store``, ``experiment_id``, ``executor``, ``cancelled`` (bool),
  ``slurm_job_ids``, ``unfinished`` (runs not finished when asked), ``message``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from metalab.cli import register_command
from metalab.cli_query import (
    EXIT_ERROR,
    EXIT_FAILURES,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CommandError,
    ExperimentView,
    StatusSource,
    cancel_launch,
    experiments,
    failed_runs,
    marker_counts,
    resolve_experiment,
    resolve_run,
)
from metalab.cli_render import (
    RichScreen,
    Screen,
    epilog,
    json_document,
    make_screen,
    printable,
    render_cancel,
    render_logs,
    render_ls,
    render_show,
    render_status,
    status_line,
)
from metalab.errors import (
    LocatorError,
    MetalabError,
    StoreUnavailableError,
)
from metalab.store.base import Store

__all__ = ["add_inspect_commands"]

_SHOW_TAIL = 20
Payload = dict[str, Any]
Command = Callable[[Store, argparse.Namespace, Screen | None], tuple[Payload, int]]
Render = Callable[[Payload, Screen], None]


# -- shared plumbing --------------------------------------------------------------------
def _open_store(locator: str) -> Store:
    from metalab.store.locator import create_store

    store = create_store(locator)
    directory = store.directory
    if directory is not None and not directory.is_dir():
        raise CommandError(f"no store at {str(directory)!r}: the directory does not exist")
    return store


def _fail(args: argparse.Namespace, code: int, message: str, candidates: list[str]) -> int:
    message, candidates = printable(message), [printable(c) for c in candidates]
    lines = [f"metalab {args.command}: {message}", *(f"  {c}" for c in candidates)]
    print("\n".join(lines), file=sys.stderr)
    if args.json:
        error = {"exit_code": code, "message": message, "candidates": candidates}
        print(json_document({"error": error}))
    return code


def _handler(command: Command, render: Render) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: open the store, print its payload, map errors to exit codes."""

    def handle(args: argparse.Namespace) -> int:
        screen = None if args.json else make_screen()
        code = EXIT_OK
        try:
            store = _open_store(args.store)
            try:
                payload, code = command(store, args, screen)
            finally:
                store.close()
            _emit(payload, screen, render)
        except KeyboardInterrupt:
            # One line, no traceback: watching is the only long wait, and stopping it
            # leaves the launch itself running.
            print(f"metalab {args.command}: interrupted (nothing was cancelled)", file=sys.stderr)
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            # `metalab show ... | head`: the reader left; stop writing without a traceback.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return code
        except CommandError as exc:
            return _fail(args, exc.exit_code, exc.message, exc.candidates)
        except StoreUnavailableError as exc:
            return _fail(args, EXIT_UNREACHABLE, f"store unreachable: {exc}", [])
        except LocatorError as exc:
            return _fail(args, EXIT_USAGE, str(exc), [])
        except (MetalabError, OSError) as exc:
            return _fail(args, EXIT_ERROR, f"{type(exc).__name__}: {exc}", [])
        return code

    return handle


def _emit(payload: Payload, screen: Screen | None, render: Render) -> None:
    if screen is None:
        print(json_document(payload), flush=True)  # json_document redacts every string
    else:
        render(payload, screen)
        screen.show()


def _views(store: Store, experiment: str | None) -> list[ExperimentView]:
    views = experiments(store)
    if not views:
        raise CommandError(f"store {store.locator} has no experiments (no manifest)")
    return views if experiment is None else [resolve_experiment(views, experiment)]


def _tail(text: str, n: int | None) -> tuple[int, list[str]]:
    lines = text.splitlines()
    return len(lines), lines if n is None else lines[max(len(lines) - n, 0) :]


def _unsuccessful(status: str) -> bool:
    return status in ("failed", "cancelled")


# -- ls -----------------------------------------------------------------------------------
def _ls(store: Store, args: argparse.Namespace, screen: Screen | None) -> tuple[Payload, int]:
    rows = []
    for view in experiments(store):
        counts = None if view.run_ids is None else marker_counts(store, view.run_ids)
        rows.append(
            {
                "experiment_id": view.experiment_id,
                "name": view.name,
                "version": view.version,
                "launches": view.launches,
                "total": view.total,
                "counts": counts,
                "last_activity": view.last_activity,
            }
        )
    return {"store": store.locator, "experiments": rows}, EXIT_OK


# -- status ---------------------------------------------------------------------------
def _status(store: Store, args: argparse.Namespace, screen: Screen | None) -> tuple[Payload, int]:
    views = _views(store, args.experiment)
    # Without EXPERIMENT: the latest launch, as metalab.reconnect(store) picks it.
    source = StatusSource(store, views[0] if args.experiment or len(views) == 1 else None)
    if len(views) > 1 and args.experiment is None:
        others = f"{len(views) - 1} other experiment(s) in this store: see metalab ls"
        source.note = f"{source.note}; {others}" if source.note else others
    payload = source.payload() if args.watch is None else _watch(source, args.watch, screen)
    return payload, EXIT_FAILURES if payload["status"]["failed"] else EXIT_OK


def _watch(source: StatusSource, every: float, screen: Screen | None) -> Payload:
    """Refresh the status every ``every`` seconds until the launch is complete."""
    payload = source.payload()
    if isinstance(screen, RichScreen):
        from rich.live import Live

        # Transient, so that the final view is printed once, by the caller, as in every
        # other mode; on Ctrl-C the last view is printed again before leaving.
        shown: Any = None
        try:
            with Live(console=screen.console, auto_refresh=False, transient=True) as live:
                while True:
                    render_status(payload, screen)
                    shown, screen.parts = screen.renderable(), []
                    live.update(shown, refresh=True)
                    if payload["complete"]:
                        return payload
                    time.sleep(every)
                    payload = source.payload()
        except KeyboardInterrupt:
            if shown is not None:
                screen.console.print(shown)
            raise
    while not payload["complete"]:
        if screen is not None:
            stamp = time.strftime("%H:%M:%S")
            screen.text(f"{stamp} {status_line(payload)}")
            screen.show()
        time.sleep(every)
        payload = source.payload()
    return payload


# -- show and logs ----------------------------------------------------------------------
def _run_entry(store: Store, run_id: str, view: ExperimentView | None, tail: int | None) -> Payload:
    record = store.get_record(run_id)
    lines, shown = _tail(store.read_log(run_id), tail)
    owner = view.experiment_id if view is not None else None
    return {
        "run_id": run_id,
        "experiment_id": record.experiment_id if record else owner,
        "status": record.status.value if record else "unfinished",
        "record": record.to_json() if record else None,
        "lines": lines,
        "log": shown,
    }


def _show(store: Store, args: argparse.Namespace, screen: Screen | None) -> tuple[Payload, int]:
    run_id, view = resolve_run(store, experiments(store), args.run_id)
    entry = _run_entry(store, run_id, view, args.tail)
    payload = {
        "store": store.locator,
        "run_id": run_id,
        "experiment_id": entry["experiment_id"],
        "status": entry["status"],
        "record": entry["record"],
        "log": {"lines": entry["lines"], "tail": entry["log"]},
    }
    return payload, EXIT_FAILURES if _unsuccessful(entry["status"]) else EXIT_OK


def _logs(store: Store, args: argparse.Namespace, screen: Screen | None) -> tuple[Payload, int]:
    if args.failed == (args.run_id is not None):
        raise CommandError("give either a RUN_ID or --failed (not both, not neither)")
    targets: Sequence[tuple[str, ExperimentView | None]]
    if args.failed:
        targets = failed_runs(store, _views(store, args.experiment))
    else:
        views = experiments(store)
        if args.experiment is not None:
            views = [resolve_experiment(views, args.experiment)]
        targets = [resolve_run(store, views, args.run_id)]
    runs = []
    for run_id, view in targets:
        entry = _run_entry(store, run_id, view, args.tail)
        error = (entry["record"] or {}).get("error")
        runs.append(
            {
                "run_id": run_id,
                "experiment_id": entry["experiment_id"],
                "status": entry["status"],
                "error": {"type": error["type"], "message": error["message"]} if error else None,
                "lines": entry["lines"],
                "log": entry["log"],
            }
        )
    failures = any(_unsuccessful(run["status"]) for run in runs)
    return {"store": store.locator, "runs": runs}, EXIT_FAILURES if failures else EXIT_OK


# -- cancel -----------------------------------------------------------------------------
def _cancel(store: Store, args: argparse.Namespace, screen: Screen | None) -> tuple[Payload, int]:
    return cancel_launch(store, _views(store, args.experiment)[0])


# -- argparse ---------------------------------------------------------------------------
def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of lines >= 0, got {text!r}")
    return int(text)


def add_inspect_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ls``, ``status``, ``show``, ``logs`` and ``cancel`` to the CLI."""

    def command(name: str, help_text: str, run: Command, render: Render) -> argparse.ArgumentParser:
        parser = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=epilog(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("store", metavar="STORE", help="store path or locator")
        parser.add_argument("--json", action="store_true", help="print one JSON document")
        parser.set_defaults(handler=_handler(run, render))
        return parser

    command("ls", "list the experiments of a store with run counts by status", _ls, render_ls)
    status = command(
        "status", "status of a launch (the metalab.reconnect view)", _status, render_status
    )
    status.add_argument(
        "experiment",
        metavar="EXPERIMENT",
        nargs="?",
        default=None,
        help="experiment ID (name:version) or unique name; default: the latest launch",
    )
    status.add_argument(
        "--watch",
        metavar="SECONDS",
        nargs="?",
        type=_positive_float,
        const=2.0,
        default=None,
        help="refresh every SECONDS (default 2) until complete; Ctrl-C stops watching",
    )
    show = command(
        "show", "params, metrics, error, log tail and artifacts of a run", _show, render_show
    )
    show.add_argument("run_id", metavar="RUN_ID", help="a run ID or a unique prefix of one")
    show.add_argument("--tail", metavar="N", type=_count, default=_SHOW_TAIL, help="log lines")
    logs = command("logs", "the log of one run, or of every failed run", _logs, render_logs)
    logs.add_argument("run_id", metavar="RUN_ID", nargs="?", default=None, help="run ID or prefix")
    logs.add_argument("--failed", action="store_true", help="every failed run's log")
    logs.add_argument("--experiment", default=None, help="only runs of this experiment")
    logs.add_argument("--tail", metavar="N", type=_count, default=None, help="last N lines")
    cancel = command("cancel", "cancel the live launch of an experiment", _cancel, render_cancel)
    cancel.add_argument("experiment", metavar="EXPERIMENT", help="experiment ID or unique name")


register_command(add_inspect_commands)
