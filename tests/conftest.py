"""Shared pytest configuration.

Hypothesis profiles: ``HYPOTHESIS_PROFILE=fast`` (default, quick local/CI runs) or
``HYPOTHESIS_PROFILE=slow`` (many more examples, for thorough runs).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fast", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "slow", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))
