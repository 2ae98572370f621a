"""The ``data`` of each meterline event type.

Token semantics are meterline's own and fixed, whatever the provider reports
(the provider adapters normalise into them):

- ``input_tokens`` counts ALL prompt tokens, cached ones included (OpenAI's
  ``prompt_tokens`` and Gemini's ``promptTokenCount`` already do; for Anthropic
  add ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` to
  ``input_tokens``).
- ``cache_read_tokens``, ``cache_write_tokens`` (5-minute) and
  ``cache_write_1h_tokens`` are the parts of ``input_tokens`` read from or
  written to the prompt cache; ``input_audio_tokens`` is the audio part.
- ``output_tokens`` counts ALL generated tokens, reasoning included (Gemini:
  ``candidatesTokenCount + thoughtsTokenCount``); ``reasoning_tokens`` and
  ``output_audio_tokens`` are parts of it.

Unknown fields are rejected rather than ignored: a typo such as ``inputTokens``
would otherwise bill zero tokens without anyone noticing.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from schemas.limits import (
    CONTROL,
    CONTROL_MESSAGE,
    DECIMAL_PLACES,
    MAX_DECIMAL,
    NO_CONTROL_PATTERN,
    NO_CONTROL_PATTERN_NON_EMPTY,
    PLAIN_DECIMAL,
    PLAIN_DECIMAL_MESSAGE,
    currencies,
)
from schemas.providers import OptionalProviderName, ProviderName

MAX_METADATA_KEYS = 32
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 1024
MAX_TOKENS = 10**12  # far above any real request; catches unit mix-ups (bytes, µs)
MAX_SIGNIFICANT_FLOAT_DIGITS = 15  # every decimal of <= 15 significant digits survives a double


# The token vector of TokenUsage, in column order (usage_events, usage_meters).
TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
)


class EventType(StrEnum):
    """CloudEvents ``type`` values meterline prices and meters natively."""

    TOKENS = "io.meterline.usage.tokens"
    IMAGE = "io.meterline.usage.image"
    UNITS = "io.meterline.usage.units"
    CHARGE = "io.meterline.usage.charge"


def _exact_decimal(value: Any) -> Any:
    """Money and quantities must arrive exactly.

    JSON numbers are parsed as binary doubles by fast parsers; a number with
    more than 15 significant digits may already have been changed by that
    parse, so we refuse it and ask for a string instead of billing a rounded
    amount. Strings are parsed with ``Decimal`` and are always exact.
    """
    if isinstance(value, bool):
        raise ValueError("must be a number or a decimal string, not a boolean")
    if isinstance(value, float):
        text = repr(value)
        mantissa = text.lower().split("e")[0].replace("-", "").replace(".", "").lstrip("0")
        if len(mantissa) > MAX_SIGNIFICANT_FLOAT_DIGITS or text in ("inf", "-inf", "nan"):
            raise ValueError(
                "has more than 15 significant digits as a JSON number; send it as a string"
            )
        return Decimal(text)
    if isinstance(value, str) and not PLAIN_DECIMAL.fullmatch(value):
        raise ValueError(PLAIN_DECIMAL_MESSAGE)
    return value


def _iso_currency(code: str) -> str:
    if code not in currencies():
        raise ValueError(
            f"{code[:8]!r} is not an ISO 4217 currency code (List One, with minor units; "
            "XXX, XTS and the metals are not money)"
        )
    return code


# The bounds (schemas/limits.py) are those of the Decimal(38, 12) columns, with
# room left for the meters' sums; pydantic names the field and the bound broken.
ExactDecimal = Annotated[
    Decimal,
    BeforeValidator(_exact_decimal),
    Field(
        max_digits=38,
        decimal_places=DECIMAL_PLACES,
        allow_inf_nan=False,
        lt=MAX_DECIMAL,
        gt=-MAX_DECIMAL,
    ),
]
TokenCount = Annotated[int, Field(ge=0, le=MAX_TOKENS, strict=True)]
Name = Annotated[str, Field(min_length=1, max_length=256, pattern=NO_CONTROL_PATTERN_NON_EMPTY)]
Label = Annotated[str, Field(max_length=256, pattern=NO_CONTROL_PATTERN)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$"), AfterValidator(_iso_currency)]


class UsageData(BaseModel):
    """Fields every usage type shares."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    feature: Label = Field("", description="Product feature that consumed it (e.g. 'chat').")
    user: Label = Field("", description="End user inside the customer, if known.")
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description=f"Free-form labels: at most {MAX_METADATA_KEYS} keys of "
        f"<= {MAX_METADATA_KEY_CHARS} chars, values <= {MAX_METADATA_VALUE_CHARS} chars.",
    )

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, metadata: dict[str, str]) -> dict[str, str]:
        # A field validator, not a model validator: it runs only when metadata
        # is sent (most events have none), and the error names data.metadata.
        if len(metadata) > MAX_METADATA_KEYS:
            raise ValueError(f"metadata has more than {MAX_METADATA_KEYS} keys")
        for key, value in metadata.items():
            if CONTROL.search(key):
                raise ValueError(f"metadata key {key[:80]!r} {CONTROL_MESSAGE}")
            if CONTROL.search(value):
                raise ValueError(f"metadata value of {key[:80]!r} {CONTROL_MESSAGE}")
            if not key or len(key) > MAX_METADATA_KEY_CHARS:
                raise ValueError(
                    f"metadata key {key[:80]!r} must be 1-{MAX_METADATA_KEY_CHARS} chars"
                )
            if len(value) > MAX_METADATA_VALUE_CHARS:
                raise ValueError(
                    f"metadata value of {key!r} exceeds {MAX_METADATA_VALUE_CHARS} chars"
                )
        return metadata


