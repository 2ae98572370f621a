"""HTTP load for the gateway: keep-alive HTTP/1.1 over raw asyncio streams.

A small client on purpose: httpx costs more CPU per request than the gateway's
own handler, and on a 2-core box the client shares the CPU with the gateway
and Kafka. ``python -m bench.load '<json args>'`` prints one JSON result line:
requests, events, seconds, latency percentiles (ms), errors. With ``rate``
(requests/s) it sends on a fixed schedule instead of as fast as answered.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import orjson

from bench._proc import emit
from bench.data import EventStream


def _request(body: bytes, port: int) -> bytes:
    return (
        b"POST /v1/events HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n"
        b"content-type: application/cloudevents-batch+json\r\ncontent-length: %d\r\n\r\n"
        % (port, len(body))
    ) + body


async def keep_alive_client(
    port: int,
    requests: list[bytes],
    latencies: list[float],
    statuses: list[int],
    schedule: list[float] | None = None,
) -> None:
    """Send ``requests`` one after the other on one keep-alive connection, recording
    each answer's latency and HTTP status (the gateway load and the read-side rows).

    ``schedule``: when each request is due (open loop, fixed rate). Latency then
    counts from the due time, not the send time, so a gateway that falls behind
    is charged for the wait it caused (no coordinated omission).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for index, request in enumerate(requests):
            began = time.perf_counter()
            if schedule is not None:
                due = schedule[index]
                if due > began:
                    await asyncio.sleep(due - began)
                began = due
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - began)
            statuses.append(int(head[9:12]))
    finally:
        writer.close()


async def _run(args: dict[str, Any]) -> dict[str, Any]:
    per_request = args["batch"]
    total = args["requests"] * per_request
    events = EventStream(seed=args["seed"], now_ms=args["now_ms"], dup_rate=0).take(total)
    bodies = [
        _request(orjson.dumps(events[i : i + per_request]), args["port"])
        for i in range(0, total, per_request)
    ]
    connections = args["connections"]
    shares = [bodies[i::connections] for i in range(connections)]
    latencies: list[float] = []
    statuses: list[int] = []
    rate = args.get("rate")  # requests/s; None = as fast as the gateway answers
    began = time.perf_counter()
    if rate:
        start = began + 0.05  # every connection is open by then
        due = [start + i / rate for i in range(len(bodies))]
        schedules: list[list[float] | None] = [due[i::connections] for i in range(connections)]
    else:
        schedules = [None] * connections
    await asyncio.gather(
        *(
            keep_alive_client(args["port"], share, latencies, statuses, schedule)
            for share, schedule in zip(shares, schedules, strict=True)
        )
    )
    elapsed = time.perf_counter() - began
    latencies.sort()
    errors = [status for status in statuses if status != 202]
    return {
        "requests": len(bodies),
        "events": total,
        "seconds": elapsed,
        "p50_ms": _pct(latencies, 0.50) * 1000,
        "p99_ms": _pct(latencies, 0.99) * 1000,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


if __name__ == "__main__":
    emit(asyncio.run(_run(orjson.loads(sys.argv[1]))))
