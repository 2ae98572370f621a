"""The local price book: its YAML model, validation and version hash.

The book sits on top of the genai-prices catalog (docs/pricing.md is the format
reference). It is validated completely at start: a typo in a price book would
otherwise bill every event of a customer wrongly until someone notices, so
every problem is reported at once, each naming its entry (``models[2].prices[0]
.input_mtok: ...``), and the processor refuses to start.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from pricing._yaml import load_yaml
from pricing.errors import PriceBookError
from pricing.money import parse_money
from schemas.times import to_ms
from schemas.usage import EventType

FORMAT_VERSION = 1


def _money(value: Any) -> Decimal:
    return parse_money(value, "value")


def _percent(value: Any) -> Decimal:
    result = parse_money(value, "value")
    if result > 1000:
        raise ValueError(f"value: {value!r} % is more than 1000 %")
    return result


def _instant(value: Any) -> int:
    """An RFC 3339 instant (or a plain date = UTC midnight) as epoch milliseconds."""
    if isinstance(value, date) and not isinstance(value, datetime):
        value = value.isoformat()
    if not isinstance(value, str):
        raise ValueError(f"{value!r} must be an RFC 3339 time such as 2025-01-01T00:00:00Z")
    text = value.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            when = datetime.fromisoformat(text).replace(tzinfo=UTC)
        else:
            when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an RFC 3339 time such as 2025-01-01T00:00:00Z"
        ) from None
    if when.tzinfo is None:
        # A zone-less time is ambiguous by hours: an effective date would move with the server.
        raise ValueError(f"{value!r} needs a time zone (e.g. 'Z' or '+02:00')")
    return to_ms(when)


Money = Annotated[Decimal, BeforeValidator(_money)]
Percent = Annotated[Decimal, BeforeValidator(_percent)]
Instant = Annotated[int, BeforeValidator(_instant)]
Text = Annotated[str, Field(min_length=1, max_length=256)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Tier(_Strict):
    start: int = Field(ge=0, strict=True, description="Tier applies when input tokens > start.")
    price: Money


class Tiered(_Strict):
    """Threshold pricing (genai-prices): above ``start`` input tokens ALL tokens pay the tier."""

    base: Money
    tiers: list[Tier] = Field(min_length=1)

    @model_validator(mode="after")
    def _ascending(self) -> Tiered:
        starts = [tier.start for tier in self.tiers]
        if starts != sorted(set(starts)):
            raise ValueError("tiers must have strictly ascending start values")
        return self


def _price_kind(value: Any) -> str:
    return "tiered" if isinstance(value, dict | Tiered) else "flat"


# A discriminated union so that a bad flat price reports one error, not one per variant.
PriceValue = Annotated[
    Annotated[Money, Tag("flat")] | Annotated[Tiered, Tag("tiered")],
    Discriminator(_price_kind),
]


class TokenPrices(_Strict):
    """USD per million tokens (``*_mtok``) or per thousand requests; genai-prices key names."""

    input_mtok: PriceValue | None = None
    output_mtok: PriceValue | None = None
    cache_read_mtok: PriceValue | None = None
    cache_write_mtok: PriceValue | None = None
    cache_write_1h_mtok: PriceValue | None = None
    input_audio_mtok: PriceValue | None = None
    output_audio_mtok: PriceValue | None = None
    cache_audio_read_mtok: PriceValue | None = None
    output_reasoning_mtok: PriceValue | None = None
    requests_kcount: Money | None = None

    def given(self) -> dict[str, Decimal | Tiered]:
        """The price keys this entry sets."""
        return {key: value for key, value in self if value is not None and key in TOKEN_PRICE_KEYS}


TOKEN_PRICE_KEYS = frozenset(TokenPrices.model_fields)


class PricePeriod(TokenPrices):
    """Prices of a book model from ``from`` until the next period's ``from``."""

    from_: Instant | None = Field(None, alias="from")
    service_tiers: dict[Text, TokenPrices] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_input_or_output(self) -> PricePeriod:
        if self.input_mtok is None and self.output_mtok is None and self.requests_kcount is None:
            raise ValueError(
                "a price period needs at least input_mtok, output_mtok or requests_kcount"
            )
        return self


class BookModel(_Strict):
    provider: Text
    model: Text
    aliases: list[Text] = Field(default_factory=list)
    match: Text | None = Field(None, description="Regex matched against the WHOLE model name.")
    prices: list[PricePeriod] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> BookModel:
        if self.match is not None:
            try:
                re.compile(self.match)
            except re.error as exc:
                raise ValueError(f"match: invalid regex: {exc}") from None
        starts = [p.from_ for p in self.prices]
        if any(s is None for s in starts[1:]):
            raise ValueError("only the first price period may omit 'from'")
        dated = [s for s in starts if s is not None]
        if dated != sorted(set(dated)):
            raise ValueError("price periods must be in strictly increasing 'from' order")
        return self


