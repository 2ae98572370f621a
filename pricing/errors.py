"""Pricing errors: one root, one-line subclasses."""

from __future__ import annotations

from core.errors import ConfigError


class PriceBookError(ConfigError):
    """The price book is invalid; the message names each bad entry (``models[2].prices[0]``)."""
