"""Customer context: explicit beats context, nesting, threads and asyncio tasks;
decorators for non-LLM work."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from meterline.sdk import (
    AsyncMeter,
    Meter,
    customer,
    meter_charge,
    meter_methods,
    meter_requests,
    meter_units,
    no_metering,
)
from meterline.sdk.context import current, resolve


def test_explicit_beats_context_and_inner_beats_outer() -> None:
    with customer("outer", feature="f-outer", metadata={"a": "1"}):
        with customer("inner", metadata={"b": "2"}):
            scope = current()
            assert (scope.customer, scope.feature) == ("inner", "f-outer")
            assert dict(scope.metadata) == {"a": "1", "b": "2"}
            assert resolve("explicit").customer == "explicit"
        assert current().customer == "outer"
    assert current().customer == ""
    with no_metering():
        assert current().skip is True


def test_context_does_not_leak_into_other_threads() -> None:
    seen: list[str] = []
    with customer("main-thread"):
        thread = threading.Thread(target=lambda: seen.append(current().customer))
        thread.start()
        thread.join()
    assert seen == [""]


def test_asyncio_tasks_keep_their_own_customer() -> None:
    async def job(name: str) -> str:
        with customer(name):
            await asyncio.sleep(0.01)
            return current().customer

    async def main() -> list[str]:
        return list(await asyncio.gather(*(job(f"c{i}") for i in range(5))))

    assert asyncio.run(main()) == [f"c{i}" for i in range(5)]


def test_customer_decorator_sync_and_async() -> None:
    @customer("deco-sync")
    def sync() -> str:
        return current().customer

    @customer("deco-async")
    async def run_async() -> str:
        await asyncio.sleep(0)
        return current().customer

    assert sync() == "deco-sync"
    assert asyncio.run(run_async()) == "deco-async"


class Recorded:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.events.extend(orjson.loads(request.content))
        return httpx.Response(202, json={})


@pytest.fixture
def recorded() -> Recorded:
    return Recorded()


@pytest.fixture
def meter(recorded: Recorded) -> Meter:
    return Meter(
        url="http://gw.test",
        source="/t",
        transport=httpx.MockTransport(recorded),
        flush_interval=0.05,
    )


def test_decorators_meter_requests_units_and_conditional_charges(
    meter: Meter, recorded: Recorded
) -> None:
    @meter_requests(feature="search", meter=meter)
    def search(q: str) -> list[str]:
        return [q]

    @meter_units(
        "page",
        quantity=lambda pages: len(pages),
        meter=meter,
        customer=lambda doc, **_: doc["owner"],
    )
    def ocr(doc: dict[str, str]) -> list[str]:
        return ["p1", "p2", "p3"]

    @meter_charge("0.25", description="export", when=lambda ok: ok is True, meter=meter)
    def export(ok: bool) -> bool:
        return ok

    @meter_requests(meter=meter)
    def fails() -> None:
        raise KeyError("boom")

    with customer("acme"):
        assert search("x") == ["x"]
        assert export(True) is True
        assert export(False) is False
        with pytest.raises(KeyError):
            fails()  # the caller's exception, unchanged; not metered
    assert ocr({"owner": "globex"}) == ["p1", "p2", "p3"]
    assert meter.flush(timeout=10)
    got = sorted(((e["subject"], e["type"], e["data"]) for e in recorded.events), key=str)
    assert got == sorted(
        [
            (
                "acme",
                "io.meterline.usage.units",
                {"unit": "api_call", "quantity": "1", "feature": "search"},
            ),
            (
                "acme",
                "io.meterline.usage.charge",
                {"amount": "0.25", "currency": "USD", "description": "export"},
            ),
            ("globex", "io.meterline.usage.units", {"unit": "page", "quantity": "3"}),
        ],
        key=str,
    )
    meter.close()


def test_meter_methods_class_decorator(meter: Meter, recorded: Recorded) -> None:
    @meter_methods("translate", meter=meter)
    class Service:
        def translate(self, text: str) -> str:
            return text.upper()

        def health(self) -> str:
            return "ok"

    service = Service()
    with customer("acme"):
        assert service.translate("hi") == "HI"
        assert service.health() == "ok"
    assert meter.flush(timeout=10)
    assert [e["data"] for e in recorded.events] == [
        {"unit": "api_call", "quantity": "1", "feature": "translate"}
    ]
    with pytest.raises(ValueError, match="public"):
        meter_methods("_private")(Service)
    meter.close()


def test_async_meter_sends_from_a_task_and_decorates_coroutines(recorded: Recorded) -> None:
    async def main() -> None:
        async with AsyncMeter(
            url="http://gw.test",
            source="/t",
            flush_interval=0.05,
            transport=httpx.MockTransport(recorded),
        ) as ameter:

            @meter_units("second", quantity=Decimal("1.5"), meter=ameter)
            async def transcribe() -> str:
                await asyncio.sleep(0)
                return "text"

            with customer("acme"):
                assert await transcribe() == "text"
                ameter.track_tokens(
                    "openai", "gpt-4o", input_tokens=3, output_tokens=1, id="chatcmpl-z"
                )
            assert await ameter.flush(timeout=10)
            assert ameter.stats().sent == 2

    asyncio.run(main())
    assert sorted(e["data"].get("unit", e["id"]) for e in recorded.events) == [
        "chatcmpl-z",
        "second",
    ]


def test_set_and_reset_customer_for_before_after_hooks() -> None:
    from meterline.sdk import reset_customer, set_customer

    token = set_customer("hooked", feature="api")
    assert (current().customer, current().feature) == ("hooked", "api")
    reset_customer(token)
    assert current().customer == ""
