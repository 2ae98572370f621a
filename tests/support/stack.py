"""A real meterline process (``meterline run``) for end-to-end tests.

It is started as a subprocess, exactly as a user would run it, so tests can
also kill it with SIGKILL and start it again on the same data.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson

from meterline.instance import Instance
from tests.support.chaos import ENV as CHAOS_ENV
from tests.support.chaos import KILL_ON_ENV, STORE_AWAY_ENV
from tests.support.ports import free_ports


def free_port() -> int:
    return free_ports(1)


class MeterlineProcess:
    def __init__(self, data_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        # Open mode unless a test passes METERLINE_API_KEYS_FILE (or sets it false):
        # `meterline run` refuses to start without keys otherwise.
        self.env = {
            **os.environ,
            "METERLINE_DATA_DIR": str(data_dir),
            "METERLINE_OPEN_MODE": "true",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.instance: Instance | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> MeterlineProcess:
        log = open(self.data_dir.parent / f"meterline-{self.port}.log", "ab")  # noqa: SIM115
        self.data_dir.mkdir(parents=True, exist_ok=True)
        Instance.remove(self.data_dir)
        # The real CLI, unless the test arms a SIGKILL at a checkpoint step: then the
        # chaos harness, which passes the kill hook to the same serve().
        chaos = any(name in self.env for name in (CHAOS_ENV, STORE_AWAY_ENV, KILL_ON_ENV))
        command = ["tests.support.chaos_run"] if chaos else ["meterline.cli", "run"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *command, "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"meterline exited with {self.proc.returncode}; see {log.name}")
            self.instance = Instance.find(self.data_dir)
            if self.instance is not None:
                return self
            time.sleep(0.1)
        raise TimeoutError(f"meterline did not start within {timeout_s}s; see {log.name}")

    def post(
        self,
        events: Any,
        content_type: str = "application/cloudevents-batch+json",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        content = body if body is not None else orjson.dumps(events)
        return httpx.post(
            f"{self.url}/v1/events",
            content=content,
            headers={"content-type": content_type, **(headers or {})},
            timeout=30,
        )

    def sql(self, query: str) -> list[dict[str, Any]]:
        assert self.instance is not None
        response = httpx.post(
            f"{self.url}/v1/sql",
            params={"format": "JSONEachRow"},
            content=query.encode(),
            headers={"authorization": f"Bearer {self.instance.token}"},
            timeout=60,
        )
        response.raise_for_status()
        return [orjson.loads(line) for line in response.content.splitlines() if line.strip()]

    def wait_until(
        self, check: Callable[[], bool], timeout_s: float = 60.0, what: str = ""
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.2)
        raise TimeoutError(f"timed out waiting for {what or check}")

    def subject_rows(self, subject: str, n: int, columns: str) -> list[dict[str, Any]]:
        """Exactly ``n`` rows of ``usage_events`` for ``subject`` (``columns``: a SELECT
        list), once they are all stored, ordered by time then id."""
        query = f"SELECT {columns} FROM usage_events WHERE subject = '{subject}' ORDER BY time, id"
        self.wait_until(lambda: len(self.sql(query)) >= n, what=f"{n} rows of {subject}")
        rows = self.sql(query)
        assert len(rows) == n
        return rows

    def stored(self) -> int:
        return int(self.sql("SELECT count() AS n FROM usage_events")[0]["n"])

    def wait_stored(self, n: int, timeout_s: float = 60.0) -> None:
        self.wait_until(lambda: self.stored() >= n, timeout_s, f"{n} stored events")

    def records_processed(self) -> int:
        """Records the processor has finished (stored, deduplicated or dead-lettered)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith("meterline_processor_records_total "):
                return int(float(line.split()[1]))
        return 0

    def wait_processed(self, records: int, timeout_s: float = 60.0) -> None:
        """Until this process has read and finished at least ``records`` log records."""
        self.wait_until(
            lambda: self.records_processed() >= records, timeout_s, f"{records} records"
        )

    def lag(self) -> int:
        """Records in the log not yet committed by the processor's group."""
        from core.settings import load_settings
        from meterline import runtime

        env = {
            k[len("METERLINE_") :].lower(): v
            for k, v in self.env.items()
            if k.startswith("METERLINE_")
        }
        if "kafka_extra" in env:
            env["kafka_extra"] = orjson.loads(env["kafka_extra"])  # JSON in the environment
        settings = load_settings(**env)
        admin = runtime.build_admin(settings)
        ends = admin.end_offsets(settings.topic)
        committed = admin.committed(settings.topic, settings.consumer_group)
        return sum(end - committed.get(p, 0) for p, end in ends.items())

    def wait_caught_up(self, timeout_s: float = 60.0) -> None:
        """Until the processor has committed everything in the log."""
        self.wait_until(lambda: self.lag() == 0, timeout_s, "processor to catch up")

    def kill(self) -> None:
        """SIGKILL: no flush, no cleanup, as a crash would."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
