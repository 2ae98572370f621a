"""The suite's own Kafka broker: started on a free port, never the one on 9092, gone afterwards."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from core.log.kafka import KafkaAdmin
from tests.support import kafka as support

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_configured_bootstrap_servers_win_and_nothing_is_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.example:9092")
    sessions_before = sorted(support.SESSIONS.glob("*")) if support.SESSIONS.is_dir() else []

    with support.kafka_broker() as bootstrap:
        assert bootstrap == "kafka.example:9092"
        now = sorted(support.SESSIONS.glob("*")) if support.SESSIONS.is_dir() else []
        assert now == sessions_before


def test_session_broker_is_the_suites_own_and_is_stopped_and_deleted_at_the_end() -> None:
    # Labelled: the session broker of this very pytest process must keep running.
    with support.session_broker(label="selftest") as bootstrap:
        home = support.SESSIONS / f"session-{os.getpid()}.selftest"
        broker = support.PrivateBroker(home, int(bootstrap.rpartition(":")[2]))
        pid = broker.pid()
        assert pid is not None  # a JVM this session started, not whatever answered
        assert bootstrap != "127.0.0.1:9092"
        assert Path(f"/proc/{pid}/cmdline").read_bytes().find(str(home).encode()) >= 0
        KafkaAdmin(bootstrap).ensure_topic("meterline.test.own", 1)

    assert not support._pid_alive(pid)
    assert not home.exists()


def test_a_broker_left_behind_by_a_killed_session_is_stopped_by_the_next() -> None:
    home = support.SESSIONS / f"session-{_dead_pid()}"
    broker = support.PrivateBroker(home)
    home.mkdir(parents=True)
    (home / "port").write_text(str(broker.port))
    broker.up()
    pid = broker.pid()
    assert pid is not None

    support._reap_stale_sessions()

    assert not support._pid_alive(pid)
    assert not home.exists()
