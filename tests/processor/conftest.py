"""Fixtures of the processor tests: the real chDB engine and an embedded log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.log.embedded import EmbeddedAdmin
from sinks.chdb_sink import ChdbEngine
from sinks.migrations import migrate


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[ChdbEngine]:
    sink = ChdbEngine(tmp_path / "chdb", "mtest")
    migrate(sink)
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
