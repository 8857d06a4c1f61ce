"""The dashboard application: pages, static files and the JSON API on one FastAPI app.

Pages are server-rendered Jinja2 shells (layout, navigation, the forms) whose data comes
only from the JSON API (:mod:`metalab.ui.api`), fetched by the small hand-written
``static/app.js``. Charts are drawn by plotly.js, served from the installed ``plotly``
Python package (``plotly/package_data/plotly.min.js``): nothing is fetched from a CDN and
this repository holds no copy of it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from metalab.errors import MetalabError
from metalab.ui.api import error_response, router
from metalab.ui.auth import TokenGuard
from metalab.ui.data import StoreData

__all__ = ["create_app", "plotly_js"]

_HERE = Path(__file__).resolve().parent
_templates = Jinja2Templates(directory=str(_HERE / "templates"))


def plotly_js() -> Path:
    """The ``plotly.min.js`` shipped inside the installed plotly Python package.

    Raises:
        ImportError: plotly is not installed, or its package holds no plotly.min.js.
    """
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the dashboard needs plotly: pip install 'metalab[ui]'")
    for root in spec.submodule_search_locations:
        path = Path(root) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    raise ImportError(f"plotly at {list(spec.submodule_search_locations)} has no plotly.min.js")


def create_app(data: StoreData, store_name: str, token: str | None = None) -> FastAPI:
    """The dashboard app over ``data`` (read-only).

    Args:
        data: the store access of this dashboard.
        store_name: how pages name the store (a password-free locator).
        token: required on every request when set (see :mod:`metalab.ui.auth`).
    """
    # No /docs page: FastAPI's Swagger UI loads its JavaScript from a CDN. The OpenAPI
    # schema is served; docs/dashboard.md is the reference.
    app = FastAPI(
        title="metalab dashboard",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.data = data
    app.state.store_name = store_name
    app.middleware("http")(TokenGuard(token))
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
    script = plotly_js()

    @app.exception_handler(MetalabError)
    def _metalab_error(request: Request, exc: MetalabError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    def _bad_request(request: Request, exc: RequestValidationError) -> Response:
        # One error shape for every bad input (FastAPI's own would be a 422 "detail").
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg')}"
            + (f", got {e['input']!r}" if e.get("input") is not None else "")
            for e in exc.errors()
        ]
        body = {"error": {"type": "RequestValidationError", "message": "; ".join(problems)}}
        return JSONResponse(body, status_code=400)

    @app.exception_handler(ValueError)
    def _value_error(request: Request, exc: ValueError) -> Response:
        return error_response(exc)

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def _plotly() -> FileResponse:
        return FileResponse(
            script, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"}
        )

    def page(template: str, request: Request, **context: Any) -> HTMLResponse:
        context |= {"store": store_name}
        return _templates.TemplateResponse(request, template, context)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def _experiments(request: Request) -> HTMLResponse:
        return page("experiments.html", request)

    @app.get("/experiment", response_class=HTMLResponse, include_in_schema=False)
    def _runs(request: Request, experiment: str) -> HTMLResponse:
        return page("runs.html", request, experiment=experiment)

    @app.get("/run/{run_id}", response_class=HTMLResponse, include_in_schema=False)
    def _run(request: Request, run_id: str) -> HTMLResponse:
        return page("run.html", request, run_id=run_id)

    @app.get("/plot", response_class=HTMLResponse, include_in_schema=False)
    def _plot(request: Request, experiment: str) -> HTMLResponse:
        return page("plot.html", request, experiment=experiment)

    @app.get("/compare", response_class=HTMLResponse, include_in_schema=False)
    def _compare(request: Request, ids: str = "") -> HTMLResponse:
        return page("compare.html", request, ids=ids)

    return app
