"""Payloads carrying pickled code, changed in a FileStore, are refused before unpickling.

Each test performs the attack: the spec, the SLURM derived-metric blob or a pickle
artifact is replaced by one whose unpickling creates a marker file, and the victim's
``reconnect``, SLURM worker command or ``run.artifact(..., allow_pickle=True)`` must
refuse it with :class:`SignatureError` without the marker ever appearing. FileStore
already refuses blobs another Unix user owns, so the blob is rewritten in place with the
owner's permissions (what a compromised group-writable parent or a restored backup
allows); PostgreSQL, where rows have no owner, is in ``tests/postgres/test_pg_blob_tamper.py``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

import metalab
from metalab.errors import CaptureError, SignatureError
from metalab.runner import spec_key
from metalab.signing import KEY_FILE_ENV
from metalab.store.file import FileStore
from payload_attacks import (
    Touch,
    evil_spec,
    experiment,
    overwrite_in_place,
    run_worker,
    write_submission,
    y_plus_one,
)


@pytest.fixture(autouse=True)
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This account's signing key, private to the test (workers inherit the variable)."""
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv(KEY_FILE_ENV, str(directory / "signing.key"))
    return directory / "signing.key"


def test_reconnect_refuses_a_spec_rewritten_in_place(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    metalab.run(experiment(), store=store_dir).result()
    assert metalab.reconnect(store_dir).status.completed == 3  # the untampered spec loads
    blob_path = FileStore(store_dir).layout.blob(spec_key("tamper:1"))
    marker = tmp_path / "pwned"
    overwrite_in_place(blob_path, evil_spec(blob_path.read_bytes(), marker))
    with pytest.raises(SignatureError, match="re-run the launch from the submitting account"):
        metalab.reconnect(store_dir)
    assert not marker.exists()


def test_worker_runs_an_untampered_submission(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    key = write_submission(store, [y_plus_one])
    done = run_worker(store, key)
    assert done.returncode == 0, done.stderr
    results = metalab.load_results(store)
    assert sorted(r.derived["y1"] for r in results) == [2, 5, 10]


def test_worker_refuses_a_tampered_spec_and_runs_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    write_submission(store)
    blob_path = store.layout.blob(spec_key("tamper:1"))
    marker = tmp_path / "pwned"
    overwrite_in_place(blob_path, evil_spec(blob_path.read_bytes(), marker))
    done = run_worker(store, None)
    assert done.returncode == 3
    assert "SignatureError" in done.stderr and "nothing was executed" in done.stderr
    assert "re-run the launch from the submitting account" in done.stderr
    assert not marker.exists()
    assert len(metalab.load_results(store)) == 0  # not even the legitimate runs


def test_worker_refuses_a_tampered_derived_blob_and_runs_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    key = write_submission(store, [y_plus_one])
    assert key is not None
    marker = tmp_path / "pwned"
    overwrite_in_place(store.layout.blob(key), pickle.dumps([Touch(marker)]))
    done = run_worker(store, key)
    assert done.returncode == 3
    assert f"blob {key!r}" in done.stderr and "SignatureError" in done.stderr
    assert not marker.exists()
    assert len(metalab.load_results(store)) == 0


def test_a_valid_derived_blob_cannot_stand_in_for_the_spec(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    key = write_submission(store, [y_plus_one])
    assert key is not None
    spec_path = store.layout.blob(spec_key("tamper:1"))
    overwrite_in_place(spec_path, store.layout.blob(key).read_bytes())  # sealed by us
    done = run_worker(store, None)
    assert done.returncode == 3 and "does not match its contents" in done.stderr


@metalab.operation
def keeps_objects(params, capture):  # type: ignore[no-untyped-def]
    """Stores two pickle artifacts."""
    capture.artifact("model", {"weights": [params["x"]]}, kind="pickle")
    capture.artifact("other", {"weights": [-1]}, kind="pickle")


def _pickle_run(store_dir: Path) -> metalab.Run:
    exp = metalab.Experiment(
        name="pickles",
        version="1",
        context={},
        operation=keeps_objects,
        params=metalab.grid(x=[7]),
        seeds=metalab.seeds(base=1, replicates=1),
    )
    (run,) = metalab.run(exp, store=store_dir).result()
    assert run.artifact("model", allow_pickle=True) == {"weights": [7]}
    return run


def test_a_rewritten_pickle_artifact_is_refused_even_with_allow_pickle(tmp_path: Path) -> None:
    run = _pickle_run(tmp_path / "store")
    store = FileStore(tmp_path / "store")
    path = store.layout.artifact(run.run_id, "model.pkl")
    marker = tmp_path / "pwned"
    overwrite_in_place(path, pickle.dumps(Touch(marker)))
    with pytest.raises(SignatureError, match="pickle artifact 'model'"):
        run.artifact("model", allow_pickle=True)
    assert not marker.exists()
    # The explicit, documented escape hatch runs whatever is there:
    run.artifact("model", allow_pickle="unverified")
    assert marker.exists()


def test_a_pickle_artifact_cannot_be_swapped_for_another(tmp_path: Path) -> None:
    run = _pickle_run(tmp_path / "store")
    layout = FileStore(tmp_path / "store").layout
    sealed_other = layout.artifact(run.run_id, "other.pkl").read_bytes()
    overwrite_in_place(layout.artifact(run.run_id, "model.pkl"), sealed_other)
    with pytest.raises(SignatureError, match="does not match its contents"):
        run.artifact("model", allow_pickle=True)
    assert run.artifact("model", allow_pickle="unverified") == {"weights": [-1]}


def test_allow_pickle_takes_only_its_documented_values(tmp_path: Path) -> None:
    run = _pickle_run(tmp_path / "store")
    with pytest.raises(CaptureError, match="False, True or 'unverified'"):
        run.artifact("model", allow_pickle="yes")  # type: ignore[arg-type]
    from metalab.capture import deserialize

    with pytest.raises(CaptureError, match="needs name="):
        deserialize("pickle", b"", allow_pickle=True)
