"""Names read from a store never become paths unchecked; links inside a store are not followed.

Each attack is performed for real: in a shared FileStore (directories writable by the
lab's group, here by everyone) the hostile change is made by another Unix user
(``nobody``); in PostgreSQL by a second role that was granted only ``SELECT, UPDATE`` on
the tables. The victim then exports the store or reads an artifact, and must neither
write outside the export's target nor read a file outside the store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import metalab
from metalab import identity
from metalab.cli_store import EXIT_SKIPPED
from metalab.errors import UnsafeNameError
from metalab.plan import RunPlan
from metalab.store import create_store
from metalab.store.file import FileStore
from metalab.store.layout import (
    FileLayout,
    check_blob_key,
    check_experiment_id,
    check_file_name,
    check_run_id,
    check_stamp,
    shared_artifact_relative,
)
from other_user import other_uid_gid, run_as_other_user, shared_dir

METALAB = [sys.executable, "-c", "import sys; from metalab.cli import main; sys.exit(main())"]
SECRET = {"token": "victim-secret-7f3a"}


def config_of(x: int) -> dict[str, object]:
    # Padded past the PostgreSQL test's inline limit, so it lives under artifact_root.
    return {"x": x, "notes": "n" * 100}


@metalab.operation
def train(params, capture):  # type: ignore[no-untyped-def]
    """Captures a NumPy artifact and a JSON artifact, like an everyday operation."""
    capture.metric("score", params["x"] * 2)
    capture.artifact("weights", np.arange(4, dtype=float) * params["x"])
    capture.artifact("config", config_of(params["x"]))
    capture.log("trained")


def experiment() -> metalab.Experiment:
    return metalab.Experiment(
        name="names",
        version="1",
        context={},
        operation=train,
        params=metalab.grid(x=[1, 2, 3]),
        seeds=metalab.seeds(base=3),
    )


@pytest.fixture
def shared() -> Iterator[Path]:
    """A /tmp directory both users reach, removed afterwards."""
    other_uid_gid()  # skip (or fail when required) before creating anything
    path = shared_dir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def lab_store(base: Path) -> tuple[Path, list[str]]:
    """The victim's finished experiment in a store whose folders the lab group can write."""
    root = base / "store"
    metalab.run(experiment(), store=root).result()
    for directory, _, _ in os.walk(root):
        os.chmod(directory, 0o777)  # stands for a group-writable /scratch/lab/runs
    return root, RunPlan(experiment()).run_ids


def victim_secret(tmp_path: Path) -> Path:
    """A file only the victim can read (pytest's tmp_path is private to root)."""
    secret = tmp_path / "private" / "secret.json"
    secret.parent.mkdir()
    secret.write_text(json.dumps(SECRET))
    secret.chmod(0o600)
    return secret


def files_under(base: Path) -> set[str]:
    return {os.path.join(d, f) for d, _, names in os.walk(base) for f in names}


