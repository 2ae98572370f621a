"""The peer: meterline's processing job written with Quix Streams.

Runs in its own venv (.cache/bench-peer, from bench/peer-requirements.lock):
quixstreams pins confluent-kafka < 2.13 and meterline uses 2.16. It imports
nothing from meterline. ``python bench/peer.py '<json args>'`` prints one JSON
result line.

The job, written the way Quix Streams documents it:

1. JSON-deserialize each record (key = event id, as the gateway publishes);
2. dedupe by (source, id): state keyed by the message key (the id) holds the
   sources seen (RocksDB state, changelog topic: Quix's durability);
3. price: a cached per-(provider, model) Decimal price dict computed by the
   parent from genai-prices (meterline's pricing engine is not importable
   here); cost kept exact as an integer of 1e-12 USD in window state;
4. ``group_by`` the meter key (tenant, subject, model, feature, provider, type,
   unit): Quix repartitions through a Kafka topic, as windows are per key;
5. 1-minute tumbling windows on event time, grace = the 35-day dedupe horizon
   (meterline accepts late events that old), ``reduce`` the sums, ``current()``;
6. a ``BatchingSink`` that, at each checkpoint, upserts the latest value of
   every window it saw into a chDB ReplacingMergeTree table.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

SCALE = Decimal("1e-12")
SUMS = ("input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens", "images")


def main() -> None:
    from quixstreams import Application
    from quixstreams.sinks import BatchingSink, SinkBatch

    args = orjson.loads(sys.argv[1])
    prices = {
        tuple(k.split("|", 1)): tuple(Decimal(p) / 1_000_000 for p in v)
        for k, v in args["prices"].items()
    }
    state_dir = tempfile.mkdtemp(prefix="quix-state-")
    app = Application(
        broker_address=args["bootstrap"],
        consumer_group=args["group"],
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
    )
    topic = app.topic(
        args["topic"],
        value_deserializer="json",
        timestamp_extractor=lambda value, _h, _ts, _t: _event_ms(value["time"]),
    )
    marks = {"first": 0.0, "last": 0.0, "input": 0, "updates": 0}
    want = args["unique"]

    def seen_first(value: dict[str, Any], state: Any) -> bool:
        if not marks["first"]:
            marks["first"] = time.perf_counter()
        marks["input"] += 1
        sources = state.get("sources") or []
        if value["source"] in sources:
            return False
        state.set("sources", [*sources, value["source"]])
        return True

    def price(value: dict[str, Any]) -> dict[str, Any]:
        data = value["data"]
        etype = value["type"]
        cost = 0
        if etype == "io.meterline.usage.tokens":
            p = prices.get((data["provider"], data["model"]))
            if p is not None:
                cached = data.get("cache_read_tokens", 0)
                amount = (
                    (data["input_tokens"] - cached) * p[0]
                    + data["output_tokens"] * p[1]
                    + cached * p[2]
                )
                cost = int(amount.quantize(SCALE).scaleb(12))
        out = {s: data.get(s, 0) for s in SUMS}
        out["cost_e12"] = cost
        out["key"] = "|".join(
            (
                "bench",
                value["subject"],
                data.get("model", ""),
                data.get("feature", ""),
                data.get("provider", ""),
                etype,
            )
        )
        return out

    def add(acc: dict[str, int], value: dict[str, Any]) -> dict[str, int]:
        out = {k: acc[k] + value[k] for k in (*SUMS, "cost_e12")}
        out["events"] = acc["events"] + 1
        return out

    def first(value: dict[str, Any]) -> dict[str, int]:
        out = {k: value[k] for k in (*SUMS, "cost_e12")}
        out["events"] = 1
        return out

    def counted(value: Any) -> None:
        marks["updates"] += 1
        if marks["updates"] >= want:
            marks["last"] = time.perf_counter()
            app.stop()

    from chdb import session as chdb_session

    store = chdb_session.Session(tempfile.mkdtemp(prefix="quix-chdb-"))
    store.query(
        "CREATE TABLE meters (key String, window_start Int64, events UInt64, "
        + ", ".join(f"{s} UInt64" for s in SUMS)
        + ", cost_usd Decimal(38, 12)) ENGINE = ReplacingMergeTree ORDER BY (key, window_start)"
    )

    class ChdbWindows(BatchingSink):
        def write(self, batch: SinkBatch) -> None:
            latest: dict[tuple[str, int], dict[str, Any]] = {}
            for item in batch:
                latest[
                    (
                        item.key.decode() if isinstance(item.key, bytes) else item.key,
                        item.value["start"],
                    )
                ] = item.value["value"]
            if not latest:
                return
            lines = b"\n".join(
                orjson.dumps(
                    {
                        "key": key,
                        "window_start": start,
                        **{k: v[k] for k in ("events", *SUMS)},
                        "cost_usd": str(Decimal(v["cost_e12"]).scaleb(-12)),
                    }
                )
                for (key, start), v in latest.items()
            )
            store.query("INSERT INTO meters FORMAT JSONEachRow " + lines.decode())

    sdf = app.dataframe(topic)
    sdf = sdf.filter(seen_first, stateful=True)
    sdf = sdf.apply(price)
    sdf = sdf.group_by(lambda v: v["key"], name="meter_key")
    sdf = (
        sdf.tumbling_window(timedelta(minutes=1), grace_ms=timedelta(days=35))
        .reduce(reducer=add, initializer=first)
        .current()
    )
    sdf.update(counted)
    sdf.sink(ChdbWindows())
    began = time.perf_counter()
    # timeout: stop once no new message came for that long (a safety net; the
    # normal stop is `counted` seeing every unique event reach its window).
    app.run(timeout=args.get("idle_timeout_s", 30), collect=False)
    rows = store.query("SELECT toString(sum(events)) FROM meters FINAL", "CSV").bytes()
    print(
        orjson.dumps(
            {
                "events": marks["input"],
                "updates": marks["updates"],
                "seconds": (marks["last"] or time.perf_counter()) - (marks["first"] or began),
                "stored_window_events": int(rows.decode().strip().strip('"') or 0),
                "peak_rss_mib": _peak_rss_mib(),
            }
        ).decode(),
        flush=True,
    )


def _event_ms(value: str) -> int:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _peak_rss_mib() -> float:
    """VmHWM (ru_maxrss would carry over the parent's peak across fork+exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    main()
