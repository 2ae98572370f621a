"""The data folder holds every tenant's raw events and billing rows: its owner's alone."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.log.base import OutMessage
from core.log.embedded import EmbeddedAdmin, EmbeddedProducer
from meterline.instance import Instance
from tests.conftest import MeterlineFactory
from tests.support.events import make_events


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The usual 022, so files are private only because meterline makes them so."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_running_instance_keeps_its_data_folder_and_every_file_in_it_private(
    meterline_factory: MeterlineFactory, tmp_path: Path, permissive_umask: None
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)  # as an earlier version left it
    (data / "log.sqlite3").touch(mode=0o644)
    stack = meterline_factory(
        data, METERLINE_LOG="embedded", METERLINE_STORE="chdb", METERLINE_PARTITIONS="2"
    )
    events = make_events(50, seed=3)
    assert stack.post(events).status_code == 202
    stack.wait_until(lambda: stack.stored() == len(events), 60, "events stored")

    assert _mode(data) == 0o700
    for name in ("log.sqlite3", "log.sqlite3-wal", "log.sqlite3-shm", "instance.json"):
        assert _mode(data / name) == 0o600, name
    chdb_files = [p for p in (data / "chdb").rglob("*") if p.is_file() and not p.is_symlink()]
    assert chdb_files, "chDB wrote nothing: the check below would prove nothing"
    readable = {str(p.relative_to(data)): oct(_mode(p)) for p in chdb_files if _mode(p) != 0o600}
    assert readable == {}
    folders = [p for p in data.rglob("*") if p.is_dir() and not p.is_symlink()]
    assert {str(p.relative_to(data)) for p in folders if _mode(p) & 0o077} == set()


def test_the_embedded_log_is_private_even_when_created_outside_a_server(
    tmp_path: Path, permissive_umask: None
) -> None:
    path = tmp_path / "data" / "log.sqlite3"  # e.g. by `meterline migrate`
    EmbeddedAdmin(path).ensure_topic("events", 1)
    producer = EmbeddedProducer(path, "events")
    producer.publish_sync([OutMessage(b"k", b"{}")])

    assert _mode(path.parent) == 0o700
    for name in ("log.sqlite3", "log.sqlite3-wal", "log.sqlite3-shm"):
        assert _mode(path.parent / name) == 0o600, name
    producer.close()


def test_an_instance_card_left_world_readable_is_made_private_when_written(
    tmp_path: Path, permissive_umask: None
) -> None:
    card = tmp_path / "instance.json"
    card.write_text("{}")
    card.chmod(0o644)

    Instance("http://127.0.0.1:1", os.getpid(), Instance.new_token()).write(tmp_path)

    assert _mode(card) == 0o600
