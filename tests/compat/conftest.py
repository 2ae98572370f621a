"""One real ``meterline run`` (gateway + processor, embedded log, chDB) per module.

The compatibility tests each send their own customers' events, so they can
share a process; starting one costs seconds, and the machine is shared.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.stack import MeterlineProcess


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeterlineProcess]:
    process = MeterlineProcess(
        tmp_path_factory.mktemp("compat") / "data",
        {"METERLINE_LOG": "embedded", "METERLINE_STORE": "chdb", "METERLINE_PARTITIONS": "2"},
    )
    process.start()
    yield process
    process.stop()
