"""The hot path: price token usage from a cached per-model price vector.

genai-prices' ``ModelPrice.calc_price`` re-derives, on every call, which usage
counts each price applies to (a decomposition of nested units: cache reads are
part of input, 1-hour cache writes are part of cache writes...). That costs
~50 µs. The decomposition depends only on WHICH keys are priced, so we do it
once per ``ModelPrice``, symbolically, and fold it into one coefficient per
meterline usage field (USD per token). Pricing an event is then a few exact
``Decimal`` multiply-adds.

``build_pricer`` returns a ``FastPricer`` when every priced key is one we can
decompose, else a ``FallbackPricer`` that calls genai-prices per event; both
give identical results (tests/pricing/test_pricing_crosscheck.py
checks the whole catalog). A mismatch would mis-bill silently, which is why the
fast path refuses shapes it was not proven on instead of approximating them.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Protocol

from genai_prices import Usage
from genai_prices.decompose import is_descendant_or_self
from genai_prices.types import ModelPrice, TieredPrices
from genai_prices.units import UnitDef, _get_registry
from genai_prices.validation import validate_priced_units

from schemas.usage import TokenUsage

ZERO = Decimal(0)

# Positions of meterline's usage fields in a coefficient vector.
IN, OUT, CR, CW5, CW1H, RSN, AIN, AOUT = range(8)
FIELDS = 8

# genai-prices usage key -> the meterline fields it sums (see ``genai_usage``).
_USAGE_EXPR: dict[str, tuple[int, ...]] = {
    "input_tokens": (IN,),
    "output_tokens": (OUT,),
    "cache_read_tokens": (CR,),
    "cache_write_tokens": (CW5, CW1H),
    "cache_write_5m_tokens": (CW5,),
    "cache_write_1h_tokens": (CW1H,),
    "output_reasoning_tokens": (RSN,),
    "input_audio_tokens": (AIN,),
    "output_audio_tokens": (AOUT,),
    # meterline's schema makes cache reads and audio disjoint parts of input, so
    # cached audio is reported as an explicit 0 (genai-prices would otherwise
    # refuse to infer it when both cache reads and audio are present).
    "cache_audio_read_tokens": (),
}

# Usage keys meterline never reports and that have no reported descendant:
# genai-prices reads them as 0, so their prices contribute nothing.
_ZERO_KEYS = frozenset(
    {
        "input_image_tokens",
        "output_image_tokens",
        "cache_image_read_tokens",
        "input_video_tokens",
        "output_video_tokens",
        "output_citation_tokens",
        "input_characters",
        "input_text_messages",
        "audio_seconds",
        "input_audio_seconds",
        "output_audio_seconds",
        "input_pixels",
        "input_document_pages",
        "input_annotated_document_pages",
        "rerank_searches",
        "web_searches",
        "social_searches",
        "storage_searches",
        "code_executions",
    }
)


def genai_usage(usage: TokenUsage) -> Usage:
    """meterline's usage as a genai-prices ``Usage`` (same semantics: parts are inside totals)."""
    return Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens + usage.cache_write_1h_tokens,
        cache_write_5m_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        cache_audio_read_tokens=0,
        output_reasoning_tokens=usage.reasoning_tokens,
        input_audio_tokens=usage.input_audio_tokens,
        output_audio_tokens=usage.output_audio_tokens,
    )


class Pricer(Protocol):
    def cost(self, usage: TokenUsage) -> Decimal:
        """Provider cost in USD, exact. Raises ``ValueError`` for usage the prices cannot take."""


Coefs = tuple[Decimal, ...]  # FIELDS per-token prices, then the per-request constant


