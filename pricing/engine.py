"""``BookPriceBook``: the pinned catalog plus a local price book, exact and fast.

Per token event the hot path is: one dict lookup for the (provider, model,
service tier) entry, an interval check for the cached price segment, a few
``Decimal`` multiply-adds (fast.py), and the subject's rate card. Everything
else (matching, effective-dated resolution, building price vectors) happens
once per model and price segment and is cached; misses are cached too, so an
unknown model stays cheap.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

from genai_prices.types import ModelPrice

from pricing.base import UNPRICED, ZERO, PriceBook, Priced
from pricing.book import Book, BookModel, ImageRule, UnitRule, load_book
from pricing.catalog import CATALOG_VERSION, Catalog, CatalogTimeline
from pricing.fast import Pricer, build_pricer
from pricing.matching import Match, Matcher
from pricing.per_call import PerCall
from pricing.ratecard import Card, Rule, to_genai
from schemas.usage import ChargeUsage, EventType, ImageUsage, TokenUsage, UnitsUsage, UsageData

_FAR_PAST = -(2**62)
_FAR_FUTURE = 2**62
DEFAULT_CARD = "*"

UNKNOWN_MODEL = Priced(ZERO, ZERO, False, "", "unknown_model")
NO_PRICE_YET = Priced(ZERO, ZERO, False, "", "no_price_at_time")
NO_RULE = Priced(ZERO, ZERO, False, "", "no_rule")
UNKNOWN_CURRENCY = Priced(ZERO, ZERO, False, "", "unknown_currency")
BAD_USAGE = Priced(ZERO, ZERO, False, "", "usage_not_priceable")


def _book_periods(model: BookModel, service_tier: str) -> list[tuple[int, ModelPrice]]:
    """(from_ms, prices) per period, with the service tier's overrides applied."""
    periods: list[tuple[int, ModelPrice]] = []
    for period in model.prices:
        prices = {key: to_genai(value) for key, value in period.given().items()}
        tier = period.service_tiers.get(service_tier) if service_tier else None
        if tier is not None:
            prices.update({key: to_genai(value) for key, value in tier.given().items()})
        periods.append(
            (period.from_ if period.from_ is not None else _FAR_PAST, ModelPrice(**prices))
        )
    return periods


def _iso(ms: int) -> str:
    if ms <= _FAR_PAST:
        return "-inf"
    if ms >= _FAR_FUTURE:
        return "+inf"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


class Segment(NamedTuple):
    """One price segment of an entry: [start, end) with its prices, resolved once.

    Immutable, and replaced on its entry in ONE assignment (``_move``): the book is
    shared by the processor's workers, and a reader that took ``entry.segment`` once
    can never see one period's bounds with another period's pricer. The field-by-field
    form it replaces let a worker moving the entry to a late event's period change the
    pricer under another worker's batch: whole batches billed at the wrong period's
    price (found by review with the column path, whose numpy work releases the GIL).
    """

    start: int
    end: int
    prices: ModelPrice | None
    pricer: Pricer | None
    label: str
    names: tuple[str, ...]  # what rate-card rules may name: event model, match


_NO_SEGMENT = Segment(0, 0, None, None, "", ())  # empty: the first event resolves


class _TokenEntry:
    """One (provider, model, service tier): its match and its current price segment."""

    __slots__ = ("catalog", "event_model", "match", "periods", "segment")

    def __init__(self, match: Match, service_tier: str, event_model: str) -> None:
        self.match = match
        self.event_model = event_model
        self.periods = _book_periods(match.book, service_tier) if match.book else []
        self.catalog = CatalogTimeline(match.catalog, service_tier) if match.catalog else None
        self.segment = _NO_SEGMENT

    def resolve(self, time_ms: int) -> tuple[int, int, ModelPrice | None, str]:
        """The price segment containing ``time_ms``: book period, else the catalog."""
        start, end = _FAR_PAST, _FAR_FUTURE
        if self.periods:
            index = bisect_right([p[0] for p in self.periods], time_ms) - 1
            if index >= 0:
                if index + 1 < len(self.periods):
                    end = self.periods[index + 1][0]
                return self.periods[index][0], end, self.periods[index][1], self.match.label
            end = self.periods[0][0]  # before the book's first period: the catalog, if any
        if self.catalog is None:
            return start, end, None, ""
        c_start, c_end, prices = self.catalog.segment(time_ms)
        return max(start, c_start), min(end, c_end), prices, self.catalog.model.label


