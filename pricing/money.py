"""Exact money: parsing price-book numbers and rounding for presentation.

Money is ``Decimal`` from the price book to the ClickHouse ``Decimal(38, 12)``
columns. Rounding happens only where a human or an invoice sees the number,
half-even, so that summing rounded lines does not drift upwards on average.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

MAX_PRICE_DIGITS = 24
"""Significant digits a price-book number may have. Per-event costs multiply a price
by counts of up to 10**12; keeping the factors short keeps every product inside
Decimal's default 28-digit context, so no arithmetic step ever rounds."""


def parse_money(value: object, where: str) -> Decimal:
    """A non-negative, finite, exact amount from a price-book value.

    Accepts ``int``, ``Decimal`` (our YAML loader turns every YAML float into a
    ``Decimal`` from its source text, so ``0.15`` stays exactly 0.15) and decimal
    strings. ``float`` and ``bool`` are refused: a float has already lost the
    digits we would bill on. Raises ``ValueError`` naming ``where``.
    """
    if isinstance(value, (bool, float)):
        raise ValueError(f"{where}: {value!r} must be written as a decimal number or string")
    if isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, Decimal):
        result = value
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip().replace("_", ""))
        except InvalidOperation:
            raise ValueError(f"{where}: {value!r} is not a decimal number") from None
    else:
        raise ValueError(f"{where}: expected a decimal number, got {type(value).__name__}")
    shown = repr(value) if isinstance(value, str) else str(value)
    if not result.is_finite():
        raise ValueError(f"{where}: {shown} is not a finite number")
    if result < 0:
        raise ValueError(f"{where}: {shown} must not be negative")
    if len(result.as_tuple().digits) > MAX_PRICE_DIGITS:
        raise ValueError(f"{where}: {shown} has more than {MAX_PRICE_DIGITS} significant digits")
    return result


def present(amount: Decimal, places: int = 2) -> Decimal:
    """Round for display or an invoice line: half-even to ``places`` decimals.

    Never store the result: stored money keeps every digit so that sums and
    re-billing stay exact.
    """
    return amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
