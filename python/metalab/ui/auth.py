"""Who may talk to the dashboard: loopback only by default, a token for anything else.

On a loopback address (127.0.0.0/8, ::1, ``localhost``) the dashboard answers only
requests whose ``Host`` header names the loopback too, which stops a web page in the
user's browser from reaching it through DNS rebinding. Bound to any other address, every
request must carry the token printed at start: the ``X-Metalab-Token`` header (or
``Authorization: Bearer TOKEN``) for scripts, ``?token=`` once in a browser, which then
sets an HttpOnly, SameSite=Strict cookie so the pages' own API calls carry it.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = ["COOKIE", "HEADER", "TokenGuard", "is_loopback", "new_token"]

COOKIE = "metalab_token"
HEADER = "x-metalab-token"
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name to bind or a Host header) is this machine only."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A fresh random token (32 bytes, URL-safe)."""
    return secrets.token_urlsafe(32)


def _host_name(header: str) -> str:
    if header.startswith("["):  # [::1]:8765
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class TokenGuard:
    """The access check run before every request (a Starlette HTTP middleware).

    Args:
        token: the token required on every request, or ``None`` on a loopback bind.
    """

    def __init__(self, token: str | None) -> None:
        self.token = token

    def _presented(self, request: Request) -> tuple[str | None, bool]:
        """The token the request carries and whether it came in the query string."""
        header = request.headers.get(HEADER)
        if header:
            return header, False
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), False
        query = request.query_params.get("token")
        if query:
            return query, True
        return request.cookies.get(COOKIE), False

    async def __call__(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Refuse the request (403/401 JSON) or pass it on, setting the cookie if asked."""
        if self.token is None:
            host = _host_name(request.headers.get("host", ""))
            if not is_loopback(host):
                return JSONResponse(
                    {
                        "error": {
                            "type": "Forbidden",
                            "message": f"Host {host!r} is not "
                            "loopback; this dashboard is bound to the loopback only",
                        }
                    },
                    status_code=403,
                )
            return await call_next(request)
        presented, from_query = self._presented(request)
        if presented is None or not secrets.compare_digest(presented.encode(), self.token.encode()):
            return JSONResponse(
                {
                    "error": {
                        "type": "Unauthorized",
                        "message": "missing or wrong token: "
                        "pass ?token=TOKEN (printed at start) or the X-Metalab-Token header",
                    }
                },
                status_code=401,
            )
        response = await call_next(request)
        if from_query:
            response.set_cookie(COOKIE, presented, httponly=True, samesite="strict")
        return response
