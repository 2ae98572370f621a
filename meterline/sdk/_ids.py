"""Event ids for usage with no provider response id: random UUIDv4 strings, cheaply.

``uuid.uuid4()`` makes one ``getrandom`` system call per id; on a loaded machine
that was a third of ``track_tokens``' time on the app thread (bench/emitter.py).
Here the OS randomness is read 4 KiB at a time and handed out 16 bytes per id:
the same source and the same 122 random bits per id. The pool is dropped in a
forked child: a child handing out its parent's remaining bytes would repeat the
parent's ids, and a repeated id (same source) is deduplicated downstream, i.e.
real usage silently dropped.
"""

from __future__ import annotations

import os
import threading
import uuid

_POOL_BYTES = 16 * 256
_lock = threading.Lock()
_pool = b""
_at = 0


def new_id() -> str:
    """A fresh random UUIDv4, as text."""
    global _pool, _at
    with _lock:
        if _at >= len(_pool):
            _pool, _at = os.urandom(_POOL_BYTES), 0
        chunk = _pool[_at : _at + 16]
        _at += 16
    return str(uuid.UUID(bytes=chunk, version=4))


def _drop_pool() -> None:
    global _pool, _at
    _pool, _at = b"", 0


os.register_at_fork(after_in_child=_drop_pool)