class FastPricer:
    """Linear prices per usage field, selected by input-token tier."""

    __slots__ = ("bands", "base")

    def __init__(self, base: Coefs, bands: Sequence[tuple[int, Coefs]]) -> None:
        self.base = base
        # Highest threshold first: a tier applies when input_tokens > start (genai-prices).
        self.bands = tuple(sorted(bands, key=lambda band: -band[0]))

    def cost(self, usage: TokenUsage) -> Decimal:
        # The counts from the model's __dict__ (where pydantic keeps its fields): a
        # pydantic attribute read costs ~100 ns, a dict read ~30, and this runs for
        # every token event (issue 17). tests/pricing/test_pricing_crosscheck.py
        # holds the result to genai-prices' own for the whole catalog.
        u: dict[str, int] = usage.__dict__
        n = u["input_tokens"]
        c = self.base
        if self.bands:
            for start, coefs in self.bands:
                if n > start:
                    c = coefs
                    break
        total = c[8] + c[IN] * n + c[OUT] * u["output_tokens"]
        # Most events carry only input/output (and maybe cache reads): skip zero counts.
        if k := u["cache_read_tokens"]:
            total += c[CR] * k
        if k := u["cache_write_tokens"]:
            total += c[CW5] * k
        if k := u["cache_write_1h_tokens"]:
            total += c[CW1H] * k
        if k := u["reasoning_tokens"]:
            total += c[RSN] * k
        if k := u["input_audio_tokens"]:
            total += c[AIN] * k
        if k := u["output_audio_tokens"]:
            total += c[AOUT] * k
        return total


class FallbackPricer:
    """genai-prices' own calculation, for price shapes the fast path does not cover."""

    __slots__ = ("model_price",)

    def __init__(self, model_price: ModelPrice) -> None:
        self.model_price = model_price

    def cost(self, usage: TokenUsage) -> Decimal:
        result = self.model_price.calc_price(genai_usage(usage))
        return Decimal(result["total_price"])


def _priced(model_price: ModelPrice) -> dict[str, Any]:
    return {
        key: value
        for key, value in model_price.__dict__.items()
        if not key.startswith("_") and value is not None
    }


def _flat_coefs(prices: dict[str, tuple[UnitDef, Decimal]]) -> Coefs:
    """Fold the unit decomposition into per-field coefficients.

    Mirrors ``genai_prices.decompose.compute_leaf_values``: units are visited
    most-specific first and each unit's leaf count is its own count minus the
    leaf counts of its priced descendants. Leaves are linear in the usage
    fields, so we carry them as integer coefficient vectors.
    """
    units = sorted(
        (unit for unit, _ in prices.values()), key=lambda u: (-len(u.dimensions), u.usage_key)
    )
    leaves: dict[str, list[int]] = {}
    coefs = [ZERO] * (FIELDS + 1)
    for unit in units:
        leaf = [0] * FIELDS
        if unit.usage_key == "requests":
            coefs[FIELDS] += prices[unit.usage_key][1] / unit.per  # one request per event
            continue
        for field in _USAGE_EXPR.get(unit.usage_key, ()):
            leaf[field] += 1
        for other in units:
            if (
                other is not unit
                and other.usage_key in leaves
                and is_descendant_or_self(unit, other)
            ):
                for field, n in enumerate(leaves[other.usage_key]):
                    leaf[field] -= n
        leaves[unit.usage_key] = leaf
        per_token = prices[unit.usage_key][1] / unit.per
        for field, n in enumerate(leaf):
            if n:
                coefs[field] += per_token * n
    return tuple(coefs)


def build_pricer(model_price: ModelPrice) -> Pricer:
    """A fast pricer for ``model_price`` when its shape is covered, else the fallback."""
    registry = _get_registry()
    priced = _priced(model_price)
    try:
        units = {
            (unit := registry.unit_for_price_key(key)).usage_key: (unit, value)
            for key, value in priced.items()
        }
        validate_priced_units(tuple(unit for unit, _ in units.values()), registry)
    except (KeyError, ValueError):
        return FallbackPricer(model_price)  # genai-prices raises the precise error per event
    covered = set(_USAGE_EXPR) | _ZERO_KEYS | {"requests"}
    if any(key not in covered for key in units):
        return FallbackPricer(model_price)
    if any(not isinstance(v, Decimal | TieredPrices) for _, v in units.values()):
        return FallbackPricer(model_price)

    starts = sorted(
        {t.start for _, v in units.values() if isinstance(v, TieredPrices) for t in v.tiers}
    )

    def at(threshold: int | None) -> dict[str, tuple[UnitDef, Decimal]]:
        """Every unit's flat price when input_tokens is just above ``threshold``."""
        flat: dict[str, tuple[UnitDef, Decimal]] = {}
        for key, (unit, value) in units.items():
            if isinstance(value, TieredPrices):
                price = value.base
                if threshold is not None:
                    for tier in value.tiers:
                        if threshold >= tier.start:
                            price = tier.price
                flat[key] = (unit, price)
            else:
                flat[key] = (unit, value)
        return flat

    return FastPricer(_flat_coefs(at(None)), [(s, _flat_coefs(at(s))) for s in starts])
