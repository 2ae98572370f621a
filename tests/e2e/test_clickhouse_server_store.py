"""`meterline run` with METERLINE_STORE=clickhouse: the clickhouse-connect path end to end.

The server is the HTTP front end over chDB (tests/support/clickhouse_http.py), so
the process under test speaks HTTP to a ClickHouse engine exactly as it would to a
server; totals must be exact and `meterline verify` / `meterline replay` must pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import MeterlineFactory
from tests.e2e.test_pipeline_totals import _assert_exact, _send_with_retries_and_duplicates
from tests.support.clickhouse_http import ClickHouseHttp


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meterline.cli", *args],
        env={**os.environ, **env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_clickhouse_server_store_counts_each_event_once_and_verifies(
    meterline_factory: MeterlineFactory, tmp_path: Path
) -> None:
    with ClickHouseHttp(tmp_path / "clickhouse") as server:
        env = {
            "METERLINE_DATA_DIR": str(tmp_path / "data"),
            "METERLINE_LOG": "embedded",
            "METERLINE_STORE": "clickhouse",
            "METERLINE_CLICKHOUSE_URL": server.url,
            "METERLINE_PARTITIONS": "3",
        }
        stack = meterline_factory(tmp_path / "data", **env)
        _assert_exact(stack, *_send_with_retries_and_duplicates(stack))
        stack.stop()
        # Every batch went as one Arrow file (the token column path's rows), none as
        # rows clickhouse-connect serialised one value at a time.
        inserts = [
            r
            for r in server.received()
            if r["statement"].startswith("INSERT INTO meterline.usage_events")
        ]
        assert inserts
        assert {r["data_format"] for r in inserts} == {"Arrow"}

        window = ["--from", "2000-01-01", "--to", "2100-01-01"]
        verified = cli(env, "verify", *window)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        replayed = cli(env, "replay", *window, "--run", "server-run")
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert "0 invalid" in replayed.stdout
