"""``Meter``: the thread-safe emitter. Events go to the gateway from one
background thread, in batches, with retries; the application's thread only
appends to a bounded in-memory queue.

Bounds (docs/sdk.md, "Guarantees"):

- a ``track_*`` call never blocks on I/O: one short lock, or (queue full with
  ``spill_path``) one small file append; it never raises;
- ``flush(timeout)`` blocks at most ``timeout``;
- ``close()`` and the exit hook block at most ``shutdown_timeout`` plus one
  request ``timeout``; what is still unsent then is spilled or counted lost.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from typing import Any

import httpx

from meterline.sdk._core import (
    Answer,
    Buffer,
    Courier,
    Item,
    Post,
    Spill,
    Stats,
    Verdict,
    judge,
)
from meterline.sdk._recorder import Recorder
from meterline.sdk.config import MeterConfig
from meterline.sdk.entitlements import Entitlement
from meterline.sdk.entitlements import check as check_entitlement

log = logging.getLogger("meterline.emitter")
USER_AGENT = "meterline-python/0.1"


def request_headers(config: MeterConfig) -> dict[str, str]:
    headers = {"content-type": "application/cloudevents-batch+json", "user-agent": USER_AGENT}
    if config.api_key:
        headers["authorization"] = f"Bearer {config.api_key}"
    return headers


class Meter(Recorder):
    """Send usage events to a meterline gateway.

    ``Meter()`` reads METERLINE_URL, METERLINE_API_KEY and METERLINE_SOURCE;
    arguments win. Other settings: see ``MeterConfig``. ``transport`` lets
    tests (and unusual deployments) pass an httpx transport.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        source: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        **settings: Any,
    ) -> None:
        self.config = MeterConfig.resolve(url=url, api_key=api_key, source=source, **settings)
        spill = Spill(self.config.spill_path) if self.config.spill_path else None
        self._buffer = Buffer(self.config.max_queue, Stats(), spill, self.config.batch_size)
        self._courier = Courier(self.config, self._buffer)
        self._transport = transport
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._start_lock = threading.Lock()
        self._alarm = threading.Event()  # cuts a backoff sleep short on close()
        self._flush_wanted = False
        self._closing = False
        self._closed = False
        self._check_http: httpx.Client | None = None  # entitlement checks, on the caller's thread
        atexit.register(_close_at_exit, weakref.ref(self))

    # --- application side -----------------------------------------------------------------

    def _submit(self, item: Item) -> bool:
        if self._closed:
            self._buffer.count("lost_at_shutdown")
            log.warning("meterline: event recorded after close() is not sent")
            return False
        if self._buffer.put(item):
            if self._pid != os.getpid():  # first event, or we are in a forked child
                self._start()
            return True
        return False

    def _start(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid() and self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="meterline-emitter", daemon=True)
            self._thread.start()
            self._pid = os.getpid()

    def check(self, customer: str, feature: str, model: str | None = None) -> Entitlement:
        """May ``customer`` use ``feature`` now? Asks the gateway (docs/budgets.md).

        Unlike ``track_*`` this raises: ``CheckFailed`` when the gateway gives no
        answer (the caller decides whether to go on), ``ValueError`` for an empty name.
        """
        if self._check_http is None:
            # Its own connection pool: a check must not wait behind the sender's batches.
            self._check_http = httpx.Client(
                transport=self._transport, headers={"user-agent": USER_AGENT}
            )
        return check_entitlement(self._check_http, self.config, customer, feature, model)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event queued before this call is settled; False on timeout."""
        wait = self.config.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        with self._buffer.changed:
            target = self._buffer.stats.enqueued
            self._flush_wanted = True
            self._buffer.changed.notify_all()
            while self._buffer.settled < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._buffer.changed.wait(left)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued (retrying up to ``timeout``, default shutdown_timeout), then stop."""
        if self._closed:
            return
        wait = self.config.shutdown_timeout if timeout is None else timeout
        with self._buffer.changed:
            self._closing = True
            self._courier.give_up_at = time.monotonic() + wait
            self._buffer.changed.notify_all()
        self._alarm.set()
        thread = self._thread
        if thread is not None and self._pid == os.getpid():
            thread.join(wait + self.config.timeout + 1.0)
        self._closed = True
        if self._check_http is not None:
            self._check_http.close()
        stats = self.stats()
        if stats.lost_at_shutdown or stats.dropped_queue_full:
            log.warning("meterline closed: %s", stats)

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sender thread --------------------------------------------------------------------

    def _next_batch(self) -> list[Item] | None:
        """Block until a batch is due; None when closing and nothing is left."""
        buffer, cfg = self._buffer, self.config
        with buffer.changed:
            waited_since: float | None = None
            while True:
                size = len(buffer.items)
                if size >= cfg.batch_size or (size and (self._flush_wanted or self._closing)):
                    break
                if not size:
                    self._flush_wanted = False
                    if self._closing:
                        return None
                    waited_since = None
                    buffer.changed.wait(cfg.flush_interval)
                    continue
                waited_since = waited_since or time.monotonic()
                left = cfg.flush_interval - (time.monotonic() - waited_since)
                if left <= 0:
                    break
                buffer.changed.wait(left)
        return buffer.take(cfg.batch_size)

    def _run(self) -> None:
        with httpx.Client(transport=self._transport, headers=request_headers(self.config)) as http:
            self._courier.replay_spill()
            while (items := self._next_batch()) is not None:
                try:
                    self._deliver(http, self._courier.batch(items))
                    self._courier.replay_spill()
                except Exception:  # a bug here must not kill the sender and stall the queue
                    log.exception("meterline sender error")
                    self._buffer.count("metering_errors")

    def _deliver(self, http: httpx.Client, encoded: list[bytes]) -> None:
        plan = self._courier.plan(encoded)
        try:
            step = next(plan)
            while True:
                if isinstance(step, Post):
                    step = plan.send(self._post(http, step))
                else:
                    if self._alarm.wait(step.seconds):
                        self._alarm.clear()
                    step = plan.send(None)
        except StopIteration:
            return

    def _post(self, http: httpx.Client, step: Post) -> Answer:
        try:
            response = http.post(self.config.events_url, content=step.content, timeout=step.timeout)
        except httpx.HTTPError as exc:
            log.info("meterline gateway unreachable (%s); will retry", exc)
            return Answer(Verdict.RETRY)
        return judge(response.status_code, response.headers, response.content, step.size)


def _close_at_exit(ref: weakref.ReferenceType[Meter]) -> None:
    meter = ref()
    if meter is not None:
        meter.close()
