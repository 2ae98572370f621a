"""Columns of ``usage_events`` rows as the processor's writer takes them, for tests that
write straight into the engine (``ChdbEngine.writer().insert(columns, token)``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sinks.base import EVENT_COLUMNS


def event_columns(ids: list[str], **columns: list[Any]) -> dict[str, list[Any]]:
    """One row per id: every column empty or zero (its type's default) but ``columns``."""
    defaults: dict[type, Any] = {str: "", bytes: b"{}", int: 0, Decimal: Decimal(0), dict: {}}
    out = {name: [defaults[kind]] * len(ids) for name, kind in EVENT_COLUMNS.items()}
    for name, values in columns.items():
        if name not in out or len(values) != len(ids):
            raise ValueError(f"{name}: not a usage_events column with one value per id")
        out[name] = values
    out["id"] = ids
    return out
