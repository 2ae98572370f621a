"""The writer's rows cut and joined (``EventWriter.slice`` / ``pick`` / ``concat``) insert
exactly those rows, on every engine path.

The pipeline cuts a batch's encoded rows this way: the halves of an INSERT the store
refuses (bisection), the batch minus its stored duplicates, the per-record rows and
the token rows made one INSERT. Both writers cut an Arrow table (sinks/arrow_rows.py):
chDB's reads it in the process, the server's (here through the HTTP front over chDB)
sends it as an Arrow file.
"""

from __future__ import annotations

import time

from sinks.base import Engine
from tests.support.rows import event_columns


def test_cut_and_joined_rows_insert_exactly_those_rows(engine: Engine) -> None:
    tenant = f"cut-{type(engine).__name__}"
    ids = [f"r-{i}" for i in range(10)]
    now = int(time.time() * 1000)
    columns = event_columns(
        ids, tenant=[tenant] * 10, time=[now + i for i in range(10)], input_tokens=list(range(10))
    )
    writer = engine.writer()
    rows = writer.encode(columns)
    # A half of a bisection, then a pick out of order, in one INSERT.
    joined = writer.concat([writer.slice(rows, 2, 5), writer.pick(rows, [7, 0, 9])])
    writer.insert_encoded(joined, f"{tenant}-joined")
    stored = engine.sql.query_rows(
        f"SELECT id, input_tokens FROM {engine.sql.database}.usage_events "
        f"WHERE tenant = '{tenant}' ORDER BY id"
    )
    want = sorted(["r-2", "r-3", "r-4", "r-7", "r-0", "r-9"])
    assert [r["id"] for r in stored] == want
    assert all(int(r["input_tokens"]) == int(r["id"][2:]) for r in stored)