class ImageRule(_Strict):
    provider: str = Field("", max_length=256, description="'' = any provider.")
    model: Text
    size: str = Field("", max_length=64, description="'' = any size.")
    quality: str = Field("", max_length=64, description="'' = any quality.")
    cost_usd: Money = Field(description="Provider cost per image.")
    price_usd: Money | None = Field(None, description="List price per image (default: cost).")
    from_: Instant | None = Field(None, alias="from")


class UnitRule(_Strict):
    type: Text = EventType.UNITS.value
    unit: Text
    # Units of one name priced per model (audio seconds: whisper-1 and a mini model
    # differ); '' = any model. A rule naming the event's model wins over one that does not.
    model: str = Field("", max_length=256, description="The event's model; '' = any.")
    cost_usd: Money = Decimal(0)
    price_usd: Money | None = Field(None, description="List price per unit (default: cost).")
    from_: Instant | None = Field(None, alias="from")


class Override(TokenPrices):
    """A rate-card rule; the first rule whose filters all match wins."""

    model: str = Field("", max_length=256, description="Event model or matched model id; '' any.")
    feature: str = Field("", max_length=256)
    unit: str = Field("", max_length=256)
    markup_pct: Percent | None = None
    image_usd: Money | None = None
    unit_usd: Money | None = None


class RateCard(_Strict):
    markup_pct: Percent = Decimal(0)
    discount_pct: Percent = Decimal(0)
    request_fee_usd: Money = Decimal(0)
    overrides: list[Override] = Field(default_factory=list)

    @model_validator(mode="after")
    def _discount(self) -> RateCard:
        if self.discount_pct > 100:
            raise ValueError("discount_pct must be between 0 and 100")
        return self


class Book(_Strict):
    format: int = Field(FORMAT_VERSION, description="Price-book format version.")
    name: str = Field("", max_length=256)
    models: list[BookModel] = Field(default_factory=list)
    aliases: dict[Text, Text] = Field(default_factory=dict)
    azure_deployments: dict[Text, Text] = Field(default_factory=dict)
    images: list[ImageRule] = Field(default_factory=list)
    units: list[UnitRule] = Field(default_factory=list)
    currencies: dict[Annotated[str, Field(pattern=r"^[A-Z]{3}$")], Money] = Field(
        default_factory=dict
    )
    rate_cards: dict[Text, RateCard] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Book:
        if self.format != FORMAT_VERSION:
            raise ValueError(f"format: only format {FORMAT_VERSION} is supported")
        seen: dict[tuple[str, str], int] = {}
        for index, model in enumerate(self.models):
            key = (model.provider.lower(), model.model.lower())
            if key in seen:
                raise ValueError(
                    f"models[{index}]: duplicate of models[{seen[key]}] ({key[0]}/{key[1]})"
                )
            seen[key] = index
        for name, target in self.aliases.items():
            if name.count("/") != 1 or target.count("/") != 1:
                raise ValueError(f"aliases.{name}: keys and values are 'provider/model'")
        for code, rate in self.currencies.items():
            if rate == 0:
                raise ValueError(f"currencies.{code}: a rate of 0 would make charges free")
        return self


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-") or part in ("flat", "tiered", "[key]"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "price book"


def _message(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    return message.removeprefix("value: ")


def parse_book(data: Any, source: str = "price book") -> Book:
    """Validate parsed YAML; raise ``PriceBookError`` listing every bad entry."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PriceBookError(f"{source}: the top level must be a mapping")
    try:
        return Book.model_validate(data)
    except ValidationError as exc:
        problems: list[str] = []
        for error in exc.errors(include_url=False):
            line = f"{_where(tuple(error['loc']))}: {_message(error)}"
            if line not in problems:
                problems.append(line)
        listing = "\n  ".join(problems)
        raise PriceBookError(f"{source} is invalid:\n  {listing}") from None


def load_book(path: Path) -> tuple[Book, str]:
    """Read and validate a price book file; return it with its content hash."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PriceBookError(f"price_book: cannot read {path}: {exc.strerror}") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise PriceBookError(f"price_book {path}: not valid YAML: {exc}") from None
    book = parse_book(data, f"price_book {path}")
    return book, book_hash(book)


def book_hash(book: Book) -> str:
    """12 hex digits of SHA-256 over the book's canonical content.

    Hashing the validated content, not the file bytes, means a comment or a
    re-indent does not change the version written on every row, while any
    change of a number does.
    """
    content = book.model_dump(mode="json", by_alias=True)
    # A field added later is left out while at its default (which changes no price),
    # so upgrading meterline does not change the version on every row of an old book.
    for rule in content.get("units", ()):
        if rule.get("model") == "":
            del rule["model"]
    canonical = json.dumps(content, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
