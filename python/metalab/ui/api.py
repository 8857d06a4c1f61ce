"""The dashboard's JSON API (``/api/...``): the only source of data for its pages.

Endpoints, parameters and response shapes are listed in ``docs/dashboard.md``. Bad input
answers 400 and an unknown experiment, run or figure 404, both as
``{"error": {"type": ..., "message": ...}}`` with the message of the metalab error
(which names the bad value and what was expected). Handlers are plain ``def`` functions:
FastAPI runs them in its thread pool, so a slow store read never blocks the event loop.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from metalab.errors import MetalabError
from metalab.ui import query as q
from metalab.ui.data import NotFound, StoreData
from metalab.ui.query import Query as RunQuery

__all__ = ["error_response", "router"]

router = APIRouter(prefix="/api")

Experiment = Annotated[str, Query(description="experiment ID, name:version")]
Where = Annotated[list[str] | None, Query()]


def error_response(exc: Exception) -> JSONResponse:
    """The JSON error answer for a metalab error (404 for :class:`NotFound`, else 400)."""
    status = 404 if isinstance(exc, NotFound) else 400
    if not isinstance(exc, MetalabError | ValueError):
        status = 500
    body = {"error": {"type": type(exc).__name__, "message": str(exc)}}
    return JSONResponse(body, status_code=status)


def _json(content: dict[str, Any]) -> Response:
    """``content`` (already JSON-ready) as a response, skipping FastAPI's encoder.

    ``jsonable_encoder`` walks every value in Python: for the 400,000 numbers of a
    2,000 x 50 plot that was most of the request.
    """
    return JSONResponse(content)


def _data(request: Request) -> StoreData:
    data: StoreData = request.app.state.data
    return data


def _selected(
    request: Request,
    experiment: str,
    status: str | None,
    error_type: str | None,
    where: list[str] | None,
    sort: str | None,
    order: str | None,
) -> tuple[Any, Any]:
    snapshot = _data(request).snapshot(experiment)
    query = RunQuery.parse(status, error_type, where or [], sort, order)
    return snapshot, q.select(snapshot.frame, query)


@router.get("/experiments")
def list_experiments(request: Request) -> dict[str, Any]:
    """Every experiment of the store with its counts and progress."""
    data = _data(request)
    return {"store": request.app.state.store_name, "experiments": data.experiments()}


@router.get("/experiment")
def experiment(request: Request, experiment: Experiment) -> dict[str, Any]:
    """One experiment: summary, latest manifest, metadata, the table's columns."""
    data = _data(request)
    manifest = data.manifest(experiment)  # first: NotFound for an unknown experiment
    summary = next(e for e in data.experiments() if e["experiment_id"] == experiment)
    snapshot = data.snapshot(experiment)
    return {
        "summary": summary,
        "manifest": q.plain(manifest),
        "metadata": q.plain(manifest.get("metadata") or {}),
        "columns": q.describe_columns(snapshot.frame, snapshot.record_columns),
        "loaded": len(snapshot.frame),
        "loaded_at": snapshot.loaded_at,
        "load_seconds": snapshot.load_seconds,
        "merges": snapshot.merges,
        "problems": snapshot.problems,
    }


@router.get("/runs")
def runs(
    request: Request,
    experiment: Experiment,
    status: str | None = None,
    error_type: str | None = None,
    where: Where = None,
    sort: str | None = None,
    order: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> Response:
    """One page of the experiment's runs, filtered and sorted on the server."""
    start = time.perf_counter()
    snapshot, selected = _selected(request, experiment, status, error_type, where, sort, order)
    out = q.page(selected, offset, limit)
    out |= {
        "experiment_id": experiment,
        "total": len(snapshot.frame),
        "loaded_at": snapshot.loaded_at,
        "seconds": time.perf_counter() - start,
    }
    return _json(out)


@router.get("/runs.csv")
def runs_csv(
    request: Request,
    experiment: Experiment,
    status: str | None = None,
    error_type: str | None = None,
    where: Where = None,
    sort: str | None = None,
    order: str | None = None,
) -> Response:
    """Every run of the current filtered and sorted view, as CSV."""
    _, selected = _selected(request, experiment, status, error_type, where, sort, order)
    name = experiment.replace(":", "_").replace("/", "_")
    headers = {"Content-Disposition": f'attachment; filename="{name}.csv"'}
    return Response(q.csv_text(selected), media_type="text/csv", headers=headers)


@router.get("/plot")
def plot(
    request: Request,
    experiment: Experiment,
    x: str,
    y: str,
    hue: str | None = None,
    col: str | None = None,
    errorbar: str = "sd",
    status: str | None = None,
    error_type: str | None = None,
    where: Where = None,
) -> Response:
    """Replicate-aggregated plot data (metalab.plot_data.aggregate) of the filtered runs."""
    start = time.perf_counter()
    _, selected = _selected(request, experiment, status, error_type, where, None, None)
    bar = None if errorbar in ("", "none") else errorbar
    points = q.plot_data(selected, x, y, hue or None, col or None, bar)
    text = points.to_json(seconds=time.perf_counter() - start)
    return Response(text, media_type="application/json")


@router.get("/runs/{run_id}")
def run(request: Request, run_id: str) -> dict[str, Any]:
    """One run: its record, log, stepped metrics and artifacts (figures by URL)."""
    doc: dict[str, Any] = q.plain(_data(request).run(run_id))
    return doc


@router.get("/runs/{run_id}/artifacts/{name}")
def figure(request: Request, run_id: str, name: str) -> Response:
    """A figure artifact's PNG bytes."""
    data = _data(request).figure(run_id, name)
    return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"})


@router.get("/compare")
def compare(request: Request, ids: str) -> dict[str, Any]:
    """Two or more runs side by side (``ids`` comma separated), differing fields marked."""
    data = _data(request)
    wanted = [i.strip() for i in ids.split(",") if i.strip()]
    return q.compare([data.record(run_id) for run_id in wanted])
