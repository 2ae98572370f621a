"""Pricing: turn a usage event into provider cost and customer price, exactly.

``PriceBook`` is the interface the processor calls once per event.
``BookPriceBook`` prices from the pinned genai-prices catalog plus an optional
local price book (docs/pricing.md); ``CatalogPriceBook`` is the catalog alone.
Modules: book (YAML model + validation), catalog (genai-prices lookup and
effective dating), matching (name -> price), fast (cached price vectors),
ratecard (customer prices), money (parsing, presentation rounding), bench.
"""

from pricing.base import PriceBook, Priced
from pricing.catalog import CATALOG_VERSION
from pricing.engine import BookPriceBook
from pricing.errors import PriceBookError


class CatalogPriceBook(BookPriceBook):
    """The catalog alone (no local book): tokens from genai-prices, USD charges at face value."""

    def __init__(self) -> None:
        super().__init__(None, "")


__all__ = [
    "CATALOG_VERSION",
    "BookPriceBook",
    "CatalogPriceBook",
    "PriceBook",
    "PriceBookError",
    "Priced",
]
