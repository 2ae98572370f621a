"""Benchmark: what the OpenAI wrapper adds to a call on the application's thread.

``bench_wrapper_overhead(calls)`` times the same stub ``create`` (returning a
real ``ChatCompletion`` object, no network) unwrapped and wrapped, with a real
``Meter`` sending to an in-process transport on its own thread, and returns
the difference in µs per call (best of three rounds, the usual way to read a
micro-benchmark on a shared machine). It measures, never asserts: tests run
it only for smoke; the benchmark command reports the number.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from meterline.sdk.client import Meter
from meterline.sdk.context import customer


def _completion() -> Any:
    from openai.types.chat import ChatCompletion

    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1_760_000_000,
            "model": "gpt-4o-2024-08-06",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "hello"},
                }
            ],
            "usage": {
                "prompt_tokens": 120,
                "completion_tokens": 30,
                "total_tokens": 150,
                "prompt_tokens_details": {"cached_tokens": 64},
                "completion_tokens_details": {"reasoning_tokens": 10},
            },
        }
    )


class _Resource:
    def __init__(self, response: Any) -> None:
        self._response = response

    def create(self, **kwargs: Any) -> Any:
        return self._response


def _time(resource: Any, calls: int) -> float:
    messages = [{"role": "user", "content": "hi"}]
    began = time.perf_counter()
    for _ in range(calls):
        resource.create(model="gpt-4o", messages=messages)
    return time.perf_counter() - began


def bench_wrapper_overhead(calls: int) -> float:
    """µs the wrapper adds per call on the caller's thread (event building runs elsewhere)."""
    from meterline.sdk.providers.openai import _chat_stream, _patch, chat_event

    transport = httpx.MockTransport(lambda request: httpx.Response(202, json={"accepted": 0}))
    meter = Meter(
        url="http://meterline.bench",
        source="/bench",
        transport=transport,
        max_queue=max(calls, 1) * 2,
        batch_size=1000,
    )
    plain, wrapped = _Resource(_completion()), _Resource(_completion())
    _patch(wrapped, meter, chat_event, _chat_stream, is_async=False)
    best = float("inf")
    try:
        with customer("bench-customer", feature="bench"):
            for _ in range(3):
                base = _time(plain, calls)
                metered = _time(wrapped, calls)
                meter.flush(timeout=60)
                best = min(best, (metered - base) / max(calls, 1) * 1e6)
    finally:
        meter.close(timeout=5)
    return max(best, 0.0)


def bench_track_tokens(calls: int) -> float:
    """µs one ``Meter.track_tokens`` call costs on the caller's thread.

    Unlike the wrapper (which only captures references and builds the event on
    the sender), ``track_*`` build the event dict on the caller's thread, so
    that a bad argument is refused at the call (it returns False). Best of
    three rounds of ``calls`` calls, sender running on its own thread.
    """
    transport = httpx.MockTransport(lambda request: httpx.Response(202, json={"accepted": 0}))
    meter = Meter(
        url="http://meterline.bench",
        source="/bench",
        transport=transport,
        max_queue=max(calls, 1) * 2,
        batch_size=1000,
    )
    best = float("inf")
    try:
        for _ in range(3):
            began = time.perf_counter()
            for _ in range(calls):
                meter.track_tokens(
                    "openai",
                    "gpt-4o",
                    input_tokens=1200,
                    output_tokens=300,
                    cache_read_tokens=1024,
                    customer="bench-customer",
                    feature="bench",
                )
            elapsed = time.perf_counter() - began
            meter.flush(timeout=60)
            best = min(best, elapsed / max(calls, 1) * 1e6)
    finally:
        meter.close(timeout=5)
    return best
