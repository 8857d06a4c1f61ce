"""Capture of metrics, artifacts, figures and logs during a run."""

from metalab.capture.capture import LOG_LEVELS, Capture, check_artifact_name
from metalab.capture.serializers import deserialize, serialize

__all__ = ["LOG_LEVELS", "Capture", "check_artifact_name", "deserialize", "serialize"]
