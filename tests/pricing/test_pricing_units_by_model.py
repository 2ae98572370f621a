"""Units rules per model (audio seconds priced per transcription model)."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

from pricing import BookPriceBook
from pricing.book import load_book, parse_book
from schemas.usage import EventType, UnitsUsage

NOW = 1_764_000_000_000
AUDIO = {
    "units": [
        {"unit": "audio_second", "cost_usd": "0.0002"},
        {"unit": "audio_second", "model": "whisper-1", "cost_usd": "0.0001"},
        {"unit": "audio_second", "model": "gpt-4o-mini-transcribe", "cost_usd": "0.00005"},
    ]
}


def _cost(book: BookPriceBook, model: str, seconds: str) -> D:
    usage = UnitsUsage.model_validate(
        {"unit": "audio_second", "quantity": seconds, "provider": "openai", "model": model}
    )
    return book.price(EventType.UNITS.value, usage, NOW).cost_usd


def test_a_rule_naming_the_model_wins_over_the_rule_for_any_model() -> None:
    book = BookPriceBook(parse_book(AUDIO, "test"), "test")
    # $0.006 a minute is $0.0001 a second, exactly: the quantity stays exact too.
    assert _cost(book, "whisper-1", "61.5") == D("0.00615")
    assert _cost(book, "WHISPER-1", "60") == D("0.006")
    assert _cost(book, "gpt-4o-mini-transcribe", "60") == D("0.003")
    assert _cost(book, "some-other-model", "60") == D("0.012")


def test_books_without_model_rules_keep_their_version_hash() -> None:
    # The example book's version before units rules had a model: unchanged.
    assert load_book(Path("examples/price-book.yaml"))[1] == "8851e642ee22"
