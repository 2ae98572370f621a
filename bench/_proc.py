"""Process helpers shared by the bench workers: memory, timing, JSON result lines."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
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


@dataclass(frozen=True)
class CpuMark:
    """CPU seconds used so far: by this process (every thread) and by the whole box.

    The box's figure is what decides a throughput target on a shared machine: the
    broker, librdkafka's threads and the engine's threads all draw on the same cores
    as the processor's own thread, so a step that only moves work to another thread
    shows here as unchanged CPU per event.
    """

    process_s: float
    box_busy_s: float

    @staticmethod
    def now() -> CpuMark:
        times = os.times()
        return CpuMark(times.user + times.system, _box_busy_s())

    def since(self, earlier: CpuMark) -> dict[str, float]:
        return {
            "cpu_s": self.process_s - earlier.process_s,
            "box_cpu_s": self.box_busy_s - earlier.box_busy_s,
        }


def thread_cpu_s(skip: int | None = None) -> dict[str, float]:
    """CPU seconds (user + system) of this process's live threads, summed by thread name.

    ``skip``: a thread's native id to leave out (a caller that times itself with
    ``time.thread_time``, a finer clock than these 10 ms ticks).

    Why: the processor's CPU per event is one number over the Python thread,
    librdkafka's threads and the engine's (chDB names its threads: the INSERT's
    pipeline, background merges, schedule pools), and which of them grows decides
    what to work on next. Digits are dropped from names so a pool counts once
    (``rdk:broker1`` and ``rdk:broker2`` -> ``rdk:broker``). Threads that ended
    before the read are not counted: compare the sum with the process's CPU.
    """
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in os.listdir("/proc/self/task"):
        if skip is not None and int(task) == skip:
            continue
        try:
            with open(f"/proc/self/task/{task}/stat") as stat:
                raw = stat.read()
        except OSError:  # the thread ended between listdir and open
            continue
        # comm is in parentheses and may itself hold spaces or parentheses
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        seconds = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        key = "".join(c for c in name if not c.isdigit()) or "?"
        out[key] = out.get(key, 0.0) + seconds
    return out


def thread_cpu_since(earlier: dict[str, float], top: int = 8) -> dict[str, float]:
    """CPU seconds per thread name since ``earlier``, the ``top`` largest, largest first."""
    now = thread_cpu_s()
    spent = {k: v - earlier.get(k, 0.0) for k, v in now.items()}
    ranked = sorted(spent.items(), key=lambda kv: kv[1], reverse=True)
    return {k: round(v, 2) for k, v in ranked[:top] if v > 0}


def _box_busy_s() -> float:
    """Seconds all cores spent busy since boot (/proc/stat: every state but idle and iowait)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")
