"""API key files, the keys CLI, open mode, the webhook handshake, and operations endpoints."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from core.errors import ConfigError
from core.log.base import TENANT_HEADER
from ingest.auth import ApiKey, KeyStore, hash_key, parse_keys
from ingest.ratelimit import RateLimiter
from ingest.requestlog import JsonFormatter
from meterline.cli import app as cli
from tests.ingest.conftest import STRUCTURED, ClientFactory, LogTap

ROOT = Path(__file__).resolve().parents[2]
EVENT = {"specversion": "1.0", "id": "e1", "source": "/app", "type": "com.acme.thing"}


def test_keys_new_prints_a_key_whose_line_authenticates_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["keys", "new", "--tenant", "acme", "--rate-limit", "5"])
    assert result.exit_code == 0, result.output
    key = re.search(r"(mlk_\S+)", result.output)
    assert key is not None
    line = result.output.strip().splitlines()[-1]
    (tmp_path / "keys.yaml").write_text(line + "\n")
    store = KeyStore.from_file(tmp_path / "keys.yaml")
    found = store.lookup(key.group(1))
    assert found == ApiKey(hash_key(key.group(1)), "acme", 5.0, None)
    assert key.group(1) not in (tmp_path / "keys.yaml").read_text()  # only the hash is stored
    assert store.lookup(key.group(1) + "x") is None


def test_key_file_errors_name_every_bad_entry() -> None:
    good = "sha256:" + "a" * 64
    with pytest.raises(ConfigError) as caught:
        parse_keys(
            {
                "mlk_plaintext": "acme",
                good: {"tenant": "Bad Tenant"},
                "b" * 64: {"tenant": "ok", "rate_limit": -1},
                "sha256:" + "c" * 64: {"tenant": "ok", "scopes": ["admin"]},
            },
            "keys.yaml",
        )
    message = str(caught.value)
    assert message.count("keys.yaml:") == 4
    assert "'mlk_plaintext': not 'sha256:<64 lowercase hex>'" in message
    assert "rate_limit must be a positive number" in message
    assert "scopes must be a non-empty list of ['budgets', 'ingest', 'invoices', 'read']" in message


def test_key_file_json_form_and_reload_on_change(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({hash_key("k1"): "one"}))
    store = KeyStore.from_file(path)
    assert store.lookup("k1") is not None and store.lookup("k2") is None
    path.write_text(json.dumps({hash_key("k2"): {"tenant": "two"}}))
    os.utime(path, (time.time() + 5, time.time() + 5))
    store._next_check = 0  # do not wait for the 2 s re-check interval
    found = store.lookup("k2")
    assert found is not None and found.tenant == "two"
    assert store.lookup("k1") is None  # revoked by removing its line
    path.write_text("{not yaml")
    os.utime(path, (time.time() + 10, time.time() + 10))
    store._next_check = 0
    assert store.lookup("k2") is not None  # a broken file keeps the previous keys


def test_token_bucket_refills_at_the_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(default_rate=2, default_burst=2, clock=lambda: now[0])
    key = ApiKey("h", "t")
    assert [limiter.retry_after(key) for _ in range(3)] == [None, None, 0.5]
    now[0] = 0.5
    assert limiter.retry_after(key) is None
    assert limiter.retry_after(ApiKey("h2", "t", rate_limit=None)) is None  # own bucket


def test_gateway_and_run_refuse_to_start_without_keys_unless_open_mode(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERLINE_")}
    env.update(METERLINE_DATA_DIR=str(tmp_path), METERLINE_PORT="0")
    result = subprocess.run(
        [sys.executable, "-m", "meterline.cli", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "METERLINE_API_KEYS_FILE is not set" in result.stderr + result.stdout
    assert "METERLINE_OPEN_MODE=true" in result.stderr + result.stdout


# --- open mode and tenancy -------------------------------------------------------------


@pytest.mark.anyio
async def test_open_mode_uses_the_configured_tenant_and_ignores_keys(
    make_client: ClientFactory, tap: LogTap
) -> None:
    async with make_client(tenant="devtenant") as client:
        response = await client.post(
            "/v1/events",
            content=orjson.dumps(EVENT),
            headers={"content-type": STRUCTURED, "authorization": "Bearer whatever"},
        )
    assert response.status_code == 202
    assert [r.header(TENANT_HEADER) for r in tap.records()] == [b"devtenant"]


# --- webhook handshake ---------------------------------------------------------------


@pytest.mark.anyio
async def test_webhook_handshake_grants_origin_and_rate(make_client: ClientFactory) -> None:
    store = KeyStore({hash_key("k"): ApiKey(hash_key("k"), "acme", rate_limit=2.0)})
    async with make_client(keys=store, limiter=RateLimiter(default_rate=10)) as client:
        plain = await client.options("/v1/events")
        granted = await client.options(
            "/v1/events",
            headers={
                "WebHook-Request-Origin": "eventemitter.example.com",
                "WebHook-Request-Rate": "120",
            },
        )
        with_key = await client.options(
            "/v1/events",
            headers={"WebHook-Request-Origin": "eventemitter.example.com", "X-API-Key": "k"},
        )
    assert (plain.status_code, plain.headers["allow"]) == (204, "POST, OPTIONS")
    assert "webhook-allowed-origin" not in plain.headers
    assert granted.status_code == 204
    assert granted.headers["webhook-allowed-origin"] == "eventemitter.example.com"
    assert granted.headers["webhook-allowed-rate"] == "600"  # the default 10/s, per minute
    assert with_key.headers["webhook-allowed-rate"] == "120"  # this key's 2/s


@pytest.mark.anyio
async def test_webhook_handshake_refuses_origins_not_configured(make_client: ClientFactory) -> None:
    async with make_client(webhook_origins=["trusted.example.com"]) as client:
        refused = await client.options(
            "/v1/events", headers={"WebHook-Request-Origin": "evil.example.com"}
        )
        allowed = await client.options(
            "/v1/events", headers={"WebHook-Request-Origin": "trusted.example.com"}
        )
    assert refused.status_code == 403
    assert refused.json()["type"] == "https://meterline.dev/problems/origin-not-allowed"
    assert "webhook-allowed-origin" not in refused.headers
    assert allowed.headers["webhook-allowed-origin"] == "trusted.example.com"
    assert allowed.headers["webhook-allowed-rate"] == "*"


# --- operations ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_health_ready_metrics_and_openapi(make_client: ClientFactory) -> None:
    async with make_client() as client:
        await client.post("/v1/events", content=b"{", headers={"content-type": STRUCTURED})
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
        metrics = await client.get("/metrics")
        document = await client.get("/openapi.json")
    assert (health.status_code, health.text) == (200, "ok")
    assert (ready.status_code, ready.text) == (200, "ready")
    text = metrics.text
    for name in (
        'meterline_gateway_requests_total{route="/v1/events",status="400"}',
        'meterline_gateway_requests_rejected_total{reason="malformed"}',
        "meterline_gateway_produce_seconds_bucket",
        "meterline_gateway_requests_in_flight",
        "meterline_gateway_events_accepted_total",
    ):
        assert name in text
    paths = set(document.json()["paths"])
    # The write path and operations, named here; the read side's (query/routes.py)
    # are all documented too: an undocumented mounted route stops the app.
    assert {
        "/v1/events",
        "/api/v1/events",
        "/api/usage",
        "/v1/sql",
        "/v1/usage",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    } <= paths


@pytest.mark.anyio
async def test_request_id_is_echoed_when_sane_and_made_up_otherwise(
    make_client: ClientFactory,
) -> None:
    async with make_client() as client:
        echoed = await client.get("/healthz", headers={"x-request-id": "abc-123"})
        replaced = await client.get("/healthz", headers={"x-request-id": "bad id\twith spaces"})
        fresh = await client.get("/healthz")
    assert echoed.headers["x-request-id"] == "abc-123"
    assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["x-request-id"])
    assert replaced.headers["x-request-id"] != fresh.headers["x-request-id"]


@pytest.mark.anyio
async def test_access_log_is_json_with_request_id_and_tenant(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="meterline.gateway"):
        async with make_client(tenant="acme") as client:
            await client.post(
                "/v1/events",
                content=orjson.dumps(EVENT),
                headers={"content-type": STRUCTURED, "x-request-id": "req-1"},
            )
    record = next(r for r in caplog.records if r.getMessage() == "request")
    line = orjson.loads(JsonFormatter().format(record))
    keys = ("level", "msg", "request_id", "method", "path", "status", "tenant", "events")
    assert {k: line[k] for k in keys} == {
        "level": "info",
        "request_id": "req-1",
        "msg": "request",
        "method": "POST",
        "path": "/v1/events",
        "status": 202,
        "tenant": "acme",
        "events": 1,
    }
