"""Free loopback ports for servers the tests start, and restart, on a fixed port.

Why not ``bind(("127.0.0.1", 0))``: the kernel hands out those ports from the
ephemeral range, the same range it picks the LOCAL port of every outgoing
connection from. A server stopped mid-test (a broker restart, a killed gateway)
leaves its port free, and any client connecting anywhere may take it as its
source port in the meantime; the restart then fails with "Address already in
use" (seen: a broker's controller port taken while three processors reconnected).
Ports below the ephemeral range are never given to clients, so a port we chose
stays ours until we bind it again.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_FLOOR = 20000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int = 1) -> int:
    """The first of ``count`` consecutive free ports, below the ephemeral range.

    Random, not sequential: several pytest sessions may run on one machine.
    Falls back to a kernel-chosen port when the range below is too small.
    """
    ceiling = _ephemeral_low() - count
    rng = random.SystemRandom()
    if ceiling - _FLOOR > 1000:
        for _ in range(200):
            first = rng.randrange(_FLOOR, ceiling)
            if all(is_free(first + i) for i in range(count)):
                return first
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count - 1 <= 65535 and all(is_free(first + i) for i in range(1, count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")
