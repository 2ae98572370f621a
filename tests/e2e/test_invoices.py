"""Invoices end to end: events through the real gateway, log, processor and chDB; the
close through the API; a re-bill through ``meterline replay`` and ``meterline invoice``.

The expected numbers are recomputed here from the events sent, with genai-prices'
own calculation (``expected_token_cost``), in Decimal, rounded half-even once at
the end: never read back from the store.
"""

from __future__ import annotations

import csv
import io
import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.data import expected_token_cost
from ingest.auth import hash_key
from tests.conftest import MeterlineFactory
from tests.support.cli import meterline_cli
from tests.support.events import token_event

PERIOD = "2026-10"
BOOK = """\
format: 1
name: october-fix
models:
  - provider: openai
    model: gpt-4o
    prices:
      - input_mtok: "1.25"
        output_mtok: "5"
"""
CENT = Decimal("0.01")


def october_events(n: int) -> list[dict[str, Any]]:
    rng = random.Random(16)
    start = datetime(2026, 10, 1, tzinfo=UTC)
    events = [token_event(rng, start + timedelta(days=rng.randint(0, 30))) for _ in range(n)]
    for subject, amount, currency in (("acme", "12.345", "EUR"), ("acme", "0.005", "USD")):
        events.append(
            {
                "specversion": "1.0",
                "id": f"chg-{uuid.UUID(int=rng.getrandbits(128)).hex}",
                "source": "/tests/app",
                "type": "io.meterline.usage.charge",
                "subject": subject,
                "time": "2026-10-20T10:00:00.000Z",
                "data": {"amount": amount, "currency": currency, "description": "onboarding"},
            }
        )
    return events


def expected_usd(
    events: list[dict[str, Any]], gpt4o_price: tuple[str, str] | None = None
) -> dict[str, Decimal]:
    """Per subject, the exact USD owed: list price (no rate card) of every token event."""
    out: dict[str, Decimal] = {}
    for e in events:
        data = e["data"]
        if e["type"] != "io.meterline.usage.tokens":
            amount = Decimal(data["amount"]) if data["currency"] == "USD" else Decimal(0)
        elif gpt4o_price is not None and data["model"] == "gpt-4o":
            # The re-bill book: input at its price (cache reads too: the book has no
            # cache price, so they are charged as input), output at its price.
            amount = (
                Decimal(data["input_tokens"]) * Decimal(gpt4o_price[0])
                + Decimal(data["output_tokens"]) * Decimal(gpt4o_price[1])
            ) / 1_000_000
        else:
            amount = expected_token_cost(data, e["time"])
        out[e["subject"]] = out.get(e["subject"], Decimal(0)) + amount
    return out


def totals(invoice: dict[str, Any]) -> dict[str, Decimal]:
    return {t["currency"]: Decimal(t["amount"]) for t in invoice["totals"]}


