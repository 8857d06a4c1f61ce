"""Rust core of metalab (built with PyO3): identity, sweep decoding, seeds and scans.

Every byte produced here is specified in ``docs/run-identity.md``. Errors are the classes
of :mod:`metalab.errors`; messages name the offending value and what was expected.
"""

from collections.abc import Sequence
from os import PathLike
from typing import Any, Self, TypeVar, final

from typing_extensions import disjoint_base

__all__ = [
    "ENCODING_VERSION",
    "FINGERPRINT_HEX_CHARS",
    "RECORD_STATUSES",
    "GridCore",
    "ManualCore",
    "RandomCore",
    "ScanLayout",
    "__version__",
    "canonical_encode",
    "derive_entropy",
    "derive_seed",
    "fingerprint",
    "fingerprint_many",
    "index_checksum",
    "list_done",
    "load_index_columns",
    "load_record_columns",
    "parse_index_segment",
    "plan_run_ids",
    "preprocessing_root",
    "record_columns_from_docs",
    "run_id",
    "scan_completed",
    "scan_done",
    "scan_states",
    "seed_fingerprint",
    "seed_root",
    "to_plain",
]

ENCODING_VERSION: int
"""Version of the canonical encoding (1)."""

FINGERPRINT_HEX_CHARS: int
"""Length of fingerprints and run ids in hex characters (32, i.e. 128 bits; the chance of
any collision among 1e8 runs is about 1.5e-23)."""

__version__: str
"""Version of the Rust crate."""

RECORD_STATUSES: tuple[str, ...]
"""The ``status`` values the record checks accept (those of ``metalab.records.RunState``)."""

def canonical_encode(value: object) -> bytes:
    """Return the canonical encoding v1 of ``value``.

    Accepts None, bool, int (any size), finite float, str, list, tuple, dict with str keys,
    nested arbitrarily (up to 200 containers deep), plus NumPy bool, integer, float (up to
    64 bits), str and object values: scalars and 0-d arrays as ``.item()``, n-d arrays as
    ``.tolist()``. Other NumPy kinds (datetime64, timedelta64, complex, bytes, void,
    longdouble) are refused. Lists and tuples encode the same; dict entries are sorted by
    the UTF-8 bytes of their keys; 1, 1.0, True and "1" all differ.

    Raises:
        metalab.errors.EncodingError: NaN/infinity, a non-str dict key, a str with lone
            surrogates, an unsupported type, or nesting too deep; the message names the
            key path below ``value``, e.g. ``value['lr'][2]``.
    """

def to_plain(value: object, root: str = "value") -> Any:
    """Return ``value`` with every NumPy value replaced by the Python value it encodes as.

    Containers are rebuilt only where something inside them changed (tuples stay tuples,
    dicts keep their order); a value without NumPy parts is returned as the same object.
    The result has the same canonical encoding as ``value`` and is JSON-serialisable.

    Raises:
        metalab.errors.EncodingError: as :func:`canonical_encode`, with the key path
            below ``root``.
    """

def fingerprint(value: object) -> str:
    """Return the 32-hex-char BLAKE2b-128 fingerprint of ``canonical_encode(value)``.

    Raises:
        metalab.errors.EncodingError: as :func:`canonical_encode`.
    """

def fingerprint_many(values: list[object]) -> list[str]:
    """Return ``[fingerprint(v) for v in values]``; error paths read ``values[i]...``.

    Raises:
        metalab.errors.EncodingError: as :func:`canonical_encode`.
    """

def run_id(experiment_id: str, context_fp: str, params_fp: str, seed_fp: str) -> str:
    """Return the 32-hex-char run id of one (experiment, context, params, seed) quadruple.

    ``hex(BLAKE2b-128(b"metalab.run.v1\\0" + canonical_encode([experiment_id, context_fp,
    params_fp, seed_fp])))``.
    """

