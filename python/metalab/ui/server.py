"""``metalab ui STORE``: open the store read-only and serve the dashboard with uvicorn."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import TextIO

from metalab.cli import register_command
from metalab.errors import LocatorError
from metalab.store.locator import create_store, to_locator
from metalab.ui.auth import is_loopback, new_token

__all__ = ["DEFAULT_PORT", "add_command", "banner", "serve"]

DEFAULT_PORT = 8765


def banner(host: str, port: int, store: str, token: str | None) -> str:
    """What ``metalab ui`` prints at start: where it listens, and the token if one is needed."""
    shown = f"[{host}]" if ":" in host else host
    lines = [f"metalab ui: serving {store} (read-only)"]
    if token is None:
        lines.append(f"  listening on http://{shown}:{port}/ - loopback only (this machine)")
        lines.append(
            f"  from a laptop: ssh -L {port}:localhost:{port} LOGIN-NODE, then open "
            f"http://localhost:{port}/"
        )
    else:
        lines.append(f"  listening on http://{shown}:{port}/ - reachable from other machines")
        lines.append(f"  every request needs the token: http://{shown}:{port}/?token={token}")
        lines.append(f"  (scripts: header X-Metalab-Token: {token})")
    return "\n".join(lines)


def serve(
    store: str,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    refresh_s: float = 3.0,
    token: str | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """Serve the dashboard of ``store`` until interrupted.

    A non-loopback ``host`` always gets a token (``token``, or a fresh random one), which
    is printed with the address.

    Raises:
        LocatorError: ``store`` is not a store locator.
        ImportError: the ``metalab[ui]`` extra is not installed.
    """
    try:
        import uvicorn

        from metalab.ui.app import create_app
        from metalab.ui.data import StoreData
    except ImportError as exc:
        raise ImportError(
            f"metalab ui needs fastapi, uvicorn, jinja2, plotly and pandas ({exc}): "
            "pip install 'metalab[ui]'"
        ) from exc
    opened = create_store(store)
    name = to_locator(opened)
    if not is_loopback(host):
        token = token or new_token()
    data = StoreData(opened, refresh_s=refresh_s)
    app = create_app(data, name, token)
    threading.Thread(target=data.warm, name="metalab-ui-warm", daemon=True).start()
    print(banner(host, port, name, token), file=out, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _run(args: argparse.Namespace) -> int:
    try:
        serve(args.store, args.host, args.port, args.refresh)
    except (ImportError, LocatorError) as exc:
        print(f"metalab ui: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``metalab ui`` to the CLI's sub-commands."""
    parser = sub.add_parser(
        "ui",
        help="web dashboard of a store (read-only, live)",
        description="Serve a read-only web dashboard of STORE: experiments, runs table, "
        "run pages, plot builder, run comparison. Binds 127.0.0.1 unless --host says "
        "otherwise; a non-loopback host requires the token printed at start.",
    )
    parser.add_argument("store", metavar="STORE", help="a path or store locator")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"({DEFAULT_PORT})")
    parser.add_argument(
        "--refresh", type=float, default=3.0, help="seconds between checks for new runs (3)"
    )
    parser.set_defaults(handler=_run)


register_command(add_command)
