"""Re-billing a range with a new price book, twice, and verifying the live meters.

Real process for ingest, then the CLI (`meterline replay`, `meterline verify`)
on the same data folder, as an operator would run them.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from tests.conftest import MeterlineFactory
from tests.support.cli import meterline_cli
from tests.support.events import make_events

BOOK = """\
format: 1
name: correction
models:
  - provider: openai
    model: gpt-4o
    prices:
      - input_mtok: "1.25"
        output_mtok: "5"
"""


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return meterline_cli(data_dir, *args)


def test_replay_reprices_into_a_separate_run_and_rerunning_changes_nothing(
    meterline_factory: MeterlineFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    began = datetime.now(UTC) - timedelta(seconds=1)
    stack = meterline_factory(data_dir, METERLINE_LOG="embedded", METERLINE_PARTITIONS="3")
    events = make_events(300, seed=3)
    assert stack.post(events).status_code == 202
    assert stack.post(events[:50]).status_code == 202  # retried duplicates
    stack.wait_caught_up()
    live = stack.sql("SELECT toString(sum(price_usd)) AS p, count() AS n FROM usage_events")[0]
    stack.stop()  # chDB: one process per folder; the operator stops the instance first

    book = tmp_path / "book.yaml"
    book.write_text(BOOK)
    window = [
        "--from",
        began.isoformat(),
        "--to",
        (datetime.now(UTC) + timedelta(minutes=1)).isoformat(),
    ]
    first = cli(data_dir, "replay", *window, "--run", "march-fix", "--price-book", str(book))
    assert first.returncode == 0, first.stderr
    assert "300 events written" in first.stdout
    assert "50 duplicates" in first.stdout
    second = cli(data_dir, "replay", *window, "--run", "march-fix", "--price-book", str(book))
    assert second.returncode == 0, second.stderr
    assert "0 events written" in second.stdout

    gpt4o = [e for e in events if e["data"]["model"] == "gpt-4o"]
    expected = sum(
        (
            (
                Decimal(e["data"]["input_tokens"]) * Decimal("1.25")
                + Decimal(e["data"]["output_tokens"]) * Decimal(5)
            )
            / 1_000_000
            for e in gpt4o
        ),
        Decimal(0),
    )
    check = cli(
        data_dir,
        "sql",
        "-f",
        "csv",
        "SELECT toString(sum(cost_usd)), count(), uniqExact(id) FROM billing_run_events "
        "WHERE run = 'march-fix' AND model = 'gpt-4o'",
    )
    assert check.returncode == 0, check.stderr
    cost, count, unique = check.stdout.splitlines()[1].replace('"', "").split(",")
    assert (Decimal(cost), int(count), int(unique)) == (expected, len(gpt4o), len(gpt4o))

    # Live numbers untouched.
    after = cli(
        data_dir, "sql", "-f", "csv", "SELECT toString(sum(price_usd)), count() FROM usage_events"
    )
    assert after.stdout.splitlines()[1].replace('"', "").split(",") == [live["p"], str(live["n"])]

    verified = cli(data_dir, "verify", "--from", "2000-01-01", "--to", "2100-01-01")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    cli(
        data_dir,
        "sql",
        "INSERT INTO usage_meters (tenant, window_start, subject, events) "
        "VALUES ('default', now(), 'acme', 1)",
    )
    broken = cli(data_dir, "verify", "--from", "2000-01-01", "--to", "2100-01-01")
    assert broken.returncode == 1
    assert "events" in broken.stdout and "acme" in broken.stdout