MAX_LATENCY_MS = 2**32 - 1  # the UInt32 column; ~50 days, far above any provider timeout
CALL_STATUSES = ("", "ok", "error")


class UnitPrices(BaseModel):
    """Prices the client states for this one event (AgentMeter's per-call prices).

    Used by the processor only for tenants allowed to price their own events
    (``METERLINE_CLIENT_PRICE_TENANTS``); the row then says ``price_source =
    'client'``. Everyone else is priced from the book, whatever this says
    (docs/pricing.md#client-prices). Per token or per unit, never per million:
    AgentMeter's ``input_token_price=0.00001`` is what people already write.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: Currency = Field("USD", description="ISO 4217 code the prices are in.")
    input_token: ExactDecimal | None = Field(
        None, ge=0, description="Per input token (cached ones included), tokens events."
    )
    output_token: ExactDecimal | None = Field(
        None, ge=0, description="Per output token (reasoning included), tokens events."
    )
    unit: ExactDecimal | None = Field(
        None, ge=0, description="Per unit (units events) or per image (image events)."
    )


def _token_prices(prices: UnitPrices | None) -> UnitPrices | None:
    if prices is not None and (
        prices.unit is not None or prices.input_token is None or prices.output_token is None
    ):
        raise ValueError(
            "unit_prices of a tokens event needs input_token and output_token (per token; "
            "send 0 for a side that is free) and no unit"
        )
    return prices


def _unit_price(prices: UnitPrices | None) -> UnitPrices | None:
    if prices is not None and (
        prices.unit is None or prices.input_token is not None or prices.output_token is not None
    ):
        raise ValueError(
            "unit_prices of an image or units event needs unit (per image / per unit) and "
            "no input_token or output_token"
        )
    return prices


class CallUsage(UsageData):
    """What a provider wrapper measured about the call itself (cmdrdata's latency and errors).

    A failed call is recorded too, with zero usage and ``status: "error"``, so
    error rates and latency are queryable per model in ``usage_events``; it is
    never charged (docs/pricing.md#failed-calls).
    """

    status: str = Field(
        "", description="'ok', 'error', or '' when not measured (events not sent by a wrapper)."
    )
    error_type: Annotated[str, Field(max_length=128, pattern=NO_CONTROL_PATTERN)] = Field(
        "", description="The provider client's exception class, e.g. 'RateLimitError'."
    )
    http_status: int = Field(
        0, ge=0, le=599, strict=True, description="HTTP status of the provider's answer; 0 = none."
    )
    latency_ms: int = Field(
        0, ge=0, le=MAX_LATENCY_MS, strict=True, description="Provider call time; 0 = not measured."
    )

    @field_validator("status")
    @classmethod
    def _known_status(cls, status: str) -> str:
        if status not in CALL_STATUSES:
            raise ValueError("must be 'ok', 'error' or '' (not measured)")
        return status

    @model_validator(mode="after")
    def _error_needs_status(self) -> CallUsage:
        if self.error_type and self.status != "error":
            raise ValueError("error_type is only for status 'error'")
        return self


class TokenUsage(CallUsage):
    """LLM token usage for one provider response (type ``io.meterline.usage.tokens``)."""

    provider: ProviderName
    model: Name = Field(description="The model the provider reported, e.g. 'gpt-4o-2024-08-06'.")
    input_tokens: TokenCount = Field(0, description="All prompt tokens, cached ones included.")
    output_tokens: TokenCount = Field(0, description="All generated tokens, reasoning included.")
    cache_read_tokens: TokenCount = Field(0, description="Part of input read from the cache.")
    cache_write_tokens: TokenCount = Field(0, description="Part of input written (5-minute TTL).")
    cache_write_1h_tokens: TokenCount = Field(0, description="Part of input written (1-hour TTL).")
    reasoning_tokens: TokenCount = Field(0, description="Part of output spent on reasoning.")
    input_audio_tokens: TokenCount = Field(0, description="Part of input that was audio.")
    output_audio_tokens: TokenCount = Field(0, description="Part of output that was audio.")
    estimated: bool = Field(
        False, description="True when counted locally (tiktoken), not reported by the provider."
    )
    service_tier: Label = Field("", description="Provider service tier (batch, flex, priority).")
    unit_prices: Annotated[UnitPrices | None, AfterValidator(_token_prices)] = Field(
        None, description="Client-stated per-token prices (docs/pricing.md#client-prices)."
    )

    @model_validator(mode="after")
    def _parts_within_totals(self) -> TokenUsage:
        cached = self.cache_read_tokens + self.cache_write_tokens + self.cache_write_1h_tokens
        if cached + self.input_audio_tokens > self.input_tokens:
            raise ValueError(
                "cache_read_tokens + cache_write_tokens + cache_write_1h_tokens + "
                "input_audio_tokens exceed input_tokens (input_tokens counts cached tokens too)"
            )
        if self.reasoning_tokens + self.output_audio_tokens > self.output_tokens:
            raise ValueError(
                "reasoning_tokens + output_audio_tokens exceed output_tokens "
                "(output_tokens counts reasoning tokens too)"
            )
        return self


class ImageUsage(CallUsage):
    """Generated images (type ``io.meterline.usage.image``)."""

    provider: ProviderName
    model: Name
    images: int = Field(ge=1, le=10_000, strict=True, description="Images generated.")
    size: Label = Field("", description="e.g. '1024x1024'.")
    quality: Label = Field("", description="e.g. 'standard', 'hd', 'low', 'high'.")
    unit_prices: Annotated[UnitPrices | None, AfterValidator(_unit_price)] = Field(
        None, description="Client-stated price per image (docs/pricing.md#client-prices)."
    )


class UnitsUsage(CallUsage):
    """A quantity of a custom unit: pages, API calls, seconds... (``io.meterline.usage.units``)."""

    unit: Name = Field(description="What is counted: 'page', 'api_call', 'second'...")
    quantity: ExactDecimal = Field(
        Decimal(1), ge=0, description="How many; default 1. Never negative: a credit is not usage."
    )
    provider: OptionalProviderName = ""
    model: Label = ""
    unit_prices: Annotated[UnitPrices | None, AfterValidator(_unit_price)] = Field(
        None, description="Client-stated price per unit (docs/pricing.md#client-prices)."
    )


class ChargeUsage(UsageData):
    """A fixed, one-off amount (``io.meterline.usage.charge``)."""

    amount: ExactDecimal = Field(
        ge=0,
        description="The amount, exact; send it as a string. Never negative: refunds and "
        "credits belong to invoicing, not to usage.",
    )
    currency: Currency = Field("USD", description="ISO 4217 code of a currency (not XXX, XTS).")
    description: Label = ""


USAGE_MODELS: dict[str, type[UsageData]] = {
    EventType.TOKENS.value: TokenUsage,
    EventType.IMAGE.value: ImageUsage,
    EventType.UNITS.value: UnitsUsage,
    EventType.CHARGE.value: ChargeUsage,
}


# A custom event's unit becomes a LowCardinality column and a price-book key.
_CUSTOM_UNIT = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")
_ONE_EVENT = UnitsUsage.model_validate({"unit": "event"})


def custom_units(data: Any) -> UnitsUsage:
    """The usage of an event of a type meterline does not know: custom units.

    unit = ``data.unit`` when it is a clean name (``[A-Za-z0-9_.:/-]{1,64}``),
    else "event"; quantity = ``data.quantity`` when present, held to the rules
    of ``UnitsUsage.quantity`` (a non-negative exact decimal that fits the
    column), else 1. A present but invalid quantity raises ``ValidationError``
    (field ``quantity``) rather than being metered as 1: silently billing one
    unit for "-1" or "1e400" would be a wrong invoice nobody notices.
    """
    if type(data) is not dict:
        return _ONE_EVENT
    raw_unit = data.get("unit")
    unit = raw_unit if isinstance(raw_unit, str) and _CUSTOM_UNIT.fullmatch(raw_unit) else "event"
    quantity = data.get("quantity")
    if quantity is None:
        return _ONE_EVENT if unit == "event" else UnitsUsage.model_validate({"unit": unit})
    if type(quantity) is int and 0 <= quantity < MAX_DECIMAL:
        # The common case, already within every rule of the field (and the unit
        # matched _CUSTOM_UNIT): skip pydantic's decimal path, ~6 µs at the gateway.
        return UnitsUsage.model_construct(unit=unit, quantity=Decimal(quantity))
    return UnitsUsage.model_validate({"unit": unit, "quantity": quantity})
