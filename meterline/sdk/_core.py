"""What the sync and async emitters share: the bounded buffer, counters,
event preparation and the reading of gateway answers.

Every event accepted into the buffer ends in exactly one counted state:
sent, rejected (gateway 4xx), invalid (refused locally), spilled or lost at
shutdown. ``flush()`` waits for that, so a count that does not add up is a bug.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import Enum
from pathlib import Path
from typing import Any

import orjson

from meterline.sdk.builders import TRUNCATED
from meterline.sdk.config import MeterConfig
from schemas.envelope import parse_event

log = logging.getLogger("meterline.emitter")

Event = dict[str, Any]
# A queued item: a finished event, or a thunk that builds it on the sender
# thread (keeps normalisation off the application's thread). None = nothing.
Item = Event | Callable[[], Event | None]
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass
class Stats:
    """Counters; read them with ``Meter.stats()`` (a copy)."""

    enqueued: int = 0
    sent: int = 0
    rejected: int = 0  # the gateway refused them (400 problems, 413 single, 401/403...)
    invalid: int = 0  # refused locally before sending (would have failed the whole batch)
    dropped_queue_full: int = 0
    spilled: int = 0
    lost_at_shutdown: int = 0
    untracked_no_customer: int = 0
    retries: int = 0
    requests: int = 0
    provider_errors: int = 0  # provider calls that raised: not metered, only counted
    metering_errors: int = 0  # our own failures while metering (logged, never raised)
    estimated: int = 0  # events whose token counts were estimated locally
    metadata_truncated: int = 0  # sent with metadata cut to the limits (marked in the event)

    def copy(self) -> Stats:
        return Stats(**self.__dict__)


def every_power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


class Buffer:
    """A bounded FIFO shared by application threads and one sender.

    ``put`` never blocks beyond one uncontended lock (about a microsecond):
    when the buffer is full the item is spilled or dropped, never waited for.
    """

    def __init__(
        self,
        max_items: int,
        stats: Stats,
        spill: Spill | None,
        wake_at: int,
        on_full: Callable[[], None] | None = None,
    ) -> None:
        self.max_items = max_items
        self.wake_at = wake_at  # a full batch wakes the sender
        self.on_full = on_full
        self.stats = stats
        self.spill = spill
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.items: deque[Item] = deque()
        self.settled = 0  # items that reached a final state

    def put(self, item: Item) -> bool:
        with self.lock:
            size = len(self.items)
            if size < self.max_items:
                self.items.append(item)
                self.stats.enqueued += 1
                full = size + 1 == self.wake_at
                if full:
                    self.changed.notify()
            else:
                full = None
        if full is None:
            self._overflow(item)
            return False
        if full and self.on_full is not None:
            self.on_full()
        return True

    def __len__(self) -> int:
        return len(self.items)

    def _overflow(self, item: Item) -> None:
        if self.spill is not None:
            event = build(item, self.stats, self.lock)
            if event is not None and self.spill.write([orjson.dumps(event)]):
                with self.lock:
                    self.stats.spilled += 1
                return
        with self.lock:
            self.stats.dropped_queue_full += 1
            dropped = self.stats.dropped_queue_full
        if every_power_of_ten(dropped):  # 1, 10, 100...: visible without flooding logs
            log.warning(
                "meterline queue full (%d events): %d event(s) dropped so far; raise "
                "max_queue or set spill_path",
                self.max_items,
                dropped,
            )

    def take(self, n: int | None = None) -> list[Item]:
        with self.lock:
            count = len(self.items) if n is None else min(n, len(self.items))
            return [self.items.popleft() for _ in range(count)]

    def settle(self, n: int, counter: str) -> None:
        """``n`` taken items reached their final state ``counter``."""
        if n <= 0:
            return
        with self.changed:
            setattr(self.stats, counter, getattr(self.stats, counter) + n)
            self.settled += n
            self.changed.notify_all()

    def count(self, counter: str, n: int = 1) -> None:
        with self.lock:
            setattr(self.stats, counter, getattr(self.stats, counter) + n)


def build(item: Item, stats: Stats, lock: threading.Lock) -> Event | None:
    if isinstance(item, dict):
        return item
    try:
        return item()
    except Exception:
        log.exception("meterline could not build a usage event; it is not sent")
        with lock:
            stats.metering_errors += 1
        return None


def prepare(items: Iterable[Item], buffer: Buffer) -> tuple[list[bytes], list[Event], int]:
    """Build, validate and encode; returns (encoded, events, refused count).

    Validation is the gateway's own (``schemas.envelope.parse_event``): one bad
    event would make the gateway refuse the whole batch, so bad events are
    refused here, logged with their problems, and counted as invalid.
    """
    encoded: list[bytes] = []
    events: list[Event] = []
    refused = 0
    for item in items:
        event = build(item, buffer.stats, buffer.lock)
        if event is None:
            refused += 1
            continue
        parsed = parse_event(event)
        if isinstance(parsed, list):
            refused += 1
            log.error(
                "meterline event %s refused before sending: %s",
                event.get("id"),
                "; ".join(f"{p.field}: {p.message}" for p in parsed),
            )
            continue
        try:
            encoded.append(orjson.dumps(event))
        except TypeError as exc:
            refused += 1
            log.warning("meterline event %s is not JSON-serialisable: %s", event.get("id"), exc)
            continue
        events.append(event)
        if TRUNCATED in parsed.usage.metadata:
            buffer.count("metadata_truncated")
    return encoded, events, refused


def body(encoded: list[bytes]) -> bytes:
    return b"[" + b",".join(encoded) + b"]"


class Verdict(Enum):
    SENT = "sent"
    RETRY = "retry"
    DROP_SOME = "drop_some"  # 400: the listed batch indices are refused
    SPLIT = "split"  # 413 on a batch: send halves
    REJECT = "reject"  # final refusal of the whole request


@dataclass(frozen=True, slots=True)
class Answer:
    verdict: Verdict
    retry_after: float | None = None
    bad: frozenset[int] = field(default_factory=frozenset)


def retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import UTC, datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def judge(status: int, headers: Any, content: bytes, size: int) -> Answer:
    """What a gateway answer means for a batch of ``size`` events."""
    if 200 <= status < 300:
        return Answer(Verdict.SENT)
    if status in RETRYABLE:
        return Answer(Verdict.RETRY, retry_after(headers.get("retry-after")))
    if status == 413:
        return Answer(Verdict.SPLIT) if size > 1 else Answer(Verdict.REJECT)
    if status == 400:
        try:
            problems = orjson.loads(content).get("problems", [])
        except (orjson.JSONDecodeError, AttributeError):
            problems = []
        indices = {p.get("index", 0) for p in problems if isinstance(p, dict)}
        bad = frozenset(i for i in indices if isinstance(i, int) and 0 <= i < size)
        # 400 answers are not retried: log every problem so the cause is fixable.
        log.error(
            "meterline gateway refused events (400): %s", content[:4000].decode("utf-8", "replace")
        )
        if bad and len(bad) < size:
            return Answer(Verdict.DROP_SOME, bad=bad)
        return Answer(Verdict.REJECT)
    log.error(
        "meterline gateway answered %d; %d event(s) dropped: %s",
        status,
        size,
        content[:1000].decode("utf-8", "replace"),
    )
    return Answer(Verdict.REJECT)


def backoff(attempt: int, initial: float, cap: float, hint: float | None) -> float:
    """Full-jitter exponential backoff; a Retry-After hint is a floor (capped)."""
    delay = random.uniform(0, min(cap, initial * 2 ** min(attempt, 30)))
    if hint is not None:
        delay = max(delay, min(hint, cap))
    return delay


class Spill:
    """Events the queue could not hold, as JSON lines in a local file.

    Read back (and removed) by the next sender that starts or finds room, so
    an outage longer than the queue bound loses nothing but disk space.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, lines: list[bytes]) -> bool:
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("ab") as out:
                    out.write(b"".join(line + b"\n" for line in lines))
            return True
        except OSError:
            log.exception("meterline could not write the spill file %s", self.path)
            return False

    def take(self) -> list[Event]:
        """Atomically claim the spill file and return its events."""
        claimed = self.path.with_name(f"{self.path.name}.{os.getpid()}.{uuid.uuid4().hex}")
        with self._lock:
            try:
                os.replace(self.path, claimed)
            except FileNotFoundError:
                return []
            except OSError:
                log.exception("meterline could not claim the spill file %s", self.path)
                return []
        events: list[Event] = []
        try:
            for line in claimed.read_bytes().splitlines():
                if line.strip():
                    try:
                        events.append(orjson.loads(line))
                    except orjson.JSONDecodeError:
                        log.warning("meterline skipped a corrupt spill line: %r", line[:200])
        finally:
            claimed.unlink(missing_ok=True)
        return events


