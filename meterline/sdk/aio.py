"""``AsyncMeter``: the emitter for asyncio applications.

The ``track_*`` methods are the same plain (non-async) calls as ``Meter``'s:
they only append to the bounded queue, so they never block the event loop.
Sending runs in one task on the loop, with ``httpx.AsyncClient`` and the same
delivery rules (``_core.Courier``). Use ``async with AsyncMeter() as meter``
or ``await meter.aclose()`` at shutdown; if the loop ends without that, the
exit hook sends what is left synchronously, within ``shutdown_timeout``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
import weakref
from typing import Any

import httpx

from meterline.sdk._core import Answer, Buffer, Courier, Item, Post, Spill, Stats, Verdict, judge
from meterline.sdk._recorder import Recorder
from meterline.sdk.client import request_headers
from meterline.sdk.config import MeterConfig

log = logging.getLogger("meterline.emitter")


class AsyncMeter(Recorder):
    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        source: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **settings: Any,
    ) -> None:
        self.config = MeterConfig.resolve(url=url, api_key=api_key, source=source, **settings)
        spill = Spill(self.config.spill_path) if self.config.spill_path else None
        self._buffer = Buffer(
            self.config.max_queue, Stats(), spill, self.config.batch_size, self._wake_soon
        )
        self._courier = Courier(self.config, self._buffer)
        self._transport = transport
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._alarm: asyncio.Event | None = None  # set by aclose(): cuts a backoff short
        self._flush_wanted = False
        self._closing = False
        self._closed = False
        atexit.register(_drain_at_exit, weakref.ref(self))

    # --- application side -----------------------------------------------------------------

    def _submit(self, item: Item) -> bool:
        if self._closed:
            self._buffer.count("lost_at_shutdown")
            return False
        queued = self._buffer.put(item)
        if queued and self._task is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return queued  # sent once the meter is used inside a running loop
            self._start()
        return queued

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._alarm = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name="meterline-emitter")

    def _wake_soon(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:  # a track_* call from another thread
            loop.call_soon_threadsafe(wake.set)

    async def start(self) -> AsyncMeter:
        if self._task is None:
            self._start()
        return self

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event queued before this call is settled; False on timeout."""
        if self._task is None and len(self._buffer):
            self._start()
        target = self._buffer.stats.enqueued
        deadline = time.monotonic() + (self.config.shutdown_timeout if timeout is None else timeout)
        self._flush_wanted = True
        self._wake_soon()
        while self._buffer.settled < target:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def aclose(self, timeout: float | None = None) -> None:
        if self._closed:
            return
        wait = self.config.shutdown_timeout if timeout is None else timeout
        self._closing = True
        self._courier.give_up_at = time.monotonic() + wait
        if self._task is None and len(self._buffer):
            self._start()
        self._wake_soon()
        if self._alarm is not None:
            self._alarm.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), wait + self.config.timeout + 1)
            except TimeoutError:
                log.error("meterline async sender did not stop in time")
        self._closed = True

    async def __aenter__(self) -> AsyncMeter:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- sender task ----------------------------------------------------------------------

    async def _wait(self, seconds: float) -> None:
        if self._wake is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _backoff(self, seconds: float) -> None:
        if self._alarm is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._alarm.wait(), seconds)
        self._alarm.clear()  # only the sleep in progress is cut short by aclose()

    async def _next_batch(self) -> list[Item] | None:
        cfg = self.config
        waited_since: float | None = None
        while True:
            size = len(self._buffer)
            if size >= cfg.batch_size or (size and (self._flush_wanted or self._closing)):
                return self._buffer.take(cfg.batch_size)
            if not size:
                self._flush_wanted = False
                if self._closing:
                    return None
                waited_since = None
                await self._wait(cfg.flush_interval)
                continue
            waited_since = waited_since or time.monotonic()
            left = cfg.flush_interval - (time.monotonic() - waited_since)
            if left <= 0:
                return self._buffer.take(cfg.batch_size)
            await self._wait(left)

    async def _run(self) -> None:
        headers = request_headers(self.config)
        async with httpx.AsyncClient(transport=self._transport, headers=headers) as http:
            self._courier.replay_spill()
            while (items := await self._next_batch()) is not None:
                try:
                    await self._deliver(http, self._courier.batch(items))
                    self._courier.replay_spill()
                except Exception:  # keep the sender alive: a dead task stalls the queue
                    log.exception("meterline async sender error")
                    self._buffer.count("metering_errors")

    async def _deliver(self, http: httpx.AsyncClient, encoded: list[bytes]) -> None:
        plan = self._courier.plan(encoded)
        try:
            step = next(plan)
            while True:
                if isinstance(step, Post):
                    step = plan.send(await self._post(http, step))
                else:
                    # Not self._wake: new events must not cut a backoff short
                    # (that would hammer a gateway that asked us to wait).
                    await self._backoff(step.seconds)
                    step = plan.send(None)
        except StopIteration:
            return

    async def _post(self, http: httpx.AsyncClient, step: Post) -> Answer:
        try:
            response = await http.post(
                self.config.events_url, content=step.content, timeout=step.timeout
            )
        except httpx.HTTPError as exc:
            log.info("meterline gateway unreachable (%s); will retry", exc)
            return Answer(Verdict.RETRY)
        return judge(response.status_code, response.headers, response.content, step.size)

    # --- exit hook ------------------------------------------------------------------------

    def drain_sync(self) -> None:
        """Send what is left from a plain thread (the loop is gone at exit)."""
        if self._closed or not len(self._buffer):
            return
        self._closed = True
        self._courier.give_up_at = time.monotonic() + self.config.shutdown_timeout
        with httpx.Client(headers=request_headers(self.config)) as http:
            while items := self._buffer.take(self.config.batch_size):
                plan = self._courier.plan(self._courier.batch(items))
                try:
                    step = next(plan)
                    while True:
                        if isinstance(step, Post):
                            step = plan.send(_post_sync(http, self.config, step))
                        else:
                            time.sleep(step.seconds)
                            step = plan.send(None)
                except StopIteration:
                    pass


def _post_sync(http: httpx.Client, config: MeterConfig, step: Post) -> Answer:
    try:
        response = http.post(config.events_url, content=step.content, timeout=step.timeout)
    except httpx.HTTPError:
        return Answer(Verdict.RETRY)
    return judge(response.status_code, response.headers, response.content, step.size)


def _drain_at_exit(ref: weakref.ReferenceType[AsyncMeter]) -> None:
    meter = ref()
    if meter is not None:
        # Run in a thread of its own: at exit the main thread may hold a dead loop.
        worker = threading.Thread(target=meter.drain_sync, daemon=True)
        worker.start()
        worker.join(meter.config.shutdown_timeout + meter.config.timeout + 1)
