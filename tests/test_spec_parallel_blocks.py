"""The spec's parallel/progress/context code blocks, run as written.

Sections: Progress Tracking, Context Specs, Data Preprocessing, Seeded Preprocessing,
Parallel Execution. Library calls the spec assumes (``scanpy``, ``load_data``,
``train_test_split``...) are tiny stand-ins defined here; data files live in tmp_path.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import metalab


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _pi_experiment() -> metalab.Experiment:
    @metalab.operation
    def estimate_pi(params, seeds, capture):
        n = params["n_samples"]
        rng = seeds.numpy()
        x, y = rng.random(n), rng.random(n)
        pi_est = 4.0 * (x**2 + y**2 <= 1).mean()
        capture.metric("pi_estimate", pi_est)
        capture.metric("loss", abs(pi_est - np.pi))
        capture.metric("accuracy", 1 - abs(pi_est - np.pi))

    return metalab.Experiment(
        name="pi_mc",
        version="0.1",
        context={},
        operation=estimate_pi,
        params=metalab.grid(n_samples=[1000, 10000, 100000]),
        seeds=metalab.seeds(base=42, replicates=3),
    )


def test_progress_tracking(capsys: pytest.CaptureFixture[str]) -> None:
    exp = _pi_experiment()

    # Simple progress bar (auto-detects rich, falls back to text)
    handle = metalab.run(exp, progress=True)
    results = handle.result()  # Shows live progress

    # Customized progress display
    handle = metalab.run(
        exp,
        progress=metalab.Progress(
            title="Training Models",
            display_metrics=["loss:.4f", "accuracy:.2%"],
        ),
    )
    results = handle.result()

    assert len(results) == 9
    err = capsys.readouterr().err
    assert "metalab: 9/9" in err and "skipped 9" in err
    assert "Training Models: 9/9" in err


def test_progress_tracking_manual_status(capsys: pytest.CaptureFixture[str]) -> None:
    exp = _pi_experiment()

    handle = metalab.run(exp)
    print(handle.status)  # RunStatus(total=9, completed=3, running=6, ...)
    print(handle.is_complete)  # False
    results = handle.result()  # Block until complete

    assert len(results) == 9
    out = capsys.readouterr().out
    assert out.startswith("RunStatus(total=9, completed=")
    assert handle.is_complete and handle.status.completed == 9


def load_data(path: str) -> list[str]:
    """Stand-in for the user's loader: one row per line."""
    return Path(path).read_text().splitlines()


def test_context_specs() -> None:
    Path("data").mkdir()
    Path("data/train.csv").write_text("the cat\nthe dog\na bird\n")

    @metalab.context_spec
    class DataContext:
        dataset: metalab.FilePath  # Hash computed lazily at run() time
        vocab_size: int = 10000

    @metalab.operation
    def nlp_operation(context, params, capture):
        # Operations receive the context spec directly
        # Load data yourself using paths from the context
        data = load_data(str(context.dataset))  # noqa: F841 - as written in the spec
        capture.metric("vocab_size", context.vocab_size)

    exp = metalab.Experiment(
        name="nlp_exp",
        version="0.1",
        context=DataContext(
            dataset=metalab.FilePath("data/train.csv"),
            vocab_size=10000,
        ),
        operation=nlp_operation,
        params=metalab.grid(hidden=[64, 128]),
        seeds=metalab.seeds(base=42),
    )

    results = metalab.run(exp).result()
    assert [r.metrics["vocab_size"] for r in results] == [10000, 10000]
    assert metalab.run(exp).status.skipped == 2
    Path("data/train.csv").write_text("changed\n")
    assert metalab.run(exp).status.skipped == 0


