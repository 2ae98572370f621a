"""``meterline bench``: each target of docs/design.md#performance-targets beside its limit and peer.

Each part runs in its own process (gateway, load client, bare producer, bare
consumer, processor, Quix Streams peer) so CPU and memory are each one's own;
they share the machine with Kafka, as the targets say. Every row prints the
ratio to its limit or peer, measured in the same run: absolute numbers drift
on shared machines, ratios much less.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from bench import peer_env
from bench._proc import free_port, pid_rss_mib
from bench.data import SUMS, EventStream, ground_truth

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 12


@dataclass(frozen=True)
class Options:
    quick: bool = False
    events: int = 2_100_000  # >= 2 million distinct ids after ~2% re-sends
    peer: bool = True
    bootstrap: str | None = None
    seed: int = 7
    # "entitlement" or "query": that row alone (bench/read_side.py)
    only: str | None = None


@dataclass
class Row:
    part: str
    metric: str
    value: float
    unit: str
    reference: str = ""
    ref_value: float | None = None
    target: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ref_value in (None, 0):
            return None
        return self.value / self.ref_value


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # result checks that failed
    notes: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)  # result checks that passed

    def table(self) -> str:
        head = ("part", "metric", "value", "limit / peer", "ratio", "target")
        lines = [head]
        for r in self.rows:
            ref = f"{r.reference} {_fmt(r.ref_value)}".strip() if r.reference else ""
            ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
            lines.append((r.part, r.metric, f"{_fmt(r.value)} {r.unit}", ref, ratio, r.target))
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        out = [
            "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
            for line in lines
        ]
        out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(out)


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _worker(
    module: str,
    args: dict[str, Any],
    python: str = sys.executable,
    script: str | None = None,
    timeout: float = 1800,
) -> dict[str, Any]:
    command = [python, script] if script else [python, "-m", module]
    done = subprocess.run(
        [*command, orjson.dumps(args).decode()],
        cwd=ROOT,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    lines = [x for x in done.stdout.decode().splitlines() if x.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = done.stderr.decode(errors="replace")[-1500:]
        raise RuntimeError(f"{script or module} failed ({done.returncode}): {tail}")
    result: dict[str, Any] = orjson.loads(lines[-1])
    return result


def kafka_bootstrap(options: Options) -> str:
    """The broker: given, from the environment, or started by the project's script."""
    if options.bootstrap:
        return options.bootstrap
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    subprocess.run(["bash", str(ROOT / "deploy/kafka/kafka.sh"), "up"], check=True, cwd=ROOT)
    return "127.0.0.1:9092"


def run(options: Options, say: Callable[[str], None] = print) -> Report:
    report = Report()
    bootstrap = kafka_bootstrap(options)
    now_ms = int(time.time() * 1000)
    run_id = f"{now_ms}"
    if options.only == "entitlement":
        from bench.read_side import entitlement_only

        work = Path(tempfile.mkdtemp(prefix="meterline-bench-"))
        entitlement_only(report, options, bootstrap, run_id, work, say)
        return report
    if options.only == "query":
        from bench.read_side import query_only

        work = Path(tempfile.mkdtemp(prefix="meterline-bench-"))
        say(f"bench: --only query, work dir {work}")
        query_only(report, options, bootstrap, run_id, work, say)
        return report
    events = 20_000 if options.quick else options.events
    work = Path(tempfile.mkdtemp(prefix="meterline-bench-"))
    say(f"bench: {events:,} events, Kafka at {bootstrap}, work dir {work}")

    _micro(report, options, say)
    _processor(report, options, bootstrap, events, now_ms, run_id, work, say)
    _gateway(report, options, bootstrap, now_ms, run_id, work, say)
    _end_to_end(report, options, bootstrap, run_id, work, say)
    _read_side(report, options, bootstrap, run_id, work, say)
    return report


