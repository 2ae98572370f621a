"""What meterline can store: the bounds every event is held to, written once.

The gateway refuses (400) and the processor dead-letters what breaks them, and
both get there through ``schemas.envelope.parse_event``, so the two can never
disagree about an event. Each bound comes from a column or a library limit it
protects (docs/gateway.md, "Limits"); an event past one would otherwise be
accepted with 202 and then crash the processor, be stored differently from what
was sent, or make the meters disagree with the events.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import cache
from typing import Any

from schemas.times import to_ms

# C0, DEL and C1. A label with one of them breaks log lines, CSV exports and
# terminals, and two labels that look equal would not group together.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
NO_CONTROL_PATTERN_NON_EMPTY = r"^[^\x00-\x1f\x7f-\x9f]+$"
CONTROL_MESSAGE = "must not contain control characters (U+0000-U+001F, U+007F-U+009F)"

# orjson reads 1,024 levels of nesting but writes only about 254: a deeper
# `data` passes the parse and then fails when the gateway logs the event (a
# 500 after validation said yes). 64 is far above any real payload.
MAX_DATA_DEPTH = 64

# usage_meters.window_start is DateTime (32-bit, 1970..2106-02-07) and the
# daily and monthly rollups are Date in the billing timezone: an event outside
# these bounds would be stored with its own time but metered at a clamped one.
# 2000..2100 keeps more than a day of margin at both ends in every timezone,
# and no AI usage happened before 2000.
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2100, 1, 1, tzinfo=UTC)  # exclusive
EARLIEST_MS, LATEST_MS = to_ms(EARLIEST_TIME), to_ms(LATEST_TIME)
TIME_RANGE_MESSAGE = (
    "must be from 2000-01-01T00:00:00Z up to, not including, 2100-01-01T00:00:00Z "
    "(the range the meters can hold)"
)

# Money and quantities are stored as Decimal(38, 12): 12 decimals, and below
# 10**16 so that (a) the value at 12 decimals has at most 28 digits, which the
# default decimal context computes exactly (10**16 quantized to 12 places
# raised InvalidOperation in the processor), and (b) the meters, sums of these
# in the same column type, stay below 10**26 for 10**10 events per group.
DECIMAL_PLACES = 12
MAX_DECIMAL = 10**16  # exclusive; an int, so errors read 'less than 10000000000000000'
# Decimal() also reads '1e400', '1_000', ' 1', 'NaN' and non-ASCII digits ('١٢'):
# none of them is what a billing client means to send.
PLAIN_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
PLAIN_DECIMAL_MESSAGE = (
    "must be a plain decimal such as '12.50': ASCII digits with an optional sign and "
    "decimal point; no exponent, underscores, spaces, NaN or Infinity"
)


def too_deep(value: Any, limit: int = MAX_DATA_DEPTH) -> bool:
    """True when arrays/objects in ``value`` nest more than ``limit`` levels.

    Level by level, without recursion (a hostile document cannot exhaust the
    stack), and it stops at the first level past the limit.
    """
    level = [value] if type(value) in (dict, list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[Any] = []
        for node in level:
            children = node.values() if type(node) is dict else node
            below.extend(child for child in children if type(child) in (dict, list))
        level = below
    return False


@cache
def currencies() -> frozenset[str]:
    """ISO 4217 List One codes of currencies with minor units.

    From the ``iso4217`` package (the official table, versioned by its
    publication date). The codes without minor units are not money one can be
    charged in: XXX (no currency), XTS (testing), the metals XAU/XAG/XPD/XPT and
    the units of account (XDR, XSU, XUA, XBA-XBD). Loaded on first use: parsing
    the table costs ~20 ms that an SDK import should not pay.
    """
    import iso4217

    return frozenset(
        code
        for code, entry in iso4217.raw_table.items()
        if code and str(entry.get("CcyMnrUnts") or "").isdigit()
    )
