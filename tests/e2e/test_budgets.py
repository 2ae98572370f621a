"""Budgets and the entitlement check through a real ``meterline run`` (Kafka + chDB).

Events go in through the gateway, the log and the processor; the entitlement's
``used`` is compared with a recomputation from the events sent (zoneinfo for
the billing-timezone month, bench.data's price formula), a hard budget makes
the next wrapped provider call fail before it reaches the provider, and a
portal token cannot check another subject.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import openai
import pytest

from bench.data import expected_token_cost
from ingest.auth import hash_key
from meterline.sdk import BudgetExhausted, Meter, customer, wrap
from query.budget_store import decimal_text
from tests.conftest import MeterlineFactory
from tests.meterline.sdk.fakes.emitter_fake_server import FakeServer, Reply
from tests.meterline.sdk.fakes.emitter_payloads import openai_chat
from tests.support.cli import meterline_cli
from tests.support.events import make_events
from tests.support.stack import MeterlineProcess

SECRET = "test-portal-secret-0123456789-abcdefghij"
ZONE = "Asia/Kolkata"  # +05:30: the billing month is not the UTC month near its edges


@pytest.fixture
def stack(
    meterline_factory: MeterlineFactory, tmp_path: Path, kafka_bootstrap: str, unique_topic: str
) -> MeterlineProcess:
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        f"{hash_key('key-a')}: tenant-a\n"
        f"{hash_key('key-b')}: tenant-b\n"
        f"{hash_key('key-a-read')}: {{tenant: tenant-a, scopes: [ingest, read]}}\n"
    )
    return meterline_factory(
        METERLINE_LOG="kafka",
        METERLINE_STORE="chdb",
        METERLINE_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        METERLINE_TOPIC=unique_topic,
        METERLINE_CONSUMER_GROUP=f"g-{unique_topic}",
        METERLINE_PARTITIONS="2",
        METERLINE_API_KEYS_FILE=str(keys),
        METERLINE_OPEN_MODE="false",
        METERLINE_PORTAL_TOKEN_SECRET=SECRET,
        METERLINE_BILLING_TIMEZONE=ZONE,
    )


@pytest.fixture
def fake_provider() -> Iterator[FakeServer]:
    server = FakeServer().start()
    yield server
    server.stop()


def _call(stack: MeterlineProcess, method: str, path: str, key: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, f"{stack.url}{path}", headers={"x-api-key": key}, timeout=30, **kw)


def _check(stack: MeterlineProcess, subject: str, feature: str, credential: str) -> httpx.Response:
    header = (
        {"authorization": f"Bearer {credential}"}
        if credential.startswith("mlp_")
        else {"x-api-key": credential}
    )
    return httpx.get(
        f"{stack.url}/v1/subjects/{subject}/entitlements/{feature}", headers=header, timeout=30
    )


def test_budget_crud_keeps_every_version_with_who_and_when(stack: MeterlineProcess) -> None:
    created = _call(
        stack,
        "POST",
        "/v1/budgets",
        "key-a",
        json={"subject": "acme", "period": "month", "amount": "100.50", "mode": "hard"},
    )
    assert created.status_code == 201, created.text
    budget = created.json()
    assert budget["amount"] == "100.5" and budget["thresholds"] == [50, 80, 100]
    path = f"/v1/budgets/{budget['id']}"
    changed = _call(stack, "PATCH", path, "key-a", json={"amount": "250", "feature": "chat"})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["amount"], changed.json()["feature"]) == ("250", "chat")
    assert _call(stack, "GET", path, "key-a-read").json()["amount"] == "250"
    # A read-only key may list but not change; another tenant does not see it.
    refused = _call(stack, "PATCH", path, "key-a-read", json={"amount": "1"})
    assert refused.status_code == 403
    assert _call(stack, "GET", path, "key-b").status_code == 404
    assert _call(stack, "GET", "/v1/budgets", "key-b").json() == {"budgets": []}
    listed = _call(stack, "GET", "/v1/budgets", "key-a-read").json()["budgets"]
    assert [b["id"] for b in listed] == [budget["id"]]
    assert _call(stack, "DELETE", path, "key-a").status_code == 204
    assert _call(stack, "GET", path, "key-a").status_code == 404
    assert _call(stack, "GET", "/v1/budgets", "key-a").json() == {"budgets": []}
    history = _call(stack, "GET", f"{path}/history", "key-a").json()["versions"]
    assert [(v["action"], v["amount"], v["feature"]) for v in history] == [
        ("create", "100.5", None),
        ("update", "250", "chat"),
        ("delete", "250", "chat"),
    ]
    assert {v["changed_by"] for v in history} == {hash_key("key-a")}
    versions = [v["version"] for v in history]
    assert versions == sorted(set(versions))


def test_bad_budgets_are_422_naming_each_field(stack: MeterlineProcess) -> None:
    bad = _call(
        stack,
        "POST",
        "/v1/budgets",
        "key-a",
        json={"period": "week", "amount": "1e3", "thresholds": [0], "mode": "hard"},
    )
    assert bad.status_code == 422
    fields = sorted(p["field"] for p in bad.json()["problems"])
    assert fields == ["amount", "period", "thresholds.0"]
    assert _call(stack, "GET", "/v1/budgets/nope", "key-a").status_code == 422


def test_used_and_remaining_equal_a_recomputation_from_the_events_sent(
    stack: MeterlineProcess,
) -> None:
    events = make_events(300, seed=31)
    for start in range(0, len(events), 100):
        response = stack.post(events[start : start + 100], headers={"x-api-key": "key-a"})
        assert response.status_code == 202, response.text
    stack.wait_stored(len(events))
    zone = ZoneInfo(ZONE)
    month = datetime.now(UTC).astimezone(zone).strftime("%Y-%m")
    subject = events[0]["subject"]

    def truth(subject_only: bool, feature: str | None) -> Decimal:
        total = Decimal(0)
        for event in events:
            moment = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
            if (
                moment.astimezone(zone).strftime("%Y-%m") == month
                and (not subject_only or event["subject"] == subject)
                and (feature is None or event["data"]["feature"] == feature)
            ):
                total += expected_token_cost(event["data"], event["time"])
        return total

    cases = [({"subject": subject}, True, None), ({"feature": "chat"}, False, "chat")]
    for restriction, subject_only, feature in cases:
        amount = Decimal("1000000")
        created = _call(
            stack,
            "POST",
            "/v1/budgets",
            "key-a",
            json={
                **restriction,
                "period": "month",
                "metric": "cost_usd",
                "amount": str(amount),
            },
        )
        assert created.status_code == 201, created.text
        answer = _check(stack, subject, "chat", "key-a").json()
        standing = next(b for b in answer["budgets"] if b["id"] == created.json()["id"])
        expected = truth(subject_only, feature)
        assert expected > 0
        assert Decimal(standing["used"]) == expected
        assert standing["used"] == decimal_text(expected)
        assert Decimal(standing["remaining"]) == amount - expected
        resets = datetime.fromisoformat(standing["resets_at"].replace("Z", "+00:00"))
        local = resets.astimezone(zone)
        assert (local.day, local.hour, local.minute) == (1, 0, 0)
        assert answer["has_access"] is True
    # Another tenant's budgets and usage do not count.
    assert _check(stack, subject, "chat", "key-b").json()["budgets"] == []


def test_a_hard_budget_denies_the_next_sdk_call_before_the_provider_is_called(
    stack: MeterlineProcess, fake_provider: FakeServer
) -> None:
    subject = f"acme-{uuid.uuid4().hex[:8]}"
    created = _call(
        stack,
        "POST",
        "/v1/budgets",
        "key-a",
        json={"subject": subject, "period": "day", "amount": "0.000001", "mode": "hard"},
    )
    assert created.status_code == 201, created.text
    meter = Meter(url=stack.url, api_key="key-a", source="/apps/budget-test", flush_interval=0.05)
    client = wrap(
        openai.OpenAI(api_key="sk-test", base_url=fake_provider.url + "/v1", max_retries=0),
        meter,
        enforce_budgets=True,
    )
    fake_provider.expect(
        "/chat/completions", Reply(body=json.loads(json.dumps(openai_chat("chatcmpl-b1"))))
    )
    messages = [{"role": "user", "content": "hi"}]
    with customer(subject, feature="chat"):
        client.chat.completions.create(model="gpt-4o", messages=messages)
        assert meter.flush(timeout=30)
        stack.wait_until(
            lambda: not meter.check(subject, "chat").has_access, 60, "the budget to be used up"
        )
        with pytest.raises(BudgetExhausted, match=subject) as refused:
            client.chat.completions.create(model="gpt-4o", messages=messages)
    assert refused.value.entitlement.limit == Decimal("0.000001")
    assert len(fake_provider.requests) == 1  # the refused call never reached the provider
    # A soft budget on the same numbers only reports.
    _call(stack, "PATCH", f"/v1/budgets/{created.json()['id']}", "key-a", json={"mode": "soft"})
    stack.wait_until(lambda: meter.check(subject, "chat").has_access, 30, "soft budget")
    meter.close()


def test_a_portal_token_checks_only_its_own_subject(stack: MeterlineProcess) -> None:
    minted = _call(stack, "POST", "/v1/portal/tokens", "key-a", json={"subject": "acme"})
    assert minted.status_code == 201, minted.text
    token = minted.json()["token"]
    own = _check(stack, "acme", "chat", token)
    assert own.status_code == 200, own.text
    assert own.json()["has_access"] is True
    other = _check(stack, "globex", "chat", token)
    assert other.status_code == 403
    assert other.json()["type"].endswith("forbidden-subject")
    assert _check(stack, "acme", "chat", "nope").status_code == 401


def test_the_budgets_cli_creates_updates_deletes_and_shows_history(
    stack: MeterlineProcess, tmp_path: Path
) -> None:
    env = {"METERLINE_URL": stack.url, "METERLINE_API_KEY": "key-a"}

    def cli(*args: str) -> Any:
        done = meterline_cli(tmp_path / "cli", "budgets", *args, **env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if done.stdout.strip().startswith(("{", "[")) else None

    created = cli("create", "--period", "day", "--amount", "12.5", "--subject", "acme", "--hard")
    assert (created["mode"], created["amount"], created["subject"]) == ("hard", "12.5", "acme")
    cli("update", created["id"], "--amount", "20", "--threshold", "90")
    assert [b["amount"] for b in cli("list")["budgets"]] == ["20"]
    cli("delete", created["id"])
    history = cli("history", created["id"])["versions"]
    assert [(v["action"], v["thresholds"]) for v in history] == [
        ("create", [50, 80, 100]),
        ("update", [90]),
        ("delete", [90]),
    ]
    refused = meterline_cli(
        tmp_path / "cli", "budgets", "create", "--period", "week", "--amount", "1", **env
    )
    assert refused.returncode == 1
    assert "period" in refused.stderr


def _period_bounds(standing: dict[str, Any], zone: ZoneInfo) -> tuple[int, int]:
    """[start, end) of a standing's period in UTC seconds, from its ``resets_at`` alone."""
    end = datetime.fromisoformat(standing["resets_at"].replace("Z", "+00:00")).astimezone(zone)
    if standing["period"] == "day":
        start = (end - timedelta(days=1)).replace(hour=0)
    else:
        start = (end - timedelta(days=1)).replace(day=1, hour=0)
    return int(start.timestamp()), int(end.timestamp())