def test_invoices_equal_the_sent_events_close_idempotently_and_rebill_as_the_difference(
    meterline_factory: MeterlineFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    began = datetime.now(UTC) - timedelta(seconds=1)
    stack = meterline_factory(
        data_dir, METERLINE_LOG="embedded", METERLINE_DEDUPE_HORIZON_DAYS="3650"
    )
    events = october_events(240)
    assert stack.post(events).status_code == 202
    assert stack.post(events[:30]).status_code == 202  # retried duplicates: billed once
    stack.wait_caught_up()

    close = httpx.post(f"{stack.url}/v1/invoices/close", json={"period": PERIOD}, timeout=120)
    assert close.status_code == 200, close.text
    first = {i["subject"]: i for i in close.json()["invoices"]}
    live = expected_usd(events)
    assert set(first) == set(live)
    for subject, owed in live.items():
        assert first[subject]["revision"] == 1
        usd = totals(first[subject])["USD"]
        assert usd == owed.quantize(CENT, ROUND_HALF_EVEN), subject
        exact = sum((Decimal(t["amount_exact"]) for t in first[subject]["totals"]
                     if t["currency"] == "USD"), Decimal(0))  # fmt: skip
        assert exact == owed, subject
    # The EUR charge is its own line, in EUR, never added to the USD total.
    charges = [line for line in first["acme"]["lines"] if line["kind"] == "charge"]
    assert sorted((c["currency"], c["amount"]) for c in charges) == [
        ("EUR", "12.34"),
        ("USD", "0.00"),
    ]
    assert totals(first["acme"])["EUR"] == Decimal("12.34")

    again = httpx.post(f"{stack.url}/v1/invoices/close", json={"period": PERIOD}, timeout=120)
    assert again.json() == close.json()
    listed = httpx.get(f"{stack.url}/v1/invoices", params={"period": PERIOD}, timeout=60)
    assert len(listed.json()["invoices"]) == len(first)
    acme_csv = httpx.get(
        f"{stack.url}/v1/invoices/{first['acme']['id']}", params={"format": "csv"}, timeout=60
    )
    rows = list(csv.DictReader(io.StringIO(acme_csv.text)))
    assert {r["currency"]: r["amount"] for r in rows if r["kind"] == "total"} == {
        t["currency"]: t["amount"] for t in first["acme"]["totals"]
    }
    stack.stop()  # chDB: one process per folder; the operator stops the instance first

    book = tmp_path / "book.yaml"
    book.write_text(BOOK)
    until = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    replay = meterline_cli(
        data_dir, "replay", "--from", began.isoformat(), "--to", until, "--run", "oct-fix",
        "--price-book", str(book), METERLINE_DEDUPE_HORIZON_DAYS="3650",
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    rebill = meterline_cli(data_dir, "invoice", "--period", PERIOD, "--run", "oct-fix")
    assert rebill.returncode == 0, rebill.stderr
    second = {i["subject"]: i for i in orjson.loads(rebill.stdout)["invoices"]}
    rebilled = expected_usd(events, gpt4o_price=("1.25", "5"))
    for subject, owed in rebilled.items():
        revision = second[subject]
        assert (revision["revision"], revision["run"]) == (2, "oct-fix")
        # Only gpt-4o lines changed; each carries exactly new - old.
        assert {line["model"] for line in revision["lines"]} == {"gpt-4o"}
        assert all(line["events"] == 0 for line in revision["lines"])
        difference = sum((Decimal(line["amount_exact"]) for line in revision["lines"]), Decimal(0))
        assert difference == owed - live[subject], subject
        # Both revisions together bill the re-billed total, rounded once.
        billed = totals(first[subject])["USD"] + totals(revision)["USD"]
        assert billed == owed.quantize(CENT, ROUND_HALF_EVEN), subject
    # Revision 1 is frozen: still readable, unchanged.
    twice = meterline_cli(data_dir, "invoice", "--period", PERIOD, "--run", "oct-fix")
    assert orjson.loads(twice.stdout) == orjson.loads(rebill.stdout)
    check = meterline_cli(
        data_dir, "sql", "-f", "csv",
        "SELECT count(DISTINCT invoice_id), max(revision) FROM invoice_lines",
    )  # fmt: skip
    assert check.stdout.splitlines()[1] == f"{2 * len(first)},2"


def test_invoice_routes_check_scope_tenant_and_parameters_on_kafka(
    meterline_factory: MeterlineFactory, tmp_path: Path, kafka_bootstrap: str, unique_topic: str
) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        f"{hash_key('key-a')}: tenant-a\n"
        f"{hash_key('key-b')}: tenant-b\n"
        f"{hash_key('key-a-read')}: {{tenant: tenant-a, scopes: [ingest, read]}}\n"
    )
    stack = meterline_factory(
        METERLINE_LOG="kafka",
        METERLINE_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        METERLINE_TOPIC=unique_topic,
        METERLINE_CONSUMER_GROUP=f"g-{unique_topic}",
        METERLINE_API_KEYS_FILE=str(keys),
        METERLINE_OPEN_MODE="false",
        METERLINE_DEDUPE_HORIZON_DAYS="3650",
        # +05:30: 2026-09-30T19:00Z is already October there; 2026-10-31T19:00Z is November.
        METERLINE_BILLING_TIMEZONE="Asia/Kolkata",
    )
    a, a_read, b = (
        {"authorization": "Bearer key-a"},
        {"authorization": "Bearer key-a-read"},
        {"authorization": "Bearer key-b"},
    )
    rng = random.Random(7)
    inside = token_event(rng, datetime(2026, 9, 30, 19, tzinfo=UTC), subject="acme")
    inside["time"] = "2026-09-30T19:00:00.000Z"
    outside = token_event(rng, datetime(2026, 10, 31, 19, tzinfo=UTC), subject="acme")
    outside["time"] = "2026-10-31T19:00:00.000Z"
    other = token_event(rng, datetime(2026, 10, 10, tzinfo=UTC), subject="acme")
    assert stack.post([inside, outside], headers=a).status_code == 202
    assert stack.post([other], headers=b).status_code == 202
    stack.wait_caught_up()
    url = f"{stack.url}/v1/invoices"

    def close(headers: dict[str, str], **body: Any) -> httpx.Response:
        return httpx.post(f"{url}/close", json=body, headers=headers, timeout=120)

    def fields(response: httpx.Response) -> list[str]:
        return [p["field"] for p in response.json()["problems"]]

    assert close(a_read, period=PERIOD).status_code == 403
    assert fields(bad := close(a, period="2026-13")) == ["period"] and bad.status_code == 422
    assert "is not over" in close(a, period="2099-01").json()["detail"]
    assert fields(close(a, period=PERIOD, run="nope")) == ["run"]
    assert fields(close(a, period=PERIOD, customer="acme")) == ["customer"]
    listing = httpx.get(url, params={"period": PERIOD, "group": "x"}, headers=a, timeout=60)
    assert (listing.status_code, fields(listing)) == (422, ["group"])

    done = close(a, period=PERIOD)
    assert done.status_code == 200, done.text
    [invoice] = done.json()["invoices"]
    assert invoice["timezone"] == "Asia/Kolkata"
    assert invoice["period_start"] == "2026-09-30T18:30:00.000Z"
    # Only tenant-a's event inside the Kolkata month.
    assert sum(line["events"] for line in invoice["lines"]) == 1
    assert Decimal(invoice["totals"][0]["amount_exact"]) == expected_token_cost(
        inside["data"], inside["time"]
    )
    assert httpx.get(url, params={"period": PERIOD}, headers=b, timeout=60).json() == {
        "invoices": []
    }
    assert httpx.get(f"{url}/{invoice['id']}", headers=b, timeout=60).status_code == 404
    mine = httpx.get(f"{url}/{invoice['id']}", headers=a_read, timeout=60)
    assert mine.json() == invoice
