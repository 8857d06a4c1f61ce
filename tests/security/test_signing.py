"""The signing key and the seal that authenticates every payload carrying pickled code."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import stat
from pathlib import Path

import pytest

from metalab.errors import SignatureError, UnsafeLoadError, UntrustedFileError
from metalab.signing import KEY_FILE_ENV, MAGIC, key_path, load_key, open_sealed, seal
from other_user import other_uid_gid, run_as_other_user, shared_dir


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh key location in a private directory, named by the environment variable."""
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    path = directory / "signing.key"
    monkeypatch.setenv(KEY_FILE_ENV, str(path))
    return path


def test_seal_then_open_returns_the_exact_bytes(key_file: Path) -> None:
    data = b'{"operation": "\x00\xff binary"}\n' * 3
    blob = seal(data, "spec:e:1")
    assert blob.startswith(MAGIC) and blob.endswith(data)
    assert open_sealed(blob, "spec:e:1", "spec blob") == data
    assert seal(data, "spec:e:1") == blob  # deterministic: same key, same payload


def _flip(blob: bytes, position: int) -> bytes:
    changed = bytearray(blob)
    changed[position] ^= 0x01
    return bytes(changed)


@pytest.mark.parametrize(
    ("label", "tamper"),
    [
        ("payload byte", lambda b: _flip(b, len(b) - 3)),
        ("MAC byte", lambda b: _flip(b, len(MAGIC) + 20)),
        ("key id byte", lambda b: _flip(b, len(MAGIC) + 2)),
        ("appended byte", lambda b: b + b" "),
        ("truncated payload", lambda b: b[:-1]),
        ("truncated header", lambda b: b[: len(MAGIC) + 10]),
        ("header removed", lambda b: b[b.index(b"\n") + 1 :]),
        ("empty", lambda b: b""),
    ],
)
def test_any_change_is_refused(key_file: Path, label: str, tamper: object) -> None:
    blob = seal(b'{"spec": 1, "operation": "gASV"}', "spec:e:1")
    assert callable(tamper)
    with pytest.raises(SignatureError) as caught:
        open_sealed(tamper(blob), "spec:e:1", "spec blob 'spec-e:1.json'")
    message = str(caught.value)
    assert "spec blob 'spec-e:1.json'" in message, label
    assert "re-run the launch from the submitting account" in message
    assert str(key_file) in message  # "if this account submitted it, the key file X changed"
    assert caught.value.what == "spec blob 'spec-e:1.json'"


@pytest.mark.parametrize(
    ("sealed_as", "opened_as"),
    [
        ("derived:slurm-1-derived", "spec:e:1"),  # a valid derived blob swapped in as a spec
        ("spec:other:1", "spec:e:1"),  # another experiment's spec
        ("artifact:model", "artifact:weights"),  # another artifact's pickle
        ("spec:e:1", "spec:e:1 "),
    ],
)
def test_a_payload_opens_only_for_its_purpose(
    key_file: Path, sealed_as: str, opened_as: str
) -> None:
    blob = seal(b"payload", sealed_as)
    with pytest.raises(SignatureError, match="does not match its contents"):
        open_sealed(blob, opened_as, "blob")


def test_a_payload_sealed_with_another_key_is_refused(
    key_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other-account"
    other.mkdir(mode=0o700)
    monkeypatch.setenv(KEY_FILE_ENV, str(other / "signing.key"))
    forged = seal(b"payload", "spec:e:1")  # a co-user sealing with their own key
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))
    seal(b"anything", "spec:e:1")  # this account's key now exists too
    with pytest.raises(SignatureError, match="sealed with another key"):
        open_sealed(forged, "spec:e:1", "blob")


def test_key_is_created_0600_in_a_0700_metalab_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    old_umask = os.umask(0)  # the most permissive umask must not leak into the modes
    try:
        seal(b"x", "spec:e:1")
    finally:
        os.umask(old_umask)
    path = tmp_path / ".metalab" / "signing.key"
    assert key_path() == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(bytes.fromhex(path.read_text().strip())) == 32
    assert [p.name for p in path.parent.iterdir()] == ["signing.key"]  # no temporaries left


