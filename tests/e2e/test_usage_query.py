"""``GET /v1/usage`` and portal tokens through a real ``meterline run``.

Events go in through the gateway, the log and the processor; every window x
timezone x grouping read back equals an independent recomputation from the
events sent (tests/support/events.py), CSV equals JSON, and a customer-scoped
token reads its own subject only.
"""

from __future__ import annotations

import base64
import csv
import io
import random
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from bench.data import expected_token_cost
from ingest.auth import hash_key
from query.portal_tokens import TokenSigner
from tests.conftest import MeterlineFactory
from tests.support.events import TOKEN_COLUMNS, make_events, token_event
from tests.support.stack import MeterlineProcess

SECRET = "test-portal-secret-0123456789-abcdefghij"
COLUMNS = ("events", *TOKEN_COLUMNS, "cost_usd")
GROUPINGS: list[tuple[str, ...]] = [
    (),
    ("subject",),
    ("model", "feature"),
    ("subject", "model", "feature", "provider", "type", "unit"),
]
EVENT_GROUPS: dict[str, Callable[[dict[str, Any]], str]] = {
    "subject": lambda e: e["subject"],
    "model": lambda e: e["data"]["model"],
    "feature": lambda e: e["data"]["feature"],
    "provider": lambda e: e["data"]["provider"],
    "type": lambda e: e["type"],
    "unit": lambda e: "token",
}


@pytest.fixture(scope="module")
def sent() -> dict[str, list[dict[str, Any]]]:
    a = make_events(400, seed=21)
    return {"tenant-a": a + a[::9], "tenant-b": make_events(60, seed=22)}  # a: with resends


@pytest.fixture
def stack(
    meterline_factory: MeterlineFactory, tmp_path: Path, sent: dict[str, list[dict[str, Any]]]
) -> MeterlineProcess:
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        f"{hash_key('key-a')}: tenant-a\n"
        f"{hash_key('key-b')}: tenant-b\n"
        f"{hash_key('key-a-ingest')}: {{tenant: tenant-a, scopes: [ingest]}}\n"
    )
    process = meterline_factory(
        METERLINE_API_KEYS_FILE=str(keys),
        METERLINE_OPEN_MODE="false",
        METERLINE_PARTITIONS="2",
        METERLINE_PORTAL_TOKEN_SECRET=SECRET,
    )
    records = 0
    for key, events in (("key-a", sent["tenant-a"]), ("key-b", sent["tenant-b"])):
        for start in range(0, len(events), 100):
            chunk = events[start : start + 100]
            response = process.post(chunk, headers={"x-api-key": key})
            assert response.status_code == 202, response.text
            records += len(chunk)
    # meterline_processor_records_total counts records READ (processor/metrics.py),
    # so wait for the meters themselves to hold every unique event.
    unique = sum(len({(e["source"], e["id"]) for e in events}) for events in sent.values())

    def metered() -> bool:
        rows = process.sql("SELECT toString(sum(events)) AS n FROM usage_meters")
        return int(rows[0]["n"]) == unique

    process.wait_processed(records)
    process.wait_until(metered, 60, f"{unique} events in the meters")
    return process


