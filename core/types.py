"""Type aliases every layer shares (the Starlette ``types.py`` idea): one definition each."""

from __future__ import annotations

#: (tenant, source, id): the identity of an event and its dedupe key. Two copies
#: with the same key are one event, billed once.
EventKey = tuple[str, str, str]

#: Log record headers, as Kafka carries them: (name, value bytes) pairs, in order.
Headers = tuple[tuple[str, bytes], ...]
