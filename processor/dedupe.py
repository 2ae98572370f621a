"""Drop events already stored, keyed by (tenant, source, id).

Two layers, both durable-safe:

1. A bounded in-memory set of keys this process has itself written. A key is
   added only AFTER its insert returned, so "seen" here always means "stored"
   (OpenMeter's Redis dedupe could say "seen" for a row that never landed).
2. The ``usage_event_ids`` table in ClickHouse, filled by the same INSERT as
   the events: the source of truth, so restarts need no other store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice

from core.types import EventKey
from sinks.base import KeyLookup


class Deduplicator:
    def __init__(self, stored: KeyLookup, capacity: int = 200_000) -> None:
        self._stored = stored  # the live tables, or a billing run (replay)
        self._capacity = capacity
        self._recent: dict[EventKey, None] = {}  # insertion-ordered: oldest first

    def new_indexes(self, keys: Sequence[EventKey]) -> tuple[list[int], int, int]:
        """Indexes of keys that are new, plus counts of (in-batch, stored) duplicates.

        Within the batch the first occurrence (lowest offset) wins.
        """
        unseen, in_batch, cached = self.unseen_indexes(keys)
        stored = self.stored([keys[i] for i in unseen])
        new = [i for i in unseen if keys[i] not in stored]
        return new, in_batch, cached + len(stored)

    def unseen_indexes(self, keys: Sequence[EventKey]) -> tuple[list[int], int, int]:
        """The memory half: first occurrences not cached as stored, (in-batch, cached) counts.

        No engine query: the pipeline runs this on the processor's thread while the
        previous batch's INSERT is still running, and asks ``stored`` only after it.
        """
        first: dict[EventKey, int] = {}
        in_batch = 0
        for index, key in enumerate(keys):
            if key in first:
                in_batch += 1
            else:
                first[key] = index
        recent = self._recent
        unseen = [index for key, index in first.items() if key not in recent]
        unseen.sort()
        return unseen, in_batch, len(first) - len(unseen)

    def stored(self, keys: Sequence[EventKey]) -> set[EventKey]:
        """The engine half: which of these keys the target already holds (the truth)."""
        return self._stored.stored_keys(keys) if keys else set()

    def remember(self, keys: Iterable[EventKey]) -> None:
        """Call only after the insert of these keys returned successfully."""
        if self._capacity <= 0:
            return
        recent = self._recent
        for key in keys:
            recent[key] = None
        overflow = len(recent) - self._capacity
        if overflow > 0:
            for key in list(islice(recent, overflow)):
                del recent[key]