@disjoint_base
class GridCore:
    """A Cartesian grid of parameter axes, each value canonically encoded once.

    Point ``i`` decodes like ``itertools.product`` (the last axis varies fastest).
    Subclassable (``metalab.params.GridSource`` is one).
    """

    def __new__(cls, keys: list[str], axes: list[list[object]]) -> Self:
        """Validate and pre-encode a grid; ``axes[k]`` are the values of ``keys[k]``.

        Raises:
            metalab.errors.ParamSpecError: no axes, ``len(keys) != len(axes)``, a non-str or
                repeated key, an empty axis (names the key), or two values of one axis with
                the same canonical encoding (names the key, the value and both positions).
            metalab.errors.EncodingError: a value cannot be encoded; the path reads
                ``grid['key'][i]...``.
        """

    def __len__(self) -> int:
        """Number of points: the product of the axis lengths (always >= 1)."""

    def __getitem__(self, index: int, /) -> dict[str, Any]:
        """Point ``index`` as a fresh ``{key: value}`` dict (plain-Python values, key order).

        Negative ``index`` counts from the end.

        Raises:
            TypeError: ``index`` is not an int (a bool is not accepted).
            IndexError: ``index`` outside ``[-len, len)``.
        """

    def indices(self, index: int) -> list[int]:
        """Per-axis value positions of point ``index`` (key order as given).

        Negative ``index`` counts from the end.

        Raises:
            IndexError: ``index`` outside ``[-len, len)``.
        """

    def indices_range(self, start: int, stop: int) -> list[list[int]]:
        """``[indices(i) for i in range(start, stop)]``.

        Raises:
            IndexError: unless ``0 <= start <= stop <= len``.
        """

    def fingerprints(self, start: int, stop: int) -> list[str]:
        """Params fingerprints of points ``[start, stop)``.

        Item ``i - start`` equals ``fingerprint({key: axes[k][idx_k] ...})`` for point ``i``;
        computed from the pre-encoded pieces in parallel with the GIL released.

        Raises:
            IndexError: unless ``0 <= start <= stop <= len``.
        """

@disjoint_base
class RandomCore:
    """Counter-based random search: trial values are a pure function of
    ``(seed, index, key)``, so any trial is computed alone, in any order.

    Subclassable (``metalab.params.RandomSource`` is one)."""

    def __new__(
        cls,
        seed: int,
        space: list[tuple[str, str, tuple[float | int, ...]]],
        n_trials: int,
        options: list[list[object] | None] | None = None,
    ) -> Self:
        """Validate a random-search space.

        ``options``, when given, has one entry per key: the list of a ``choice``'s options
        (then ``[i]`` holds the option itself) or ``None``.

        ``space`` items are ``(key, kind, args)``:

        * ``("uniform", (lo, hi))`` float in ``[lo, hi]``, ``lo < hi``
        * ``("loguniform", (lo, hi))`` float, ``0 < lo < hi``
        * ``("randint", (lo, hi))`` int in ``[lo, hi]`` inclusive, ``lo <= hi``
        * ``("choice", (n_options,))`` int option INDEX in ``[0, n_options)``
        * ``("normal", (mu, sigma))`` float, ``sigma > 0``
        * ``("loguniform_int", (lo, hi))`` int in ``[lo, hi]``, ``1 <= lo <= hi``

        Raises:
            metalab.errors.ParamSpecError: ``n_trials <= 0``, ``seed`` outside i64, an
                unknown kind, a wrong number of arguments, a non-finite or non-numeric
                argument, a float where an int is needed, bad bounds, or a repeated key;
                the message names the key and the bad value.
            ValueError: ``options`` is not one entry per key, or lists values for a
                non-choice key or a number of them other than its ``n_options``.
        """

    def __len__(self) -> int:
        """``n_trials``."""

    def __getitem__(self, index: int, /) -> dict[str, Any]:
        """Trial ``index`` as a fresh ``{key: value}`` dict in space order.

        Negative ``index`` counts from the end.

        Raises:
            TypeError: ``index`` is not an int (a bool is not accepted).
            IndexError: ``index`` outside ``[-n_trials, n_trials)``.
        """

    def trial(self, index: int) -> list[float | int]:
        """Raw values of trial ``index`` in space order (negative counts from the end).

        Raises:
            IndexError: ``index`` outside ``[-n_trials, n_trials)``.
        """

    def trials(self, start: int, stop: int) -> list[list[float | int]]:
        """``[trial(i) for i in range(start, stop)]``, computed in parallel.

        Raises:
            IndexError: unless ``0 <= start <= stop <= n_trials``.
        """

@disjoint_base
class ManualCore:
    """Explicit parameter dicts, each handed out as a fresh copy.

    Subclassable (``metalab.params.ManualSource`` is one).
    """

    def __new__(cls, cases: list[dict[str, Any]]) -> Self:
        """Hold ``cases`` as given (validation is the caller's).

        Raises:
            TypeError: a case is not a dict.
        """

    def __len__(self) -> int:
        """Number of cases."""

    def __getitem__(self, index: int, /) -> dict[str, Any]:
        """A copy of case ``index`` whose dicts, lists and tuples are new (like
        ``copy.deepcopy``; a container subclass or other object is ``copy.deepcopy``-ed).

        Negative ``index`` counts from the end.

        Raises:
            TypeError: ``index`` is not an int (a bool is not accepted).
            IndexError: ``index`` outside ``[-len, len)``.
        """

