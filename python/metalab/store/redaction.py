"""Keeping passwords out of every message, log line and locator shown to a user.

:func:`remember_secret` registers a password (from a locator, a handed-over credential)
and :func:`redact` masks it, and anything shaped like one, in any text. Low in the store
package (it imports nothing of it), so both the locator parser and the credentials
module use it without importing each other.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus, unquote

if TYPE_CHECKING:
    import logging

__all__ = ["mask_locator", "redact", "remember_secret"]

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
# ``password=`` (a query parameter, a libpq keyword, PGPASSWORD=, sslpassword=): a quoted
# value, else everything up to the next '&' or the end of the line. A password may hold
# spaces, so a libpq "password=x host=h" string loses "host=h" too: the safe direction.
_KV_PASSWORD = re.compile(r"(?P<head>password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\n]*)", re.I)
# A locator nested in another one's query (fallback://?primary=postgresql%3A%2F%2F...).
_NESTED_LOCATOR = re.compile(r"%3A%2F%2F", re.I)


def remember_secret(secret: str | None) -> None:
    """Register a password so :func:`redact` masks it wherever it shows up."""
    if secret:
        with _SECRETS_LOCK:
            _SECRETS.add(secret)
        _install_log_filter()


def redact(text: str) -> str:
    """Return ``text`` with passwords replaced by ``***``.

    Masked are: every password seen so far (also in its percent-encoded forms), the
    password of any ``scheme://user:password@host`` URL and any ``password=`` value.
    """
    with _SECRETS_LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        for form in (secret, quote(secret, safe=""), quote_plus(secret, safe="")):
            text = text.replace(form, "***")
    text = "\n".join(_mask_url_password(line) for line in text.split("\n"))
    return _KV_PASSWORD.sub(lambda m: m.group("head") + "***", text)


def _mask_url_password(line: str) -> str:
    """Mask what may be a URL password in one line: from the first ':' after the first
    ``scheme://`` to the line's last '@'.

    This is where ``urlsplit`` finds the password (it splits the userinfo at its *last*
    '@'), and it also covers a password typed with '@', ':', spaces, '/' or '#' left
    unencoded. An '@' later on (``?application_name=me@lab``) masks more than needed:
    the safe direction for text that may hold a password.
    """
    start = _URL_START.search(line)
    if start is None:
        return line
    at = line.rfind("@", start.end())
    colon = line.find(":", start.end(), at) if at >= 0 else -1
    if colon < 0:
        return line
    return line[: colon + 1] + "***" + line[at:]


def mask_locator(locator: str) -> str:
    """Return ``locator`` with any password masked (for error messages).

    A locator nested in another's query (``fallback://?primary=postgresql%3A%2F%2F...``)
    is shown decoded, so that its password is found and masked too.
    """
    text = unquote(locator) if _NESTED_LOCATOR.search(locator) else locator
    return redact(text)


def _redact_record(record: logging.LogRecord) -> bool:
    """Masks passwords in psycopg's own log records (pool connection errors)."""
    message = record.getMessage()
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    return True


def _install_log_filter() -> None:
    # logging is imported here, when a password is first remembered: a FileStore worker
    # (every SLURM array task) masks locators but has no password and needs no logging.
    import logging

    for name in ("psycopg",):
        logger = logging.getLogger(name)
        if _redact_record not in logger.filters:
            logger.addFilter(_redact_record)
