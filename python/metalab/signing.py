"""Authenticate every payload that carries pickled code before it is unpickled.

Who can run code as whom
------------------------
Unpickling runs code, and a store is shared: a co-user with write access to a FileStore
directory, or a second PostgreSQL role with ``UPDATE`` on the ``blobs`` table, can replace
any payload in it. So everything metalab unpickles from a store is *sealed*: the payload's
exact bytes carry an HMAC-SHA256 made with a secret key that only your account can read.

* **You** run code as yourself: the experiment spec (operation, context class, pickled
  contexts and the ``sys_path`` that decides what workers import), the derived-metric
  functions of a SLURM submission and pickled artifacts are sealed when you write them
  and checked, before anything is unpickled, wherever they are read: ``reconnect``, SLURM
  workers, ``run.artifact(..., allow_pickle=True)``, whatever the store (FileStore,
  PostgresStore, FallbackStore). SLURM workers run as you with your ``HOME``, so they read
  the same key.
* **A co-user** who can write the store cannot make you run their code: a payload they
  wrote or changed fails the check (:class:`~metalab.errors.SignatureError`) and is never
  unpickled. A payload you sealed for one purpose (derived functions, an artifact) cannot
  be swapped in for another (a spec), nor the spec of one experiment for another's: the
  purpose and its name are inside the MAC. What a co-user *can* still do is delete or
  garble payloads (your runs then stop with that error instead of running), and replay
  one of your own payloads under the same name (an older spec of the same experiment,
  the same-named pickle artifact of another run): your code, never theirs.
* **Anyone who can read your key file** can forge payloads as you. It is created ``0600``
  on first use, and metalab refuses a key file that is foreign-owned or readable or
  writable by others, in a directory that is foreign-owned or writable by others
  (:mod:`metalab.trust`). ``root`` can always run code as you.
* **You, loading someone else's pickles** (a colleague's store, artifacts stored before
  pickles were sealed): refused unless you say ``allow_pickle="unverified"``, which runs
  the writer's code as you.

The key
-------
``~/.metalab/signing.key`` (64 hex digits), or the file named by ``$METALAB_KEY_FILE``
on clusters whose nodes do not share your home directory (copy the key there, mode
``0600``, or point the variable at a shared private directory). Deleting or replacing the
key makes every payload sealed with the old one unreadable: re-run those launches.

The sealed format is one header line, then the payload unchanged::

    metalab-sealed-v1 <key id: 16 hex> <HMAC-SHA256: 64 hex>\\n<payload bytes>

The key id (an HMAC of a constant, so it reveals nothing about the key) only serves the
error message: it tells "sealed with another key" from "altered after sealing".
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
from pathlib import Path

from metalab.errors import SignatureError, UnsafeLoadError
from metalab.trust import read_trusted, verify_trusted

__all__ = [
    "KEY_FILE_ENV",
    "MAGIC",
    "is_sealed",
    "key_path",
    "load_key",
    "open_sealed",
    "seal",
    "unseal_unverified",
]

KEY_FILE_ENV = "METALAB_KEY_FILE"
"""Environment variable naming the key file (default ``~/.metalab/signing.key``)."""

MAGIC = b"metalab-sealed-v1 "
"""First bytes of every sealed payload."""

_KEY_BYTES = 32
_ID_HEX = 16
_MAC_HEX = 64
_HEADER_LEN = len(MAGIC) + _ID_HEX + 1 + _MAC_HEX + 1
_DOMAIN = b"metalab-seal-v1\x00"
_HEX_ID = re.compile(rb"[0-9a-f]{%d}" % _ID_HEX)


def key_path() -> Path:
    """The signing key file: ``$METALAB_KEY_FILE`` if set, else ``~/.metalab/signing.key``."""
    override = os.environ.get(KEY_FILE_ENV, "").strip()
    if override:
        # Absolute, so a worker started in another directory finds the same file.
        return Path(os.path.abspath(os.path.expanduser(override)))
    return Path.home() / ".metalab" / "signing.key"


def _check_directory(directory: Path, *, create: bool) -> None:
    """The key's directory must be ours and closed to writers other than us.

    A directory others may write lets them delete the key or rename files around it.
    Group/other *read* is allowed: the key file itself is 0600, and ``~/.metalab`` may
    already exist with the default mode (``metalab postgres`` keeps its state there).

    Raises:
        UntrustedFileError: foreign-owned or group/other-writable.
        UnsafeLoadError: ``create`` and it does not exist and cannot be created.
    """
    if create:
        try:
            # Only the last component: a missing home directory is not ours to create.
            directory.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise UnsafeLoadError(
                f"cannot create the directory {str(directory)!r} of the metalab signing "
                f"key: {exc.strerror or exc}; create it (mode 0700) or set ${KEY_FILE_ENV} "
                f"to a file in a private directory"
            ) from None
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return  # no directory, so no key: the caller reports the missing key
    verify_trusted(st, directory, "signing key directory")


def _parse_key(data: bytes, path: Path) -> bytes:
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) < _KEY_BYTES:
        raise UnsafeLoadError(
            f"the metalab signing key file {str(path)!r} is malformed: expected at least "
            f"{2 * _KEY_BYTES} hexadecimal digits. Delete it to make a new key (payloads "
            f"sealed with the old key can then not be loaded; re-run those launches)"
        )
    return key


def _create_key(path: Path) -> None:
    """Create the key file unless it exists; concurrent first users agree on one key.

    The key is written completely to a private temporary name, then hard-linked to its
    final name: ``link`` fails if the name exists, so the first writer wins and nobody
    can ever read a half-written key (``rename`` would let a later writer replace it).
    """
    import secrets  # here: only the first use on an account creates the key

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # a umask such as 0o377 must not leave it unreadable to us
            os.write(fd, secrets.token_bytes(_KEY_BYTES).hex().encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):  # another process was first: use its key
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # durability of the new name; best effort
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _read_key(path: Path, *, create: bool) -> bytes | None:
    """The key stored at ``path`` (made first when ``create``), or None if there is none."""
    _check_directory(path.parent, create=create)
    data = read_trusted(path, "signing key", private=True)
    if data is None and create:
        try:
            _create_key(path)
        except OSError as exc:
            raise UnsafeLoadError(
                f"cannot create the metalab signing key {str(path)!r}: {exc.strerror or exc}"
            ) from None
        data = read_trusted(path, "signing key", private=True)
    return None if data is None else _parse_key(data, path)


def load_key(*, create: bool = True) -> bytes:
    """Return this account's signing key, creating it (0600) on first use.

    Args:
        create: make the key when it does not exist yet (sealing); checking a payload
            needs no new key, since nothing can have been sealed with it.

    Raises:
        UntrustedFileError: the key file or its directory is foreign-owned or open to
            others (the key file: readable or writable by group/others).
        UnsafeLoadError: the key file is malformed, cannot be created, or (``create=False``)
            does not exist.
    """
    path = key_path()
    key = _read_key(path, create=create)
    if key is None:
        raise UnsafeLoadError(
            f"there is no metalab signing key at {str(path)!r}, so nothing sealed by this "
            f"account can be checked"
        )
    return key


def _key_id(key: bytes) -> bytes:
    return hmac.new(key, b"metalab-key-id", hashlib.sha256).hexdigest()[:_ID_HEX].encode()


def _mac(key: bytes, purpose: str, data: bytes) -> bytes:
    # The purpose is length-prefixed, so no (purpose, data) pair can collide with another.
    label = purpose.encode("utf-8")
    digest = hmac.new(key, _DOMAIN, hashlib.sha256)
    digest.update(len(label).to_bytes(4, "big") + label)
    digest.update(data)
    return digest.hexdigest().encode("ascii")


def seal(data: bytes, purpose: str) -> bytes:
    """Return ``data`` prefixed with its HMAC for ``purpose`` under this account's key.

    Args:
        data: the exact payload bytes (stored unchanged after the header line).
        purpose: what the payload is and which one, e.g. ``"spec:exp:1"``; a payload
            only opens for the same purpose.

    Raises:
        UntrustedFileError, UnsafeLoadError: see :func:`load_key`.
    """
    key = load_key()
    return MAGIC + _key_id(key) + b" " + _mac(key, purpose, data) + b"\n" + data


def is_sealed(blob: bytes) -> bool:
    """True when ``blob`` starts like a sealed payload (says nothing about its validity)."""
    return blob.startswith(MAGIC)


def _refuse(what: str, reason: str, path: Path) -> SignatureError:
    return SignatureError(
        f"refusing to unpickle {what}: {reason}. It was written by another account or "
        f"changed after it was written; re-run the launch from the submitting account. If "
        f"this account submitted it, the key file {str(path)!r} changed since",
        what=what,
    )


def open_sealed(blob: bytes, purpose: str, what: str) -> bytes:
    """Return the payload of a :func:`seal`-ed ``blob`` after checking its HMAC.

    Args:
        blob: the stored bytes.
        purpose: the purpose it must have been sealed for.
        what: names the payload in the error, e.g. ``"spec blob 'spec-e:1.json'"``.

    Raises:
        SignatureError: ``blob`` is unsealed, truncated, sealed with another key or for
            another purpose, or altered after sealing; nothing of it should be used.
        UntrustedFileError, UnsafeLoadError: the key file is unsafe or missing.
    """
    path = key_path()
    if not is_sealed(blob):
        raise _refuse(
            what,
            "it carries no metalab signature (or was stored by a metalab without signing)",
            path,
        )
    id_end = len(MAGIC) + _ID_HEX
    key_id, mac = blob[len(MAGIC) : id_end], blob[id_end + 1 : _HEADER_LEN - 1]
    if len(blob) < _HEADER_LEN or blob[id_end : id_end + 1] != b" " or blob[_HEADER_LEN - 1] != 10:
        raise _refuse(what, "its signature header is malformed", path)
    key = _read_key(path, create=False)
    if key is None:
        raise _refuse(what, f"this account has no signing key at {str(path)!r} yet", path)
    payload = blob[_HEADER_LEN:]
    ours = _key_id(key)
    # Every byte counts: the key id must be ours too, not only the MAC right.
    if not hmac.compare_digest(key_id, ours):
        # The stored id is the writer's choice: shown only when it is plain hex.
        shown = key_id.decode() if _HEX_ID.fullmatch(key_id) else repr(key_id)
        reason = (
            f"it was sealed with another key (key id {shown}; this account's is {ours.decode()})"
        )
    elif not hmac.compare_digest(mac, _mac(key, purpose, payload)):
        reason = (
            f"its signature does not match its contents (altered after sealing, or sealed "
            f"as something other than {purpose!r})"
        )
    else:
        return payload
    raise _refuse(what, reason, path)


def unseal_unverified(blob: bytes) -> bytes:
    """Return the payload of ``blob`` WITHOUT checking it (legacy or foreign pickles).

    Only for an explicit opt-out such as ``run.artifact(name, allow_pickle="unverified")``:
    whoever wrote the blob runs code as you when it is unpickled.
    """
    if is_sealed(blob) and len(blob) >= _HEADER_LEN:
        return blob[_HEADER_LEN:]
    return blob
