"""Two rules about ONE call that come after the book: client-stated prices and failed calls.

Kept apart from the book's hot path (pricing/engine.py) on purpose: the book is a
pure function of (type, usage, time, subject); these rules also read the tenant,
and a processor rewrite (issue 17) carries them over as one call per event.

1. **Client prices** (``data.unit_prices``, AgentMeter's per-call prices). Only for
   tenants listed in ``METERLINE_CLIENT_PRICE_TENANTS``: for them ``price_usd`` is
   the stated price × usage (× the book's ``currencies`` rate), ``cost_usd`` stays
   the book's provider cost, and the row says ``price_source = 'client'``. Every
   other tenant is priced from the book as if the field were absent (the row says
   ``'book'``; the stated prices stay in ``data``), and the refusal is counted.
   Not dead-lettered: the usage is real, and holding it out of the bill until an
   operator re-drives it would under-bill for a configuration question.
2. **Failed calls** (``status: "error"`` with zero usage, recorded by the provider
   wrappers for latency and error rates) cost nothing and charge nothing, whatever
   per-request fee the book or a rate card has: the provider bills no failed call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from decimal import Decimal

from prometheus_client import Counter

from pricing.base import ZERO, Priced
from schemas.usage import TOKEN_FIELDS, ImageUsage, TokenUsage, UnitsUsage, UsageData

log = logging.getLogger(__name__)

BOOK = "book"
CLIENT = "client"
ALL_TENANTS = "*"

CLIENT_PRICES_REFUSED = Counter(
    "meterline_processor_client_prices_refused_total",
    "Events that stated unit_prices for a tenant not allowed to; priced from the book",
    ["tenant"],
)


class PerCall:
    """The tenants allowed to price their own events, and the currency rates to USD."""

    def __init__(
        self, client_price_tenants: Iterable[str] = (), rates: Mapping[str, Decimal] | None = None
    ) -> None:
        self.tenants = frozenset(client_price_tenants)
        self._everyone = ALL_TENANTS in self.tenants
        self._rates = dict(rates) if rates is not None else {"USD": Decimal(1)}

    def permits(self, tenant: str) -> bool:
        return self._everyone or tenant in self.tenants

    def adjust(self, tenant: str, usage: UsageData, priced: Priced) -> Priced:
        """``priced`` (the book's) with this call's rules applied; the same object when none."""
        if getattr(usage, "status", "") == "error" and _no_usage(usage):
            return Priced(ZERO, ZERO, True, priced.matched_model, "", BOOK)
        prices = getattr(usage, "unit_prices", None)
        if prices is None:
            return priced
        if not self.permits(tenant):
            CLIENT_PRICES_REFUSED.labels(tenant).inc()
            return priced
        rate = self._rates.get(prices.currency)
        if rate is None:
            # Not guessed: stored unpriced, re-priceable by a replay with the rate.
            return Priced(ZERO, ZERO, False, priced.matched_model, "unknown_currency", CLIENT)
        if isinstance(usage, TokenUsage):
            stated = (
                usage.input_tokens * prices.input_token + usage.output_tokens * prices.output_token
            )
        elif isinstance(usage, ImageUsage):
            stated = usage.images * prices.unit
        elif isinstance(usage, UnitsUsage):
            stated = usage.quantity * prices.unit
        else:  # no other type has unit_prices (schemas/usage.py)
            return priced
        # The book's provider cost when it knows the model (0 when it does not: the
        # customer's price is still known, which is what `priced` means here).
        cost = priced.cost_usd if priced.priced else ZERO
        return Priced(cost, stated * rate, True, priced.matched_model, "", CLIENT)


def _no_usage(usage: UsageData) -> bool:
    if isinstance(usage, TokenUsage):
        return not any(getattr(usage, name) for name in TOKEN_FIELDS)
    if isinstance(usage, UnitsUsage):
        return usage.quantity == 0
    return False  # an image event always has >= 1 image: a partial failure is still billed
