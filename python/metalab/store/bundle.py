"""Everything stored about one run, as exact bytes/text: the unit of store transfers.

Kept byte-exact (record JSON text, log text, derived JSON text, artifact bytes) so that a
round trip file -> PostgreSQL -> file reproduces the files, not just equal values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ArtifactBlob", "ManifestDoc", "RunBundle"]


@dataclass(frozen=True)
class ArtifactBlob:
    """One artifact file of a run."""

    file: str
    name: str
    kind: str
    data: bytes


@dataclass(frozen=True)
class ManifestDoc:
    """One launch manifest as stored: its experiment, time stamp and exact JSON text."""

    experiment_id: str
    stamp: str
    doc: str


@dataclass
class RunBundle:
    """The stored state of one run (absent parts are ``None``/empty).

    ``problems`` lists parts that were refused while reading the source (a symbolic
    link, an artifact path outside its folder), one line each; the transfer reports
    them and copies the rest.
    """

    run_id: str
    record_doc: str | None = None
    marker: str | None = None
    log: str = ""
    derived_doc: str | None = None
    artifacts: list[ArtifactBlob] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