def _read_side(
    report: Report,
    options: Options,
    bootstrap: str,
    run_id: str,
    work: Path,
    say: Callable[[str], None],
) -> None:
    """Usage query, entitlement check and alert delay rows (bench/read_side.py)."""
    from bench.read_side import read_side

    read_side(report, options, bootstrap, run_id, work, say)


def _micro(report: Report, options: Options, say: Callable[[str], None]) -> None:
    from bench.emitter import bench_track_tokens, bench_wrapper_overhead
    from bench.pricing import bench_genai_calc_price, bench_pricing

    say("pricing and emitter micro-benchmarks ...")
    n = 20_000 if options.quick else 200_000
    ours = bench_pricing(n)
    genai = bench_genai_calc_price(2_000 if options.quick else 20_000)
    report.rows.append(
        Row("pricing", "hot path per event", ours, "µs", "genai calc_price", genai, "≤ 5 µs")
    )
    calls = 2_000 if options.quick else 20_000
    overhead = bench_wrapper_overhead(calls)
    report.rows.append(
        Row("emitter", "OpenAI wrapper overhead", overhead, "µs/call", "target", 50.0, "< 50 µs")
    )
    track = bench_track_tokens(calls)
    report.rows.append(
        Row("emitter", "track_tokens, app thread", track, "µs/call", "target", 50.0, "< 50 µs")
    )


def _topic(bootstrap: str, name: str) -> None:
    from core.log.kafka import KafkaAdmin

    KafkaAdmin(bootstrap).ensure_topic(name, PARTITIONS)


def _processor(
    report: Report,
    options: Options,
    bootstrap: str,
    events: int,
    now_ms: int,
    run_id: str,
    work: Path,
    say: Callable[[str], None],
) -> None:
    topic = f"bench.{run_id}.events"
    _topic(bootstrap, topic)
    common = {"bootstrap": bootstrap, "topic": topic, "events": events}
    say(f"producing {events:,} events with a bare confluent-kafka producer ...")
    produced = _role("produce", {**common, "seed": options.seed, "now_ms": now_ms})
    report.rows.append(
        Row(
            "kafka",
            "bare producer (gateway's limit)",
            produced["events"] / produced["seconds"],
            "events/s",
        )
    )
    say("ground truth ...")
    sample = EventStream(seed=options.seed, now_ms=now_ms).take(events)
    truth = ground_truth(sample, with_cost=options.quick)
    del sample
    say("bare consumer ...")
    bare = _role("consume", {**common, "group": f"bench-bare-{run_id}"})
    bare_rate = bare["events"] / bare["seconds"]
    report.rows.append(Row("kafka", "bare consumer (processor's limit)", bare_rate, "events/s"))
    say("meterline processor ...")
    ours = _role(
        "processor", {**common, "group": f"bench-proc-{run_id}", "data_dir": str(work / "proc")}
    )
    rate = ours["events"] / ours["seconds"]
    report.rows.append(
        Row(
            "processor",
            "end to end (Kafka -> chDB)",
            rate,
            "events/s",
            "bare consumer",
            bare_rate,
            "≥ 100k/s, ≥ 0.5x",
        )
    )
    _check_totals(report, truth, ours, events)
    if not ours.get("native"):
        # The default run must measure the default path; without the decoder the
        # numbers would be the per-record path's under the column path's name.
        report.problems.append(
            "processor: token events took the per-record path: the native decoder is not "
            "built (make setup builds it) or METERLINE_PROCESSOR_NATIVE is false"
        )
    _cpu_rows(report, ours, bare)
    # The same job with one setting changed, beside the default in the same run: the
    # writer thread's gain (or cost), and the column path's (processor/token_columns.py).
    for key, name, setting, arg, label in (
        (
            "serial",
            "one thread",
            "METERLINE_PROCESSOR_PIPELINE=false",
            {"pipeline": False},
            "one thread, no writer thread",
        ),
        (
            "slow",
            "per-record path",
            "METERLINE_PROCESSOR_NATIVE=false",
            {"native": False},
            "per-record path, no column path",
        ),
    ):
        say(f"meterline processor, {name} ({setting}) ...")
        other = _role(
            "processor",
            {
                **common,
                "group": f"bench-{key}-{run_id}",
                "data_dir": str(work / key),
                **arg,
            },
        )
        _check_totals(report, truth, other, events, f"processor, {name}")
        report.rows.append(
            Row(
                "processor",
                f"{label} ({setting}, "
                f"CPU {other['cpu_s'] / other['events'] * 1e6:.1f} µs/event, "
                f"peak {other['peak_rss_mib']:.0f} MiB)",
                other["events"] / other["seconds"],
                "events/s",
                "the defaults",
                rate,
            )
        )
    peer_rate = _peer(report, options, common, truth.unique, run_id, say)
    if peer_rate:
        report.rows.append(
            Row(
                "processor",
                "vs Quix Streams peer",
                rate,
                "events/s",
                "quix peer",
                peer_rate,
                "> 1x",
            )
        )
    report.rows.append(
        Row(
            "memory",
            "processor peak RSS",
            ours["peak_rss_mib"],
            "MiB",
            "bare consumer",
            bare["peak_rss_mib"],
        )
    )
    report.rows.append(
        Row(
            "memory",
            f"processor RSS after {truth.unique:,} distinct ids",
            ours["rss_after_mib"],
            "MiB",
            "bare consumer",
            bare["peak_rss_mib"],
        )
    )


