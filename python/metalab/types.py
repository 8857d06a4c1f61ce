"""Type aliases used in user-facing signatures (e.g. derived metric functions)."""

from __future__ import annotations

from typing import TypeAlias

__all__ = ["Metric"]

Metric: TypeAlias = int | float
"""A metric value: a real number (non-finite floats are stored with a string encoding)."""
