"""Token usage events from the log's bytes to Arrow columns, in Rust (issue 17).

``decode_columns`` calls the native decoder (native/src/lib.rs, the extension module
``schemas.meterline_native``, built by the package install when cargo is there), which fills
the column buffers of the token events it accepts in one pass with no Python object
per event, and wraps them as Arrow arrays without copying (the decoder's own Vecs,
through the buffer protocol). The label rules (source URI, media type, provider name,
lengths, control characters, status / error_type) are checked here, once per distinct
combination, by schemas/fast_decode.py's own ``_labels_ok``: a batch of 20k bench
events holds ~56 combinations, and the rules cannot drift from the fast path's.

It only ever ACCEPTS. A record it does not fully check comes back by index in
``NativeBatch.fallback`` for the Python path (processor/decode.py: the msgspec fast
paths of schemas/fast_decode.py and fast_decode_other.py, else parse_event), which
accepts or dead-letters it as today; so a gap here costs speed, never a wrong
bill. What must hold is that whatever this accepts, the reference accepts with equal
column values: tests/schemas/test_native_decode_differential.py proves it.

Without the extension (no Rust at install: it is optional, the base install is the
emitter SDK) ``AVAILABLE`` is False, ``WHY_UNAVAILABLE`` says why, and the processor
decodes every record in Python: slower, same results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from msgspec import UNSET

from core.errors import MeterlineError
from schemas.fast_decode import _labels_ok
from schemas.limits import EARLIEST_MS, LATEST_MS
from schemas.usage import TOKEN_FIELDS, EventType

try:
    from schemas import meterline_native

    AVAILABLE = True
    WHY_UNAVAILABLE = ""
except ImportError as error:  # built without cargo, or a broken build: the Python path
    AVAILABLE = False
    WHY_UNAVAILABLE = f"meterline_native: {error} (reinstall meterline with Rust's cargo there)"

INT_NAMES = ("time", *TOKEN_FIELDS, "http_status", "latency_ms", "estimated")
STR_NAMES = ("id", "source", "subject", "model", "feature", "user", "status", "error_type")
# The usage_events columns the decoder fills from the value; the rest (tenant, the
# record's topic/partition/offset/timestamp, the pricing columns) are the caller's.
VALUE_COLUMNS: tuple[str, ...] = (*INT_NAMES, *STR_NAMES, "provider", "data", "type", "metadata")


class NativeDecodeError(MeterlineError):
    """The native decoder failed on a batch (or is not built): decode it in Python."""


@dataclass
class NativeBatch:
    columns: dict[str, pa.Array]  # VALUE_COLUMNS of the accepted rows, in value order
    accepted: pa.Array  # int32: the index in ``values`` of each row
    fallback: list[int]  # indexes for the Python path (processor/decode.py's decode)
    combo: pa.Array  # int32: each row's label combination (an index in ``combos``)
    # (source, datacontenttype, canonical provider, model, feature, user, service_tier,
    # status, error_type); datacontenttype "" when the event has none (a sent "" is
    # refused by the rules, so a row's combination never has it), provider "" for a
    # combination the rules refused (no row refers to one).
    combos: list[tuple[str, ...]]


def _native(call: Callable[..., Any], *args: Any) -> Any:
    """Call into the extension; any failure there, a panic included, as NativeDecodeError."""
    try:
        return call(*args)
    except Exception as error:
        raise NativeDecodeError(f"native decode failed: {error!r}") from error
    except BaseException as error:
        # pyo3 raises a Rust panic outside the decode pass as PanicException, a
        # BaseException so that `except Exception` cannot swallow it by accident. Here
        # it means one batch for the Python path, not a dead processor; anything else
        # (KeyboardInterrupt, SystemExit) goes on up.
        if type(error).__name__ != "PanicException":
            raise
        raise NativeDecodeError(f"native decode panicked: {error}") from error


def _varlen(
    kind: pa.DataType, rows: int, buffers: tuple[meterline_native.Buf, meterline_native.Buf]
) -> pa.Array:
    offsets, data = buffers  # Arrow's int32 offsets + the bytes, owned by the decoder's Vecs
    return pa.Array.from_buffers(kind, rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def decode_columns(values: Sequence[bytes], release_gil: bool = True) -> NativeBatch:
    """The token events of ``values`` the decoder accepts, as Arrow columns; the rest by index.

    ``release_gil``: the Rust pass runs without the GIL (another thread may run Python
    meanwhile). Raises NativeDecodeError when the extension is not built or fails on the
    batch (a panic included): then decode the whole batch in Python.
    """
    if not AVAILABLE:
        raise NativeDecodeError(WHY_UNAVAILABLE)
    batch = values if isinstance(values, list) else list(values)  # the extension takes a list
    rows, ints, strs, raw, combo_ids, raw_combos, fallback, accepted = _native(
        meterline_native.decode_tokens, batch, EARLIEST_MS, LATEST_MS, release_gil
    )
    # One int64 buffer: column k starts at value k * len(values) (the decoder sized it
    # before knowing how many it would accept), ``rows`` of them.
    ints_buffer = pa.py_buffer(ints)
    stride, width = len(batch) * 8, rows * 8
    columns: dict[str, pa.Array] = {
        name: pa.Array.from_buffers(pa.int64(), rows, [None, ints_buffer.slice(k * stride, width)])
        for k, name in enumerate(INT_NAMES)
    }
    for name, buffers in zip(STR_NAMES, strs, strict=True):
        columns[name] = _varlen(pa.string(), rows, buffers)
    columns["data"] = _varlen(pa.binary(), rows, raw)  # the logged bytes of each row
    columns["type"] = pa.repeat(EventType.TOKENS.value, rows)  # the decoder accepts no other
    columns["metadata"] = pa.repeat("{}", rows)  # non-empty metadata: the Python path
    # Each distinct label combination through fast_decode's own rules, once.
    canonical = [_labels_ok(c[0], UNSET if c[1] is None else c[1], *c[2:]) for c in raw_combos]
    combo = pa.Array.from_buffers(pa.int32(), rows, [None, pa.py_buffer(combo_ids)])
    columns["provider"] = pa.array(canonical, pa.string()).take(combo)
    accepted_array = pa.Array.from_buffers(pa.int32(), rows, [None, pa.py_buffer(accepted)])
    combos = [
        (c[0], c[1] or "", name, *c[3:]) for c, name in zip(raw_combos, canonical, strict=True)
    ]
    if not all(canonical):  # a combination the rules refuse: those rows take the Python path
        keep = pc.not_equal(columns["provider"], "")
        refused = pc.filter(accepted_array, pc.invert(keep)).to_pylist()
        columns = {name: pc.filter(array, keep) for name, array in columns.items()}
        accepted_array = pc.filter(accepted_array, keep)
        combo = pc.filter(combo, keep)
        fallback = sorted([*fallback, *refused])
    return NativeBatch(columns, accepted_array, fallback, combo, combos)


__all__ = [
    "AVAILABLE",
    "VALUE_COLUMNS",
    "WHY_UNAVAILABLE",
    "NativeBatch",
    "NativeDecodeError",
    "decode_columns",
]