def _table_sum(stack: MeterlineProcess, table: str, where: str, metric: str) -> Decimal:
    rows = stack.sql(f"SELECT toString(sum({metric})) AS used FROM {table} WHERE {where}")
    return Decimal(rows[0]["used"])


def test_every_budget_shape_equals_the_running_totals_table_and_the_events_after_traffic(
    stack: MeterlineProcess,
) -> None:
    """Day/month, subject/tenant-wide, feature and model budgets: ``used`` is the table's sum.

    Checked twice: after a first round of traffic, and again after a second round
    (the snapshot is refreshed, never frozen). Each sum is computed here from the
    period's bounds (from ``resets_at``) on ``usage_running_totals`` and, for the
    events themselves, on ``usage_events``.
    """
    zone = ZoneInfo(ZONE)
    events = make_events(400, seed=47)
    subject = events[0]["subject"]
    model = events[0]["data"]["model"]
    shapes = [
        {"subject": subject, "period": "month"},
        {"subject": subject, "model": model, "period": "day", "metric": "cost_usd"},
        {"feature": "chat", "period": "month", "metric": "cost_usd"},
        {"period": "day"},
    ]
    ids = []
    for shape in shapes:
        created = _call(stack, "POST", "/v1/budgets", "key-a", json={**shape, "amount": "1000000"})
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])

    def compare() -> bool:
        answer = httpx.get(
            f"{stack.url}/v1/subjects/{subject}/entitlements/chat",
            params={"model": model},
            headers={"x-api-key": "key-a"},
            timeout=30,
        ).json()
        standings = {b["id"]: b for b in answer["budgets"]}
        assert sorted(standings) == sorted(ids)
        for budget_id, shape in zip(ids, shapes, strict=True):
            standing = standings[budget_id]
            start, end = _period_bounds(standing, zone)
            metric = shape.get("metric", "price_usd")
            where = "tenant = 'tenant-a'"
            for name in ("feature", "model"):
                if name in shape:
                    where += f" AND {name} = '{shape[name]}'"
            events_where = where + (f" AND subject = '{subject}'" if "subject" in shape else "")
            totals_where = where + (
                f" AND scope = 0 AND subject = '{subject}'"
                if "subject" in shape
                else " AND scope = 1"
            )
            table = _table_sum(
                stack,
                "usage_running_totals",
                f"{totals_where} AND bucket >= toDateTime({start}, 'UTC') "
                f"AND bucket < toDateTime({end}, 'UTC')",
                metric,
            )
            truth = _table_sum(
                stack,
                "usage_events",
                f"{events_where} AND time >= toDateTime64({start}, 3, 'UTC') "
                f"AND time < toDateTime64({end}, 3, 'UTC')",
                metric,
            )
            assert table == truth  # the views are exact (exactly once, same INSERT)
            assert table > 0 or shape["period"] == "day"  # a day may have just begun
            if Decimal(standing["used"]) != table:
                return False
            assert standing["used"] == decimal_text(table)
        return True

    for start in (0, 200):
        for chunk in range(start, start + 200, 100):
            response = stack.post(events[chunk : chunk + 100], headers={"x-api-key": "key-a"})
            assert response.status_code == 202, response.text
        stack.wait_stored(start + 200)
        # Within the documented bound (refresh 1 s + one read), not at once.
        stack.wait_until(compare, 30, "every budget's used to equal the table")
    assert _table_sum(stack, "usage_running_totals", "scope = 1", "price_usd") > 0
