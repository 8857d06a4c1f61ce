"""Every exception metalab raises, in one place.

The hierarchy, so you can see at a glance what to catch::

    MetalabError
    ├── EncodingError (ValueError)       a value has no canonical encoding (NaN, object, ...)
    ├── ParamSpecError (ValueError)      a grid/random/manual source is malformed
    ├── SeedSpecError (ValueError)       a seed plan or seed bundle request is malformed
    ├── ExperimentError (ValueError)     an Experiment or operation is malformed
    ├── ContextError (ValueError)        a context spec is malformed or a FilePath is missing
    ├── CaptureError (ValueError)        a metric, artifact, figure or log call is invalid
    ├── StoreError                       a store cannot be read or written
    │   ├── LocatorError (ValueError)    a store locator is unknown or malformed
    │   ├── CorruptRecordError           a stored file cannot be parsed
    │   └── StoreUnavailableError        the backend cannot be reached right now
    ├── ExecutorError                    an executor cannot run or submit work
    │   └── SlurmError                   sbatch/squeue/scancel failed
    ├── SlurmConfigError (ValueError)    a SlurmConfig value is invalid
    ├── RunTimeoutError (TimeoutError)   a run exceeded its time limit
    ├── WorkerCrashedError               a worker process died while running
    ├── ServiceError                     the PostgreSQL service manager failed
    └── UnsafeLoadError                  loading a pickle was not explicitly allowed

Errors whose cause is bad input also subclass :class:`ValueError`, so code that already
catches ``ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "CaptureError",
    "ContextError",
    "CorruptRecordError",
    "EncodingError",
    "ExecutorError",
    "ExperimentError",
    "LocatorError",
    "MetalabError",
    "ParamSpecError",
    "RunTimeoutError",
    "SeedSpecError",
    "ServiceError",
    "SlurmConfigError",
    "SlurmError",
    "StoreError",
    "StoreUnavailableError",
    "UnsafeLoadError",
    "WorkerCrashedError",
]


class MetalabError(Exception):
    """Base class of every error raised by metalab."""


class EncodingError(MetalabError, ValueError):
    """A value cannot be canonically encoded (NaN, infinity, unsupported type...).

    The message names the key path of the offending value, e.g. ``params['lr'][2]``.
    """


class ParamSpecError(MetalabError, ValueError):
    """A parameter source (grid, random, manual) or distribution is malformed."""


class SeedSpecError(MetalabError, ValueError):
    """A seed plan or a seed-bundle request is malformed."""


class ExperimentError(MetalabError, ValueError):
    """An Experiment, operation signature or run() argument is malformed."""


class ContextError(MetalabError, ValueError):
    """A context spec is malformed, or a FilePath/DirPath is missing at run time."""


class CaptureError(MetalabError, ValueError):
    """A capture call (metric, artifact, figure, log) received a value it cannot store."""


class StoreError(MetalabError):
    """A store could not be read or written."""


class LocatorError(StoreError, ValueError):
    """A store locator has an unknown scheme or is malformed."""


class CorruptRecordError(StoreError):
    """A stored file is truncated or unparsable; the message names the file and why."""


class StoreUnavailableError(StoreError):
    """The store's backend cannot be reached (database down, refused, timed out)."""


class ExecutorError(MetalabError):
    """An executor could not run or submit work."""


class SlurmError(ExecutorError):
    """A SLURM command (sbatch, squeue, scancel) failed; holds its output."""


class SlurmConfigError(MetalabError, ValueError):
    """A SlurmConfig option is invalid (time format, memory units, counts...)."""


class RunTimeoutError(MetalabError, TimeoutError):
    """A run exceeded its time limit and was stopped."""


class WorkerCrashedError(MetalabError):
    """A worker process died (signal, os._exit, out of memory) while running a run."""


class ServiceError(MetalabError):
    """The PostgreSQL service manager could not start, stop or find a server."""


class UnsafeLoadError(MetalabError):
    """Loading a pickled artifact needs an explicit opt-in (``allow_pickle=True``)."""
