"""``metalab ui STORE``: a read-only, live web dashboard of a store (``metalab[ui]`` extra).

Modules, each with one job:

- :mod:`metalab.ui.data`: the only module that reads the store (experiments, the
  in-memory run table per experiment and its refresh, runs, artifacts);
- :mod:`metalab.ui.query`: filter, sort, pages, CSV, plot data, comparison of a table;
- :mod:`metalab.ui.api`: the JSON API under ``/api`` (documented in docs/dashboard.md);
- :mod:`metalab.ui.app`: the FastAPI app (pages, static files, plotly.js);
- :mod:`metalab.ui.auth`: loopback-only by default, a token for any other address;
- :mod:`metalab.ui.server`: the CLI command and :func:`serve`.

Importing this package imports no web framework: ``metalab`` without the extra still
lists the ``ui`` command, which then says what to install.
"""

from __future__ import annotations

__all__: list[str] = []