def seed_fingerprint(base: int, replicate: int) -> str:
    """``fingerprint({"base": base, "replicate": replicate, "scheme": 1})``.

    Raises:
        metalab.errors.SeedSpecError: ``base`` outside i64 or ``replicate`` outside
            ``[0, 2**63)`` (or either not an int).
    """

def seed_root(base: int, replicate: int) -> bytes:
    """32-byte root of one replicate (domain ``metalab.seed.replicate.v1``).

    Raises:
        metalab.errors.SeedSpecError: as :func:`seed_fingerprint`.
    """

def preprocessing_root(base: int) -> bytes:
    """32-byte root shared by all replicates of ``base`` (domain
    ``metalab.seed.preprocessing.v1``); never equal to a replicate root.

    Raises:
        metalab.errors.SeedSpecError: ``base`` outside i64.
    """

def derive_seed(root: bytes, name: str) -> int:
    """Deterministic seed in ``[0, 2**32)`` for ``name`` under a 32-byte ``root``.

    Accepted by ``random.seed``, ``numpy.random.RandomState``, scikit-learn's
    ``random_state`` and ``torch.manual_seed``.

    Raises:
        metalab.errors.SeedSpecError: ``root`` is not 32 bytes long.
    """

def derive_entropy(root: bytes, name: str) -> int:
    """Deterministic int in ``[0, 2**128)`` for ``numpy.random.default_rng`` or
    ``random.Random`` (a different domain than :func:`derive_seed`).

    Raises:
        metalab.errors.SeedSpecError: ``root`` is not 32 bytes long.
    """

def plan_run_ids(
    experiment_id: str, context_fp: str, params_fps: list[str], seed_fps: list[str]
) -> list[str]:
    """Run ids of all ``len(params_fps) * len(seed_fps)`` tasks.

    Task ``t`` uses ``params_fps[t // R]`` and ``seed_fps[t % R]`` (``R = len(seed_fps)``),
    so the replicate varies fastest. Computed in parallel with the GIL released.
    """

_L = TypeVar("_L")

@final
class ScanLayout:
    """The FileStore layout as the scanners take it: where the record, done-marker and
    failed-marker trees are, their file suffixes and the shard width.

    A run's file of a tree is ``{dir}/{run_id[:shard_width]}/{run_id}{suffix}``. The
    scanners know no directory name, suffix or shard rule of their own; build one with
    :attr:`metalab.store.layout.FileLayout.scan`, the owner of those names.
    """

    def __new__(
        cls,
        *,
        runs_dir: str | PathLike[str],
        done_dir: str | PathLike[str],
        failed_dir: str | PathLike[str],
        record_suffix: str,
        done_suffix: str,
        failed_suffix: str,
        shard_width: int,
    ) -> Self:
        """Raises:
        metalab.errors.StoreError: a suffix that is empty or holds ``/``, ``\\`` or
            NUL, or a ``shard_width`` outside 1..32 (the message names it).
        """

    @property
    def runs_dir(self) -> str:
        """Directory of the record shards."""

    @property
    def done_dir(self) -> str:
        """Directory of the done-marker shards."""

    @property
    def failed_dir(self) -> str:
        """Directory of the failed-marker shards."""

    @property
    def record_suffix(self) -> str:
        """What a record file name ends with after the run id."""

    @property
    def done_suffix(self) -> str:
        """What a done marker's name ends with after the run id."""

    @property
    def failed_suffix(self) -> str:
        """What a failed marker's name ends with after the run id."""

    @property
    def shard_width(self) -> int:
        """Leading run-id characters naming a run's shard directory."""

def scan_done(layout: ScanLayout, run_ids: list[str]) -> list[bool]:
    """Whether the done marker of each run id exists.

    Each needed shard directory is listed once (in parallel); a missing done directory or
    shard means not done. Names starting with ``.``, with another suffix or filed under
    the wrong shard never count.

    Raises:
        metalab.errors.StoreError: the done directory exists but is not a directory, or a
            directory cannot be read.
    """

def list_done(layout: ScanLayout) -> list[str]:
    """All run ids with a done marker, sorted.

    Raises:
        metalab.errors.StoreError: as :func:`scan_done`.
    """

def scan_completed(layout: ScanLayout, run_ids: list[str]) -> tuple[list[bool], list[str]]:
    """Which runs are done: their done marker AND their record file exist.

    Returns one flag per run id, and the run ids (in input order) whose marker exists
    without a record file (a deleted record: such a run is not done). Each needed marker
    shard is listed once, and its record shard once when it holds markers (in
    parallel, GIL released); markers are listed before records, so a run finishing
    during the scan is never taken for an orphan.

    Raises:
        metalab.errors.StoreError: the done directory exists but is not a directory, or a
            directory cannot be read.
    """

