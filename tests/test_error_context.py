"""Errors carry their context as fields (run, file, exit code), set on real failures."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab.errors import (
    CorruptRecordError,
    ExecutorError,
    ServiceError,
    StoreError,
    WorkerCrashedError,
)
from metalab.executors.process import ProcessExecutor
from metalab.keys import launch_key, spec_key
from metalab.plan_loading import load_plan
from metalab.store.file import FileStore


@metalab.operation
def square(params: dict[str, Any], capture: Any) -> None:
    capture.metric("square", params["x"] ** 2)


def _exp(n: int = 3, name: str = "ctx") -> metalab.Experiment:
    return metalab.Experiment(
        name=name,
        version="1",
        context={},
        operation=square,
        params=metalab.grid(x=list(range(n))),
        seeds=metalab.seeds(0),
    )


def test_workers_dying_at_start_up_raise_worker_crashed_with_their_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real child processes that exit with status 3 before they are ready.
    import metalab.executors.process as process_module

    def die(conn: Any, inherited: Any = None) -> None:
        os._exit(3)

    monkeypatch.setattr(process_module, "_worker_main", die)
    handle = metalab.run(
        _exp(4), store=tmp_path / "s", executor=ProcessExecutor(2, mp_context="fork")
    )
    with pytest.raises(WorkerCrashedError) as info:
        handle.result(timeout=30)
    error = info.value
    assert error.exit_code == 3
    assert error.run_id is None  # nothing was running
    assert isinstance(error, ExecutorError)  # what the launch raised before keeps matching
    assert "keep dying" in str(error) and "3" in str(error)


def test_corrupt_record_error_names_the_file(tmp_path: Path) -> None:
    handle = metalab.run(_exp(2), store=tmp_path / "s")
    handle.result(timeout=60)
    store = FileStore(tmp_path / "s")
    run_id = handle.run_ids[0]
    path = store.layout.record(run_id)
    path.write_bytes(b'{"run_id": "truncated')
    with pytest.raises(CorruptRecordError) as info:
        store.get_record(run_id)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)


def test_a_store_without_the_spec_says_which_blob_is_missing(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "empty")
    with pytest.raises(StoreError) as info:
        load_plan(store, "nothing:1")
    assert info.value.path == spec_key("nothing:1") == "spec-nothing:1.json"
    assert info.value.locator == store.locator
    assert "spec-nothing:1.json" in str(info.value)


def test_load_plan_rebuilds_the_stored_plan(tmp_path: Path) -> None:
    handle = metalab.run(_exp(3), store=tmp_path / "s", executor=ProcessExecutor(1))
    handle.result(timeout=60)
    plan = load_plan(FileStore(tmp_path / "s"), "ctx:1")
    assert plan.run_ids == handle.run_ids
    assert plan.context_fp == handle.plan.context_fp


def test_reconnect_errors_name_the_store_and_the_pointer_blob(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s")
    with pytest.raises(StoreError) as missing:
        metalab.reconnect(store)
    assert missing.value.path == launch_key() == "launch-latest.json"
    assert missing.value.locator == store.locator
    store.put_blob(launch_key(), b"{not json")
    with pytest.raises(CorruptRecordError) as garbled:
        metalab.reconnect(store)
    assert garbled.value.path == "launch-latest.json"
    assert garbled.value.locator == store.locator
    store.put_blob(launch_key(), json.dumps({"experiment_id": 7}).encode())
    with pytest.raises(CorruptRecordError) as wrong:
        metalab.reconnect(store)
    assert wrong.value.path == "launch-latest.json"


def test_a_garbled_service_file_is_a_service_error_naming_it(tmp_path: Path) -> None:
    from metalab.service import discover_service

    service_dir = tmp_path / "s" / "services" / "postgres"
    service_dir.mkdir(parents=True, mode=0o700)
    service_file = service_dir / "service.json"
    fd = os.open(service_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b'{"host": ')
    os.close(fd)
    with pytest.raises(ServiceError) as info:
        discover_service(FileStore(tmp_path / "s"))
    assert info.value.path == str(service_file)
    assert "not valid JSON" in str(info.value)


@metalab.operation
def stalls(params: dict[str, Any], capture: Any) -> None:
    import time

    time.sleep(30)


def test_a_slurm_worker_timeout_names_the_run_and_its_limit(tmp_path: Path) -> None:
    # What the driver stores before sbatch, then the array task's own command line.
    import subprocess
    import sys

    from metalab.plan import RunPlan
    from metalab.spec import experiment_to_spec, spec_to_bytes

    exp = metalab.Experiment(
        name="stall",
        version="1",
        context={},
        operation=stalls,
        params=metalab.grid(x=[0]),
        seeds=metalab.seeds(0),
    )
    store = FileStore(tmp_path / "s")
    plan = RunPlan(exp)
    spec = experiment_to_spec(exp)
    spec["context_fingerprint"] = plan.context_fp
    store.put_blob(spec_key(exp.experiment_id), spec_to_bytes(spec, exp.experiment_id))
    argv = [sys.executable, "-m", "metalab.worker", "--store", store.locator]
    argv += ["--experiment", "stall:1", "--array-task", "0", "--timeout", "0.5"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    run_id = plan.run_ids[0]
    record = store.get_record(run_id)
    assert record is not None and record.error is not None
    assert record.error.type == "RunTimeoutError"
    assert run_id in record.error.message and "0.5s" in record.error.message


def test_an_unreachable_postgres_store_names_its_locator() -> None:
    # A real connection attempt to a port nothing listens on (connection refused).
    import socket

    from metalab.errors import StoreUnavailableError
    from metalab.store.locator import create_store

    with socket.socket() as probe:  # a free port, closed again: nobody answers there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = create_store(f"postgresql://metalab@127.0.0.1:{port}/metalab?connect_timeout=2")
    try:
        with pytest.raises(StoreUnavailableError) as info:
            store.get_blob(spec_key("e:1"))
    finally:
        store.close()
    assert info.value.locator == store.locator
    assert f"127.0.0.1:{port}" in str(info.value.locator)


def test_a_malformed_password_file_names_itself(tmp_path: Path) -> None:
    from metalab.store.credentials import read_passfile

    path = tmp_path / "pass"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"host:5432:db\n")
    os.close(fd)
    with pytest.raises(StoreError) as info:
        read_passfile(path)
    assert info.value.path == str(path)
    assert "line 1" in str(info.value)


def _raise_slurm_error() -> None:
    from metalab.errors import SlurmError

    raise SlurmError("sbatch refused", command=("sbatch",), exit_code=1, stderr="no partition")


CONTEXT_ERRORS = [
    ("SlurmError", {"command": ("sbatch", "-p", "x"), "exit_code": 1, "stderr": "e"}),
    ("WorkerCrashedError", {"run_id": "ab" * 32, "exit_code": -9}),
    ("StoreError", {"locator": "file:///s", "path": "/s/runs/ab/x.json"}),
    ("CorruptRecordError", {"path": "/s/runs/ab/x.json"}),
    ("UnsafeNameError", {"name": "../x"}),
    ("RunTimeoutError", {"run_id": "r", "timeout": 2.5}),
    ("ResultTimeoutError", {"experiment_id": "e:1", "timeout": 0.5}),
    ("ServiceError", {"path": "/home/u/.metalab/postgres"}),
    ("UntrustedFileError", {"path": "/x", "owner_uid": 1000, "mode": 0o666}),
    ("SignatureError", {"what": "spec blob 'spec-e:1.json'"}),
]


@pytest.mark.parametrize(("name", "fields"), CONTEXT_ERRORS)
def test_errors_keep_their_fields_through_pickle_and_copy(
    name: str, fields: dict[str, Any]
) -> None:
    import copy
    import pickle

    from metalab import errors

    error = getattr(errors, name)(f"{name} happened", **fields)
    error.add_note("and a note")
    for twin in (pickle.loads(pickle.dumps(error)), copy.deepcopy(error), copy.copy(error)):
        assert type(twin) is type(error)
        assert str(twin) == str(error) and twin.args == error.args
        assert {key: getattr(twin, key) for key in fields} == fields
        assert twin.__notes__ == ["and a note"]


def test_a_process_pool_hands_back_the_error_with_its_fields() -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from metalab.errors import SlurmError

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        future = pool.submit(_raise_slurm_error)
        with pytest.raises(SlurmError) as info:
            future.result(timeout=60)
    assert info.value.exit_code == 1 and info.value.stderr == "no partition"
    assert info.value.command == ("sbatch",)


@metalab.operation
def too_big(params: dict[str, Any], capture: Any) -> None:
    capture.artifact("blob", b"x" * (2 << 20))  # 2 MiB on a 1 MiB file system


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_full_disk_store_error_names_the_store(tmp_path: Path, executor: str) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from small_disk import mounted_small_disk

    with mounted_small_disk(tmp_path / "disk") as disk:
        exp = metalab.Experiment("full", "1", {}, too_big, metalab.grid(x=[0]), metalab.seeds(0))
        runner = ProcessExecutor(1) if executor == "process" else None
        with pytest.raises(StoreError, match="No space left on device") as info:
            metalab.run(exp, store=disk / "s", executor=runner).result(timeout=120)
        assert info.value.locator == FileStore(disk / "s").locator