def _window(moment: datetime, window: str, zone: ZoneInfo) -> str | None:
    """The window's start, computed with zoneinfo (not the engine's functions)."""
    local = moment.astimezone(zone)
    if window == "none":
        return None
    if window == "minute":
        start = moment.replace(second=0, microsecond=0)
    elif window == "hour":
        start = local.replace(minute=0, second=0, microsecond=0)
    elif window == "day":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _truth(
    events: list[dict[str, Any]], window: str, timezone: str, groups: tuple[str, ...]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    unique = {(e["source"], e["id"]): e for e in events}.values()
    zone = ZoneInfo(timezone)
    out: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(
        lambda: {"events": 0, **{c: 0 for c in TOKEN_COLUMNS}, "cost_usd": Decimal(0)}
    )
    for event in unique:
        moment = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
        key = (_window(moment, window, zone), *(EVENT_GROUPS[g](event) for g in groups))
        row = out[key]
        row["events"] += 1
        for column in TOKEN_COLUMNS:
            row[column] += event["data"][column]
        row["cost_usd"] += expected_token_cost(event["data"], event["time"])
    return dict(out)


def _answered(rows: list[dict[str, Any]], groups: tuple[str, ...]) -> dict[tuple[Any, ...], Any]:
    out = {}
    for row in rows:
        key = (row.get("window_start"), *(row[g] for g in groups))
        assert key not in out, f"two rows for {key}"
        out[key] = {
            **{c: int(row[c]) for c in ("events", *TOKEN_COLUMNS)},
            "cost_usd": Decimal(row["cost_usd"]),
        }
    return out


def _get(stack: MeterlineProcess, credential: str, **params: Any) -> httpx.Response:
    header = (
        {"authorization": f"Bearer {credential}"}
        if credential.startswith("mlp_")
        else {"x-api-key": credential}
    )
    return httpx.get(f"{stack.url}/v1/usage", params=params, headers=header, timeout=30)


def test_every_window_and_grouping_equals_a_recomputation_from_the_events_sent(
    stack: MeterlineProcess, sent: dict[str, list[dict[str, Any]]]
) -> None:
    # Whole minutes around the events (sent up to ~2 h ago, spread over 3 minutes).
    start = (datetime.now(UTC) - timedelta(days=1)).replace(second=0, microsecond=0)
    bounds = {"from": start.isoformat().replace("+00:00", "Z"), "to": "2100-01-01"}
    for timezone in ("UTC", "Asia/Kolkata"):  # +05:30: hours differ from UTC hours
        for window in ("minute", "hour", "day", "month", "none"):
            for groups in GROUPINGS:
                params = {
                    **bounds,
                    "window": window,
                    "timezone": timezone,
                    "group_by": ",".join(groups),
                    "columns": ",".join(COLUMNS),
                }
                answer = _get(stack, "key-a", **params)
                assert answer.status_code == 200, answer.text
                body = answer.json()
                truth = _truth(sent["tenant-a"], window, timezone, groups)
                assert _answered(body["rows"], groups) == truth, (timezone, window, groups)
                as_csv = _get(stack, "key-a", **params, format="csv")
                assert as_csv.headers["content-type"].startswith("text/csv")
                table = list(csv.DictReader(io.StringIO(as_csv.text)))
                assert table == [{k: str(v) for k, v in row.items()} for row in body["rows"]]
    other = _get(stack, "key-b", group_by="subject", columns=",".join(COLUMNS))
    assert _answered(other.json()["rows"], ("subject",)) == _truth(
        sent["tenant-b"], "none", "UTC", ("subject",)
    )
    accept = httpx.get(
        f"{stack.url}/v1/usage",
        headers={"x-api-key": "key-a", "accept": "text/csv"},
        timeout=30,
    )
    assert accept.text.splitlines()[0].startswith("events,unpriced_events,")


def test_bad_parameters_are_422_naming_each_and_credentials_are_checked(
    stack: MeterlineProcess,
) -> None:
    bad = _get(stack, "key-a", window="week", group_by="user", subject="x' OR 1=1 --")
    assert bad.status_code == 422
    assert [(p["field"], p["code"]) for p in bad.json()["problems"]] == [
        ("window", "invalid"),
        ("group_by", "not-metered"),
    ]
    injected = _get(stack, "key-a", subject="x' OR 1=1 OR subject = '", group_by="subject")
    assert injected.json()["rows"] == []
    assert _get(stack, "key-a-ingest").status_code == 403
    assert _get(stack, "nope").status_code == 401


def _mint(stack: MeterlineProcess, key: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/v1/portal/tokens", json=body, headers={"x-api-key": key}, timeout=30
    )


def test_a_portal_token_reads_only_its_subject_and_features(
    stack: MeterlineProcess, sent: dict[str, list[dict[str, Any]]]
) -> None:
    minted = _mint(stack, "key-a", subject="acme")
    assert minted.status_code == 201, minted.text
    token = minted.json()["token"]
    columns = ",".join(COLUMNS)
    mine = _get(stack, token, group_by="subject,feature", columns=columns)
    acme = [e for e in sent["tenant-a"] if e["subject"] == "acme"]
    assert _answered(mine.json()["rows"], ("subject", "feature")) == _truth(
        acme, "none", "UTC", ("subject", "feature")
    )
    assert _get(stack, token, subject="acme").status_code == 200
    for other in ({"subject": "globex"}, {"subject": ["acme", "globex"]}):
        refused = _get(stack, token, **other)
        assert refused.status_code == 403
        assert refused.json()["type"].endswith("/forbidden-subject")

    chat = _mint(stack, "key-a", subject="acme", features=["chat"]).json()["token"]
    only_chat = _get(stack, chat, group_by="feature", columns=columns).json()["rows"]
    assert [row["feature"] for row in only_chat] == ["chat"]
    assert _get(stack, chat, feature="search").status_code == 403
    # The token is the credential: it cannot mint or revoke.
    assert _mint(stack, token, subject="globex").status_code == 401
    assert _mint(stack, "key-a-ingest", subject="acme").status_code == 403
    # Another tenant's key reads none of it, and its tokens read its own tenant.
    theirs = _mint(stack, "key-b", subject="acme").json()["token"]
    rows = _get(stack, theirs, columns="events").json()["rows"]
    assert rows == [{"events": sum(1 for e in sent["tenant-b"] if e["subject"] == "acme")}]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_tampered_expired_foreign_and_revoked_tokens_are_refused(
    stack: MeterlineProcess,
) -> None:
    token = _mint(stack, "key-a", subject="acme").json()["token"]
    body, signature = token.removeprefix("mlp_").split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    widened = _b64(orjson.dumps({**claims, "sub": "globex"}))
    later = _b64(orjson.dumps({**claims, "exp": claims["exp"] + 10**9}))
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    now_ms = time.time_ns() // 1_000_000
    expired, _ = TokenSigner(SECRET).mint("tenant-a", "acme", None, now_ms - 1)
    foreign, _ = TokenSigner("another-secret-0123456789-abcdefghijk").mint(
        "tenant-a", "acme", None, now_ms + 3_600_000
    )
    cases = {
        f"mlp_{widened}.{signature}": "invalid-token",
        f"mlp_{later}.{signature}": "invalid-token",
        f"mlp_{body}.{flipped}": "invalid-token",
        f"mlp_{body}": "invalid-token",
        "mlp_%%%.###": "invalid-token",
        expired: "token-expired",
        foreign: "invalid-token",
    }
    for bad, code in cases.items():
        refused = _get(stack, bad)
        assert refused.status_code == 401, bad
        assert refused.json()["type"].endswith("/" + code), (bad, refused.text)
    assert _get(stack, token).status_code == 200

    token_id = _mint(stack, "key-a", subject="acme").json()
    # Another tenant cannot revoke it (revocations are per tenant)...
    revoke = f"{stack.url}/v1/portal/tokens/revoke"
    other = httpx.post(revoke, json={"id": token_id["id"]}, headers={"x-api-key": "key-b"})
    assert other.status_code == 204
    assert _get(stack, token_id["token"]).status_code == 200
    # ...its own tenant can, and it is refused at once by this process.
    own = httpx.post(revoke, json={"id": token_id["id"]}, headers={"x-api-key": "key-a"})
    assert own.status_code == 204
    revoked = _get(stack, token_id["token"])
    assert revoked.status_code == 401
    assert revoked.json()["type"].endswith("/token-revoked")
    assert _get(stack, token).status_code == 200  # other tokens unaffected
    stored = stack.sql("SELECT tenant, token_id FROM portal_token_revocations ORDER BY tenant")
    assert stored == [
        {"tenant": "tenant-a", "token_id": token_id["id"]},
        {"tenant": "tenant-b", "token_id": token_id["id"]},
    ]


def test_a_late_event_is_in_the_next_answer_of_a_month_already_read(
    stack: MeterlineProcess, sent: dict[str, list[dict[str, Any]]]
) -> None:
    # The month's closed hours are kept in memory after the first read
    # (query/sealed_answers.py); a late event (event time hours ago, through the
    # gateway, the log and the processor) and one of the current hour must both be in
    # the next answer, exactly as a recomputation from everything sent says.
    start = (datetime.now(UTC) - timedelta(days=30)).replace(second=0, microsecond=0)
    params = {
        "from": start.isoformat().replace("+00:00", "Z"),
        "to": "2100-01-01",
        "window": "hour",
        "group_by": "subject",
        "columns": ",".join(COLUMNS),
    }
    events = list(sent["tenant-a"])
    for _ in range(2):  # the second read is answered from memory for the closed hours
        body = _get(stack, "key-a", **params).json()
        assert _answered(body["rows"], ("subject",)) == _truth(events, "hour", "UTC", ("subject",))
    rng = random.Random(5)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    late = token_event(rng, now - timedelta(hours=5), subject="acme")
    current = token_event(rng, now, subject="acme")
    current["time"] = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert stack.post([late, current], headers={"x-api-key": "key-a"}).status_code == 202
    events += [late, current]
    unique = len({(e["source"], e["id"]) for e in events})

    def metered() -> bool:
        rows = stack.sql(
            "SELECT toString(sum(events)) AS n FROM usage_meters WHERE tenant = 'tenant-a'"
        )
        return int(rows[0]["n"]) == unique

    stack.wait_until(metered, 60, f"{unique} events of tenant-a in the meters")
    body = _get(stack, "key-a", **params).json()
    assert _answered(body["rows"], ("subject",)) == _truth(events, "hour", "UTC", ("subject",))