def test_an_existing_metalab_directory_readable_by_others_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `metalab postgres start` makes ~/.metalab with the default mode; the key stays 0600.
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".metalab").mkdir(mode=0o755)
    (tmp_path / ".metalab").chmod(0o755)
    assert open_sealed(seal(b"x", "p"), "p", "blob") == b"x"


def _create_in_child(barrier: object, queue: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    queue.put(load_key().hex())  # type: ignore[attr-defined]


def test_concurrent_first_users_end_up_with_one_key(key_file: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    n = 8
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    children = [ctx.Process(target=_create_in_child, args=(barrier, queue)) for _ in range(n)]
    for child in children:
        child.start()
    keys = [queue.get(timeout=60) for _ in range(n)]
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    assert len(set(keys)) == 1
    assert bytes.fromhex(key_file.read_text().strip()).hex() == keys[0]
    assert [p.name for p in key_file.parent.iterdir()] == ["signing.key"]


def test_env_override_names_the_key_file(
    key_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    blob = seal(b"x", "p")
    assert key_path() == key_file and key_file.is_file()
    assert not (tmp_path / "home" / ".metalab").exists()
    key_file.write_text(os.urandom(32).hex() + "\n")  # the key changed: old seals fail
    with pytest.raises(SignatureError, match=str(key_file)):
        open_sealed(blob, "p", "blob")


def test_checking_never_creates_a_key(key_file: Path) -> None:
    with pytest.raises(SignatureError, match="no signing key"):
        open_sealed(MAGIC + b"0" * 16 + b" " + b"0" * 64 + b"\npayload", "p", "blob")
    assert not key_file.exists()


def test_a_group_readable_key_file_is_refused(key_file: Path) -> None:
    seal(b"x", "p")
    key_file.chmod(0o640)
    with pytest.raises(UntrustedFileError, match="only its owner can read or write"):
        seal(b"x", "p")


def test_a_malformed_key_file_is_an_error_naming_it(key_file: Path) -> None:
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not hex\n")
    os.close(fd)
    with pytest.raises(UnsafeLoadError, match="malformed: expected at least 64 hex"):
        seal(b"x", "p")


def test_a_foreign_owned_key_file_is_refused(key_file: Path) -> None:
    uid, gid = other_uid_gid()
    blob = seal(b"x", "p")
    os.chown(key_file, uid, gid)  # e.g. a key another account left in our directory
    for attempt in (lambda: seal(b"x", "p"), lambda: open_sealed(blob, "p", "blob")):
        with pytest.raises(UntrustedFileError) as caught:
            attempt()
        assert caught.value.owner_uid == uid and caught.value.path == str(key_file)


def test_a_key_planted_by_another_user_in_a_shared_directory_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = shared_dir()
    try:
        planted = shared / "signing.key"
        known = os.urandom(32).hex()

        def plant() -> None:  # as nobody: a key the attacker knows, so they could forge
            fd = os.open(planted, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, known.encode() + b"\n")
            os.close(fd)
            (shared / "theirs").mkdir(mode=0o755)  # a directory of their own, key inside
            os.link(planted, shared / "theirs" / "signing.key")

        run_as_other_user(plant)
        monkeypatch.setenv(KEY_FILE_ENV, str(planted))
        for path in (planted, shared / "theirs" / "signing.key"):
            monkeypatch.setenv(KEY_FILE_ENV, str(path))
            with pytest.raises(UntrustedFileError, match="signing key directory"):
                seal(b"x", "p")
            assert path.read_text().strip() == known  # refused, not overwritten
        inner = shared / "mine"
        inner.mkdir(mode=0o700)
        monkeypatch.setenv(KEY_FILE_ENV, str(inner / "signing.key"))
        assert open_sealed(seal(b"x", "p"), "p", "blob") == b"x"  # a private subdir works
    finally:
        shutil.rmtree(shared)
