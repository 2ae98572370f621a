"""The genai-prices catalog: exact-first model lookup and effective-dated prices.

The catalog is pinned (requirements.lock) and its version is part of every
row's price-book version, so a replay prices with the same numbers. Prices are
never fetched at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any

import genai_prices
from genai_prices import data_snapshot
from genai_prices.types import (
    ClauseEquals,
    ClauseOr,
    ConditionalPrice,
    ModelInfo,
    ModelPrice,
    Provider,
    TimeOfDateConstraint,
)

from schemas.times import from_ms

CATALOG_VERSION = f"genai-prices=={genai_prices.__version__}"
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class CatalogModel:
    """A catalog model as found for a provider.

    ``owned`` is False when the model came from a fallback provider (Azure
    serving an OpenAI model): genai-prices then ignores request variants
    (batch, service tier), and so do we, to price exactly as the catalog does.
    """

    provider: Provider
    info: ModelInfo
    owned: bool

    @property
    def label(self) -> str:
        return f"{self.provider.id}/{self.info.id}"


def _equals(match: Any) -> list[str]:
    """The exact names in a model's match logic (top-level ``equals`` / ``or`` of equals)."""
    if isinstance(match, ClauseEquals):
        return [match.equals.lower()]
    if isinstance(match, ClauseOr):
        return [name for clause in match.or_ for name in _equals(clause)]
    return []


class Catalog:
    """Finds catalog models: exact names first, then the catalog's own patterns."""

    def __init__(self) -> None:
        self._snapshot = data_snapshot.get_snapshot()
        self._exact: dict[str, dict[str, ModelInfo]] = {}
        for provider in self._snapshot.providers:
            index: dict[str, ModelInfo] = {}
            for info in provider.models:
                for name in [info.id.lower(), *_equals(info.match)]:
                    index.setdefault(name, info)  # first in catalog order, as genai-prices
            self._exact[provider.id] = index

    def provider(self, provider_id: str) -> Provider | None:
        return data_snapshot.find_provider_by_id(self._snapshot.providers, provider_id)

    def exact(self, provider_id: str, model: str) -> CatalogModel | None:
        """A model whose id or one of whose exact names is ``model``."""
        provider = self.provider(provider_id)
        if provider is None:
            return None
        name = model.lower()
        info = self._exact[provider.id].get(name)
        if info is not None:
            return CatalogModel(provider, info, True)
        for fallback_id in provider.fallback_model_providers or ():
            info = self._exact.get(fallback_id, {}).get(name)
            if info is not None:
                return CatalogModel(provider, info, False)
        return None

    def pattern(self, provider_id: str, model: str) -> CatalogModel | None:
        """genai-prices' full matching (prefixes, regexes the catalog maintainers wrote)."""
        provider = self.provider(provider_id)
        if provider is None:
            return None
        try:
            found_provider, info = self._snapshot.find_provider_model(model, provider, None, None)
        except LookupError:
            return None
        owned = any(info is candidate for candidate in found_provider.models)
        return CatalogModel(found_provider, info, owned)


def price_context(service_tier: str) -> dict[str, str] | None:
    """The genai-prices request context for a meterline ``service_tier``.

    The catalog keys its variants as ``processing=batch`` (OpenAI, Anthropic,
    Google, Mistral batch APIs), ``service_tier=flex|priority|...`` (OpenAI,
    Google) and ``speed=fast`` (Anthropic). A variant matches only the keys it
    names, so one context can carry all three spellings.
    """
    if not service_tier:
        return None
    tier = service_tier.lower()
    context = {"service_tier": tier}
    if tier == "batch":
        context["processing"] = "batch"
    if tier == "fast":
        context["speed"] = "fast"
    return context


def _ms_of_day(value: time) -> int:
    """Milliseconds after UTC midnight, rounded up: instant t is active iff t >= this."""
    if value.tzinfo is not None:
        value = datetime.combine(datetime(1970, 1, 1).date(), value).astimezone(UTC).time()
    micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond
    return -(-micros // 1000)


def _time_of_day_cuts(info: ModelInfo) -> list[int]:
    constraints: list[Any] = []
    if isinstance(info.prices, list):
        constraints += [c.constraint for c in info.prices if isinstance(c, ConditionalPrice)]
    constraints += [variant.constraint for variant in info.price_variants or ()]
    cuts: set[int] = set()
    for constraint in constraints:
        if isinstance(constraint, TimeOfDateConstraint):
            cuts.add(_ms_of_day(constraint.start_time) % DAY_MS)
            cuts.add(_ms_of_day(constraint.end_time) % DAY_MS)
    return sorted(cuts - {0})


class CatalogTimeline:
    """A catalog model's price as a function of time, in constant segments.

    Catalog prices change at UTC dates (``StartDateConstraint``) and, for a few
    models, at times of day (off-peak). So one UTC day, cut at those times of
    day, always has one price; we hand out the segment so callers re-resolve
    only when an event falls outside it.
    """

    def __init__(self, model: CatalogModel, service_tier: str) -> None:
        self.model = model
        self._context = price_context(service_tier) if model.owned else None
        self._cuts = _time_of_day_cuts(model.info)

    def segment(self, time_ms: int) -> tuple[int, int, ModelPrice]:
        day = time_ms - time_ms % DAY_MS
        start, end = day, day + DAY_MS
        offset = time_ms - day
        for cut in self._cuts:
            if cut <= offset:
                start = day + cut
            else:
                end = day + cut
                break
        when = from_ms(start)
        return start, end, self.model.info.get_prices(when, self._context)
