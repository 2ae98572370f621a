"""Fixtures of the processor tests: the real chDB engine and an embedded log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.log.embedded import EmbeddedAdmin
from sinks.chdb_sink import ChdbSink


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[ChdbSink]:
    sink = ChdbSink(tmp_path / "chdb", "mtest")
    sink.migrate()
    yield sink
    sink.close()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    """An embedded log with ``events`` (2 partitions) and its ``events.dlq``."""
    path = tmp_path / "log.sqlite3"
    admin = EmbeddedAdmin(path)
    admin.ensure_topic("events", 2)
    admin.ensure_topic("events.dlq", 1)
    return path
