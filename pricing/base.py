"""The price-book interface."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from schemas.usage import UsageData

if TYPE_CHECKING:
    from pricing.per_call import PerCall

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Priced:
    """The outcome of pricing one event.

    ``priced`` is False when no rule matched: the event is still stored (with
    zero money and the flag), counted, and can be re-priced by a replay. We
    never guess a price.
    """

    cost_usd: Decimal
    price_usd: Decimal
    priced: bool
    matched_model: str = ""
    reason: str = ""  # why unpriced: unknown_model, no_rule, unknown_currency, ... ("" when priced)
    source: str = "book"  # price_usd from the book, or "client" (pricing/per_call.py)


UNPRICED = Priced(ZERO, ZERO, False, "", "no_rule")


class PriceBook(abc.ABC):
    """Prices events. Implementations must be pure functions of their inputs and
    their version, so a replay with the same version reproduces the same money."""

    version: str
    # Client prices and failed calls (pricing/per_call.py), applied by the processor
    # after ``price``; no tenant may price its own events unless the shell allows it
    # (METERLINE_CLIENT_PRICE_TENANTS). Not part of ``version``: the tenant list is a
    # setting, and each row says where its price came from (``price_source``).
    per_call: PerCall

    @abc.abstractmethod
    def price(
        self, event_type: str, usage: UsageData | None, time_ms: int, subject: str = ""
    ) -> Priced:
        """Price one event that happened at ``time_ms`` (epoch ms, UTC)."""
