"""The batch's offsets: what the commit and the insert's deduplication token are made of.

``offset_spans`` feeds both (processor/pipeline.py): a wrong last offset commits past
a record never stored (lost) or short of one stored (read again, absorbed by dedupe);
a wrong first offset changes the token, so a retried batch would not be recognised by
ClickHouse. Records may come in any order and from any partitions.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from core.log.base import Record
from processor.pipeline import BillingRun, LiveTables, offset_spans
from sinks.base import EventTable


def record(partition: int, offset: int) -> Record:
    return Record("events", partition, offset, None, b"{}", (), 0)


COORDINATES = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 2**63 - 1)), unique=True, max_size=60
)


@given(COORDINATES)
def test_each_partition_spans_its_lowest_to_its_highest_offset_in_any_order(
    coordinates: list[tuple[int, int]],
) -> None:
    spans = offset_spans(record(p, o) for p, o in coordinates)
    expected: dict[int, list[int]] = {}
    for p, o in coordinates:
        expected.setdefault(p, []).append(o)
    assert spans == {p: [min(offsets), max(offsets)] for p, offsets in expected.items()}


class _Engine:
    """What a Target reads from an engine when it is built; the token needs nothing else."""

    sql: Any = None

    def writer(self, table: EventTable) -> None:
        return None

    def key_lookup(self, table: EventTable) -> None:
        return None


def test_the_insert_token_names_each_partitions_first_and_last_offset_in_partition_order() -> None:
    records = [record(2, 17), record(0, 5), record(2, 9), record(0, 4), record(2, 30)]
    assert LiveTables(_Engine()).token(records) == "events:0:4-5-events:2:9-30"  # type: ignore[arg-type]
    assert LiveTables(_Engine()).token(records[::-1]) == "events:0:4-5-events:2:9-30"  # type: ignore[arg-type]
    assert (
        BillingRun(_Engine(), "r1").token(records)  # type: ignore[arg-type]
        == "replay:r1:events:0:4-5-events:2:9-30"
    )
