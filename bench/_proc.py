"""Process helpers shared by the bench workers: memory, timing, JSON result lines."""

from __future__ import annotations

import socket
import sys
from typing import Any

import orjson


def rss_mib() -> float:
    """Current resident set size of this process (MiB)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (MiB).

    VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across fork+exec, so
    every worker would report the (large) peak of the bench process that started it.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pid_rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) RSS of another process, from /proc."""
    now = peak = 0.0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return now, peak


def emit(result: dict[str, Any]) -> None:
    """A worker's one result line on stdout (the parent reads the last line)."""
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
