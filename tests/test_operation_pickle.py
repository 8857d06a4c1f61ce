"""How an operation travels to workers: by name when its module has it, else by value.

A SLURM task or process-pool child rebuilds the experiment from its spec; the operation
in it is pickled. Shipped by ``module:qualname`` the task imports the user's module (which
it needs anyway) and no cloudpickle; a function of ``__main__`` (a script, a notebook) or
a nested one has no importable name and still travels by value.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import cloudpickle
import pytest

import metalab
from metalab.errors import ExperimentError
from metalab.operation import Operation


@pytest.fixture
def user_module(tmp_path: Path) -> Iterator[ModuleType]:
    """An importable module ``pickle_ops`` with an operation ``double`` and a class."""
    (tmp_path / "pickle_ops.py").write_text(
        textwrap.dedent(
            """
            import metalab

            @metalab.operation
            def double(params, capture):
                capture.metric("y", 2 * params["x"])

            class Holder:
                @metalab.operation
                def inner(params):
                    return params
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import pickle_ops  # type: ignore[import-not-found]

        yield pickle_ops
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("pickle_ops", None)


def test_an_importable_operation_travels_by_name(user_module: ModuleType) -> None:
    for op in (user_module.double, user_module.Holder.inner):
        payload = cloudpickle.dumps(op)
        assert b"cloudpickle" not in payload  # nothing of it is needed to load
        assert b"pickle_ops" in payload
        assert pickle.loads(payload) is op  # the module's own object, not a copy


def test_a_task_process_rebuilds_it_from_its_module_without_cloudpickle(
    user_module: ModuleType, tmp_path: Path
) -> None:
    payload = cloudpickle.dumps(user_module.double)
    probe = textwrap.dedent(
        f"""
        import pickle, sys
        sys.path.insert(0, {str(tmp_path)!r})
        op = pickle.loads({payload!r})
        import pickle_ops
        assert op is pickle_ops.double, op
        print(op.wants, "cloudpickle" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["('params',", "'capture')", "False"]


def test_a_nested_operation_travels_by_value() -> None:
    def make() -> Operation:
        @metalab.operation
        def local(params):  # type: ignore[no-untyped-def]
            return params["x"] + 1

        return local

    op = make()
    payload = cloudpickle.dumps(op)
    assert b"cloudpickle" in payload  # the function's code itself travels
    copy = pickle.loads(payload)
    assert copy is not op
    assert (copy.wants, copy.reference, copy.func({"x": 41})) == (op.wants, op.reference, 42)


def test_an_operation_of_a_script_travels_by_value(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import cloudpickle
            import metalab

            @metalab.operation
            def from_main(params):
                return params["x"] * 3

            sys.stdout.buffer.write(cloudpickle.dumps(from_main))
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True)
    assert done.returncode == 0, done.stderr
    # Loaded where __main__ is another program: only the by-value code can work there.
    op = pickle.loads(done.stdout)
    assert isinstance(op, Operation)
    assert (op.reference, op.func({"x": 5})) == ("__main__:from_main", 15)


def test_a_name_that_is_no_longer_an_operation_is_said(user_module: ModuleType) -> None:
    payload = cloudpickle.dumps(user_module.double)
    user_module.double = lambda params: None  # the module was edited since submission
    with pytest.raises(ExperimentError, match=r"pickle_ops:double is function, not a metalab"):
        pickle.loads(payload)


def test_the_code_hash_taken_at_submission_is_kept_while_the_source_is_unchanged(
    user_module: ModuleType, tmp_path: Path
) -> None:
    """A task adopts the shipped hash (no tokenizing) only for an unchanged source file."""
    payload = cloudpickle.dumps(user_module.double)
    submitted = user_module.double.code_hash
    probe = textwrap.dedent(
        f"""
        import pickle, sys
        sys.path.insert(0, {str(tmp_path)!r})
        op = pickle.loads({payload!r})
        adopted = "code_hash" in op.__dict__
        print(adopted, op.code_hash)
        """
    )

    def task() -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=_no_bytecode()
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert task() == ["True", submitted]
    # The module is edited after submission: the task hashes the code it really runs.
    source = tmp_path / "pickle_ops.py"
    source.write_text(source.read_text().replace('2 * params["x"]', '3 * params["x"]'))
    adopted, code_hash = task()
    assert adopted == "False"
    assert code_hash != submitted


def _no_bytecode() -> dict[str, str]:
    import os

    # A stale .pyc of the edited module must not stand in for its new source.
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
