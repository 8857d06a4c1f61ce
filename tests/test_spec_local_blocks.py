"""The spec's local-loop code blocks, run as written (with tiny stand-ins for user code).

Sections: Minimal Working Example, Parameter Sources, Reproducible Seeds, Capture System,
Logging, Results API, Derived Metrics, Resume and Deduplication, Custom Storage,
Experiment Manifests, Experiment Metadata.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib
import numpy as np
import pytest

import metalab

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_minimal_working_example(capsys: pytest.CaptureFixture[str]) -> None:
    @metalab.operation
    def estimate_pi(params, seeds, capture):
        n = params["n_samples"]
        rng = seeds.numpy()
        x, y = rng.random(n), rng.random(n)
        pi_est = 4.0 * (x**2 + y**2 <= 1).mean()
        capture.metric("pi_estimate", pi_est)

    exp = metalab.Experiment(
        name="pi_mc",
        version="0.1",
        context={},
        operation=estimate_pi,
        params=metalab.grid(n_samples=[1000, 10000, 100000]),
        seeds=metalab.seeds(base=42, replicates=3),
    )

    handle = metalab.run(exp)  # Returns a RunHandle, stores results in ./runs/pi_mc
    results = handle.result()  # Block until complete
    print(results.table())

    assert len(results) == 9
    assert all(r.status.value == "success" for r in results)
    assert Path("runs/pi_mc").is_dir()
    big = [r.metrics["pi_estimate"] for r in results if r.params["n_samples"] == 100000]
    assert all(abs(v - np.pi) < 0.05 for v in big)
    out = capsys.readouterr().out
    assert "pi_estimate" in out and "n_samples" in out
    # Deterministic seeds: a second store gives identical estimates.
    again = metalab.run(exp, store="./runs/pi_again").result()
    assert [r.metrics for r in again] == [r.metrics for r in results]


def test_parameter_sources() -> None:
    params = metalab.grid(
        learning_rate=[0.001, 0.01, 0.1],
        batch_size=[32, 64],
    )  # 6 combinations
    assert len(params) == 6

    params = metalab.random(
        space={
            "learning_rate": metalab.loguniform(1e-4, 1e-1),
            "dropout": metalab.uniform(0.1, 0.5),
            "hidden_dim": metalab.choice([64, 128, 256]),
        },
        n_trials=20,
        seed=123,
    )
    assert len(params) == 20
    for trial in params:
        assert 1e-4 <= trial["learning_rate"] < 1e-1
        assert 0.1 <= trial["dropout"] < 0.5
        assert trial["hidden_dim"] in (64, 128, 256)

    params = metalab.manual(
        [
            {"lr": 0.01, "epochs": 10},
            {"lr": 0.001, "epochs": 50},
        ]
    )
    assert [p["epochs"] for p in params] == [10, 50]


def test_reproducible_seeds() -> None:
    @metalab.operation
    def my_operation(seeds, capture):
        # Get a NumPy random generator
        rng = seeds.numpy()

        # Or a standard library random.Random
        rng = seeds.rng()

        # Derive sub-seeds for different components
        model_seed = seeds.derive("model")
        data_seed = seeds.derive("data_split")

        capture.metric("result", rng.random())
        capture.metric("model_seed", model_seed)
        capture.metric("data_seed", data_seed)

    seeds = metalab.seeds(base=42, replicates=5)  # 5 independent runs per param config
    exp = metalab.Experiment("seeds_demo", "1", {}, my_operation, metalab.grid(x=[1]), seeds)
    results = metalab.run(exp).result()
    assert len(results) == 5
    assert len({r.metrics["result"] for r in results}) == 5
    assert all(r.metrics["model_seed"] != r.metrics["data_seed"] for r in results)
    assert all(0 <= r.metrics["model_seed"] < 2**32 for r in results)


losses = [0.9, 0.5, 0.25]
predictions_array = np.arange(12, dtype=np.float64).reshape(3, 4)


def test_capture_system() -> None:
    import matplotlib.pyplot as plt

    @metalab.operation
    def train(params, seeds, capture):
        fig, ax = plt.subplots()
        ax.plot(losses)
        capture.log("Starting training")

        # Scalar metrics
        capture.metric("accuracy", 0.95)
        capture.metric("loss", 0.05)

        # Multiple metrics at once
        capture.log_metrics({"precision": 0.92, "recall": 0.89})

        # Time-series metrics
        for epoch, loss in enumerate(losses):
            capture.metric("train_loss", loss, step=epoch)
            capture.log(f"Epoch {epoch}: loss={loss:.4f}")

        # Artifacts (auto-serialized)
        capture.artifact("predictions", predictions_array)  # NumPy array
        capture.artifact("config", {"model": "resnet", "layers": 50})  # JSON

        # Matplotlib figures
        capture.figure("learning_curve", fig)

        capture.log("Training completed")
        # No return needed - success is implicit

    exp = metalab.Experiment("capture", "1", {}, train, metalab.grid(lr=[0.1]), metalab.seeds(1))
    (run,) = metalab.run(exp).result()
    assert run.status.value == "success"
    assert run.metrics == {
        "accuracy": 0.95,
        "loss": 0.05,
        "precision": 0.92,
        "recall": 0.89,
        "train_loss": 0.25,
    }
    assert run.metric_series("train_loss") == [(0, 0.9), (1, 0.5), (2, 0.25)]
    np.testing.assert_array_equal(run.artifact("predictions"), predictions_array)
    assert run.artifact("config") == {"model": "resnet", "layers": 50}
    assert run.artifact("learning_curve").startswith(b"\x89PNG")
    log = run.log
    assert "Starting training" in log and "Epoch 2: loss=0.2500" in log
    assert "Training completed" in log and " INFO " in log


def test_logging_block() -> None:
    logger = logging.getLogger(__name__)
    threshold = 0.1

    def train_epoch(*_args):
        return 0.5

    @metalab.operation
    def train(params, seeds, capture):
        capture.log("Starting training")
        capture.log(f"Parameters: lr={params['lr']}", level="debug")

        for epoch in range(params["epochs"]):
            loss = train_epoch(...)
            capture.log(f"Epoch {epoch}: loss={loss:.4f}")
            capture.metric("loss", loss, step=epoch)

        capture.log("Training complete")
        if loss > threshold:
            capture.log("Loss above threshold", level="warning")

    @metalab.operation
    def my_operation(params, seeds, capture):
        # Standard Python logging (goes to console/configured handlers)
        logger.info("This uses standard Python logging")

        # capture.log() is stored with the run
        capture.log("This is saved to the run's log file")

    params = metalab.grid(lr=[0.01], epochs=[2])
    (run,) = metalab.run(
        metalab.Experiment("log1", "1", {}, train, params, metalab.seeds(0))
    ).result()
    lines = run.log.splitlines()
    assert [line.split()[1] for line in lines] == [
        "INFO",
        "DEBUG",
        "INFO",
        "INFO",
        "INFO",
        "WARNING",
    ]
    assert "Parameters: lr=0.01" in lines[1]
    assert all("[" in line and "]" in line for line in lines)  # worker identity
    (run2,) = metalab.run(
        metalab.Experiment("log2", "1", {}, my_operation, params, metalab.seeds(0))
    ).result()
    assert "This is saved to the run's log file" in run2.log
    assert "standard Python logging" not in run2.log


def _results_experiment():
    @metalab.operation
    def train(params, seeds, capture):
        rng = seeds.numpy()
        score = float(rng.random()) + params["learning_rate"]
        capture.metric("score", score)
        history = np.linspace(1.0, 0.1, 5) * (1 + params["learning_rate"])
        capture.artifact("loss_history", history)
        capture.artifact("predictions", history * 2)

    return metalab.Experiment(
        name="my_exp",
        version="0.1",
        context={},
        operation=train,
        params=metalab.grid(learning_rate=[0.001, 0.01, 0.1]),
        seeds=metalab.seeds(base=42, replicates=3),
    )


def test_results_api(capsys: pytest.CaptureFixture[str]) -> None:
    exp = _results_experiment()
    handle = metalab.run(exp)

    # Check status without blocking
    print(handle.status)  # RunStatus(total=9, completed=3, running=6, ...)
    print(handle.is_complete)  # False

    # Block until complete and get results
    results = handle.result()

    # Access individual runs
    run = results[0]
    print(run.params)  # Resolved parameters
    print(run.metrics)  # Captured metrics
    artifact = run.artifact("predictions")

    # Tabular view
    df = results.table(as_dataframe=True)

    # Filter runs
    successful = results.successful
    filtered = results.filter(learning_rate=0.01)

    # Summary and display
    results.display(group_by=["learning_rate"])

    # Export
    results.to_csv("results.csv")

    # Load previous results
    old_results = metalab.load_results("./runs/my_exp")

    assert "RunStatus(total=9" in capsys.readouterr().out
    assert handle.status.completed == 9 and handle.is_complete
    assert run.params == {"learning_rate": 0.001}
    assert artifact.shape == (5,)
    assert len(df) == 9 and "param_learning_rate" in df.columns and "score" in df.columns
    assert len(successful) == 9
    assert len(filtered) == 3 and {r.params["learning_rate"] for r in filtered} == {0.01}
    assert Path("results.csv").read_text().count("\n") == 10
    assert len(old_results) == 9
    assert {r.run_id for r in old_results} == {r.run_id for r in results}


def test_derived_metrics_blocks() -> None:
    from metalab.types import Metric

    # Define derived metric functions
    def final_loss(run) -> dict[str, Metric]:
        """Compute final loss from the loss_history artifact."""
        loss_history = run.artifact("loss_history")
        return {
            "final_loss": float(loss_history[-1]),
            "best_loss": float(loss_history.min()),
        }

    def normalized_score(run) -> dict[str, Metric]:
        """Compute normalized score using params and metrics."""
        lr = run.params["learning_rate"]
        score = run.metrics["score"]
        return {"normalized_score": score / lr}

    exp = _results_experiment()
    # Pass derived metrics to run() - computed on workers after each run
    handle = metalab.run(
        exp,
        derived_metrics=[final_loss, normalized_score],
    )
    results = handle.result()

    # Access stored derived metrics
    print(results[0].derived)  # {"final_loss": 0.001, "best_loss": 0.0005, ...}
    assert set(results[0].derived) == {"final_loss", "best_loss", "normalized_score"}
    assert results[0].derived["final_loss"] == pytest.approx(0.1 * 1.001)

    # Load existing results and compute derived metrics later
    results = metalab.load_results("./runs/my_exp")
    results.compute_derived([final_loss, normalized_score])

    # Recompute with overwrite
    results.compute_derived([final_loss], overwrite=True)

    # Include persisted derived metrics (from /derived/)
    df = results.to_dataframe(include_derived=True)
    # Columns: derived_final_loss, derived_best_loss, derived_normalized_score
    assert {"derived_final_loss", "derived_best_loss", "derived_normalized_score"} <= set(
        df.columns
    )

    # Or compute on-the-fly without persisting
    df = results.to_dataframe(derived_metrics=[final_loss])
    assert "derived_final_loss" in df.columns

    # Full export with all options
    df = results.to_dataframe(
        include_params=True,  # Columns prefixed with 'param_'
        include_metrics=True,  # Captured metrics
        include_record=True,  # run_id, status, duration, etc.
        include_derived=True,  # Persisted derived metrics (prefixed 'derived_')
    )

    # Analyze with pandas
    summary = df.groupby("param_learning_rate").agg(
        {
            "derived_final_loss": ["mean", "std"],
            "derived_normalized_score": "mean",
        }
    )
    assert len(summary) == 3
    assert {"run_id", "status", "duration", "param_learning_rate", "score"} <= set(df.columns)
    # Derived metrics never change identity: re-running skips everything.
    again = metalab.run(exp, derived_metrics=[final_loss])
    assert again.status.skipped == 9


def test_resume_and_deduplication() -> None:
    calls: list[int] = []

    @metalab.operation
    def op(params, capture):
        calls.append(params["i"])
        capture.metric("i", params["i"])

    exp = metalab.Experiment(
        "resume", "1", {}, op, metalab.grid(i=list(range(10))), metalab.seeds(base=1, replicates=10)
    )
    # First run: executes all 100 configurations
    results = metalab.run(exp, resume=True).results()
    assert len(results) == 100 and len(calls) == 100

    # Second run: skips completed, only runs new/failed
    results = metalab.run(exp, resume=True).results()
    assert len(results) == 100 and len(calls) == 100


def test_custom_storage() -> None:
    exp = _results_experiment()
    handle = metalab.run(exp, store="./my_experiments/run_001")
    results = handle.result()

    # Load previous results
    results = metalab.load_results("./my_experiments/run_001")
    assert len(results) == 9
    assert Path("my_experiments/run_001/runs").is_dir()


def test_experiment_manifest_and_metadata() -> None:
    seen: list[dict] = []

    @metalab.operation
    def run_analysis(params, runtime, capture):
        seen.append(runtime.metadata)
        capture.metric("t", params["threshold"])

    my_context = {"dataset": "cells"}
    exp = metalab.Experiment(
        name="perturbation_exp",
        version="1.0",
        context=my_context,
        operation=run_analysis,
        params=metalab.grid(threshold=[0.1, 0.5]),
        seeds=metalab.seeds(base=42),
        metadata={
            # Documentation
            "author": "your_name",
            "notes": "Testing new threshold values",
            # Data summaries (derived from context data)
            "n_cells": 50000,
            "groups": ["control", "treatment_A", "treatment_B"],
            # Resource hints for operations
            "resource_hints": {"gpu": True, "memory_gb": 32},
        },
    )
    first = metalab.run(exp).result()
    assert all(m["n_cells"] == 50000 for m in seen)
    manifests = sorted(
        Path("runs/perturbation_exp/experiments").glob("perturbation_exp:1.0_*.json")
    )
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    assert manifest["metadata"]["author"] == "your_name"
    assert manifest["operation"]["reference"].endswith("run_analysis")
    assert len(manifest["operation"]["code_hash"]) == 32
    assert manifest["params"] == {"kind": "grid", "axes": {"threshold": [0.1, 0.5]}}
    assert manifest["seeds"] == {"base": 42, "replicates": 1}
    assert manifest["total_runs"] == 2 and manifest["submitted_at"]
    assert len(manifest["context_fingerprint"]) == 32

    # Metadata is not fingerprinted: changing it creates no new runs.
    exp.metadata["notes"] = "changed"
    handle = metalab.run(exp)
    second = handle.result()
    assert handle.status.skipped == 2
    assert [r.run_id for r in second] == [r.run_id for r in first]
    assert len(list(Path("runs/perturbation_exp/experiments").glob("*.json"))) == 2