class _AnnData:
    """Stand-in for an AnnData object: a small matrix that can be written and read."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.X = matrix
        self.uns: dict[str, Any] = {}

    def write_h5ad(self, path: str) -> None:
        Path(path).write_text(json.dumps(self.X.tolist()))


def _fake_scanpy() -> types.ModuleType:
    sc = types.ModuleType("scanpy")
    pp = types.ModuleType("scanpy.pp")
    calls: list[str] = []

    def read_10x_mtx(path: str) -> _AnnData:
        calls.append("read_10x_mtx")
        return _AnnData(np.loadtxt(Path(path) / "matrix.txt", ndmin=2))

    def filter_cells(adata: _AnnData, min_genes: int) -> None:
        calls.append("filter_cells")
        adata.X = adata.X[(adata.X > 0).sum(axis=1) >= min_genes]

    def highly_variable_genes(adata: _AnnData, n_top_genes: int) -> None:
        calls.append("highly_variable_genes")
        adata.X = adata.X[:, np.argsort(-adata.X.var(axis=0))[:n_top_genes]]

    def neighbors(adata: _AnnData, n_neighbors: int) -> None:
        adata.uns["n_neighbors"] = n_neighbors

    def read_h5ad(path: str) -> _AnnData:
        return _AnnData(np.array(json.loads(Path(path).read_text())))

    pp.filter_cells = filter_cells  # type: ignore[attr-defined]
    pp.highly_variable_genes = highly_variable_genes  # type: ignore[attr-defined]
    pp.neighbors = neighbors  # type: ignore[attr-defined]
    sc.pp = pp  # type: ignore[attr-defined]
    sc.read_10x_mtx = read_10x_mtx  # type: ignore[attr-defined]
    sc.read_h5ad = read_h5ad  # type: ignore[attr-defined]
    sc.calls = calls  # type: ignore[attr-defined]
    return sc


def test_data_preprocessing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "scanpy", _fake_scanpy())
    Path("data/raw").mkdir(parents=True)
    Path("cache").mkdir()
    rng = np.random.default_rng(0)
    np.savetxt("data/raw/matrix.txt", rng.integers(0, 3, size=(20, 300)))

    from pathlib import Path as SpecPath  # the block's own import, kept as written

    import scanpy as sc

    @metalab.context_spec
    class SingleCellSpec:
        data: metalab.FilePath  # Hash computed at run() time
        min_genes: int = 200
        n_hvg: int = 2000

    def preprocess_data(raw_path: str, spec: SingleCellSpec):
        """Run this once before the experiment."""
        cache_path = str(spec.data)  # FilePath supports str() and os.fspath()
        if not SpecPath(cache_path).exists():
            adata = sc.read_10x_mtx(raw_path)
            sc.pp.filter_cells(adata, min_genes=spec.min_genes)
            sc.pp.highly_variable_genes(adata, n_top_genes=spec.n_hvg)
            adata.write_h5ad(cache_path)

    @metalab.operation
    def analyze(context, params, capture):
        # Load preprocessed data (each run gets its own copy)
        adata = sc.read_h5ad(str(context.data))
        sc.pp.neighbors(adata, n_neighbors=params["n_neighbors"])
        # ... analysis ...
        capture.metric("n_cells", int(adata.X.shape[0]))
        capture.metric("n_neighbors", adata.uns["n_neighbors"])

    # Create spec (file doesn't need to exist yet)
    spec = SingleCellSpec(
        data=metalab.FilePath("./cache/adata.h5ad"),
        min_genes=200,
    )

    # Preprocess explicitly (run once, before experiment)
    preprocess_data("data/raw/", spec)

    # Now run experiments - hash computed here, workers load from cached file
    exp = metalab.Experiment(
        name="single_cell_exp",
        version="0.1",
        context=spec,
        operation=analyze,
        params=metalab.grid(n_neighbors=[10, 15, 30]),
        seeds=metalab.seeds(base=42),
    )

    assert sc.calls == ["read_10x_mtx", "filter_cells", "highly_variable_genes"]
    preprocess_data("data/raw/", spec)  # cached: nothing runs again
    assert len(sc.calls) == 3
    results = metalab.run(exp).result()
    assert [r.metrics["n_neighbors"] for r in results] == [10, 15, 30]
    assert len({r.metrics["n_cells"] for r in results}) == 1


def test_seeded_preprocessing() -> None:
    Path("data").mkdir()
    Path("cache").mkdir()
    Path("data/raw.csv").write_text("\n".join(str(i) for i in range(100)))
    calls: list[str] = []

    def train_test_split(data: list[str], rng: np.random.Generator) -> tuple[list[str], ...]:
        order = rng.permutation(len(data))
        return [data[i] for i in order[:80]], [data[i] for i in order[80:]]

    def augment(rows: list[str], rng: np.random.Generator) -> list[str]:
        return rows + [rows[i] for i in rng.integers(0, len(rows), size=10)]

    def save(path: str, splits: dict[str, list[str]]) -> None:
        calls.append(path)
        Path(path).write_text(json.dumps(splits))

    @metalab.operation
    def train_model(context, params, seeds, capture):
        splits = json.loads(Path(str(context.processed_data)).read_text())
        capture.metric("n_train", len(splits["train"]))
        capture.metric("draw", seeds.rng().random())

    from pathlib import Path as SpecPath  # the block's own imports, kept as written

    from metalab.seeds import SeedBundle

    BASE_SEED = 42

    @metalab.context_spec
    class MyContext:
        raw_data: metalab.FilePath
        processed_data: metalab.FilePath

    def preprocess(raw_path: str, output_path: str, base_seed: int):
        """Preprocessing with reproducible randomness."""
        # Create a SeedBundle using the same API as inside operations
        seeds = SeedBundle.for_preprocessing(base_seed)

        data = load_data(raw_path)

        # Use derived RNGs for different preprocessing steps
        rng_split = seeds.numpy("train_test_split")
        train, test = train_test_split(data, rng=rng_split)

        rng_aug = seeds.numpy("augmentation")
        train_aug = augment(train, rng=rng_aug)

        save(output_path, {"train": train_aug, "test": test})

    # Include seed in the filename - changing BASE_SEED points to a different file
    spec = MyContext(
        raw_data=metalab.FilePath("./data/raw.csv"),
        processed_data=metalab.FilePath(f"./cache/processed_seed{BASE_SEED}.h5ad"),
    )

    # Preprocess with seeded RNG (only runs if file doesn't exist)
    if not SpecPath(str(spec.processed_data)).exists():
        preprocess(str(spec.raw_data), str(spec.processed_data), BASE_SEED)

    # Experiment uses same base seed
    exp = metalab.Experiment(
        name="my_exp",
        version="0.1",
        context=spec,
        operation=train_model,
        params=metalab.grid(lr=[0.01, 0.001]),
        seeds=metalab.seeds(base=BASE_SEED, replicates=5),
    )

    assert calls == ["./cache/processed_seed42.h5ad"]
    first = Path("cache/processed_seed42.h5ad").read_text()
    preprocess(str(spec.raw_data), "./cache/again.h5ad", BASE_SEED)
    assert Path("cache/again.h5ad").read_text() == first  # reproducible
    preprocess(str(spec.raw_data), "./cache/other.h5ad", BASE_SEED + 1)
    assert Path("cache/other.h5ad").read_text() != first

    results = metalab.run(exp).result()
    assert len(results) == 10 and all(r.metrics["n_train"] == 90 for r in results)

    # The preprocessing bundle has the operation bundle's interface and its own domain.
    pre = SeedBundle.for_preprocessing(BASE_SEED)
    assert pre == SeedBundle.for_preprocessing(BASE_SEED)
    assert isinstance(pre.derive("x"), int) and 0 <= pre.derive("x") < 2**32
    assert pre.rng().random() == SeedBundle.for_preprocessing(BASE_SEED).rng().random()
    assert pre.numpy("a").random() != pre.numpy("b").random()
    replicates = {exp.seeds.bundle(r) for r in range(5)}
    assert pre not in replicates
    draws = {r.metrics["draw"] for r in results}
    assert pre.rng().random() not in draws and len(draws) == 5


def test_parallel_execution() -> None:
    exp = _pi_experiment()

    from metalab import ProcessExecutor

    handle = metalab.run(exp, executor=ProcessExecutor(max_workers=4))
    results = handle.result()

    assert len(results) == 9 and len(results.successful) == 9
    serial = metalab.run(exp, store="./runs/serial").result()
    assert sorted(r.metrics["pi_estimate"] for r in results) == sorted(
        r.metrics["pi_estimate"] for r in serial
    )
