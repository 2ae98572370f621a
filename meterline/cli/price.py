"""``meterline price`` and ``meterline prices``: inspect and try the price book.

Exit codes: 0 priced / valid, 2 unknown model, no rule, or an invalid book.
Amounts are printed exactly as stored; ``--round`` adds the half-even rounding
used on invoices (docs/pricing.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from core.errors import MeterlineError
from meterline.cli._shared import fail as _fail
from meterline.cli._shared import settings as _settings
from schemas.times import parse_ms, to_ms

if TYPE_CHECKING:
    from pricing.engine import BookPriceBook
    from schemas.usage import UsageData

out = Console()

BookPath = Annotated[
    Path | None,
    typer.Option("--book", help="Local price book (YAML); default: METERLINE_PRICE_BOOK."),
]
Tokens = Annotated[int, typer.Option(min=0)]


def _book_path(book: Path | None) -> Path | None:
    if book is not None:
        return book
    return _settings().price_book


def _price_book(book: Path | None) -> BookPriceBook:
    from pricing import BookPriceBook, CatalogPriceBook

    path = _book_path(book)
    try:
        return CatalogPriceBook() if path is None else BookPriceBook.from_file(path)
    except MeterlineError as exc:
        raise _fail(str(exc)) from None


def _time_ms(value: str | None) -> int:
    if value is None:
        return to_ms(datetime.now(UTC))
    try:
        return parse_ms(value)
    except ValueError:
        raise _fail(
            f"--time {value!r} is not an RFC 3339 time such as 2025-01-01T00:00:00Z"
        ) from None


def _usage(event_type: str, fields: dict[str, Any]) -> UsageData:
    from pydantic import ValidationError

    from schemas.usage import USAGE_MODELS

    try:
        return USAGE_MODELS[event_type].model_validate(fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "usage"
        raise _fail(f"{where}: {first['msg']}") from None


def price(
    provider: Annotated[str, typer.Option(help="Provider id: openai, anthropic, google...")] = "",
    model: Annotated[str, typer.Option(help="Model name as the provider reports it.")] = "",
    input_tokens: Annotated[
        int, typer.Option(min=0, help="ALL prompt tokens, cached ones included.")
    ] = 0,
    output_tokens: Annotated[
        int, typer.Option(min=0, help="ALL generated tokens, reasoning included.")
    ] = 0,
    cache_read_tokens: Tokens = 0,
    cache_write_tokens: Annotated[int, typer.Option(min=0, help="5-minute TTL writes.")] = 0,
    cache_write_1h_tokens: Tokens = 0,
    reasoning_tokens: Tokens = 0,
    input_audio_tokens: Tokens = 0,
    output_audio_tokens: Tokens = 0,
    service_tier: Annotated[str, typer.Option(help="batch, flex, priority...")] = "",
    feature: str = "",
    images: Annotated[int, typer.Option(min=0, help="Price an image event.")] = 0,
    image_size: str = "",
    quality: str = "",
    units: Annotated[str | None, typer.Option(help="Price a custom-unit event: quantity.")] = None,
    unit: str = "",
    type_: Annotated[str | None, typer.Option("--type", help="Event type for --units.")] = None,
    currency: Annotated[str | None, typer.Option(help="Price an instant charge.")] = None,
    amount: str = "0",
    time: Annotated[str | None, typer.Option(help="When it happened (RFC 3339).")] = None,
    subject: Annotated[str, typer.Option(help="Customer, for the rate card.")] = "",
    book: BookPath = None,
    round_: Annotated[
        int | None, typer.Option("--round", help="Also show amounts rounded half-even.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Price one event and show cost, customer price, matched model and book version."""
    from pricing.money import present
    from schemas.usage import EventType

    common = {"feature": feature}
    if currency is not None:
        event_type = EventType.CHARGE.value
        usage = _usage(event_type, {**common, "amount": amount, "currency": currency})
    elif images:
        event_type = EventType.IMAGE.value
        fields = {"provider": provider, "model": model, "images": images}
        usage = _usage(event_type, {**common, **fields, "size": image_size, "quality": quality})
    elif units is not None:
        event_type = type_ or EventType.UNITS.value
        fields = {"unit": unit, "quantity": units, "provider": provider, "model": model}
        usage = _usage(EventType.UNITS.value, {**common, **fields})
    else:
        if not provider or not model:
            raise _fail("--provider and --model are required to price tokens")
        event_type = EventType.TOKENS.value
        usage = _usage(
            event_type,
            {
                **common,
                "provider": provider,
                "model": model,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_read_tokens": cache_read_tokens,
                "cache_write_tokens": cache_write_tokens,
                "cache_write_1h_tokens": cache_write_1h_tokens,
                "reasoning_tokens": reasoning_tokens,
                "input_audio_tokens": input_audio_tokens,
                "output_audio_tokens": output_audio_tokens,
                "service_tier": service_tier,
            },
        )
    book_obj = _price_book(book)
    result = book_obj.price(event_type, usage, _time_ms(time), subject)
    if not result.priced:
        what = f"{provider}/{model}" if provider or model else event_type
        raise _fail(f"{what} is not priced ({result.reason}); price book {book_obj.version}")
    report: dict[str, Any] = {
        "cost_usd": str(result.cost_usd),
        "price_usd": str(result.price_usd),
        "matched_model": result.matched_model,
        "price_book": book_obj.version,
    }
    if round_ is not None:
        report["cost_usd_rounded"] = str(present(result.cost_usd, round_))
        report["price_usd_rounded"] = str(present(result.price_usd, round_))
    if as_json:
        typer.echo(orjson.dumps(report).decode())
        return
    for key, value in report.items():
        out.print(f"{key:18} {value}", highlight=False)


