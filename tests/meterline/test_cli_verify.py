"""``meterline verify``: meters, and the identity of every stored event (once, indexed)."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from meterline.cli import app
from sinks.base import EVENT_COLUMNS
from sinks.chdb_sink import ChdbEngine
from sinks.migrations import migrate

NOW_MS = int(time.time() * 1000)
RANGE = ["--from", "2000-01-01", "--to", "2100-01-01"]


def columns(ids: list[str]) -> dict[str, list[Any]]:
    defaults: dict[type, Any] = {str: "", bytes: b"{}", int: 0, Decimal: Decimal(0), dict: {}}
    cols = {name: [defaults[kind]] * len(ids) for name, kind in EVENT_COLUMNS.items()}
    cols.update(
        id=ids,
        tenant=["default"] * len(ids),
        source=["/app"] * len(ids),
        subject=["acme"] * len(ids),
        time=[NOW_MS - 3_600_000] * len(ids),
        processed_at=[NOW_MS] * len(ids),
        input_tokens=[7] * len(ids),
    )
    return cols


def store(data_dir: Path, ids: list[str], token: str, without_view: str = "") -> None:
    sink = ChdbEngine(data_dir / "chdb", "meterline")
    try:
        migrate(sink)
        if without_view:
            sink.sql.query_raw(f"DETACH TABLE {without_view}", "CSV")
        sink.writer().insert(columns(ids), token)
        if without_view:
            sink.sql.query_raw(f"ATTACH TABLE {without_view}", "CSV")
    finally:
        sink.close()


def verify(data_dir: Path, *flags: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app,
        ["verify", *RANGE, *flags],
        env={"METERLINE_DATA_DIR": str(data_dir), "COLUMNS": "200"},
    )
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    store(tmp_path, ids=["a", "b", "c"], token="first")
    return tmp_path


def test_verify_passes_when_each_id_is_stored_once_and_indexed(data_dir: Path) -> None:
    assert verify(data_dir) == (
        0,
        "usage_meters matches usage_events exactly; every event id is stored once and indexed",
    )


def test_verify_fails_naming_ids_stored_twice(data_dir: Path) -> None:
    store(data_dir, ids=["b", "c", "d"], token="second")  # b and c again: a double count

    code, output = verify(data_dir)

    assert code == 1
    assert (
        "2 event id(s) stored more than once in usage_events (tenant/source/id x copies), "
        "e.g. default//app/b x2, default//app/c x2"
    ) in output
    assert "missing from the dedupe index" not in output


def test_verify_fails_naming_stored_ids_missing_from_the_dedupe_index(data_dir: Path) -> None:
    # The torn write: an INSERT whose usage_events part landed, its index part not.
    store(data_dir, ids=["e", "f"], token="torn", without_view="usage_event_ids_mv")

    code, output = verify(data_dir)

    assert code == 1
    assert (
        "2 stored event id(s) missing from the dedupe index usage_event_ids "
        "(a re-send would be stored again), e.g. default//app/e, default//app/f"
    ) in output
    assert "stored more than once" not in output


def test_verify_names_an_hour_short_of_its_minutes_and_repair_rollups_mends_it(
    data_dir: Path,
) -> None:
    # An hour part that never landed (e.g. an upgrade's backfill cut short by a crash):
    # GET /v1/usage would answer that hour short.
    store(data_dir, ids=["g", "h"], token="torn-hour", without_view="usage_meters_1h_mv")

    code, output = verify(data_dir)
    assert code == 1
    assert "difference(s) between usage_meters_1h and usage_meters" in output

    assert verify(data_dir, "--repair-rollups")[0] == 0
    assert verify(data_dir) == (
        0,
        "usage_meters matches usage_events exactly; every event id is stored once and indexed",
    )


def test_verify_names_running_totals_short_of_their_events_and_repair_rollups_mends_them(
    data_dir: Path,
) -> None:
    # A running-totals part that never landed (a torn INSERT, or a database that
    # upgraded across 070): the entitlement check would under-count the budget.
    store(
        data_dir,
        ids=["i", "j"],
        token="torn-totals",
        without_view="usage_running_totals_subject_mv",
    )

    code, output = verify(data_dir)
    assert code == 1
    assert (
        "1 difference(s) between the budgets' running totals (usage_running_totals) and "
        "usage_events"
    ) in output
    # Events only (these events cost nothing, so the money agrees); feature, model empty.
    assert "e.g. default/" in output and "/acme// events 3 (events: 5)" in output
    assert "usage_meters_1h" not in output  # the meters are whole

    assert verify(data_dir, "--repair-rollups")[0] == 0
    assert verify(data_dir) == (
        0,
        "usage_meters matches usage_events exactly; every event id is stored once and indexed",
    )
