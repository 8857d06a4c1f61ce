"""Derived metrics: post-hoc values computed from a run, stored apart from its record.

Derived metrics never touch fingerprints. A derived function takes a
:class:`metalab.run_view.Run` and returns ``{name: number}``; one that raises is
reported for that run only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from metalab.capture.capture import metric_value
from metalab.errors import CaptureError

if TYPE_CHECKING:
    from metalab.records import RunRecord
    from metalab.store.base import Store

__all__ = ["apply_derived", "derived_name"]


def derived_name(fn: Callable[..., Any]) -> str:
    """The name a derived function is reported under."""
    return getattr(fn, "__name__", repr(fn))


def apply_derived(
    record: RunRecord, store: Store, fns: Sequence[Callable[[Any], dict[str, Any]]]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Evaluate ``fns`` on one run; return (values, {function name: error message})."""
    # Imported here: execution imports this module on every worker, and the run view
    # (with its HTML rendering) is only needed by launches that have derived metrics.
    from metalab.run_view import Run

    run = Run(record, store)
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for fn in fns:
        try:
            produced = fn(run)
            if not isinstance(produced, dict):
                raise CaptureError(
                    f"derived metric {derived_name(fn)!r} returned {type(produced).__name__}; "
                    f"expected a dict of name -> number"
                )
            values.update({str(k): metric_value(str(k), v) for k, v in produced.items()})
        except Exception as exc:
            errors[derived_name(fn)] = f"{type(exc).__name__}: {exc}"
    return values, errors
