"""Price-book validation: exact numbers, clear errors naming the bad entry, stable versions."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from core.errors import ConfigError
from pricing import BookPriceBook, PriceBookError
from pricing._yaml import load_yaml
from pricing.book import book_hash, load_book, parse_book
from pricing.money import parse_money, present

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "price-book.yaml"
GOOD = "models:\n  - {provider: me, model: m, prices: [{input_mtok: 0.1, output_mtok: 0.3}]}\n"


def _error(text: str) -> str:
    with pytest.raises(PriceBookError) as caught:
        parse_book(load_yaml(text))
    return str(caught.value)


def test_example_book_is_valid() -> None:
    book, digest = load_book(EXAMPLE)
    assert len(book.models) >= 3 and book.rate_cards and book.images and book.units
    assert len(digest) == 12


def test_yaml_decimals_are_exact() -> None:
    book = parse_book(load_yaml(GOOD))
    # 0.1 as a binary float is 0.1000000000000000055511151231257827...
    assert book.models[0].prices[0].input_mtok == Decimal("0.1")
    assert str(book.models[0].prices[0].input_mtok) == "0.1"


def test_errors_name_every_bad_entry() -> None:
    message = _error(
        """
models:
  - provider: me
    model: m
    prices:
      - {input_mtok: -1, output_mtok: abc}
      - {from: 2025-01-01, input_mtok: {base: 1, tiers: [{start: 5, price: x}]}}
rate_cards:
  acme: {markup_pct: 20, markup: 1}
currencies: {eur: 1}
"""
    )
    assert "models[0].prices[0].input_mtok: -1 must not be negative" in message
    assert "models[0].prices[0].output_mtok: 'abc' is not a decimal number" in message
    assert "models[0].prices[1].input_mtok.tiers[0].price: 'x' is not a decimal number" in message
    assert "rate_cards.acme.markup: Extra inputs are not permitted" in message
    assert "currencies.eur:" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "models: [{provider: a, model: b, prices: [{input_mtok: 1,"
            " from: '2025-01-01T00:00:00'}]}]",
            "models[0].prices[0].from: '2025-01-01T00:00:00' needs a time zone",
        ),
        (
            "models: [{provider: a, model: b, match: '(', prices: [{input_mtok: 1}]}]",
            "models[0]: match: invalid regex",
        ),
        (
            "models: [{provider: a, model: b, prices: [{input_mtok: 1, from: 2025-02-01},"
            " {input_mtok: 2, from: 2025-01-01}]}]",
            "models[0]: price periods must be in strictly increasing 'from' order",
        ),
        (
            "models: [{provider: a, model: b, prices: [{cache_read_mtok: 1}]}]",
            "models[0].prices[0]: a price period needs at least input_mtok",
        ),
        (
            "models: [{provider: a, model: b, prices: [{input_mtok: .inf}]}]",
            "models[0].prices[0].input_mtok: NaN is not a finite number",
        ),
        (
            "rate_cards: {acme: {discount_pct: 120}}",
            "rate_cards.acme: discount_pct must be between 0 and 100",
        ),
        ("currencies: {EUR: 0}", "currencies.EUR: a rate of 0 would make charges free"),
        ("images: [{model: x}]", "images[0].cost_usd: Field required"),
        ("format: 2", "format: only format 1 is supported"),
        ("- a list", "the top level must be a mapping"),
    ],
)
def test_specific_errors(text: str, expected: str) -> None:
    assert expected in _error(text)


def test_duplicate_keys_and_models_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "book.yaml"
    path.write_text("rate_cards:\n  acme: {markup_pct: 1}\n  acme: {markup_pct: 2}\n")
    with pytest.raises(PriceBookError, match="duplicate key 'acme'"):
        load_book(path)
    assert "duplicate of models[0]" in _error(
        GOOD + "  - {provider: ME, model: M, prices: [{input_mtok: 1}]}\n"
    )


def test_book_error_is_a_config_error_and_stops_the_book(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("units: [{unit: page, cost_usd: -0.01}]\n")
    with pytest.raises(ConfigError, match=r"units\[0\].cost_usd: -0.01 must not be negative"):
        BookPriceBook.from_file(path)
    with pytest.raises(PriceBookError, match="cannot read"):
        load_book(tmp_path / "missing.yaml")


def test_version_ignores_comments_but_not_numbers() -> None:
    base = book_hash(parse_book(load_yaml(GOOD)))
    assert book_hash(parse_book(load_yaml("# a comment\n" + GOOD))) == base
    assert book_hash(parse_book(load_yaml(GOOD.replace("0.3", "0.30001")))) != base


def test_parse_money_refuses_floats_and_booleans() -> None:
    with pytest.raises(ValueError, match="must be written as a decimal"):
        parse_money(0.1, "x")
    with pytest.raises(ValueError, match="must be written as a decimal"):
        parse_money(True, "x")
    assert parse_money("1_000.50", "x") == Decimal("1000.50")
    with pytest.raises(ValueError, match="more than 24 significant digits"):
        parse_money("1." + "1" * 30, "x")


def test_presentation_rounding_is_half_even() -> None:
    assert present(Decimal("0.125")) == Decimal("0.12")
    assert present(Decimal("0.135")) == Decimal("0.14")
    assert present(Decimal("2.5"), 0) == Decimal("2")
    assert present(Decimal("0.0000125"), 6) == Decimal("0.000012")