def _cpu_rows(report: Report, ours: dict[str, Any], bare: dict[str, Any]) -> None:
    """CPU per event, of the worker's process and of the whole box, beside the bare consumer's.

    Events/s alone cannot say whether a change saved work or moved it to another
    thread; on a box whose cores the broker and the engine share, only the second
    helps, and the box's CPU per event is the number that bounds the rate.
    """
    if "cpu_s" not in ours or "cpu_s" not in bare:
        return
    cores = os.cpu_count() or 1
    for metric, key, target in (
        ("CPU per event, its process (every thread)", "cpu_s", ""),
        (
            "CPU per event, whole box (broker, librdkafka, engine, all)",
            "box_cpu_s",
            f"≤ {cores * 10} µs for 100k/s on {cores} cores",
        ),
    ):
        report.rows.append(
            Row(
                "cpu",
                metric,
                ours[key] / ours["events"] * 1e6,
                "µs",
                "bare consumer",
                bare[key] / bare["events"] * 1e6,
                target,
            )
        )
    # Which threads of the process spent it (bench/_proc.py thread_cpu_s): the
    # processor's Python thread, the engine's query threads (the INSERT), its
    # background merges, librdkafka. Says where the next µs must come from.
    for name, seconds in list(ours.get("threads_cpu_s", {}).items())[:4]:
        report.rows.append(
            Row(
                "cpu",
                f"... of which threads named {name!r} ({THREAD_ROLES.get(name, 'other')})",
                seconds / ours["events"] * 1e6,
                "µs",
            )
        )


#: What the processor's busiest threads are, by the name Linux knows them by.
THREAD_ROLES = {
    "python": "the processor's Python thread, and the INSERT's calling side",
    "ThreadPool": "the engine's query threads: the INSERT and the dedupe lookup",
    "MergeMutate": "the engine's background merges",
    "rdk:broker": "librdkafka's fetch threads",
    "rdk:main": "librdkafka's main thread",
}


