"""LLM token prices from the genai-prices catalog, resolved once and cached.

``genai_prices.calc_price`` costs ~50-85 µs per call, mostly finding the model
and its effective price. We resolve (provider, model) once, and the effective
``ModelPrice`` once per model and UTC day (the catalog's price changes are
dated), then only do the arithmetic per event.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import genai_prices
from genai_prices import Usage, data_snapshot
from genai_prices.types import ConditionalPrice, ModelInfo, ModelPrice, StartDateConstraint

from processor.pricing.base import UNPRICED, ZERO, Priced, PriceBook
from schemas.usage import ChargeUsage, EventType, TokenUsage, _UsageData

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MISSING = object()


def _only_dated(model: ModelInfo) -> bool:
    """True when the model's price depends on the date only (not the time of day)."""
    if not isinstance(model.prices, list):
        return True
    return all(
        c.constraint is None or isinstance(c.constraint, StartDateConstraint)
        for c in model.prices
        if isinstance(c, ConditionalPrice)
    )


class CatalogPriceBook(PriceBook):
    """Prices token usage from genai-prices; USD instant charges at face value.

    Images and custom units need a local price book (rules per model, size,
    quality or unit); without one they are stored unpriced.
    """

    def __init__(self) -> None:
        self.version = f"genai-prices=={genai_prices.__version__}"
        self._snapshot = data_snapshot.get_snapshot()
        self._models: dict[tuple[str, str], Any] = {}
        self._prices: dict[tuple[str, str, date], ModelPrice] = {}

    def _model(self, provider: str, model: str) -> tuple[Any, ModelInfo] | None:
        key = (provider, model)
        found = self._models.get(key, _MISSING)
        if found is _MISSING:
            try:
                found = self._snapshot.find_provider_model(model, None, provider, None)
            except LookupError:
                found = None  # unknown: remembered too, so misses stay cheap
            self._models[key] = found
        return found  # type: ignore[return-value]

    def _model_price(self, provider: str, model: str, info: ModelInfo, when: datetime) -> ModelPrice:
        if not _only_dated(info):
            return info.get_prices(when)
        key = (provider, model, when.date())
        price = self._prices.get(key)
        if price is None:
            price = self._prices[key] = info.get_prices(when)
        return price

    def price(
        self, event_type: str, usage: _UsageData | None, time_ms: int, subject: str = ""
    ) -> Priced:
        if isinstance(usage, TokenUsage):
            return self._price_tokens(usage, time_ms)
        if event_type == EventType.CHARGE and isinstance(usage, ChargeUsage):
            if usage.currency == "USD":
                return Priced(ZERO, usage.amount, True, "")
        return UNPRICED

    def _price_tokens(self, usage: TokenUsage, time_ms: int) -> Priced:
        found = self._model(usage.provider, usage.model)
        if found is None:
            return UNPRICED
        provider, info = found
        when = _EPOCH + timedelta(milliseconds=time_ms)
        model_price = self._model_price(usage.provider, usage.model, info, when)
        calc = model_price.calc_price(
            Usage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens or None,
                cache_write_tokens=(usage.cache_write_tokens + usage.cache_write_1h_tokens) or None,
                input_audio_tokens=usage.input_audio_tokens or None,
                output_audio_tokens=usage.output_audio_tokens or None,
            )
        )
        cost = Decimal(calc["total_price"])
        return Priced(cost, cost, True, f"{provider.id}/{info.id}")
