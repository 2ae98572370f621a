"""The process-wide default ``Meter``, built from the environment on first use.

The wrappers and decorators use it when no ``meter=`` is given, which is what
makes the two-line quick start work.
"""

from __future__ import annotations

import threading

from meterline.sdk._recorder import Recorder

_lock = threading.Lock()
_meter: Recorder | None = None


def default_meter() -> Recorder:
    global _meter
    if _meter is None:
        with _lock:
            if _meter is None:
                from meterline.sdk.client import Meter

                _meter = Meter()
    return _meter


def set_default_meter(meter: Recorder | None) -> None:
    """Use ``meter`` wherever no meter is passed (None: build from the environment again)."""
    global _meter
    with _lock:
        _meter = meter
