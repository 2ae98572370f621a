"""``meterline gateway`` and ``meterline processor`` as separate processes, as deployed.

``MeterlineProcess`` (stack.py) runs ``meterline run`` (both parts in one
process); the scale-out topology runs each part on its own, several processors
in one consumer group, each with its own data folder (the processor's attempts
file lives there: processor/attempts.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.support.chaos import ENV as CHAOS_ENV
from tests.support.chaos import KILL_ON_ENV, STORE_AWAY_ENV
from tests.support.stack import free_port


class Service:
    """One ``meterline <command>`` process; ``url`` answers /readyz once it is up."""

    def __init__(self, command: str, data_dir: Path, env: Mapping[str, str]) -> None:
        self.command = command
        self.data_dir = data_dir
        self.port = free_port()
        # The gateway serves on METERLINE_PORT; a processor alone serves /metrics
        # (and nothing else) on METERLINE_METRICS_PORT.
        port_setting = "METERLINE_PORT" if command == "gateway" else "METERLINE_METRICS_PORT"
        self.env = {
            **os.environ,
            **env,
            "METERLINE_DATA_DIR": str(data_dir),
            port_setting: str(self.port),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> Service:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / f"{self.command}.log", "ab")  # noqa: SIM115
        # A processor with a chaos variable armed runs under the chaos harness, which
        # passes the kill hooks to the same serve() `meterline processor` calls.
        chaos = any(name in self.env for name in (CHAOS_ENV, STORE_AWAY_ENV, KILL_ON_ENV))
        if chaos and self.command == "processor":
            command = ["tests.support.chaos_run", "--processor"]
        else:
            command = ["meterline.cli", self.command]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *command],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.starts += 1
        ready = "/readyz" if self.command == "gateway" else "/metrics"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.command} exited with {self.proc.returncode}; see {log.name}"
                )
            try:
                if httpx.get(self.url + ready, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.command} was not ready within {timeout_s}s; see {log.name}")

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no leave-group, as a crash would."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
