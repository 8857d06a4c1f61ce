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
    │   │   └── UnsafeNameError          a name read from a store would escape its folder
    │   ├── StoreUnavailableError        the backend cannot be reached right now
    │   └── StoreAuthError               the backend answered but refused the login
    ├── ExecutorError                    an executor cannot run or submit work
    │   ├── SlurmError                   sbatch/squeue/scancel failed
    │   └── WorkerCrashedError           a worker process died (signal, os._exit, OOM)
    ├── SlurmConfigError (ValueError)    a SlurmConfig value is invalid
    ├── RunTimeoutError (TimeoutError)   a run exceeded its time limit
    ├── ResultTimeoutError (TimeoutError) result(timeout=...) ran out; the runs go on
    ├── ServiceError                     the PostgreSQL service manager failed
    └── UnsafeLoadError                  code or config could not be proven to come from you
        ├── UntrustedFileError           a file is foreign-owned or group/other-writable
        └── SignatureError               a pickled payload's HMAC does not verify

What each error tells you besides its message (attributes)::

    StoreError (and subclasses)   locator, path     which store, which file or blob key
    UnsafeNameError               name              the refused name
    SlurmError                    command, exit_code, stdout, stderr   what SLURM said
    WorkerCrashedError            run_id, exit_code (negative: the signal that killed it)
    RunTimeoutError               run_id, timeout
    ResultTimeoutError            experiment_id, timeout
    ServiceError                  path              the service directory or file
    UntrustedFileError            path, owner_uid, mode
    SignatureError                what              which payload failed its check

Errors whose cause is bad input also subclass :class:`ValueError`, so code that already
catches ``ValueError`` keeps working. Context fields are keyword-only and ``None`` where
the raising code cannot know them (e.g. a store error raised below any one file); the
message always repeats them, so printing an error loses nothing.
"""

from __future__ import annotations

from typing import Any

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
    "ResultTimeoutError",
    "RunTimeoutError",
    "SeedSpecError",
    "ServiceError",
    "SignatureError",
    "SlurmConfigError",
    "SlurmError",
    "StoreAuthError",
    "StoreError",
    "StoreUnavailableError",
    "UnsafeLoadError",
    "UnsafeNameError",
    "UntrustedFileError",
    "WorkerCrashedError",
]


class MetalabError(Exception):
    """Base class of every error raised by metalab."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Context fields are keyword-only, which Exception's default reduction (calling
        # ``cls(*args)``) cannot pass: copy, deepcopy and pickle (process pools) would
        # fail or drop them. Rebuild without __init__, then restore args and fields.
        return (_rebuild, (type(self), self.args), self.__dict__)


def _rebuild(cls: type[MetalabError], args: tuple[Any, ...]) -> MetalabError:
    error = cls.__new__(cls, *args)
    error.args = args  # OSError's __new__ (TimeoutError subclasses) leaves them to __init__
    return error


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
    """A store could not be read or written.

    Attributes:
        locator: the store's (redacted) locator, when the error is about one store.
        path: the file (or blob key, for a database store) that failed, when there is one.
    """

    def __init__(
        self, message: str, *, locator: str | None = None, path: str | None = None
    ) -> None:
        super().__init__(message)
        self.locator = locator
        self.path = path


class LocatorError(StoreError, ValueError):
    """A store locator has an unknown scheme or is malformed."""


class CorruptRecordError(StoreError):
    """A stored file is truncated or unparsable; the message names the file and why."""


class StoreUnavailableError(StoreError):
    """The store's backend cannot be reached (database down, refused, timed out)."""


class ExecutorError(MetalabError):
    """An executor could not run or submit work."""


class SlurmError(ExecutorError):
    """A SLURM command (sbatch, squeue, scancel) failed; holds the command and its output.

    Attributes:
        command: the argv that failed (None when no command ran, e.g. a bad log path).
        exit_code: its exit status (None when it did not exit: missing, timed out).
        stdout: what it printed on stdout (None when it did not run to the end).
        stderr: what it printed on stderr, e.g. sbatch's reason for refusing a job.
    """

    def __init__(
        self,
        message: str,
        *,
        command: tuple[str, ...] | None = None,
        exit_code: int | None = None,
        stdout: str | None = None,
        stderr: str | None = None,
    ) -> None:
        super().__init__(message)
        self.command = command
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr


class SlurmConfigError(MetalabError, ValueError):
    """A SlurmConfig option is invalid (time format, memory units, counts...)."""


class RunTimeoutError(MetalabError, TimeoutError):
    """A run exceeded its time limit and was stopped.

    Attributes:
        run_id: the run that was stopped, when the raiser knows it.
        timeout: the limit it exceeded, in seconds, when known.
    """

    def __init__(
        self, message: str, *, run_id: str | None = None, timeout: float | None = None
    ) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.timeout = timeout


class WorkerCrashedError(ExecutorError):
    """A worker process died (signal, os._exit, out of memory).

    Recorded as the error of the run it was running; raised by ``result()`` when workers
    keep dying before running anything (then ``run_id`` is None).

    Attributes:
        run_id: the run it was running, if any.
        exit_code: the process's exit status (negative: killed by that signal), None
            when it is not known (a SLURM task that left the queue).
    """

    def __init__(
        self, message: str, *, run_id: str | None = None, exit_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.exit_code = exit_code


class ServiceError(MetalabError):
    """The PostgreSQL service manager could not start, stop or find a server.

    Attributes:
        path: the service directory (or file in it) involved, when there is one.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class UnsafeLoadError(MetalabError):
    """Something that would run code or redirect work cannot be proven to come from you.

    Loading a pickled artifact needs an explicit opt-in (``allow_pickle=True``); the
    subclasses cover files and payloads that another user could have written.
    """


class UntrustedFileError(UnsafeLoadError):
    """A file metalab would trust (a blob, a ``service.json``) is not safely yours.

    Trusted files must be owned by the current user and not writable by group or others.

    Attributes:
        path: the refused file.
        owner_uid: its owner's uid.
        mode: its permission bits.
    """

    def __init__(self, message: str, *, path: str, owner_uid: int, mode: int) -> None:
        super().__init__(message)
        self.path = path
        self.owner_uid = owner_uid
        self.mode = mode


class SignatureError(UnsafeLoadError):
    """A payload carrying pickled code failed its HMAC check and was not unpickled.

    It was written by another account (or altered after it was written); re-run the
    launch from the submitting account.

    Attributes:
        what: which payload (a blob key or an artifact name).
    """

    def __init__(self, message: str, *, what: str) -> None:
        super().__init__(message)
        self.what = what


class UnsafeNameError(CorruptRecordError, ValueError):
    """A name read from a store (run ID, artifact file, manifest) would escape its folder.

    Attributes:
        name: the refused name.
    """

    def __init__(self, message: str, *, name: str, path: str | None = None) -> None:
        super().__init__(message, path=path)
        self.name = name


class StoreAuthError(StoreError):
    """The store's server answered but refused the login (no or wrong password, unknown
    role or database): a configuration error, never taken for an outage to fail over."""


class ResultTimeoutError(MetalabError, TimeoutError):
    """``RunHandle.result(timeout=...)`` returned before every run finished.

    Nothing was stopped: the runs go on, and another ``result()`` waits again.

    Attributes:
        experiment_id: the experiment waited for.
        timeout: the seconds waited.
    """

    def __init__(self, message: str, *, experiment_id: str, timeout: float) -> None:
        super().__init__(message)
        self.experiment_id = experiment_id
        self.timeout = timeout
