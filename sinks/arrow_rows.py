"""usage_events rows as ONE Arrow table: what the processor hands either engine.

The processor builds an Arrow table of ``EVENT_COLUMNS`` for every batch (token
events straight from the native decoder's columns, processor/token_columns.py; the
others through ``arrow_table``), and each engine reads it its own way:

- chDB (sinks/chdb_sink.py) in this process, ``INSERT ... SELECT ... FROM
  Python(rows)``: its SELECT expressions make the columns' types;
- a ClickHouse server (sinks/clickhouse_sink.py) from the request body, as an Arrow
  file (``INSERT ... FORMAT Arrow``), times and metadata cast in Arrow first.

One table for both, so the token column path (Rust decoder, column pricing: about
half the processor's CPU per event of rows built per event, docs/benchmarks.md)
serves the server and cluster path as it serves the embedded one. The two
conversions store the same values: tests/sinks/test_engines.py runs every value
check on both.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa

from sinks.base import EVENT_COLUMNS, EventWriter

TIME_COLUMNS = ("time", "ingested_at", "processed_at")  # epoch ms here


_ARROW_TYPES = {
    str: pa.string(),
    bytes: pa.binary(),  # read into a String column as is
    int: pa.int64(),
    Decimal: pa.decimal128(38, 12),
    dict: pa.string(),  # the metadata as JSON text: JSONExtract makes it a Map
}
# Not nullable: no column of usage_events is, and the engine reads nullable Arrow as
# Nullable(T).
SCHEMA = pa.schema(
    [pa.field(name, _ARROW_TYPES[kind], nullable=False) for name, kind in EVENT_COLUMNS.items()]
)


def arrow_table(columns: Mapping[str, list[Any]]) -> pa.Table:
    """Rows built per event (processor/rows.py ``EventColumns``) as the Arrow table."""
    arrays = []
    for name, kind in EVENT_COLUMNS.items():
        values = columns[name]
        if kind is dict:
            dumps = orjson.dumps
            # Most events carry no metadata: skip the call for them.
            arrays.append(pa.array([dumps(v).decode() if v else "{}" for v in values], pa.string()))
        elif kind is Decimal:
            arrays.append(pa.array([str(v) for v in values], pa.string()))
        else:
            arrays.append(pa.array(values, _ARROW_TYPES[kind]))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


class ArrowRows(EventWriter):
    """An ``EventWriter`` whose rows are an Arrow table in ``SCHEMA``; each engine's writer
    says how its engine reads the table (``insert_encoded``).

    A writer with it also takes token rows built straight as Arrow columns
    (processor/token_columns.py), concatenated with ``encode``'s.
    """

    arrow_schema = SCHEMA

    def insert(self, columns: Mapping[str, list[Any]], dedup_token: str) -> None:
        self.insert_encoded(self.encode(columns), dedup_token)

    @abc.abstractmethod
    def insert_encoded(self, rows: pa.Table, dedup_token: str) -> None:
        """One INSERT of ``rows``, with ``EventWriter.insert``'s guarantees."""

    def encode(self, columns: Mapping[str, list[Any]]) -> pa.Table:
        # An Arrow table, built column by column in C, is read several times
        # faster than Python lists (docs/design.md#clickhouse).
        return arrow_table(columns)

    def slice(self, rows: pa.Table, start: int, stop: int) -> pa.Table:
        return rows.slice(start, stop - start)

    def pick(self, rows: pa.Table, indexes: Sequence[int]) -> pa.Table:
        return rows.take(pa.array(indexes, pa.int64()))

    def concat(self, parts: Sequence[pa.Table]) -> pa.Table:
        return pa.concat_tables(parts)


__all__ = ["SCHEMA", "TIME_COLUMNS", "ArrowRows", "arrow_table"]