class BookPriceBook(PriceBook):
    """Prices every meterline event type from the catalog and the local book."""

    def __init__(self, book: Book | None = None, book_hash: str = "") -> None:
        self.book = book or Book.model_validate({})
        self.version = CATALOG_VERSION + (f"+book.{book_hash}" if book is not None else "")
        self._catalog = Catalog()
        self._matcher = Matcher(self.book, self._catalog)
        self._tokens: dict[tuple[str, str, str], _TokenEntry | None] = {}
        self._pricers: dict[str, Pricer] = {}
        self._card_pricers: dict[tuple[int, str], Pricer] = {}
        self._cards = {name: Card.build(name, card) for name, card in self.book.rate_cards.items()}
        self._default_card = self._cards.pop(DEFAULT_CARD, None)
        self._images = self._index_images(self.book.images)
        self._units = self._index_units(self.book.units)
        self._rates = {"USD": Decimal(1), **self.book.currencies}
        self.per_call = PerCall((), self._rates)

    def allow_client_prices(self, tenants: Iterable[str]) -> None:
        """Let these tenants' events carry their own prices ("*": every tenant)."""
        self.per_call = PerCall(tenants, self._rates)

    @classmethod
    def from_file(cls, path: Path) -> BookPriceBook:
        book, digest = load_book(path)
        return cls(book, digest)

    # --- the interface -------------------------------------------------------------------

    def price(
        self, event_type: str, usage: UsageData | None, time_ms: int, subject: str = ""
    ) -> Priced:
        if type(usage) is TokenUsage:
            return self._price_tokens(usage, time_ms, subject)
        if isinstance(usage, ChargeUsage):
            return self._price_charge(usage)
        if isinstance(usage, ImageUsage):
            return self._price_images(usage, time_ms, subject)
        if isinstance(usage, UnitsUsage):
            return self._price_units(event_type, usage, time_ms, subject)
        # Custom events of unknown types carry no parsed quantity here: pricing them
        # per event would bill 1 where the data may say 5, so they stay unpriced.
        return UNPRICED

    def explain(
        self, provider: str, model: str, service_tier: str, time_ms: int
    ) -> dict[str, str] | None:
        """How a token event for this model would be priced at ``time_ms`` (for the CLI)."""
        entry = self._tokens.get((provider, model, service_tier)) or self._entry(
            (provider, model, service_tier)
        )
        if entry is None:
            return None
        segment = self._move(entry, time_ms)
        return {
            "matched_model": segment.label or entry.match.label,
            "matched_by": entry.match.how,
            "in_force": f"{_iso(segment.start)} .. {_iso(segment.end)}",
            "prices": str(segment.prices) if segment.prices is not None else "none at this time",
            "path": type(segment.pricer).__name__ if segment.pricer is not None else "-",
            "price_book": self.version,
        }

    # --- tokens (the hot path) -----------------------------------------------------------

    def _price_tokens(self, usage: TokenUsage, time_ms: int, subject: str) -> Priced:
        key = (usage.provider, usage.model, usage.service_tier)
        entry = self._tokens.get(key)
        if entry is None:
            if key in self._tokens:
                return UNKNOWN_MODEL
            entry = self._entry(key)
            if entry is None:
                return UNKNOWN_MODEL
        segment = entry.segment  # once: see Segment
        if not segment.start <= time_ms < segment.end:
            segment = self._move(entry, time_ms)
        pricer = segment.pricer
        if pricer is None:
            return NO_PRICE_YET
        try:
            cost = pricer.cost(usage)
        except ValueError:
            return BAD_USAGE  # genai-prices refused the usage shape (fallback path only)
        if cost < 0:
            return BAD_USAGE  # impossible with validated usage; never store negative money
        card = self._cards.get(subject, self._default_card)
        if card is None:
            return Priced(cost, cost, True, segment.label)
        rule = card.rule_for(segment.names, usage.feature)
        if rule is None or not rule.token_prices:
            return Priced(cost, card.marked_up(cost, rule), True, segment.label)
        assert segment.prices is not None  # a pricer comes only with prices
        customer = self._card_pricer(card, rule, segment.prices).cost(usage)
        return Priced(cost, card.finish(customer), True, segment.label)

    def _entry(self, key: tuple[str, str, str]) -> _TokenEntry | None:
        match = self._matcher.match(key[0], key[1])
        entry = _TokenEntry(match, key[2], key[1]) if match is not None else None
        self._tokens[key] = entry
        return entry

    def _move(self, entry: _TokenEntry, time_ms: int) -> Segment:
        """The segment holding ``time_ms``, made the entry's current one (one assignment)."""
        start, end, prices, label = entry.resolve(time_ms)
        pricer = None if prices is None else self._pricer(prices)
        # A rate-card rule may name the model as the event did, as "provider/model" or as
        # the matched model's id (an Azure deployment "prod-gpt4o" is rule model "gpt-4o").
        names = (entry.event_model, label, label.partition("/")[2], entry.match.label)
        segment = Segment(
            start, end, prices, pricer, label, tuple(dict.fromkeys(n.lower() for n in names if n))
        )
        entry.segment = segment
        return segment

    def _pricer(self, prices: ModelPrice) -> Pricer:
        key = repr(prices)  # value identity: variants return fresh copies of equal prices
        pricer = self._pricers.get(key)
        if pricer is None:
            pricer = self._pricers[key] = build_pricer(prices)
        return pricer

    def _card_pricer(self, card: Card, rule: Rule, prices: ModelPrice) -> Pricer:
        """The customer's token prices for this rule and a segment's prices, cached."""
        key = (id(rule), repr(prices))
        pricer = self._card_pricers.get(key)
        if pricer is None:
            pricer = self._card_pricers[key] = build_pricer(card.customer_prices(prices, rule))
        return pricer

    # --- charges, images, units ----------------------------------------------------------

    def _price_charge(self, usage: ChargeUsage) -> Priced:
        rate = self._rates.get(usage.currency)
        if rate is None:
            return UNKNOWN_CURRENCY
        amount = usage.amount * rate
        return Priced(ZERO, amount, True, "")

    @staticmethod
    def _index_images(rules: list[ImageRule]) -> dict[str, list[ImageRule]]:
        index: dict[str, list[ImageRule]] = {}
        for rule in rules:
            index.setdefault(rule.model.lower(), []).append(rule)
        for candidates in index.values():
            # Most specific first, then the latest effective date first.
            candidates.sort(
                key=lambda r: (
                    -(bool(r.provider) + bool(r.size) + bool(r.quality)),
                    -(r.from_ or _FAR_PAST),
                )
            )
        return index

    def _price_images(self, usage: ImageUsage, time_ms: int, subject: str) -> Priced:
        model = usage.model.lower()
        provider = usage.provider.lower()
        for candidate in (model, *self._image_aliases(provider, model)):
            for rule in self._images.get(candidate, ()):
                if (
                    (not rule.provider or rule.provider.lower() == provider)
                    and (not rule.size or rule.size == usage.size)
                    and (not rule.quality or rule.quality == usage.quality)
                    and (rule.from_ is None or rule.from_ <= time_ms)
                ):
                    count = Decimal(usage.images)
                    cost = rule.cost_usd * count
                    base = (rule.price_usd if rule.price_usd is not None else rule.cost_usd) * count
                    label = f"{provider}/{rule.model}"
                    return Priced(
                        cost,
                        self._customer(base, subject, (model, label), usage, "", count),
                        True,
                        label,
                    )
        return NO_RULE

    def _image_aliases(self, provider: str, model: str) -> list[str]:
        target = self.book.aliases.get(f"{provider}/{model}")
        return [target.partition("/")[2].lower()] if target else []

    @staticmethod
    def _index_units(rules: list[UnitRule]) -> dict[tuple[str, str], list[UnitRule]]:
        index: dict[tuple[str, str], list[UnitRule]] = {}
        for rule in rules:
            index.setdefault((rule.type, rule.unit), []).append(rule)
        for candidates in index.values():
            # A rule for the event's model first, then the latest effective date first.
            candidates.sort(key=lambda r: (not r.model, -(r.from_ or _FAR_PAST)))
        return index

    def _price_units(
        self, event_type: str, usage: UnitsUsage, time_ms: int, subject: str
    ) -> Priced:
        rules = self._units.get((event_type or EventType.UNITS.value, usage.unit), ())
        for rule in rules:
            if (rule.from_ is None or rule.from_ <= time_ms) and (
                not rule.model or rule.model.lower() == usage.model.lower()
            ):
                cost = rule.cost_usd * usage.quantity
                base = (
                    rule.price_usd if rule.price_usd is not None else rule.cost_usd
                ) * usage.quantity
                models = (usage.model.lower(),) if usage.model else ()
                price = self._customer(base, subject, models, usage, usage.unit, usage.quantity)
                return Priced(cost, price, True, f"unit/{usage.unit}")
        return NO_RULE

    def _customer(
        self,
        base: Decimal,
        subject: str,
        models: tuple[str, ...],
        usage: UsageData,
        unit: str,
        count: Decimal,
    ) -> Decimal:
        card = self._cards.get(subject, self._default_card)
        if card is None:
            return base
        rule = card.rule_for(models, usage.feature, unit)
        if rule is not None:
            if isinstance(usage, ImageUsage) and rule.image_usd is not None:
                return card.finish(rule.image_usd * count)
            if isinstance(usage, UnitsUsage) and rule.unit_usd is not None:
                return card.finish(rule.unit_usd * count)
        return card.marked_up(base, rule)