def validate(
    path: Annotated[
        Path | None, typer.Argument(help="Book file; default METERLINE_PRICE_BOOK.")
    ] = None,
) -> None:
    """Check a price book; print its version or every bad entry (exit 2)."""
    path = _book_path(path)
    if path is None:
        raise _fail("no price book given (argument or METERLINE_PRICE_BOOK)")
    book_obj = _price_book(path)
    b = book_obj.book
    out.print(
        f"ok: {path} version {book_obj.version}: {len(b.models)} models, {len(b.images)} "
        f"image rules, {len(b.units)} unit rules, {len(b.rate_cards)} rate cards",
        highlight=False,
    )


def list_(
    book: BookPath = None,
    catalog: Annotated[
        str | None, typer.Option("--catalog", help="List this catalog provider's models too.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List the book's models, image and unit rules, rate cards (and catalog models)."""
    book_obj = _price_book(book)
    b = book_obj.book
    rows: list[dict[str, str]] = []
    for m in b.models:
        rows.append({"kind": "model", "name": f"{m.provider}/{m.model}", "detail": _periods(m)})
    for i in b.images:
        detail = f"size={i.size or '*'} quality={i.quality or '*'} cost={i.cost_usd}/image"
        rows.append({"kind": "image", "name": f"{i.provider or '*'}/{i.model}", "detail": detail})
    for u in b.units:
        price = u.price_usd if u.price_usd is not None else u.cost_usd
        detail = f"cost={u.cost_usd} price={price} per unit"
        rows.append({"kind": "unit", "name": f"{u.type}:{u.unit}", "detail": detail})
    for name, card in b.rate_cards.items():
        detail = (
            f"markup={card.markup_pct}% discount={card.discount_pct}% "
            f"fee={card.request_fee_usd} overrides={len(card.overrides)}"
        )
        rows.append({"kind": "rate card", "name": name, "detail": detail})
    if catalog is not None:
        rows += _catalog_rows(catalog)
    if as_json:
        typer.echo(orjson.dumps({"price_book": book_obj.version, "entries": rows}).decode())
        return
    table = Table(title=f"price book {book_obj.version}")
    for column in ("kind", "name", "detail"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["kind"], row["name"], row["detail"])
    out.print(table)


def show(
    provider: Annotated[str, typer.Argument()],
    model: Annotated[str, typer.Argument()],
    service_tier: str = "",
    time: Annotated[str | None, typer.Option(help="When (RFC 3339); default now.")] = None,
    book: BookPath = None,
) -> None:
    """Show how a model name matches and its prices in force at a time."""
    book_obj = _price_book(book)
    found = book_obj.explain(provider, model, service_tier, _time_ms(time))
    if found is None:
        raise _fail(f"{provider}/{model} matches no price (unknown model)")
    for key, value in found.items():
        out.print(f"{key:14} {value}", highlight=False)


def _periods(model: Any) -> str:
    parts = []
    for period in model.prices:
        since = "always" if period.from_ is None else _iso(period.from_)
        keys = ", ".join(f"{k}={_short(v)}" for k, v in period.given().items())
        parts.append(f"from {since}: {keys}")
    return "; ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    return f"{value.base} (+tiers)"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _catalog_rows(provider_id: str) -> list[dict[str, str]]:
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    provider = data_snapshot.find_provider_by_id(snapshot.providers, provider_id)
    if provider is None:
        raise _fail(f"--catalog {provider_id!r}: the catalog has no such provider")
    now = datetime.now(UTC)
    return [
        {"kind": "catalog", "name": f"{provider.id}/{info.id}", "detail": str(info.get_prices(now))}
        for info in provider.models
    ]


def register(app: typer.Typer) -> None:
    """Add ``meterline price`` and ``meterline prices ...`` to the main CLI."""
    prices = typer.Typer(help="Inspect and validate the price book.", no_args_is_help=True)
    app.add_typer(prices, name="prices")
    app.command("price")(price)
    prices.command("validate")(validate)
    prices.command("list")(list_)
    prices.command("show")(show)