@dataclass(frozen=True, slots=True)
class Post:
    """Step: POST ``content`` (a batch of ``size`` events) with this timeout."""

    content: bytes
    size: int
    timeout: float


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Plan = Generator[Post | Sleep, Answer | None, None]


class Courier:
    """The delivery rules, written once for the sync and async senders.

    ``plan`` is a generator: it yields ``Post`` and ``Sleep`` steps and gets
    each POST's ``Answer`` back, so the thread and the asyncio task only do
    the I/O. Rules:

    1. 2xx: the batch is durable (the gateway answers 202 only after its log
       acknowledged it); count it sent.
    2. 400 with batch indices: count those rejected, resend the rest at once
       (the gateway accepts all or nothing, so the good ones were not stored).
    3. 413 on a batch: split it in halves; on one event: reject it.
    4. 408/425/429/5xx/network error: back off (full jitter, Retry-After as a
       floor) and retry the same batch, for as long as the meter runs: events
       wait in the bounded queue meanwhile, so nothing is lost within the bound.
    5. Any other answer (401, 403, 415...): reject, logged.
    After ``close()`` the retries stop at the shutdown deadline and what is
    left is spilled (if configured) or counted lost.
    """

    def __init__(self, config: MeterConfig, buffer: Buffer) -> None:
        self.config = config
        self.buffer = buffer
        self.give_up_at: float | None = None  # set by close()

    def remaining(self) -> float | None:
        return None if self.give_up_at is None else self.give_up_at - time.monotonic()

    def plan(self, encoded: list[bytes]) -> Plan:
        attempt = 0
        while encoded:
            left = self.remaining()
            if left is not None and left <= 0:
                self.abandon(encoded)
                return
            timeout = (
                self.config.timeout if left is None else max(0.05, min(self.config.timeout, left))
            )
            answer = yield Post(body(encoded), len(encoded), timeout)
            self.buffer.count("requests")
            if answer is None:  # a driver bug; treat it as a failed attempt, never as sent
                answer = Answer(Verdict.RETRY)
            if answer.verdict is Verdict.SENT:
                self.buffer.settle(len(encoded), "sent")
                return
            if answer.verdict is Verdict.DROP_SOME:
                self.buffer.settle(len(answer.bad), "rejected")
                encoded = [e for i, e in enumerate(encoded) if i not in answer.bad]
                continue
            if answer.verdict is Verdict.SPLIT:
                half = len(encoded) // 2
                yield from self.plan(encoded[:half])
                yield from self.plan(encoded[half:])
                return
            if answer.verdict is Verdict.REJECT:
                self.buffer.settle(len(encoded), "rejected")
                return
            delay = backoff(
                attempt, self.config.initial_backoff, self.config.max_backoff, answer.retry_after
            )
            attempt += 1
            self.buffer.count("retries")
            left = self.remaining()
            yield Sleep(delay if left is None else max(0.0, min(delay, left)))

    def abandon(self, encoded: list[bytes]) -> None:
        """Shutdown deadline passed: spill what is left, or count it lost."""
        spill = self.buffer.spill
        if spill is not None and spill.write(encoded):
            self.buffer.settle(len(encoded), "spilled")
            return
        self.buffer.settle(len(encoded), "lost_at_shutdown")
        log.error(
            "meterline lost %d event(s) at shutdown: the gateway did not take them in time",
            len(encoded),
        )

    def batch(self, items: list[Item]) -> list[bytes]:
        encoded, _, refused = prepare(items, self.buffer)
        self.buffer.settle(refused, "invalid")
        return encoded

    def replay_spill(self) -> None:
        """Queue spilled events again once there is room (half the queue free)."""
        spill = self.buffer.spill
        if (
            spill is None
            or self.give_up_at is not None  # closing: spilled events wait for the next start
            or len(self.buffer) > self.buffer.max_items // 2
            or not spill.path.exists()
        ):
            return
        for event in spill.take():
            self.buffer.put(event)