def scan_states(
    layout: ScanLayout, run_ids: list[str], labels: tuple[_L, _L, _L]
) -> tuple[list[_L], list[str]]:
    """Each run's state in one scan, as one of ``labels = (done, failed, absent)``.

    Done is as in :func:`scan_completed` (done marker AND record file; it wins over a
    failed marker an earlier attempt left), failed means a failed marker exists, absent
    anything else. The result holds the very ``labels`` objects (e.g. the members of
    :class:`metalab.records.StoredState`), so no state name lives in Rust and Python
    converts nothing. Also returns the orphans, as :func:`scan_completed` does (they are
    failed or absent). Per needed shard: one listing of failed markers, one of done
    markers and, when it has done markers, one of records (in parallel, GIL released).

    Raises:
        metalab.errors.StoreError: the done or failed directory exists but is not a
            directory, or a directory cannot be read.
    """

def load_record_columns(
    layout: ScanLayout,
    run_ids: list[str] | None = None,
    experiment_id: str | None = None,
) -> dict[str, Any]:
    """Read the FileStore records of ``layout`` in parallel and return them as columns.

    Reads every record file (or only the records of ``run_ids``; missing files are
    skipped), keeps those of ``experiment_id`` when given, ordered by (experiment id, task
    index). Keys: ``run_id``, ``experiment_id``, ``status``, ``task_index``,
    ``replicate``, ``duration_s``, ``started_at`` (one list each); ``params`` and
    ``metrics``: lists of ``(name, values, explicit_null_rows, first_row, position)``
    with ``None`` where a record lacks the key (metric strings ``"NaN"``, ``"Infinity"``,
    ``"-Infinity"`` become floats); ``problems``: ``(path, reason, corrupt)`` for files
    that could not be read (``corrupt=False``) or fail a record check of
    :mod:`metalab.store.record_codec` (``True``; a record whose ``run_id`` is not its file
    name included), and for runs whose done marker exists without a record file
    (``corrupt=False``: the marker is no proof of anything, but stays so the problem stays
    visible until the run executes again). ``param_frames`` and ``metric_frames`` (one
    entry per column of ``params``/``metrics``) hold ``(numpy dtype, native bytes)``: the
    array pandas infers from that column's values (int64, float64 with NaN for ``None``,
    bool), or ``None`` where pandas must decide from the list (text, JSON, mixed kinds);
    ``duration_frame``: ``duration_s`` as float64 bytes (``None``: no duration at all).
    """

def record_columns_from_docs(
    docs: list[tuple[str, str]],
    experiment_id: str | None = None,
) -> dict[str, Any]:
    """Parse in-memory record documents ``(location, json_text)`` into columns, in parallel.

    Same result layout as :func:`load_record_columns`; a document that is not a valid
    record becomes a problem ``(location, reason, True)``. Used by stores that fetch the
    record texts in one query (PostgreSQL).
    """

def load_index_columns(
    layout: ScanLayout,
    segments: Sequence[str | PathLike[str]],
    experiment_id: str | None = None,
    run_ids: list[str] | None = None,
    snapshot: str | PathLike[str] | None = None,
    snapshot_min_records: int = 0,
) -> dict[str, Any]:
    """Every run of ``layout`` (or of ``run_ids``) as columns, answered from the segments.

    With ``snapshot`` (a path; whole loads only), a column snapshot saved there answers
    the load when every record file listed now is exactly a version it lists; a load that
    read the segments instead saves its answer there when it listed at least
    ``snapshot_min_records`` records and found no problem.

    A run whose record file (listed now) has exactly the identity ``(ino, mtime_ns,
    size)`` of one of its valid lines is answered by that line's summary; every other run
    is read from its record. The result equals ``load_record_columns(layout, run_ids,
    experiment_id)`` (rows, order, values, problems) plus ``index_stats``: counts
    ``segments``, ``unreadable_segments``, ``lines``, ``bad_lines`` (torn or failing the
    checksum), ``indexed``, ``from_records``, ``from_snapshot`` and ``snapshot_written``,
    and ``seconds``: per stage of the load
    (``read_segments``, ``parse_lines``, ...), ``(wall, process CPU)`` seconds. See
    ``metalab.store.index_segments``.
    """

def index_checksum(body: bytes) -> str:
    """The checksum field of a results-index line: hex BLAKE2b-8 of ``body``."""

def parse_index_segment(data: bytes) -> tuple[list[tuple[str, int, int, int, str]], int]:
    """Parse a segment's bytes: ``([(run_id, ino, mtime_ns, size, summary_json)], bad)``.

    Only newline-ended lines whose checksum matches count; ``bad`` counts the others.
    """
