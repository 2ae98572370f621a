"""Pricing: turn a usage event into provider cost and customer price, exactly.

``PriceBook`` is the interface the processor calls once per event; ``CatalogPriceBook``
prices LLM tokens from the pinned genai-prices catalog, resolving each
(provider, model, effective period) once and caching it.
"""

from processor.pricing.base import Priced, PriceBook
from processor.pricing.catalog import CatalogPriceBook

__all__ = ["CatalogPriceBook", "PriceBook", "Priced"]