def _role(role: str, args: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.workers", role, orjson.dumps(args).decode()],
        cwd=ROOT,
        capture_output=True,
        timeout=3600,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines = [x for x in done.stdout.decode().splitlines() if x.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"bench worker {role} failed ({done.returncode}): "
            + done.stderr.decode(errors="replace")[-1500:]
        )
    result: dict[str, Any] = orjson.loads(lines[-1])
    return result


def _check_totals(
    report: Report, truth: Any, result: dict[str, Any], events: int, name: str = "processor"
) -> None:
    """Stored totals against the independent ground truth, exactly."""
    if result["events"] != events:
        report.problems.append(f"{name}: read {result['events']} of {events} records")
    if result["stored"] != truth.unique or result["dead"] != 0:
        report.problems.append(
            f"{name}: stored {result['stored']} (want {truth.unique}), dead {result['dead']}"
        )
    for table, rows in result["totals"].items():
        got = {tuple(r[:4]): [int(v) for v in r[4:-1]] for r in rows}
        want = {k: [v["events"], *(v[c] for c in SUMS)] for k, v in truth.groups.items()}
        if got != want:
            diff = [k for k in set(got) | set(want) if got.get(k) != want.get(k)][:3]
            report.problems.append(
                f"{name}: {table} totals differ from the ground truth, e.g. {diff}"
            )
        else:
            report.checks.append(
                f"{name}: {table}: {truth.unique:,} unique events, {len(want)} groups, "
                "every sum exact"
            )
        if truth.token_cost:
            cost = {
                tuple(r[:4]): Decimal(r[-1]) for r in rows if r[3] == "io.meterline.usage.tokens"
            }
            wanted = {k: v for k, v in truth.token_cost.items()}
            bad = [k for k in wanted if cost.get(k, Decimal(0)) != wanted[k]]
            if bad:
                report.problems.append(
                    f"{name}: {table} token cost differs from genai-prices calc_price for {bad[:3]}"
                )
            else:
                report.checks.append(f"{name}: {table}: token cost equals genai-prices calc_price")


def _peer(
    report: Report,
    options: Options,
    common: dict[str, Any],
    unique: int,
    run_id: str,
    say: Callable[[str], None],
) -> float | None:
    if not options.peer:
        report.notes.append("Quix Streams peer skipped (--no-peer).")
        return None
    if options.quick and not peer_env.ready():
        # --quick must stay fast: building the venv downloads ~200 MB once.
        report.notes.append(
            "Quix Streams peer row missing: its venv is not built yet "
            "(a full `meterline bench` builds it in .cache/bench-peer)."
        )
        return None
    say("Quix Streams peer (own venv) ...")
    try:
        python = peer_env.ensure(say)
    except peer_env.PeerUnavailable as exc:
        report.notes.append(f"Quix Streams peer row missing: {exc}")
        return None
    args = {
        **common,
        "group": f"bench-quix-{run_id}",
        "unique": unique,
        "prices": peer_env.price_dict(),
    }
    try:
        result = _worker("", args, python=str(python), script=str(ROOT / "bench/peer.py"))
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        report.notes.append(f"Quix Streams peer failed: {str(exc)[-600:]}")
        return None
    if result["updates"] != unique:
        report.problems.append(f"quix peer windowed {result['updates']} of {unique} events")
    rate = result["events"] / result["seconds"]
    report.rows.append(
        Row(
            "peer",
            "Quix Streams job (dedupe, price, windows)",
            rate,
            "events/s",
            "bare consumer",
            None,
        )
    )
    report.rows.append(Row("memory", "Quix Streams peer peak RSS", result["peak_rss_mib"], "MiB"))
    return float(rate)


def _gateway(
    report: Report,
    options: Options,
    bootstrap: str,
    now_ms: int,
    run_id: str,
    work: Path,
    say: Callable[[str], None],
) -> None:
    topic = f"bench.{run_id}.gateway"
    _topic(bootstrap, topic)
    port = free_port()
    env = {
        **os.environ,
        "METERLINE_LOG": "kafka",
        "METERLINE_OPEN_MODE": "true",
        "METERLINE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "METERLINE_TOPIC": topic,
        "METERLINE_PORT": str(port),
        "METERLINE_DATA_DIR": str(work / "gateway"),
        "METERLINE_LOG_FORMAT": "text",
        "PYTHONPATH": str(ROOT),
    }
    log = open(work / "gateway.log", "wb")  # noqa: SIM115 - closed below
    gateway = subprocess.Popen(
        [sys.executable, "-m", "meterline.cli", "gateway"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", gateway)
        produce_rate = next(r.value for r in report.rows if r.metric.startswith("bare producer"))
        # (events per request, requests, connections). A closed-loop client's
        # throughput is connections / latency, and linger.ms (5) puts a floor
        # under a single event's latency: 64 connections keep the gateway busy.
        plans = [
            (1000, 20 if options.quick else 400, 4),
            (100, 50 if options.quick else 3000, 8),
            (1, 300 if options.quick else 15_000, 64),
        ]
        capacity: dict[int, float] = {}  # requests/s at saturation, per batch size
        for batch, requests, connections in plans:
            say(f"gateway: {requests} requests of {batch} event(s) ...")
            result = _load(report, port, batch, requests, connections, run_id_seed(batch), now_ms)
            capacity[batch] = result["requests"] / result["seconds"]
            lat = f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms"
            if batch > 1:
                report.rows.append(
                    Row(
                        "gateway",
                        f"batches of {batch} ({lat})",
                        result["events"] / result["seconds"],
                        "events/s",
                        "bare producer",
                        produce_rate,
                        "≥ 50k/s",
                    )
                )
            else:
                report.rows.append(
                    Row(
                        "gateway",
                        f"single-event requests ({lat})",
                        result["requests"] / result["seconds"],
                        "requests/s",
                        "bare producer",
                        produce_rate,
                        "≥ 5k/s",
                    )
                )
        # Latency at half the capacity just measured, on a fixed schedule.
        seconds = 1.0 if options.quick else 5.0
        for batch, connections in ((1000, 8), (100, 16), (1, 64)):
            rate = capacity[batch] / 2
            say(f"gateway: {rate:,.0f} requests/s of {batch} event(s) (half load) ...")
            result = _load(
                report,
                port,
                batch,
                max(10, int(rate * seconds)),
                connections,
                run_id_seed(batch) + 1,
                now_ms,
                rate,
            )
            report.rows.append(
                Row(
                    "gateway",
                    f"p99 at half load, {batch} event(s)/request ({rate * batch:,.0f} ev/s, "
                    f"p50 {result['p50_ms']:.1f} ms)",
                    result["p99_ms"],
                    "ms",
                    "target",
                    20.0,
                    "< 20 ms",
                )
            )
        _, peak = pid_rss_mib(gateway.pid)
        report.rows.append(Row("memory", "gateway peak RSS", peak, "MiB"))
    finally:
        gateway.terminate()
        gateway.wait(30)
        log.close()


def _load(
    report: Report,
    port: int,
    batch: int,
    requests: int,
    connections: int,
    seed: int,
    now_ms: int,
    rate: float | None = None,
) -> dict[str, Any]:
    """One run of ``bench.load``; refused requests become report problems."""
    result = _worker(
        "bench.load",
        {
            "port": port,
            "batch": batch,
            "requests": requests,
            "connections": connections,
            "seed": seed,
            "now_ms": now_ms,
            "rate": rate,
        },
    )
    if result["errors"]:
        report.problems.append(
            f"gateway answered {result['first_error']} "
            f"to {result['errors']} requests (batch {batch})"
        )
    return result


def run_id_seed(batch: int) -> int:
    return 1000 + batch


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s}s")


def _end_to_end(
    report: Report,
    options: Options,
    bootstrap: str,
    run_id: str,
    work: Path,
    say: Callable[[str], None],
) -> None:
    """ingest -> visible in usage_meters, at a fixed moderate rate, through ``meterline run``."""
    import httpx

    from meterline.instance import Instance

    topic = f"bench.{run_id}.e2e"
    _topic(bootstrap, topic)
    port = free_port()
    data_dir = work / "e2e"
    env = {
        **os.environ,
        "METERLINE_LOG": "kafka",
        "METERLINE_OPEN_MODE": "true",
        "METERLINE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "METERLINE_TOPIC": topic,
        "METERLINE_CONSUMER_GROUP": f"bench-e2e-{run_id}",
        "METERLINE_PORT": str(port),
        "METERLINE_DATA_DIR": str(data_dir),
        "METERLINE_LOG_FORMAT": "text",
        "PYTHONPATH": str(ROOT),
    }
    log = open(work / "e2e.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "meterline.cli", "run"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    per_request, interval, seconds = 20, 0.02, (3 if options.quick else 15)
    rate = per_request / interval
    say(f"end-to-end delay at {rate:.0f} events/s for {seconds} s ...")
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        instance = None
        while instance is None:
            instance = Instance.find(data_dir)
            time.sleep(0.1)
        stream = EventStream(seed=99, dup_rate=0)
        sent: dict[str, float] = {}
        seen: dict[str, float] = {}
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=30) as client:
            # Warm-up: the processor joins its group and opens chDB first.
            warm = [dict(e, subject="warmup") for e in stream.take(per_request)]
            client.post(
                f"{url}/v1/events",
                content=orjson.dumps(warm),
                headers={"content-type": "application/cloudevents-batch+json"},
            )
            _wait_visible(client, url, instance.token, {"warmup"}, {}, 60)
            n = int(seconds / interval)
            began = time.perf_counter()
            for i in range(n):
                subject = f"lat-{i}"
                batch = [dict(e, subject=subject) for e in stream.take(per_request)]
                sent[subject] = time.perf_counter()
                client.post(
                    f"{url}/v1/events",
                    content=orjson.dumps(batch),
                    headers={"content-type": "application/cloudevents-batch+json"},
                )
                if i % 5 == 4:
                    _poll_visible(
                        client, url, instance.token, set(sent) - set(seen), seen, per_request
                    )
                pause = began + (i + 1) * interval - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            _wait_visible(client, url, instance.token, set(sent), seen, 60, per_request)
        delays = sorted(seen[s] - sent[s] for s in sent)
        p50 = delays[len(delays) // 2] * 1000
        p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))] * 1000
        report.rows.append(
            Row(
                "end to end",
                f"ingest -> usage_meters p50 at {rate:.0f} ev/s",
                p50,
                "ms",
                "batch wait",
                500.0,
            )
        )
        report.rows.append(
            Row(
                "end to end",
                f"ingest -> usage_meters p99 at {rate:.0f} ev/s",
                p99,
                "ms",
                "batch wait",
                500.0,
            )
        )
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


def _poll_visible(
    client: Any,
    url: str,
    token: str,
    pending: set[str],
    seen: dict[str, float],
    per_request: int = 1,
) -> None:
    if not pending:
        return
    names = ",".join(f"'{s}'" for s in sorted(pending))
    response = client.post(
        f"{url}/v1/sql",
        params={"format": "JSONEachRow"},
        content=(
            f"SELECT subject, sum(events) AS n FROM usage_meters "
            f"WHERE subject IN ({names}) GROUP BY subject"
        ).encode(),
        headers={"authorization": f"Bearer {token}"},
    )
    response.raise_for_status()
    now = time.perf_counter()
    for line in response.content.splitlines():
        if line.strip():
            row = orjson.loads(line)
            if int(row["n"]) >= per_request and row["subject"] not in seen:
                seen[row["subject"]] = now


def _wait_visible(
    client: Any,
    url: str,
    token: str,
    subjects: set[str],
    seen: dict[str, float],
    timeout_s: float,
    per_request: int = 1,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _poll_visible(client, url, token, subjects - set(seen), seen, per_request)
        if subjects <= set(seen):
            return
        time.sleep(0.02)
    raise TimeoutError(f"{len(subjects - set(seen))} request(s) never became visible")
