"""The emitter's delivery rules against a scripted in-process gateway (httpx
MockTransport): batching, retries, 400/413 handling, bounds, spill, flush."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from meterline.sdk import ConfigError, Meter, customer
from schemas.envelope import parse_event

Script = Callable[[list[dict[str, Any]]], httpx.Response]


class FakeGateway:
    """Records every request; answers by script (default 202)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.batches: list[list[dict[str, Any]]] = []
        self.script: list[Script] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        events = orjson.loads(request.content)
        with self.lock:
            self.requests.append(request)
            self.batches.append(events)
            answer = self.script.pop(0) if self.script else None
        if answer is not None:
            return answer(events)
        return httpx.Response(202, json={"accepted": len(events)})

    @property
    def accepted(self) -> list[dict[str, Any]]:
        """Events of the requests answered 2xx (the script marks failures)."""
        return [e for batch in self.batches for e in batch]


def meter_for(gateway: FakeGateway, **settings: Any) -> Meter:
    settings.setdefault("flush_interval", 0.05)
    settings.setdefault("initial_backoff", 0.01)
    settings.setdefault("max_backoff", 0.05)
    return Meter(
        url="http://gateway.test",
        source="/tests/app",
        api_key="k-123",
        transport=httpx.MockTransport(gateway),
        **settings,
    )


def status(code: int, body: Any = None, headers: dict[str, str] | None = None) -> Script:
    return lambda events: httpx.Response(code, json=body or {}, headers=headers)


def test_events_are_batched_by_size_with_auth_and_batch_content_type() -> None:
    gateway = FakeGateway()
    with meter_for(gateway, batch_size=10, flush_interval=30) as meter:
        for i in range(25):
            assert meter.track_request(customer=f"c{i}") is True
        assert meter.flush(timeout=10)
    sizes = [len(b) for b in gateway.batches]
    assert sizes[:2] == [10, 10] and sum(sizes) == 25
    request = gateway.requests[0]
    assert request.headers["content-type"] == "application/cloudevents-batch+json"
    assert request.headers["authorization"] == "Bearer k-123"
    assert request.url == "http://gateway.test/v1/events"
    for event in gateway.accepted:
        assert not isinstance(parse_event(event), list)
    assert meter.stats().sent == 25


def test_a_partial_batch_goes_out_after_flush_interval() -> None:
    gateway = FakeGateway()
    meter = meter_for(gateway, batch_size=100, flush_interval=0.1)
    meter.track_units("page", 3, customer="acme")
    deadline = time.monotonic() + 5
    while not gateway.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [e["data"] for e in gateway.accepted] == [{"unit": "page", "quantity": "3"}]
    meter.close()


def test_retries_503_429_and_network_errors_until_accepted_honouring_retry_after() -> None:
    gateway = FakeGateway()

    def network_down(events: list[dict[str, Any]]) -> httpx.Response:
        raise httpx.ConnectError("refused")

    gateway.script = [
        status(503, {"detail": "log down"}, {"retry-after": "0"}),
        status(429, {}, {"retry-after": "0.2"}),
        network_down,
        status(500),
    ]
    meter = meter_for(gateway, max_backoff=0.5)
    began = time.monotonic()
    meter.track_request(customer="acme", id="req-1")
    assert meter.flush(timeout=10)
    assert time.monotonic() - began >= 0.2  # the Retry-After of the 429 was a floor
    assert [b[0]["id"] for b in gateway.batches] == ["req-1"] * 5
    stats = meter.stats()
    assert (stats.sent, stats.retries, stats.requests) == (1, 4, 5)
    meter.close()


def test_400_drops_only_the_events_named_in_problems_and_is_not_retried() -> None:
    gateway = FakeGateway()
    problems = {"problems": [{"code": "x", "field": "data", "message": "bad", "index": 1}]}
    gateway.script = [status(400, problems)]
    meter = meter_for(gateway, batch_size=3, flush_interval=30)
    for i in range(3):
        meter.track_request(customer="acme", id=f"e{i}")
    assert meter.flush(timeout=10)
    assert [[e["id"] for e in b] for b in gateway.batches] == [["e0", "e1", "e2"], ["e0", "e2"]]
    stats = meter.stats()
    assert (stats.sent, stats.rejected, stats.retries) == (2, 1, 0)
    meter.close()


def test_400_without_indices_rejects_the_request_once() -> None:
    gateway = FakeGateway()
    gateway.script = [status(400, {"detail": "bad"})]
    meter = meter_for(gateway)
    meter.track_request(customer="acme")
    assert meter.flush(timeout=10)
    assert len(gateway.requests) == 1
    assert meter.stats().rejected == 1
    meter.close()


def test_413_splits_the_batch_and_rejects_a_single_oversized_event() -> None:
    gateway = FakeGateway()
    gateway.script = [status(413), status(202), status(413)]
    meter = meter_for(gateway, batch_size=4, flush_interval=30)
    for i in range(4):
        meter.track_request(customer="acme", id=f"e{i}")
    assert meter.flush(timeout=10)
    # [e0..e3] 413 -> [e0,e1] ok -> [e2,e3] 413 -> [e2] ok, [e3] ok
    assert [[e["id"] for e in b] for b in gateway.batches] == [
        ["e0", "e1", "e2", "e3"],
        ["e0", "e1"],
        ["e2", "e3"],
        ["e2"],
        ["e3"],
    ]
    assert meter.stats().sent == 4
    meter.close()


