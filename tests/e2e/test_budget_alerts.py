"""Budget alerts through a real ``meterline run`` (Kafka + chDB) to a local webhook receiver.

Real traffic crosses a budget's thresholds; the receiver (a small HTTP server in
the test) verifies every request with ``standardwebhooks`` and records it. The
proof is a count of signed deliveries per webhook-id: exactly one per threshold,
also when the process is SIGKILLed after the crossing batch's INSERT and before
its commit (tests/support/chaos.py), when the same events are sent again, and
after an operator's ``meterline replay`` of the range with a much dearer price book.
"""

from __future__ import annotations

import base64
import contextlib
import random
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from standardwebhooks import Webhook

from bench.data import expected_token_cost
from ingest.auth import hash_key
from tests.conftest import MeterlineFactory
from tests.support.cli import meterline_cli
from tests.support.events import token_event
from tests.support.stack import MeterlineProcess

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


class Receiver:
    """Records verified webhooks; answers 500 to the first ``fail_first`` requests."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.refused = 0
        self.fail_first = 0
        self.attempts: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    event = Webhook(SECRET).verify(body, headers)
                except Exception:
                    receiver.refused += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                receiver.attempts.append(headers["webhook-id"])
                if len(receiver.attempts) <= receiver.fail_first:
                    self.send_response(500)
                else:
                    receiver.received.append((headers["webhook-id"], event))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def ids(self) -> list[str]:
        return [i for i, _ in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()


@pytest.fixture
def env(
    tmp_path: Path, kafka_bootstrap: str, unique_topic: str, receiver: Receiver
) -> dict[str, str]:
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"{hash_key('key-a')}: tenant-a\n")
    hooks = tmp_path / "hooks.yaml"
    hooks.write_text(f"tenant-a: {{url: '{receiver.url}', secret: '{SECRET}'}}\n")
    return {
        "METERLINE_LOG": "kafka",
        "METERLINE_STORE": "chdb",
        "METERLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "METERLINE_TOPIC": unique_topic,
        "METERLINE_CONSUMER_GROUP": f"g-{unique_topic}",
        "METERLINE_PARTITIONS": "2",
        "METERLINE_API_KEYS_FILE": str(keys),
        "METERLINE_OPEN_MODE": "false",
        "METERLINE_ALERT_WEBHOOKS_FILE": str(hooks),
        "METERLINE_ALERT_INTERVAL_S": "0.2",
        "METERLINE_ALERT_RETRY_BASE_S": "0.2",
    }


def _events(n: int, seed: int, subject: str) -> list[dict[str, Any]]:
    """Priced token events of the last few minutes (the current month but near its start)."""
    rng = random.Random(seed)
    when = datetime.now(UTC) - timedelta(minutes=5)
    made = [token_event(rng, when, subject=subject, source="/alerts-test") for _ in range(n)]
    return [e for e in made if e["data"]["model"] != "llama-own-70b"]  # unpriced: costs 0


def _cost(events: list[dict[str, Any]]) -> Decimal:
    return sum((expected_token_cost(e["data"], e["time"]) for e in events), Decimal(0))


def _budget(stack: MeterlineProcess, subject: str, amount: Decimal, thresholds: list[int]) -> str:
    response = httpx.post(
        f"{stack.url}/v1/budgets",
        headers={"x-api-key": "key-a"},
        json={
            "subject": subject,
            "period": "month",
            "metric": "cost_usd",
            "amount": str(amount.quantize(Decimal("0.000000000001"), ROUND_DOWN)),
            "thresholds": thresholds,
        },
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _post(stack: MeterlineProcess, events: list[dict[str, Any]]) -> None:
    response = stack.post(events, headers={"x-api-key": "key-a"})
    assert response.status_code == 202, response.text


def _alerts(stack: MeterlineProcess) -> list[dict[str, Any]]:
    response = httpx.get(f"{stack.url}/v1/alerts", headers={"x-api-key": "key-a"}, timeout=30)
    assert response.status_code == 200, response.text
    return list(response.json()["alerts"])


def test_one_signed_webhook_per_threshold_across_a_sigkill_and_resent_events(
    meterline_factory: MeterlineFactory, tmp_path: Path, env: dict[str, str], receiver: Receiver
) -> None:
    data = tmp_path / "data"
    events = _events(60, seed=7, subject="acme")
    spent = _cost(events)
    assert spent > 0
    # The first batch spends 1.5 x the amount: 50 and 100 crossed, 200 not yet.
    amount = spent / Decimal("1.5")
    # SIGKILL after the crossing batch is inserted, before its offsets are committed.
    stack = meterline_factory(data, **env, METERLINE_CHAOS_KILL_AT="after_insert:1")
    budget = _budget(stack, "acme", amount, [50, 100, 200])
    # The process may die before it answers; the resend below covers either case.
    with contextlib.suppress(httpx.HTTPError):
        _post(stack, events)
    assert stack.proc is not None
    assert stack.proc.wait(120) == -9
    stack = meterline_factory(data, **env)
    _post(stack, events)  # sent again: duplicates of what the killed batch stored
    stack.wait_caught_up(120)
    stack.wait_until(lambda: len(receiver.received) >= 2, 120, "two alerts")
    # More traffic crosses 200%: when its alert arrives, every tick that could have
    # sent a second 50% or 100% alert has run.
    more: list[dict[str, Any]] = []
    seed = 8
    while _cost(events) + _cost(more) < amount * Decimal("2.01"):
        more += _events(50, seed, "acme")
        seed += 1
    _post(stack, more)
    stack.wait_until(lambda: len(receiver.received) >= 3, 120, "the 200% alert")

    assert receiver.refused == 0
    ids = receiver.ids()
    assert len(ids) == len(set(ids)) == 3
    bodies = [event for _, event in receiver.received]
    assert sorted(b["data"]["threshold"] for b in bodies) == [50, 100, 200]
    for webhook_id, body in receiver.received:
        assert body["type"] == "io.meterline.alert.budget"
        assert body["id"] == webhook_id and body["subject"] == "acme"
        assert body["data"]["budget_id"] == budget
        assert Decimal(body["data"]["used"]) >= Decimal(body["data"]["threshold_amount"])
    # The same alerts, once each, in the store; each also published to <topic>.alerts.
    stored = _alerts(stack)
    assert sorted(a["id"] for a in stored) == sorted(ids)
    stack.wait_until(
        lambda: all(a["log"] == "delivered" for a in _alerts(stack)), 60, "log publishes"
    )
    assert all(a["webhook"] == "delivered" for a in _alerts(stack))


def test_a_failed_delivery_is_retried_then_failed_then_replayed_with_the_same_id(
    meterline_factory: MeterlineFactory, tmp_path: Path, env: dict[str, str], receiver: Receiver
) -> None:
    receiver.fail_first = 3
    stack = meterline_factory(tmp_path / "data", **env, METERLINE_ALERT_MAX_ATTEMPTS="3")
    events = _events(20, seed=9, subject="beta")
    _budget(stack, "beta", _cost(events) / 2, [100])
    _post(stack, events)
    stack.wait_until(
        lambda: [a["webhook"] for a in _alerts(stack)] == ["failed"], 120, "a failed delivery"
    )
    alert = _alerts(stack)[0]["id"]
    assert receiver.attempts == [alert] * 3 and receiver.received == []
    shown = httpx.get(f"{stack.url}/v1/alerts/{alert}", headers={"x-api-key": "key-a"}, timeout=30)
    webhook_rows = [d for d in shown.json()["deliveries"] if d["channel"] == "webhook"]
    assert [(d["attempt"], d["outcome"], d["status"]) for d in webhook_rows] == [
        (1, "retrying", 500),
        (2, "retrying", 500),
        (3, "failed", 500),
    ]
    replayed = httpx.post(
        f"{stack.url}/v1/alerts/{alert}/redeliver", headers={"x-api-key": "key-a"}, timeout=30
    )
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["outcome"] == "delivered" and replayed.json()["by_replay"] is True
    assert receiver.ids() == [alert]
    assert [a["webhook"] for a in _alerts(stack)] == ["delivered"]
    assert orjson.loads(orjson.dumps(receiver.received[0][1]))["data"]["threshold"] == 100


# gpt-4o at 100x its catalog price: a re-billed range costs far more than the live one.
DEAR_BOOK = """\
format: 1
name: dear
models:
  - provider: openai
    model: gpt-4o
    prices:
      - input_mtok: "250"
        output_mtok: "1000"
