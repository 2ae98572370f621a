"""Customer rate cards: from provider cost (or list price) to customer price.

For one event of a subject, with the subject's card (else the ``"*"`` card,
else none = price equals list price):

1. The first override whose filters (model, feature, unit) all match, if any.
2. Base price:
   - an override with token prices: those prices for the keys it names, and the
     provider's prices times (1 + markup) for the keys it does not;
   - an override with ``image_usd`` / ``unit_usd``: that price times the count;
   - otherwise: list price times (1 + markup_pct/100), the override's
     ``markup_pct`` replacing the card's when given.
3. Times (1 - discount_pct/100).
4. Plus ``request_fee_usd`` per priced event.

Instant charges are not rate-carded: the event carries the agreed amount.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from genai_prices.types import ModelPrice, Tier, TieredPrices

from pricing.book import Override, RateCard, Tiered

ONE = Decimal(1)
HUNDRED = Decimal(100)


def to_genai(value: Decimal | Tiered) -> Decimal | TieredPrices:
    if isinstance(value, Tiered):
        return TieredPrices(value.base, [Tier(t.start, t.price) for t in value.tiers])
    return value


def _scaled(value: Decimal | TieredPrices, factor: Decimal) -> Decimal | TieredPrices:
    if isinstance(value, TieredPrices):
        return TieredPrices(
            value.base * factor, [Tier(t.start, t.price * factor) for t in value.tiers]
        )
    return value * factor


@dataclass(frozen=True, slots=True)
class Rule:
    model: str
    feature: str
    unit: str
    markup: Decimal | None  # a factor, 1 + pct/100
    token_prices: dict[str, Decimal | TieredPrices]
    image_usd: Decimal | None
    unit_usd: Decimal | None

    def matches(self, models: tuple[str, ...], feature: str, unit: str) -> bool:
        return (
            (not self.model or self.model in models)
            and (not self.feature or self.feature == feature)
            and (not self.unit or self.unit == unit)
        )


def _rule(override: Override) -> Rule:
    markup = None if override.markup_pct is None else ONE + override.markup_pct / HUNDRED
    return Rule(
        model=override.model.lower(),
        feature=override.feature,
        unit=override.unit,
        markup=markup,
        token_prices={key: to_genai(value) for key, value in override.given().items()},
        image_usd=override.image_usd,
        unit_usd=override.unit_usd,
    )


@dataclass(slots=True)
class Card:
    name: str
    markup: Decimal
    discount: Decimal
    fee: Decimal
    rules: tuple[Rule, ...]
    _found: dict[tuple[tuple[str, ...], str, str], Rule | None] = field(default_factory=dict)

    @classmethod
    def build(cls, name: str, card: RateCard) -> Card:
        return cls(
            name=name,
            markup=ONE + card.markup_pct / HUNDRED,
            discount=ONE - card.discount_pct / HUNDRED,
            fee=card.request_fee_usd,
            rules=tuple(_rule(o) for o in card.overrides),
        )

    def rule_for(self, models: tuple[str, ...], feature: str, unit: str = "") -> Rule | None:
        """The first matching override, cached (a card is consulted per event)."""
        key = (models, feature, unit)
        try:
            return self._found[key]
        except KeyError:
            found = next((r for r in self.rules if r.matches(models, feature, unit)), None)
            self._found[key] = found
            return found

    def finish(self, base: Decimal) -> Decimal:
        """Steps 3 and 4: discount, then the per-request fee."""
        return base * self.discount + self.fee

    def marked_up(self, list_price: Decimal, rule: Rule | None) -> Decimal:
        markup = rule.markup if rule is not None and rule.markup is not None else self.markup
        return self.finish(list_price * markup)

    def customer_prices(self, provider: ModelPrice, rule: Rule) -> ModelPrice:
        """Step 2 for token overrides: named keys at the agreed price, the rest marked up."""
        markup = rule.markup if rule.markup is not None else self.markup
        merged: dict[str, Decimal | TieredPrices | None] = {}
        for key, value in provider.__dict__.items():
            if not key.startswith("_") and value is not None:
                merged[key] = _scaled(value, markup)
        merged.update(rule.token_prices)
        return ModelPrice(**merged)