def test_locally_invalid_events_never_poison_a_batch() -> None:
    gateway = FakeGateway()
    meter = meter_for(gateway, batch_size=2, flush_interval=30)
    assert meter.emit({"specversion": "1.0", "id": "x", "source": "not a uri", "type": "t"})
    meter.track_request(customer="acme", id="ok")
    assert meter.flush(timeout=10)
    assert [e["id"] for e in gateway.accepted] == ["ok"]
    assert (meter.stats().invalid, meter.stats().sent) == (1, 1)
    meter.close()


def test_bad_arguments_never_raise_into_the_caller() -> None:
    gateway = FakeGateway()
    meter = meter_for(gateway)
    assert meter.track_charge(-0.1, customer="acme") is False
    assert meter.track_tokens("openai", "gpt-4o", input_tokens=-1, customer="acme") is True
    assert meter.track_units("page", "lots", customer="acme") is False
    assert meter.emit(object()) is False
    assert meter.flush(timeout=10)
    assert gateway.accepted == []  # the negative count was refused before sending
    assert meter.stats().invalid == 4
    meter.close()


def test_no_customer_is_not_tracked_and_counted() -> None:
    meter = meter_for(FakeGateway())
    assert meter.track_request() is False
    with customer("ctx-customer"):
        assert meter.track_request() is True
    assert meter.stats().untracked_no_customer == 1
    meter.close()


def test_full_queue_drops_counted_and_logged_without_blocking(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()

    def stuck(events: list[dict[str, Any]]) -> httpx.Response:
        release.wait(10)
        return httpx.Response(202, json={})

    gateway = FakeGateway()
    gateway.script = [stuck]
    meter = meter_for(gateway, max_queue=5, batch_size=1)
    meter.track_request(customer="acme", id="first")  # taken by the sender, stuck in flight
    time.sleep(0.2)
    results = [meter.track_request(customer="acme", id=f"q{i}") for i in range(8)]
    assert results == [True] * 5 + [False] * 3
    assert meter.stats().dropped_queue_full == 3
    assert "queue full" in caplog.text
    release.set()
    assert meter.flush(timeout=10)
    assert meter.stats().sent == 6
    meter.close()


def test_spill_file_takes_overflow_and_is_replayed(tmp_path: Path) -> None:
    release = threading.Event()

    def stuck(events: list[dict[str, Any]]) -> httpx.Response:
        release.wait(10)
        return httpx.Response(202, json={})

    spill = tmp_path / "spill.jsonl"
    gateway = FakeGateway()
    gateway.script = [stuck]
    meter = meter_for(gateway, max_queue=2, batch_size=1, spill_path=spill)
    meter.track_request(customer="acme", id="first")
    time.sleep(0.2)
    for i in range(5):
        meter.track_request(customer="acme", id=f"s{i}")
    assert meter.stats().spilled == 3
    assert [orjson.loads(line)["id"] for line in spill.read_bytes().splitlines()] == [
        "s2",
        "s3",
        "s4",
    ]
    release.set()
    deadline = time.monotonic() + 10
    while len(gateway.accepted) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(e["id"] for e in gateway.accepted) == ["first", "s0", "s1", "s2", "s3", "s4"]
    assert not spill.exists()
    meter.close()


def test_close_is_bounded_and_spills_what_the_gateway_did_not_take(tmp_path: Path) -> None:
    gateway = FakeGateway()
    gateway.script = [status(503)] * 1000
    spill = tmp_path / "spill.jsonl"
    meter = meter_for(gateway, spill_path=spill, max_backoff=0.05)
    for i in range(3):
        meter.track_request(customer="acme", id=f"e{i}")
    began = time.monotonic()
    meter.close(timeout=0.5)
    assert time.monotonic() - began < 0.5 + meter.config.timeout + 1
    assert meter.stats().spilled == 3
    assert len(spill.read_bytes().splitlines()) == 3
    assert meter.track_request(customer="acme") is False  # after close: not sent, counted


def test_config_from_environment_and_errors_name_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("METERLINE_URL", "http://env-gateway:9000")
    monkeypatch.setenv("METERLINE_API_KEY", "env-key")
    monkeypatch.setenv("METERLINE_SOURCE", "/env/app")
    meter = Meter()
    assert (meter.config.url, meter.config.api_key, meter.config.source) == (
        "http://env-gateway:9000",
        "env-key",
        "/env/app",
    )
    assert Meter(source="/arg/app").config.source == "/arg/app"
    with pytest.raises(ConfigError, match="METERLINE_SOURCE"):
        Meter(source="has spaces")
    with pytest.raises(ConfigError, match="batch_size"):
        Meter(batch_size=0)
    with pytest.raises(ConfigError, match="unknown setting"):
        Meter(batchsize=5)


def test_many_threads_record_concurrently_without_loss() -> None:
    gateway = FakeGateway()
    meter = meter_for(gateway, batch_size=50)

    def work(n: int) -> None:
        with customer(f"tenant-{n}"):
            for i in range(200):
                meter.track_request(id=f"{n}-{i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert meter.flush(timeout=20)
    ids = [e["id"] for e in gateway.accepted]
    assert len(ids) == len(set(ids)) == 1600
    assert {e["subject"] for e in gateway.accepted if e["id"].startswith("3-")} == {"tenant-3"}
    meter.close()
