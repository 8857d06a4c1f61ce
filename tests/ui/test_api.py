"""The dashboard's JSON API, asked over HTTP of a real uvicorn server on a loopback port.

Every answer is checked against what metalab itself says about the same store
(``load_results`` + ``to_dataframe`` + pandas), not against constants alone.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from dashboard_helpers import EXPERIMENT_ID, Server

import metalab

E = EXPERIMENT_ID


@pytest.fixture(scope="module")
def frame(pi_store: Path) -> pd.DataFrame:
    """What metalab loads from the store, the oracle of every answer."""
    return metalab.load_results(pi_store).to_dataframe()


def _all_rows(server: Server, **params: object) -> pd.DataFrame:
    doc = server.json("/api/runs", experiment=E, limit=1000, **params)
    return pd.DataFrame(doc["rows"], columns=doc["columns"])


def test_experiments_list_counts_progress_and_identity(server: Server) -> None:
    doc = server.json("/api/experiments")
    assert doc["store"].startswith("file://")
    [exp] = doc["experiments"]
    assert (exp["experiment_id"], exp["name"], exp["version"]) == (E, "pi_ui", "0.1")
    assert exp["total"] == 12 and exp["launches"] == 1
    assert exp["counts"] == {"success": 9, "failed": 3, "pending": 0}
    assert exp["progress"] == 1.0
    assert exp["loaded_runs"] in (None, 12)  # 12 once a page has asked for the table
    assert exp["metadata"] == {"author": "tests/ui", "notes": "pi for the dashboard"}


def test_experiment_detail_has_manifest_metadata_and_columns(server: Server) -> None:
    doc = server.json("/api/experiment", experiment=E)
    assert doc["metadata"] == {"author": "tests/ui", "notes": "pi for the dashboard"}
    assert doc["manifest"]["experiment_id"] == E
    assert doc["loaded"] == 12
    columns = doc["columns"]
    assert columns["params"] == ["param_n_samples"]
    assert {"pi_estimate", "abs_error"} <= set(columns["metrics"])
    assert columns["statuses"] == ["failed", "success"]
    assert columns["error_types"] == ["ValueError"]


def test_runs_pages_cover_every_run_once_in_task_order(server: Server, frame: pd.DataFrame) -> None:
    first = server.json("/api/runs", experiment=E, limit=5)
    assert (first["total"], first["matched"], len(first["rows"])) == (12, 12, 5)
    ids = []
    for offset in (0, 5, 10):
        page = server.json("/api/runs", experiment=E, limit=5, offset=offset)
        ids += [row[page["columns"].index("run_id")] for row in page["rows"]]
    assert ids == frame["run_id"].tolist()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "failed"}, lambda f: f["status"] == "failed"),
        ({"status": "success,failed"}, lambda f: f["status"].isin(["success", "failed"])),
        ({"error_type": "ValueError"}, lambda f: f["error_type"] == "ValueError"),
        ({"where": ["n_samples>=1000"]}, lambda f: f["param_n_samples"] >= 1000),
        ({"where": ["param_n_samples=100"]}, lambda f: f["param_n_samples"] == 100),
        ({"where": ["pi_estimate<3.14"]}, lambda f: f["pi_estimate"] < 3.14),
        (
            {"where": ["n_samples!=100", "abs_error<=0.05"]},
            lambda f: (f["param_n_samples"] != 100) & (f["abs_error"] <= 0.05),
        ),
        ({"where": ["error_message~UNLUCKY"]}, lambda f: f["error_type"].notna()),
        (
            {"status": "success", "where": ["n_samples>100"]},
            lambda f: (f["status"] == "success") & (f["param_n_samples"] > 100),
        ),
    ],
)
def test_filters_match_pandas(
    server: Server, frame: pd.DataFrame, params: dict[str, object], expected: object
) -> None:
    got = _all_rows(server, **params)
    want = frame[expected(frame)]  # type: ignore[operator]
    assert 0 < len(want) < 12 or params.get("status") == "success,failed"
    assert got["run_id"].tolist() == want["run_id"].tolist()


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_sort_matches_pandas_with_missing_values_last(
    server: Server, frame: pd.DataFrame, order: str
) -> None:
    got = _all_rows(server, sort="pi_estimate", order=order)
    want = frame.sort_values(
        "pi_estimate", ascending=order == "asc", kind="stable", na_position="last"
    )
    assert got["run_id"].tolist() == want["run_id"].tolist()
    assert got["pi_estimate"].tail(3).isna().all()  # the failed runs have no estimate


def test_filtered_sorted_page_in_the_middle(server: Server, frame: pd.DataFrame) -> None:
    doc = server.json(
        "/api/runs", experiment=E, where=["n_samples>=1000"], sort="abs_error", offset=2, limit=3
    )
    want = frame[frame["param_n_samples"] >= 1000].sort_values("abs_error", kind="stable")
    ids = [row[doc["columns"].index("run_id")] for row in doc["rows"]]
    assert doc["matched"] == 6 and ids == want["run_id"].tolist()[2:5]


def test_csv_is_the_filtered_sorted_view(server: Server, frame: pd.DataFrame) -> None:
    status, body, headers = server.get(
        "/api/runs.csv", experiment=E, where=["n_samples<=1000"], sort="replicate", order="desc"
    )
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert "attachment" in headers["content-disposition"]
    got = pd.read_csv(io.BytesIO(body))
    want = frame[frame["param_n_samples"] <= 1000].sort_values(
        "replicate", ascending=False, kind="stable"
    )
    assert got["run_id"].tolist() == want["run_id"].tolist()
    assert list(got.columns) == list(frame.columns)
    pd.testing.assert_series_equal(
        got["pi_estimate"].reset_index(drop=True), want["pi_estimate"].reset_index(drop=True)
    )


@pytest.mark.parametrize(
    ("params", "status", "names"),
    [
        ({"where": ["nope>3"]}, 400, ["'nope'", "param_n_samples"]),
        ({"where": ["n_samples>=many"]}, 400, ["'many'", "not a number"]),
        ({"where": ["status<3"]}, 400, ["numeric column"]),
        ({"where": ["just words"]}, 400, ["COLUMN OP VALUE"]),
        ({"sort": "weight"}, 400, ["sort='weight'"]),
        ({"order": "sideways"}, 400, ["'sideways'", "'asc' or 'desc'"]),
        ({"limit": 0}, 400, ["limit=0"]),
        ({"offset": -1}, 400, ["offset=-1"]),
    ],
)
def test_bad_queries_answer_typed_errors_naming_the_value(
    server: Server, params: dict[str, object], status: int, names: list[str]
) -> None:
    doc = server.json("/api/runs", expect=status, experiment=E, **params)
    assert doc["error"]["type"] == "ExperimentError"
    for name in names:
        assert name in doc["error"]["message"]


def test_malformed_parameters_answer_400_in_the_same_shape(server: Server) -> None:
    doc = server.json("/api/runs", expect=400, experiment=E, offset="abc")
    assert doc["error"]["type"] == "RequestValidationError"
    assert "offset" in doc["error"]["message"] and "'abc'" in doc["error"]["message"]
    doc = server.json("/api/runs", expect=400)
    assert "experiment" in doc["error"]["message"]


def test_unknown_things_are_404_and_bad_ids_400(server: Server) -> None:
    doc = server.json("/api/runs", expect=404, experiment="nope:1")
    assert "nope:1" in doc["error"]["message"] and E in doc["error"]["message"]
    assert server.json("/api/runs/" + "0" * 32, expect=404)["error"]["type"] == "NotFound"
    assert "'xyz'" in server.json("/api/runs/xyz", expect=400)["error"]["message"]


def test_plot_data_is_the_replicate_aggregation(server: Server, frame: pd.DataFrame) -> None:
    ok = frame[frame["status"] == "success"]
    stats = ok.groupby("param_n_samples")["pi_estimate"].agg(["mean", "std", "count"])
    for errorbar, spread in (("sd", stats["std"]), ("sem", stats["std"] / stats["count"] ** 0.5)):
        doc = server.json(
            "/api/plot", experiment=E, x="n_samples", y="pi_estimate", errorbar=errorbar
        )
        assert doc["points"] == 3 and doc["runs"] == 9
        assert doc["data"]["x"] == stats.index.tolist()
        assert doc["data"]["mean"] == pytest.approx(stats["mean"].tolist())
        assert doc["data"]["err"] == pytest.approx(spread.tolist())
        assert doc["data"]["n"] == [3, 3, 3]
        assert f"mean ± {errorbar}" in doc["ylabel"]
    none = server.json("/api/plot", experiment=E, x="n_samples", y="pi_estimate", errorbar="none")
    assert none["errorbar"] is None and none["data"]["err"] == [None, None, None]


def test_plot_of_a_filtered_view_and_bad_plot_requests(server: Server) -> None:
    doc = server.json(
        "/api/plot", experiment=E, x="n_samples", y="pi_estimate", where=["n_samples>100"]
    )
    assert doc["data"]["x"] == [1000, 10000]
    bad = server.json(
        "/api/plot", expect=400, experiment=E, x="n_samples", y="pi_estimate", errorbar="iqr"
    )
    assert "'iqr'" in bad["error"]["message"]
    bad = server.json("/api/plot", expect=400, experiment=E, x="n_samples", y="weight")
    assert "y='weight'" in bad["error"]["message"]
    bad = server.json(
        "/api/plot", expect=400, experiment=E, x="n_samples", y="pi_estimate", status="failed"
    )
    assert "none of the 3 selected runs succeeded" in bad["error"]["message"]


def test_run_detail_log_series_figure_and_array(server: Server, pi_store: Path) -> None:
    results = metalab.load_results(pi_store)
    run = next(r for r in results.successful if r.params["n_samples"] == 1000)
    doc = server.json(f"/api/runs/{run.run_id}")
    assert doc["params"] == {"n_samples": 1000}
    assert doc["metrics"]["pi_estimate"] == pytest.approx(run.metrics["pi_estimate"])
    assert "estimating pi with n=1000" in doc["log"] and doc["log"] == run.log
    assert [s for s, _ in doc["metric_series"]["running_estimate"]] == [0, 1, 2, 3]
    artifacts = {a["name"]: a for a in doc["artifacts"]}
    assert artifacts["inside"]["kind"] == "numpy"
    assert "shape=(100,)" in artifacts["inside"]["summary"]
    status, body, headers = server.get(artifacts["samples"]["url"])
    assert status == 200 and headers["content-type"] == "image/png"
    assert body == bytes(run.figure("samples"))
    assert server.get(f"/api/runs/{run.run_id}/artifacts/inside")[0] == 404


def test_failed_run_detail_has_error_and_traceback(server: Server, pi_store: Path) -> None:
    failed = metalab.load_results(pi_store).failed[0]
    doc = server.json(f"/api/runs/{failed.run_id}")
    assert doc["status"] == "failed"
    assert doc["error"]["type"] == "ValueError"
    assert "unlucky" in doc["error"]["message"]
    assert "Traceback" in doc["error"]["traceback"] and "unlucky" in doc["error"]["traceback"]


def test_compare_marks_the_fields_that_differ(server: Server, pi_store: Path) -> None:
    results = metalab.load_results(pi_store)
    a = next(r for r in results if r.params["n_samples"] == 100 and r.record.replicate == 0)
    b = next(r for r in results if r.params["n_samples"] == 100 and r.record.replicate == 1)
    c = results.failed[0]
    doc = server.json("/api/compare", ids=f"{a.run_id},{b.run_id},{c.run_id}")
    assert doc["run_ids"] == [a.run_id, b.run_id, c.run_id]
    fields = {f"{s}.{f['name']}": f for s, fs in doc["sections"].items() for f in fs}
    assert fields["params.n_samples"]["values"] == [100, 100, 13]
    assert fields["params.n_samples"]["differs"] is True
    assert fields["record.replicate"]["values"] == [0, 1, 0]
    assert fields["record.experiment_id"]["differs"] is False
    assert fields["record.error"]["values"][:2] == [None, None]
    pair = server.json("/api/compare", ids=f"{a.run_id},{b.run_id}")
    same = {f["name"]: f["differs"] for f in pair["sections"]["params"]}
    assert same == {"n_samples": False}
    one = server.json("/api/compare", expect=400, ids=a.run_id)
    assert "two or more" in one["error"]["message"]


def test_pages_are_served_and_plotly_comes_from_the_python_package(server: Server) -> None:
    import plotly

    shipped = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    status, body, _ = server.get("/vendor/plotly.min.js")
    assert status == 200 and body == shipped.read_bytes()
    for path, params in (
        ("/", {}),
        ("/experiment", {"experiment": E}),
        ("/plot", {"experiment": E}),
    ):
        status, body, _ = server.get(path, **params)
        assert status == 200 and b"/static/app.js" in body
    assert json.loads(server.get("/api/experiments")[1])["experiments"]
    schema = server.json("/api/openapi.json")
    assert {"/api/runs", "/api/plot", "/api/compare"} <= set(schema["paths"])
    assert server.get("/docs")[0] == 404 and server.get("/api/docs")[0] == 404  # CDN-backed


@pytest.mark.postgres
def test_the_same_answers_from_postgresql(pi_store: Path, tmp_path: Path) -> None:
    import uuid

    from metalab.store import import_from_filestore
    from metalab.store.postgres import PostgresStore
    from services import postgres_url

    url = postgres_url()
    sep = "&" if "?" in url else "?"
    locator = f"{url}{sep}schema=t_{uuid.uuid4().hex}&artifact_root={tmp_path / 'pg_artifacts'}"
    import_from_filestore(str(pi_store), locator)
    try:
        with Server(locator) as pg:
            [exp] = pg.json("/api/experiments")["experiments"]
            assert exp["counts"] == {"success": 9, "failed": 3, "pending": 0}
            file_rows = metalab.load_results(pi_store).to_dataframe()
            doc = pg.json(
                "/api/runs", experiment=E, where=["n_samples>=1000"], sort="pi_estimate", limit=100
            )
            want = file_rows[file_rows["param_n_samples"] >= 1000].sort_values(
                "pi_estimate", kind="stable"
            )
            assert [r[doc["columns"].index("run_id")] for r in doc["rows"]] == want[
                "run_id"
            ].tolist()
            plot = pg.json("/api/plot", experiment=E, x="n_samples", y="pi_estimate")
            assert plot["data"]["n"] == [3, 3, 3]
            run = metalab.load_results(pi_store).successful[0]
            detail = pg.json(f"/api/runs/{run.run_id}")
            assert detail["log"] == run.log
            [figure] = [a for a in detail["artifacts"] if a["kind"] == "png"]
            assert pg.get(figure["url"])[1] == bytes(run.figure("samples"))
    finally:
        store = PostgresStore.from_locator(locator)
        try:
            store.drop_schema()
        finally:
            store.close()


def test_a_fallback_pair_with_its_primary_down_is_read_from_the_fallback(
    pi_store: Path, frame: pd.DataFrame
) -> None:
    import urllib.parse
    import warnings

    down = "postgresql://metalab@127.0.0.1:1/none"  # nothing listens on port 1
    query = urllib.parse.urlencode({"primary": down, "fallback": f"file://{pi_store}"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "primary store ... is unreachable"
        with Server(f"fallback://?{query}") as pair:
            [exp] = pair.json("/api/experiments")["experiments"]
            assert exp["counts"] == {"success": 9, "failed": 3, "pending": 0}
            got = pair.json("/api/runs", experiment=E, status="failed")
            ids = [row[got["columns"].index("run_id")] for row in got["rows"]]
            assert ids == frame[frame["status"] == "failed"]["run_id"].tolist()