"""


def test_a_replay_command_sends_no_second_webhook_for_an_alerted_threshold(
    meterline_factory: MeterlineFactory, tmp_path: Path, env: dict[str, str], receiver: Receiver
) -> None:
    data = tmp_path / "data"
    began = datetime.now(UTC) - timedelta(seconds=1)
    stack = meterline_factory(data, **env)
    events = _events(60, seed=11, subject="gamma")
    spent = _cost(events)
    amount = spent / Decimal("1.5")  # 50 and 100 crossed by this traffic; 1000 never
    budget = _budget(stack, "gamma", amount, [50, 100, 1000])
    _post(stack, events)
    stack.wait_caught_up(120)
    stack.wait_until(lambda: len(receiver.received) >= 2, 120, "the 50% and 100% alerts")
    first = receiver.ids()
    stack.stop()  # chDB: one process per folder; the operator stops the instance first

    # The operator re-bills the range, as docs/operations.md says, with the CLI.
    book = tmp_path / "dear.yaml"
    book.write_text(DEAR_BOOK)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return meterline_cli(
            data,
            *args,
            METERLINE_LOG="kafka",
            METERLINE_STORE="chdb",
            METERLINE_KAFKA_BOOTSTRAP_SERVERS=env["METERLINE_KAFKA_BOOTSTRAP_SERVERS"],
            METERLINE_TOPIC=env["METERLINE_TOPIC"],
        )

    window = [
        "--from",
        began.isoformat(),
        "--to",
        (datetime.now(UTC) + timedelta(minutes=1)).isoformat(),
    ]
    replayed = cli("replay", *window, "--run", "dear", "--price-book", str(book))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert f"{len(events)} events written" in replayed.stdout
    rebilled = cli(
        "sql",
        "-f",
        "csv",
        "SELECT toString(sum(cost_usd)) FROM billing_run_events WHERE run = 'dear'",
    )
    assert rebilled.returncode == 0, rebilled.stderr
    # Had the run reached the live running totals, this spend would cross 1000% too:
    # the test could see a replay that leaks into the alerter's input.
    assert Decimal(rebilled.stdout.splitlines()[1].strip('"')) > amount * 10

    stack = meterline_factory(data, **env)
    # A sentinel budget crossed after the restart: when its alert arrives, the
    # restarted alerter has resumed unfinished deliveries and checked every budget.
    sentinel_events = _events(20, seed=12, subject="sentinel")
    sentinel = _budget(stack, "sentinel", _cost(sentinel_events) / 2, [100])
    _post(stack, sentinel_events)
    stack.wait_until(lambda: len(receiver.received) >= 3, 120, "the sentinel's alert")

    assert receiver.refused == 0
    # Every signed request the receiver verified, retries and re-sends included:
    # one per (budget, period, threshold), the gamma ones the same as before the replay.
    assert receiver.attempts == receiver.ids()
    assert len(receiver.ids()) == len(set(receiver.ids())) == 3
    assert receiver.ids()[:2] == first
    by_budget = sorted(
        (e["data"]["budget_id"], e["data"]["threshold"]) for _, e in receiver.received
    )
    assert by_budget == sorted([(budget, 50), (budget, 100), (sentinel, 100)])
    assert sorted(a["id"] for a in _alerts(stack)) == sorted(receiver.ids())
