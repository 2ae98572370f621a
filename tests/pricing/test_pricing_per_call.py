"""Client-stated prices and failed calls, applied after the book (pricing/per_call.py)."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from core.errors import ConfigError
from core.settings import load_settings
from meterline.runtime import build_price_book
from pricing import BookPriceBook, Priced
from pricing.book import parse_book
from pricing.per_call import PerCall
from schemas.usage import EventType, ImageUsage, TokenUsage, UnitsUsage

NOW = 1_764_000_000_000  # 2025-11-24
PER_TOKEN = {"input_token": "0.00001", "output_token": "0.00003"}


def _book(**per_call: Any) -> BookPriceBook:
    book = BookPriceBook(
        parse_book(
            {
                "images": [{"provider": "openai", "model": "dall-e-3", "cost_usd": "0.04"}],
                "units": [{"unit": "page", "cost_usd": "0.001", "price_usd": "0.01"}],
                "currencies": {"EUR": "1.08"},
                "rate_cards": {"*": {"request_fee_usd": "0.0001"}},
            },
            "test",
        ),
        "test",
    )
    book.allow_client_prices(per_call.get("tenants", ()))
    return book


def _price(book: BookPriceBook, tenant: str, type_: EventType, usage: Any) -> Priced:
    return book.per_call.adjust(tenant, usage, book.price(type_.value, usage, NOW, "acme"))


def _tokens(**fields: Any) -> TokenUsage:
    return TokenUsage.model_validate({"provider": "openai", "model": "gpt-4o", **fields})


def test_an_allowed_tenant_pays_its_stated_token_prices_and_keeps_the_book_cost() -> None:
    book = _book(tenants=["pricer"])
    usage = _tokens(input_tokens=1000, output_tokens=500, unit_prices=PER_TOKEN)
    priced = _price(book, "pricer", EventType.TOKENS, usage)
    # No rate card on a stated price (its request fee included): the client named the charge.
    assert priced == Priced(D("0.0075"), D("0.025"), True, "openai/gpt-4o", "", "client")


def test_another_tenant_is_priced_from_the_book_as_if_no_price_were_stated() -> None:
    book = _book(tenants=["pricer"])
    stated = _tokens(input_tokens=1000, output_tokens=500, unit_prices=PER_TOKEN)
    plain = _tokens(input_tokens=1000, output_tokens=500)
    assert _price(book, "other", EventType.TOKENS, stated) == book.price(
        EventType.TOKENS.value, plain, NOW, "acme"
    )
    assert _price(book, "other", EventType.TOKENS, stated).source == "book"


def test_star_allows_every_tenant_and_nobody_is_allowed_by_default() -> None:
    usage = UnitsUsage.model_validate(
        {"unit": "page", "quantity": "3", "unit_prices": {"unit": "1"}}
    )
    assert _price(_book(tenants=["*"]), "anyone", EventType.UNITS, usage).price_usd == D(3)
    assert _price(_book(), "anyone", EventType.UNITS, usage).source == "book"


def test_stated_unit_and_image_prices_are_converted_to_usd_at_the_book_rate() -> None:
    book = _book(tenants=["pricer"])
    units = UnitsUsage.model_validate(
        {"unit": "page", "quantity": "3", "unit_prices": {"unit": "0.05", "currency": "EUR"}}
    )
    image = ImageUsage.model_validate(
        {"provider": "openai", "model": "dall-e-3", "images": 2, "unit_prices": {"unit": "0.5"}}
    )
    assert _price(book, "pricer", EventType.UNITS, units) == Priced(
        D("0.003"), D("0.162"), True, "unit/page", "", "client"
    )
    assert _price(book, "pricer", EventType.IMAGE, image) == Priced(
        D("0.08"), D("1.0"), True, "openai/dall-e-3", "", "client"
    )


def test_a_stated_currency_without_a_rate_leaves_the_event_unpriced_not_guessed() -> None:
    book = _book(tenants=["pricer"])
    usage = _tokens(input_tokens=10, unit_prices={**PER_TOKEN, "currency": "GBP"})
    priced = _price(book, "pricer", EventType.TOKENS, usage)
    assert (priced.priced, priced.reason, priced.price_usd) == (False, "unknown_currency", D(0))


def test_a_stated_price_for_a_model_the_book_does_not_know_charges_with_zero_cost() -> None:
    book = _book(tenants=["pricer"])
    usage = TokenUsage.model_validate(
        {"provider": "acme", "model": "in-house-1", "input_tokens": 100, "unit_prices": PER_TOKEN}
    )
    assert _price(book, "pricer", EventType.TOKENS, usage) == Priced(
        D(0), D("0.001"), True, "", "", "client"
    )


def test_a_failed_call_with_no_usage_costs_nothing_even_with_a_request_fee() -> None:
    book = _book()
    failed = _tokens(status="error", error_type="RateLimitError", http_status=429)
    assert book.price(EventType.TOKENS.value, failed, NOW, "acme").price_usd == D("0.0001")
    assert _price(book, "t", EventType.TOKENS, failed) == Priced(
        D(0), D(0), True, "openai/gpt-4o", "", "book"
    )


def test_a_failed_call_that_still_reported_usage_is_billed_for_it() -> None:
    book = _book()
    partial = _tokens(status="error", error_type="APIError", input_tokens=1000)
    assert _price(book, "t", EventType.TOKENS, partial) == book.price(
        EventType.TOKENS.value, partial, NOW, "acme"
    )


def test_the_shell_builds_the_book_with_the_allowed_tenants() -> None:
    book = build_price_book(load_settings(client_price_tenants="acme, globex"))
    assert book.per_call.tenants == frozenset({"acme", "globex"})
    assert build_price_book(load_settings()).per_call.tenants == frozenset()


def test_a_bad_tenant_name_in_the_setting_fails_at_start_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"METERLINE_CLIENT_PRICE_TENANTS: .*'Acme!'"):
        load_settings(client_price_tenants="ok,Acme!")


def test_per_call_with_no_allowed_tenant_passes_the_book_price_through_unchanged() -> None:
    priced = Priced(D(1), D(2), True, "m")
    usage = _tokens(input_tokens=1, unit_prices=PER_TOKEN)
    assert PerCall().adjust("t", usage, priced) is priced