def export(source: str, target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*METALAB, "store", "export", "--from", source, "--to", str(target)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def replace_as_other_user(path: Path, text: str) -> None:
    """``nobody`` replaces a file it cannot write but whose folder it can (rename over it)."""

    def attack() -> None:
        fresh = path.with_name(f"{path.name}.attacker")
        fresh.write_text(text)
        os.replace(fresh, path)

    run_as_other_user(attack)


def symlink_as_other_user(path: Path, target: Path) -> None:
    """``nobody`` swaps ``path`` (a file or a folder) for a link to ``target``."""

    def attack() -> None:
        os.rename(path, path.with_name(f"{path.name}.moved"))
        os.symlink(target, path)

    run_as_other_user(attack)


# -- FileStore: records, links and junk planted by another user --------------------------
def test_artifact_name_in_a_record_cannot_reach_outside_the_run(
    shared: Path, tmp_path: Path
) -> None:
    root, run_ids = lab_store(shared)
    secret = victim_secret(tmp_path)
    layout = FileLayout(root)
    record_path = layout.record(run_ids[0])
    doc = json.loads(record_path.read_text())
    for artifact in doc["artifacts"]:
        if artifact["name"] == "config":
            artifact["file"] = os.path.relpath(secret, layout.run_dir(run_ids[0]))
    replace_as_other_user(record_path, json.dumps(doc))

    run = {r.run_id: r for r in metalab.load_results(root)}[run_ids[0]]
    with pytest.raises(UnsafeNameError) as info:
        run.artifact("config")
    assert "../" in info.value.name
    # The other runs' artifacts still load.
    other = {r.run_id: r for r in metalab.load_results(root)}[run_ids[1]]
    assert other.artifact("config") == config_of(2)


@pytest.mark.parametrize("what", ["artifact file", "run folder"])
def test_symlink_planted_in_the_store_is_not_followed(
    shared: Path, tmp_path: Path, what: str
) -> None:
    root, run_ids = lab_store(shared)
    secret = victim_secret(tmp_path)
    layout = FileLayout(root)
    if what == "artifact file":
        symlink_as_other_user(layout.artifact(run_ids[0], "config.json"), secret)
    else:
        (secret.parent / "config.json").write_text(json.dumps(SECRET))
        symlink_as_other_user(layout.run_dir(run_ids[0]), secret.parent)

    run = {r.run_id: r for r in metalab.load_results(root)}[run_ids[0]]
    with pytest.raises(UnsafeNameError, match="symbolic link"):
        run.artifact("config")

    target = shared / "export"
    done = export(str(root), target)
    assert done.returncode == EXIT_SKIPPED, done.stderr
    assert "warning: skipped" in done.stderr and "symbolic link" in done.stderr
    exported = files_under(target)
    assert not any(SECRET["token"] in Path(p).read_text(errors="replace") for p in exported)
    # Everything else was copied: all three records, the other runs' artifacts.
    assert len(FileStore(target).load_records().records) == 3
    assert FileLayout(target).artifact(run_ids[1], "config.json").is_file()


def test_export_skips_bad_names_reports_them_and_writes_only_into_the_target(
    shared: Path, tmp_path: Path
) -> None:
    root, run_ids = lab_store(shared)
    layout = FileLayout(root)
    record_path = layout.record(run_ids[0])
    doc = json.loads(record_path.read_text())
    doc["artifacts"][0]["file"] = "../../../../escaped.npy"
    replace_as_other_user(record_path, json.dumps(doc))

    def plant_junk() -> None:
        (layout.done_dir / "zz").mkdir()
        (layout.done_dir / "zz" / "not-a-run.done").touch()
        (layout.failed_dir / run_ids[1][:2]).mkdir(parents=True, exist_ok=True)
        (layout.failed_dir / run_ids[1][:2] / f"{run_ids[1][:2]}EVIL.failed").write_text("failed")

    run_as_other_user(plant_junk)
    target = shared / "deep" / "export"
    before = files_under(shared)
    done = export(str(root), target)

    assert done.returncode == EXIT_SKIPPED, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: skipped")]
    assert any("'not-a-run'" in w for w in warnings)
    assert any(f"'{run_ids[1][:2]}EVIL'" in w for w in warnings)
    assert any("'../../../../escaped.npy'" in w for w in warnings)
    assert "3 unsafe items were skipped" in done.stderr
    assert "copied 3 runs" in done.stdout
    new = files_under(shared) - before
    assert new and all(p.startswith(str(target) + os.sep) for p in new), sorted(new)
    assert not (shared / "escaped.npy").exists()


def test_export_skips_a_corrupt_record_or_marker_planted_by_another_user(shared: Path) -> None:
    root, run_ids = lab_store(shared)
    layout = FileLayout(root)
    replace_as_other_user(layout.record(run_ids[2]), '{"run_id": "trunc')
    stray = "ab" * 16

    def plant_marker() -> None:
        layout.failed_marker(stray).parent.mkdir(parents=True, exist_ok=True)
        layout.failed_marker(stray).write_text("pwned")

    run_as_other_user(plant_marker)
    target = shared / "export"
    done = export(str(root), target)

    assert done.returncode == EXIT_SKIPPED, done.stderr
    assert f"run {run_ids[2]}:" in done.stderr and "'pwned'" in done.stderr
    assert "Traceback" not in done.stderr
    copied = {r.run_id for r in FileStore(target).load_records().records}
    assert copied == set(run_ids[:2])
    assert not FileLayout(target).failed_marker(stray).exists()


# -- PostgreSQL: rows changed by a second role ------------------------------------------
@pytest.fixture
def pg_locator(tmp_path: Path) -> Iterator[str]:
    from metalab.store.postgres import PostgresStore
    from services import postgres_url

    url = postgres_url()
    schema = f"t_{uuid.uuid4().hex}"
    sep = "&" if "?" in url else "?"
    root = tmp_path / "pg_artifacts"
    locator = f"{url}{sep}schema={schema}&artifact_root={root}&inline_limit=64"
    yield locator
    store = PostgresStore.from_locator(locator)
    try:
        store.drop_schema()
    finally:
        store.close()


def _superuser_sql(port: int, statement: str) -> None:
    done = subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-p",
            str(port),
            "-d",
            "postgres",
            "-c",
            statement,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        from services import services_required

        message = f"cannot manage PostgreSQL roles as 'postgres': {done.stderr.strip()}"
        if services_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture
def attacker(pg_locator: str) -> Iterator[str]:
    """URL of a second role allowed only to read and UPDATE the test schema's tables."""
    from metalab.store.postgres import PostgresStore

    if shutil.which("runuser") is None or shutil.which("psql") is None:
        pytest.skip("runuser and psql are needed to create a second PostgreSQL role")
    store = PostgresStore.from_locator(pg_locator)
    store.ping()  # creates the schema and its tables
    parts = urllib.parse.urlsplit(pg_locator)
    role, password = f"attacker_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    _superuser_sql(parts.port or 5432, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        schema = store.schema
        store._run(
            lambda conn: conn.execute(
                f"GRANT USAGE ON SCHEMA {schema} TO {role}; "
                f"GRANT SELECT, UPDATE ON ALL TABLES IN SCHEMA {schema} TO {role}"
            )
        )
        netloc = f"{role}:{password}@{parts.hostname}:{parts.port or 5432}"
        yield urllib.parse.urlunsplit(("postgresql", netloc, parts.path, "", ""))
    finally:
        store.drop_schema()
        store.close()
        _superuser_sql(parts.port or 5432, f"DROP ROLE IF EXISTS {role}")


def as_attacker(url: str, schema: str, statement: str, *args: object) -> None:
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute(f"SET search_path TO {schema}")
        assert conn.execute(statement, args).rowcount >= 1


@pytest.mark.postgres
def test_postgres_rows_pointing_outside_are_skipped_by_export(
    pg_locator: str, attacker: str, shared: Path
) -> None:
    store = create_store(pg_locator)
    metalab.run(experiment(), store=store).result()
    run_ids = RunPlan(experiment()).run_ids
    schema = store.schema  # type: ignore[attr-defined]
    as_attacker(
        attacker,
        schema,
        "UPDATE artifacts SET file = %s WHERE run_id = %s AND file = 'config.json'",
        "../../../../escaped.json",
        run_ids[0],
    )
    as_attacker(
        attacker, schema, "UPDATE logs SET run_id = %s WHERE run_id = %s", "../../x", run_ids[1]
    )
    target = shared / "deep" / "export"
    before = files_under(shared)
    done = export(pg_locator, target)

    assert done.returncode == EXIT_SKIPPED, done.stderr
    assert "'../../../../escaped.json'" in done.stderr and "'../../x'" in done.stderr
    new = files_under(shared) - before
    assert new and all(p.startswith(str(target) + os.sep) for p in new), sorted(new)
    escaped = [
        os.path.normpath(FileLayout(target).root / "runs" / run_ids[0][:2] / run_ids[0] / p)
        for p in ("../../../../escaped.json",)
    ] + [os.path.normpath(target / "runs" / ".." / "../../x.log")]
    assert not any(os.path.lexists(p) for p in escaped)
    exported = FileStore(target)
    assert len(exported.load_records().records) == 3
    assert FileLayout(target).artifact(run_ids[0], "weights.npy").is_file()


@pytest.mark.postgres
def test_postgres_artifact_path_column_cannot_name_another_file(
    pg_locator: str, attacker: str, shared: Path, tmp_path: Path
) -> None:
    store = create_store(pg_locator)
    results = metalab.run(experiment(), store=store).result()
    run = {r.run_id: r for r in results}[RunPlan(experiment()).run_ids[0]]
    assert run.artifact("config") == config_of(1)  # large enough to live under artifact_root
    secret = victim_secret(tmp_path)
    artifact_root = Path(store.config.artifact_root)  # type: ignore[attr-defined]
    as_attacker(
        attacker,
        store.schema,  # type: ignore[attr-defined]
        "UPDATE artifacts SET path = %s WHERE run_id = %s AND file = 'config.json'",
        os.path.relpath(secret, artifact_root),
        run.run_id,
    )
    with pytest.raises(UnsafeNameError, match="points at"):
        run.artifact("config")
    done = export(pg_locator, shared / "export")
    assert done.returncode == EXIT_SKIPPED, done.stderr
    exported = files_under(shared / "export")
    assert not any(SECRET["token"] in Path(p).read_text(errors="replace") for p in exported)


# -- the validators themselves ------------------------------------------------------------
_texts = st.text(min_size=0, max_size=40)


@given(_texts, _texts, _texts, _texts)
def test_every_generated_run_id_is_accepted(e: str, c: str, p: str, s: str) -> None:
    run_id = identity.run_id(e, c, p, s)
    assert check_run_id(run_id) == run_id
    layout = FileLayout(Path("/store"))
    for path in (layout.record(run_id), layout.artifact(run_id, "weights.npy")):
        assert path.parts[:2] == ("/", "store") and ".." not in path.parts


@given(st.lists(_texts, min_size=1, max_size=5), st.integers(1, 4))
def test_every_planned_run_id_is_accepted(values: list[str], replicates: int) -> None:
    exp = metalab.Experiment(
        name="prop",
        version="1",
        context={},
        operation=train,
        params=metalab.grid(v=sorted(set(values))),
        seeds=metalab.seeds(base=1, replicates=replicates),
    )
    for run_id in RunPlan(exp).run_ids:
        check_run_id(run_id)


_safe_piece = st.text("abcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=0, max_size=12)


@st.composite
def hostile_names(draw: st.DrawFn) -> str:
    """A name containing ``/``, ``..`` or NUL somewhere, or an absolute path."""
    left, right = draw(_safe_piece), draw(_safe_piece)
    bad = draw(st.sampled_from(["/", "..", "\x00", "../", "/..", "\\..\x00"]))
    name = draw(st.sampled_from([f"{left}{bad}{right}", f"/{left}{right}", f"{bad}{right}"]))
    return name


VALIDATORS = [check_run_id, check_file_name, check_experiment_id, check_stamp, check_blob_key]


@given(hostile_names())
def test_names_with_separators_dotdot_nul_or_absolute_are_refused(name: str) -> None:
    for check in VALIDATORS:
        with pytest.raises(UnsafeNameError) as info:
            check(name)
        assert info.value.name == name
    layout = FileLayout(Path("/store"))
    for build in (
        lambda: layout.record(name),
        lambda: layout.artifact("ab" * 16, name),
        lambda: layout.manifest(name, "20260101T000000Z"),
        lambda: layout.manifest("e:1", name),
        lambda: layout.blob(name),
        lambda: shared_artifact_relative("s", "ab" * 16, name),
    ):
        with pytest.raises(UnsafeNameError):
            build()


@given(st.text(min_size=1, max_size=40).filter(lambda s: not s.isascii() or not s.isalnum()))
def test_only_exact_run_ids_are_run_ids(junk: str) -> None:
    for candidate in (junk, "ab" * 8, "AB" * 16, "ab" * 16 + junk, ("ab" * 16)[:-1] + "g"):
        with pytest.raises(UnsafeNameError):
            check_run_id(candidate)


def test_everyday_names_are_accepted() -> None:
    assert check_file_name("weights.npy") == "weights.npy"
    assert check_file_name("fig-1_final.png") == "fig-1_final.png"
    assert check_experiment_id("my_exp:v1.2") == "my_exp:v1.2"
    assert check_stamp("20260101T120000123456Z") == "20260101T120000123456Z"
    assert check_blob_key("spec-my_exp:v1.json") == "spec-my_exp:v1.json"
    # Unsafe names are also ValueErrors, as every bad-input error of metalab.
    with pytest.raises(ValueError):
        check_file_name(".hidden")
