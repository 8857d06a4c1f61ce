"""Context specs: frozen manifests, lazy metadata fingerprints, fresh copies, JSON travel."""

from __future__ import annotations

import dataclasses
import json
import os
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab import ProcessExecutor
from metalab.context import context_from_json, context_to_json, resolve_context
from metalab.errors import ContextError


@metalab.context_spec
class DataContext:
    dataset: metalab.FilePath
    vocab_size: int = 10000


@metalab.context_spec
class Outer:
    inner: DataContext
    folder: metalab.DirPath


@metalab.context_spec
class Mutable:
    items: list[int]


@metalab.operation
def count_lines(context: DataContext, params: dict[str, Any], capture: Any) -> None:
    with open(context.dataset) as handle:
        capture.metric("lines", len(handle.readlines()))
    capture.metric("vocab_size", context.vocab_size)


@metalab.operation
def mutate(context: Mutable, capture: Any) -> None:
    context.items.append(1)
    capture.metric("n_items", len(context.items))


def _exp(context: Any, op: Any = count_lines, n: int = 2) -> metalab.Experiment:
    return metalab.Experiment(
        name="ctx",
        version="1",
        context=context,
        operation=op,
        params=metalab.grid(hidden=list(range(n))),
        seeds=metalab.seeds(base=42),
    )


def test_path_refs_behave_like_paths() -> None:
    path = metalab.FilePath("data/train.csv")
    assert str(path) == "data/train.csv"
    assert os.fspath(path) == "data/train.csv"
    assert Path(path) == Path("data/train.csv")
    assert path == metalab.FilePath("data/train.csv") and path != metalab.DirPath("data/train.csv")
    assert hash(path) == hash(metalab.FilePath("data/train.csv"))
    assert repr(metalab.DirPath("d")) == "DirPath('d')"
    with pytest.raises(ContextError):
        metalab.FilePath("")


def test_spec_is_frozen_and_needs_no_file_yet() -> None:
    spec = DataContext(dataset=metalab.FilePath("nowhere/yet.csv"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.vocab_size = 5  # type: ignore[misc]
    assert spec.vocab_size == 10000


def test_bad_field_value_is_a_clear_error() -> None:
    with pytest.raises(ContextError, match="'vocab_size'"):
        DataContext(dataset=metalab.FilePath("x"), vocab_size=object())  # type: ignore[arg-type]
    with pytest.raises(ContextError, match="decorates a class"):
        metalab.context_spec(42)  # type: ignore[type-var]


def test_missing_file_fails_before_any_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exp = _exp(DataContext(dataset=metalab.FilePath("data/missing.csv")))
    with pytest.raises(ContextError, match=r"'dataset'.*data/missing\.csv"):
        metalab.run(exp)
    assert not (tmp_path / "runs" / "ctx").exists()


def test_missing_directory_names_nested_field(tmp_path: Path) -> None:
    data = tmp_path / "a.csv"
    data.write_text("x\n")
    spec = Outer(inner=DataContext(metalab.FilePath(str(data))), folder=metalab.DirPath("gone"))
    with pytest.raises(ContextError, match=r"'folder'.*gone"):
        resolve_context(spec)
    spec = Outer(inner=DataContext(metalab.FilePath("gone.csv")), folder=metalab.DirPath("."))
    with pytest.raises(ContextError, match=r"'inner\.dataset'"):
        resolve_context(spec)


def test_changing_the_file_reruns_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "train.csv"
    data.write_text("a\nb\n")
    spec = DataContext(dataset=metalab.FilePath("train.csv"))
    first = metalab.run(_exp(spec))
    assert [r.metrics["lines"] for r in first.result()] == [2, 2]
    again = metalab.run(_exp(spec))
    assert again.status.skipped == 2
    again.result()
    data.write_text("a\nb\nc\n")
    changed = metalab.run(_exp(spec))
    assert changed.status.skipped == 0
    assert [r.metrics["lines"] for r in changed.result()] == [3, 3]


def test_directory_fingerprint_tracks_entries(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "one.txt").write_text("1")

    @metalab.context_spec
    class Dir:
        root: metalab.DirPath

    spec = Dir(root=metalab.DirPath(folder))
    before = resolve_context(spec)
    assert resolve_context(spec) == before
    (folder / "two.txt").write_text("2")
    assert resolve_context(spec) != before


def test_each_run_gets_its_own_copy(tmp_path: Path) -> None:
    spec = Mutable(items=[0])
    results = metalab.run(_exp(spec, mutate, n=4), store=tmp_path / "s").result()
    assert [r.metrics["n_items"] for r in results] == [2, 2, 2, 2]
    assert spec.items == [0]


def test_json_round_trip() -> None:
    spec = Outer(inner=DataContext(metalab.FilePath("a.csv"), 7), folder=metalab.DirPath("d"))
    document = json.loads(json.dumps(context_to_json(spec)))
    assert context_from_json(document) == spec
    assert context_from_json(json.loads(json.dumps(context_to_json({"k": [1]})))) == {"k": [1]}


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_spec_reaches_process_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("train.csv").write_text("a\nb\nc\n")
    spec = DataContext(dataset=metalab.FilePath("train.csv"), vocab_size=5)
    results = metalab.run(
        _exp(spec), executor=ProcessExecutor(max_workers=2, mp_context=method)
    ).result(30)
    assert [(r.metrics["lines"], r.metrics["vocab_size"]) for r in results] == [(3, 5), (3, 5)]


def test_notebook_defined_spec_reaches_spawned_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("words.txt").write_text("x y z\n")
    cell = types.ModuleType("__cell__")
    # Compiled without this file's `from __future__ import annotations`, as a cell is.
    source = compile(
        textwrap.dedent(
            """
            import metalab

            @metalab.context_spec
            class Scaling:
                scale: float = 2.0

            @metalab.context_spec
            class CellContext:
                words: metalab.FilePath
                scaling: Scaling

            @metalab.operation
            def op(context, capture):
                text = open(str(context.words)).read()
                capture.metric("n", len(text.split()) * context.scaling.scale)

            exp = metalab.Experiment(
                name="cell", version="1",
                context=CellContext(metalab.FilePath("words.txt"), Scaling()),
                operation=op, params=metalab.grid(i=[0, 1]), seeds=metalab.seeds(base=0),
            )
            """
        ),
        "<cell>",
        "exec",
        dont_inherit=True,
    )
    exec(source, cell.__dict__)
    results = metalab.run(cell.exp, executor=ProcessExecutor(2)).result(30)
    assert [r.metrics["n"] for r in results] == [6.0, 6.0]
