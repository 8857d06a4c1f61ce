"""scan_states looks up shards asked about few runs by path and lists the others.

Both ways must answer exactly what the reference (tests/reference.py) answers. A shard
is listed once more than ``rust/src/scan.rs::STAT_MAX_PER_SHARD`` (64) of its runs are
asked about, so each example pads the question with absent runs of one drawn shard.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
from metalab import _core

LABELS = ("done", "failed", "absent")
IDS = ["ab12", "ab34", "abc5", "cd56", "zz", "x", "é€x", "ab" * 16, "cdcd" * 8]
SUFFIXES = (".json", ".done", ".failed")
PAST_LOOKUP = 65  # one more asked run than a shard looked up by path may have


def _layout(root: Path, shard_width: int) -> _core.ScanLayout:
    return _core.ScanLayout(
        runs_dir=root / "runs",
        done_dir=root / "done",
        failed_dir=root / "failed",
        record_suffix=SUFFIXES[0],
        done_suffix=SUFFIXES[1],
        failed_suffix=SUFFIXES[2],
        shard_width=shard_width,
    )


@settings(deadline=None, max_examples=60)
@given(
    st.integers(1, 3),
    st.lists(
        st.tuples(
            st.sampled_from(IDS),
            st.sampled_from(["runs", "done", "failed"]),
            st.sampled_from([*SUFFIXES, ".tmp"]),
            st.booleans(),  # hidden (a leading dot, as temporaries have)
        ),
        max_size=16,
    ),
    st.lists(st.sampled_from([*IDS, "q", "", ".ab12"]), max_size=10),
    st.sampled_from([i for i in IDS if len(i) >= 3]),
    st.booleans(),
)
def test_looked_up_and_listed_shards_answer_as_the_reference(
    shard_width: int,
    files: list[tuple[str, str, str, bool]],
    asked: list[str],
    padded: str,
    pad: bool,
) -> None:
    # Padding ids share the shard of ``padded`` (their first shard_width characters) and
    # have no file: they push that shard to the listing way, the others stay looked up.
    shard = padded[:shard_width]
    run_ids = asked + [f"{shard}~{i}" for i in range(PAST_LOOKUP)] if pad else asked
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for run_id, top, suffix, hidden in files:
            directory = root / top / run_id[:shard_width]
            directory.mkdir(parents=True, exist_ok=True)
            (directory / f"{'.' if hidden else ''}{run_id}{suffix}").touch()
        layout = _layout(root, shard_width)
        expected = ref.scan_states(
            layout.runs_dir,
            layout.done_dir,
            layout.failed_dir,
            run_ids,
            suffixes=SUFFIXES,
            shard_width=shard_width,
        )
        assert _core.scan_states(layout, run_ids, LABELS) == expected
        states, orphans = expected
        assert _core.scan_completed(layout, run_ids) == ([s == "done" for s in states], orphans)
