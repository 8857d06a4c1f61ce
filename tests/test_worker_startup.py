"""What a SLURM array task imports before its first run (issue 13 item 8).

Every array task is a fresh ``python -m metalab.worker`` process, so each import on that
path is paid once per task (psycopg alone costs ~0.2 s here). A FileStore task of an
operation that uses no NumPy must not load PostgreSQL drivers, data-frame, terminal or
plotting libraries, nor the driver-side modules (results, progress, reconnect).
``benches/bench_worker_startup.py`` measures the time itself.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import metalab
from metalab.executors.slurm_config import SlurmConfig
from metalab.executors.slurm_script import render_script
from metalab.executors.slurm_tasks import encode_task_list
from metalab.store.file import FileStore
from submit_only import SubmitOnly

NEVER_ON_A_FILESTORE_TASK = (
    "psycopg",
    "psycopg_pool",
    "pandas",
    "numpy",
    "rich",
    "matplotlib",
    "metalab.store.postgres",
    "metalab.progress",
    "metalab.html",
    "metalab.store.bundle",
    # The login machinery of PostgreSQL stores (and the logging it brings along): a
    # FileStore task has no password to install nor any login to check.
    "metalab.store.credentials",
    "metalab.store.postgres_config",
    # argparse: building a parser imports shutil (zlib, bz2, lzma) and gettext/locale.
    "argparse",
    "shutil",
    "gettext",
    # socket: the host name is the uname nodename (execution, atomic writes, reconnect).
    "socket",
)

# What the worker's own modules must not load before a payload asks for it: cloudpickle
# (with its logging, platform, uuid) is needed only to *decode* an operation pickled by
# value, and then pickle.loads imports it; platform only for a version string.
NOT_ON_IMPORT = ("cloudpickle", "logging", "platform", *NEVER_ON_A_FILESTORE_TASK)
WORKER_PATH = (
    "metalab",
    "metalab.worker",
    "metalab.execution",
    "metalab.plan_loading",
    "metalab.spec",
    "metalab.store.file",
    "metalab.store.locator",
    "metalab.store.claims",
    "metalab.executors.claimed",
    "metalab.executors.slurm_signals",
    "metalab.executors.slurm_tasks",
    "metalab.executors.task_store",
    "metalab.capture.output",
)


def _modules_of_a_worker(tmp: Path, *worker_args: str) -> dict[str, Any]:
    ops = tmp / "ops"
    ops.mkdir()
    (ops / "startup_ops.py").write_text(
        textwrap.dedent(
            """
            import metalab

            @metalab.operation
            def add(params, capture):
                capture.metric("y", params["x"] + 1)
            """
        )
    )
    sys.path.insert(0, str(ops))
    try:
        import startup_ops  # type: ignore[import-not-found]

        exp = metalab.Experiment(
            name="startup",
            version="1",
            context={"a": 1},
            operation=startup_ops.add,
            params=metalab.grid(x=list(range(100))),
            seeds=metalab.seeds(base=1, replicates=1),
        )
        store = tmp / "store"
        metalab.run(exp, store=str(store), executor=SubmitOnly(), progress=False)
        # A resubmission's task list (every task, in order: the block stays runs 6, 7).
        FileStore(store).put_blob("startup-tasks", encode_task_list(range(100)))
    finally:
        sys.path.remove(str(ops))
        sys.modules.pop("startup_ops", None)
    # The worker's main() as `python -m metalab.worker` runs it, then what it loaded.
    argv = ["--store", str(store), "--experiment", exp.experiment_id]
    argv += ["--array-task", "3", "--runs-per-task", "2", *worker_args]
    probe = (
        "import json, sys\n"
        "from metalab import worker\n"
        f"code = worker.main({argv!r})\n"
        'print(json.dumps({"code": code, "modules": sorted(sys.modules)}))\n'
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    results = metalab.load_results(str(store))
    assert sorted(r.params["x"] for r in results) == [6, 7]  # the task really ran its block
    return found


def _loaded(modules: list[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


def test_a_filestore_task_loads_nothing_heavy(tmp_path: Path) -> None:
    found = _modules_of_a_worker(tmp_path)
    assert found["code"] == 0
    # The operation lives in an importable module, so it travels by name
    # (Operation.__reduce__) and decoding it needs no cloudpickle either. Nor does a
    # task need the launch machinery, random search or traceback (its runs succeed).
    never = (
        *NEVER_ON_A_FILESTORE_TASK,
        "cloudpickle",
        "logging",
        "platform",
        "uuid",
        "metalab.executors.base",
        "metalab.params.distributions",
        "traceback",
    )
    heavy = [name for name in never if _loaded(found["modules"], name)]
    assert heavy == [], heavy


def test_a_resubmitted_task_decodes_its_task_list_without_the_launch_machinery(
    tmp_path: Path,
) -> None:
    found = _modules_of_a_worker(tmp_path, "--tasks", "startup-tasks")
    assert found["code"] == 0
    never = (*NEVER_ON_A_FILESTORE_TASK, "metalab.executors.slurm_launch")
    heavy = [name for name in never if _loaded(found["modules"], name)]
    assert heavy == [], heavy


def test_the_worker_path_imports_no_encoder_logging_or_platform() -> None:
    # A fresh interpreter: this test process has long loaded all of them.
    probe = (
        "import importlib, json, sys\n"
        f"for name in {WORKER_PATH!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    modules: list[str] = json.loads(done.stdout.splitlines()[-1])
    loaded = [name for name in NOT_ON_IMPORT if _loaded(modules, name)]
    assert loaded == [], loaded


def test_lazy_exports_are_not_shadowed_by_submodules() -> None:
    # Importing a submodule binds it as an attribute of the package: one named like a
    # lazy export (a `metalab/run.py`) would turn `metalab.run` into a module once loaded.
    import importlib.util

    lazy: dict[str, str] = metalab._LAZY
    clashes = [name for name in lazy if importlib.util.find_spec(f"metalab.{name}") is not None]
    assert clashes == []
    for name, module in lazy.items():
        importlib.import_module(module)
        value = getattr(metalab, name)
        assert getattr(importlib.import_module(module), name) is value
        assert callable(value), name


def _batch_task(tmp: Path, *, imports: bool = True, **env: str) -> dict[str, Any]:
    """Run a real batch script, its worker command swapped for a probe of the interpreter.

    With ``imports``, the probe imports the worker as the task would (and so writes the
    cache, if any); without, it only reports its interpreter's bytecode settings.
    """
    script = render_script(
        SlurmConfig(),
        python=sys.executable,
        store_locator=str(tmp / "store"),
        experiment_id="e:1",
        offset=0,
        tasks_key=None,
        job_name="metalab-e",
    )
    probe = "import importlib.util, json, sys\n"
    if imports:
        probe += "import metalab.worker\n"
    probe += (
        "print(json.dumps({'prefix': sys.pycache_prefix,\n"
        "    'no_write': sys.flags.dont_write_bytecode,\n"
        "    'pyc': importlib.util.cache_from_source(metalab.worker.__file__)\n"
        f"    if {imports!r} else None}}))\n"
    )
    lines = script.splitlines()
    assert lines[-1].startswith("exec ")
    lines[-1] = f"exec {shlex.quote(sys.executable)} -c {shlex.quote(probe)}"
    keep = {"PATH": os.environ["PATH"], "HOME": str(tmp / "home")}
    done = subprocess.run(
        ["bash", "-c", "\n".join(lines)],
        env={**keep, **env},
        capture_output=True,
        text=True,
        cwd=tmp,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return found


def test_array_tasks_import_from_a_bytecode_cache_despite_dontwritebytecode(
    tmp_path: Path,
) -> None:
    # Without the cache every task compiled each module from source (0.5 CPU-s a task
    # here against 0.13 s from bytecode): the first task writes it, the next ones read it.
    cache = tmp_path / "home" / ".cache" / "metalab" / "pycache"
    first = _batch_task(tmp_path, PYTHONDONTWRITEBYTECODE="1")
    assert first["prefix"] == str(cache) and first["no_write"] == 0
    pyc = Path(first["pyc"])
    assert pyc.is_file() and pyc.is_relative_to(cache)
    written = pyc.stat().st_mtime_ns
    again = _batch_task(tmp_path, PYTHONDONTWRITEBYTECODE="1")
    assert again == first and pyc.stat().st_mtime_ns == written  # read, not rewritten
    # Nothing was written next to the sources.
    assert not (Path(metalab.__file__).parent / "__pycache__" / pyc.name).exists()


def test_the_users_own_bytecode_settings_are_left_alone(tmp_path: Path) -> None:
    own = tmp_path / "own-prefix"
    mine = _batch_task(tmp_path, PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=str(own))
    assert mine["prefix"] == str(own) and mine["no_write"] == 1
    # No import here: it would write __pycache__ next to the sources, as Python always does.
    default = _batch_task(tmp_path, imports=False)
    assert default["prefix"] is None and default["no_write"] == 0
    assert not (tmp_path / "home" / ".cache").exists()


def test_a_command_line_the_script_never_writes_still_gets_argparse(tmp_path: Path) -> None:
    from metalab import worker

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "metalab.worker", *argv]
        return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)

    missing = run("--store", str(tmp_path))
    assert missing.returncode == 2
    assert "the following arguments are required: --experiment" in missing.stderr
    bad = run("--store", str(tmp_path), "--experiment", "e:1", "--offset", "x")
    assert bad.returncode == 2 and "--offset: invalid int value: 'x'" in bad.stderr
    helped = run("--help")
    assert helped.returncode == 0 and "--runs-per-task" in helped.stdout
    # What the batch script writes reads as argparse reads it, abbreviations and
    # `--name=value` included (those go to argparse itself).
    for argv in (
        ["--store", "s", "--experiment", "e:1"],
        ["--experiment", "e:1", "--store", "s", "--offset", "7", "--runs-per-task", "3"],
        ["--store", "s", "--experiment", "e:1", "--timeout", "2.5", "--tasks", "k"],
        ["--store", "s", "--experiment", "e:1", "--offset", "-1", "--signal-lead", "30"],
        ["--store=s", "--exp", "e:1", "--array-task", "4", "--passfile", "/p f"],
        ["--store", "", "--experiment", "e:1", "--derived", "d", "--offset", "2", "--offset", "5"],
    ):
        assert vars(worker._parse(argv)) == vars(worker._parse_with_argparse(argv)), argv
