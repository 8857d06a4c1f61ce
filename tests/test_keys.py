"""Blob keys are stored names: they must stay what existing stores hold, and be valid keys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from metalab import keys
from metalab.store.file import FileStore
from metalab.store.layout import check_blob_key

SUB = "20261201T225800-a1b2c3"

EXPECTED: list[tuple[Callable[[str], str], str, str]] = [
    (keys.spec_key, "e:1", "spec-e:1.json"),
    (keys.launch_key, "e:1", "launch-e:1.json"),
    (keys.done_proof_key, "e:1", "done-proof-e:1.json"),
    (keys.checkpoint_key, "ab" * 32, f"checkpoint-{'ab' * 32}"),
    (keys.slurm_tasks_key, SUB, f"slurm-{SUB}-tasks"),
    (keys.slurm_derived_key, SUB, f"slurm-{SUB}-derived"),
    (keys.slurm_cancelled_key, SUB, f"slurm-{SUB}-cancelled"),
    (keys.slurm_resolved_key, SUB, f"slurm-{SUB}-resolved"),
    (keys.slurm_retry_key, SUB, f"slurm-{SUB}-retry"),
    (keys.slurm_retried_key, SUB, f"slurm-{SUB}-retried"),
    (keys.slurm_waves_key, SUB, f"slurm-{SUB}-waves"),
    (keys.slurm_rest_key, SUB, f"slurm-{SUB}-rest"),
    (keys.slurm_next_key, SUB, f"slurm-{SUB}-next"),
]


@pytest.mark.parametrize(("build", "arg", "expected"), EXPECTED)
def test_keys_keep_their_stored_names_and_are_valid(
    build: Callable[[str], str], arg: str, expected: str
) -> None:
    assert build(arg) == expected
    assert check_blob_key(build(arg)) == expected


def test_the_store_wide_launch_pointer() -> None:
    assert keys.launch_key() == keys.launch_key(None) == "launch-latest.json"


def test_every_public_key_builder_is_checked() -> None:
    assert set(keys.__all__) == {fn.__name__ for fn, _arg, _expected in EXPECTED}


def test_the_old_import_points_build_the_same_keys() -> None:
    from metalab.executors import slurm, slurm_retry
    from metalab.runner import launch_key, spec_key

    assert spec_key("e:1") == keys.spec_key("e:1")
    assert launch_key() == keys.launch_key()
    assert slurm.tasks_key(SUB) == keys.slurm_tasks_key(SUB)
    assert slurm.derived_key(SUB) == keys.slurm_derived_key(SUB)
    assert slurm.cancelled_key(SUB) == keys.slurm_cancelled_key(SUB)
    assert slurm_retry.retry_key(SUB) == keys.slurm_retry_key(SUB)
    assert slurm_retry.retried_key(SUB) == keys.slurm_retried_key(SUB)


def test_a_key_round_trips_through_a_file_store(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s")
    for build, arg, _expected in EXPECTED:
        store.put_blob(build(arg), b"x")
        assert store.get_blob(build(arg)) == b"x"
