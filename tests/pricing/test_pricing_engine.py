"""Engine behaviour: effective dating, rate cards, matching order, images, units, charges."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal as D
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel

from pricing import BookPriceBook, CatalogPriceBook, Priced
from pricing._yaml import load_yaml
from pricing.book import parse_book
from schemas.usage import ChargeUsage, EventType, ImageUsage, TokenUsage, UnitsUsage

_U = TypeVar("_U", bound=BaseModel)


def _make(cls: type[_U], **fields: Any) -> _U:
    """Build usage data through validation (also keeps mypy happy without the pydantic plugin)."""
    return cls.model_validate(fields)


M = D(1_000_000)
JUNE_1_2025 = 1_748_736_000_000  # 2025-06-01T00:00:00Z
JULY_2025 = 1_751_328_000_000
TOK = EventType.TOKENS.value

BOOK_YAML = """
models:
  - provider: selfhosted
    model: llama-70b
    aliases: [l70]
    match: 'llama-70b-(prod|canary)-v\\d+'
    prices:
      - input_mtok: 0.20
        output_mtok: 0.60
      - from: 2025-06-01T00:00:00Z
        input_mtok: 0.15
        output_mtok: 0.45
        service_tiers:
          batch: {input_mtok: 0.075}
  - provider: openai
    model: gpt-4o-mini
    prices:
      - from: 2025-06-01T00:00:00Z
        input_mtok: 0.12
        output_mtok: 0.48
aliases:
  openai/chat-default: openai/gpt-4o
azure_deployments:
  prod-east: gpt-4o
images:
  - {provider: openai, model: gpt-image-1, size: 1024x1024, quality: high, cost_usd: 0.167}
  - {provider: openai, model: gpt-image-1, cost_usd: 0.04}
  - {provider: openai, model: gpt-image-1, size: 1024x1024, quality: high, cost_usd: 0.19,
     from: 2025-06-01T00:00:00Z}
units:
  - {unit: page, cost_usd: 0.0015, price_usd: 0.01}
  - {unit: page, cost_usd: 0.002, price_usd: 0.012, from: 2025-06-01T00:00:00Z}
currencies:
  EUR: "1.08"
rate_cards:
  "*": {markup_pct: 20}
  acme:
    markup_pct: 10
    discount_pct: 5
    request_fee_usd: 0.0001
    overrides:
      - {model: gpt-4o, feature: support, input_mtok: 2, output_mtok: 8}
      - {model: gpt-4o, input_mtok: 3}
      - {feature: cheap, markup_pct: 0}
      - {unit: page, unit_usd: 0.008}
      - {model: gpt-image-1, image_usd: 0.15}
  plain: {}
"""


@pytest.fixture(scope="module")
def book() -> BookPriceBook:
    return BookPriceBook(parse_book(load_yaml(BOOK_YAML)), "test")


@pytest.fixture
def tokens() -> Callable[..., TokenUsage]:
    def make(provider: str = "openai", model: str = "gpt-4o", **fields: Any) -> TokenUsage:
        return _make(TokenUsage, provider=provider, model=model, **fields)

    return make


# --- effective dating -----------------------------------------------------------------------


def test_book_price_changes_exactly_at_the_boundary_instant(
    book: BookPriceBook, tokens: Any
) -> None:
    usage = tokens("selfhosted", "llama-70b", input_tokens=1_000_000, output_tokens=1_000_000)
    before = book.price(TOK, usage, JUNE_1_2025 - 1, "plain")
    at = book.price(TOK, usage, JUNE_1_2025, "plain")
    assert before.cost_usd == D("0.20") + D("0.60")
    assert at.cost_usd == D("0.15") + D("0.45")
    # Replaying an old event after a newer one still gets the old price (segments move back).
    assert book.price(TOK, usage, JUNE_1_2025 - 86_400_000, "plain").cost_usd == D("0.80")


def test_catalog_price_change_at_utc_midnight(tokens: Any) -> None:
    # genai-prices dates mistral-small-latest's change to 2026-03-16 (UTC):
    # $0.10 / $0.30 -> $0.15 / $0.60 per million tokens.
    book = CatalogPriceBook()
    usage = tokens(
        "mistral", "mistral-small-latest", input_tokens=1_000_000, output_tokens=1_000_000
    )
    midnight = 1_773_619_200_000  # 2026-03-16T00:00:00Z
    assert book.price(TOK, usage, midnight - 1).cost_usd == D("0.10") + D("0.30")
    assert book.price(TOK, usage, midnight).cost_usd == D("0.15") + D("0.60")


def test_book_override_applies_from_its_date_and_catalog_before(
    book: BookPriceBook, tokens: Any
) -> None:
    usage = tokens("openai", "gpt-4o-mini", input_tokens=1_000_000, output_tokens=1_000_000)
    catalog = book.price(TOK, usage, JUNE_1_2025 - 1, "plain")
    assert catalog.cost_usd == D("0.15") + D("0.60")  # OpenAI list price
    assert catalog.matched_model == "openai/gpt-4o-mini"
    override = book.price(TOK, usage, JUNE_1_2025, "plain")
    assert override.cost_usd == D("0.12") + D("0.48")


def test_service_tier_from_book_and_catalog(book: BookPriceBook, tokens: Any) -> None:
    usage = tokens(
        "selfhosted",
        "llama-70b",
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        service_tier="batch",
    )
    assert book.price(TOK, usage, JULY_2025, "plain").cost_usd == D("0.075") + D("0.45")
    # OpenAI Batch API: 50% of gpt-4o's $2.50 / $10. genai-prices 0.2.3 dates its batch
    # variants from 2026-10-14 (when they entered the catalog), so price an event after that.
    usage = tokens(
        "openai", "gpt-4o", input_tokens=1_000_000, output_tokens=1_000_000, service_tier="batch"
    )
    nov_2026 = 1793491200000  # 2026-11-01T00:00:00Z
    assert CatalogPriceBook().price(TOK, usage, nov_2026).cost_usd == D("1.25") + D(5)
    standard = usage.model_copy(update={"service_tier": ""})
    assert CatalogPriceBook().price(TOK, standard, nov_2026).cost_usd == D("2.50") + D(10)


# --- rate cards -----------------------------------------------------------------------------


def test_default_card_markup(book: BookPriceBook, tokens: Any) -> None:
    usage = tokens(input_tokens=1_000_000, output_tokens=1_000_000)
    priced = book.price(TOK, usage, JULY_2025, "someone-without-a-card")
    assert priced.cost_usd == D("12.50")
    assert priced.price_usd == D("12.50") * D("1.20")


def test_empty_card_is_list_price(book: BookPriceBook, tokens: Any) -> None:
    priced = book.price(TOK, tokens(input_tokens=1000), JULY_2025, "plain")
    assert priced.price_usd == priced.cost_usd == 1000 * D("2.50") / M


def test_override_by_model_and_feature(book: BookPriceBook, tokens: Any) -> None:
    usage = tokens(input_tokens=1_000_000, output_tokens=1_000_000, feature="support")
    priced = book.price(TOK, usage, JULY_2025, "acme")
    assert priced.cost_usd == D("12.50")
    assert priced.price_usd == (D(2) + D(8)) * D("0.95") + D("0.0001")


def test_partial_override_marks_up_the_rest(book: BookPriceBook, tokens: Any) -> None:
    # input at the agreed $3; output and cache reads at list price + 10 % markup.
    usage = tokens(input_tokens=2_000_000, cache_read_tokens=1_000_000, output_tokens=1_000_000)
    priced = book.price(TOK, usage, JULY_2025, "acme")
    expected = (D(3) + D("1.25") * D("1.10") + D(10) * D("1.10")) * D("0.95") + D("0.0001")
    assert priced.price_usd == expected


def test_override_names_the_base_model_of_an_azure_deployment(
    book: BookPriceBook, tokens: Any
) -> None:
    usage = tokens("azure", "prod-east", input_tokens=1_000_000)
    priced = book.price(TOK, usage, JULY_2025, "acme")
    assert priced.matched_model == "azure/gpt-4o"
    assert priced.price_usd == D(3) * D("0.95") + D("0.0001")


def test_feature_markup_override(book: BookPriceBook, tokens: Any) -> None:
    usage = tokens("openai", "gpt-4.1", input_tokens=1_000_000, feature="cheap")
    priced = book.price(TOK, usage, JULY_2025, "acme")
    assert priced.price_usd == D(2) * D("0.95") + D("0.0001")  # markup 0 for this feature


# --- matching -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "label"),
    [
        ("selfhosted", "llama-70b", "selfhosted/llama-70b"),
        ("selfhosted", "L70", "selfhosted/llama-70b"),  # alias, case-insensitive
        ("selfhosted", "llama-70b-canary-v3", "selfhosted/llama-70b"),  # anchored regex
        ("openai", "chat-default", "openai/gpt-4o"),  # book alias to a catalog model
        ("azure", "prod-east", "azure/gpt-4o"),  # Azure deployment
        (
            "aws",
            "eu.anthropic.claude-3-haiku-20240307-v1:0",
            "aws/regional.anthropic.claude-3-haiku-20240307-v1:0",
        ),
        ("google", "claude-3-5-sonnet-v2@20241022", "google/claude-3-5-sonnet"),
    ],
)
def test_matching(book: BookPriceBook, tokens: Any, provider: str, model: str, label: str) -> None:
    priced = book.price(TOK, tokens(provider, model, input_tokens=10), JULY_2025, "plain")
    assert priced.priced
    assert priced.matched_model == label


def test_regex_is_anchored(book: BookPriceBook, tokens: Any) -> None:
    usage = tokens("selfhosted", "xllama-70b-prod-v1-extra", input_tokens=10)
    assert book.price(TOK, usage, JULY_2025, "plain").reason == "unknown_model"


def test_exact_wins_over_the_undated_name(tokens: Any) -> None:
    book = CatalogPriceBook()
    dated = book.price(TOK, tokens(model="gpt-4o-2024-05-13", input_tokens=1_000_000), JULY_2025)
    plain = book.price(TOK, tokens(model="gpt-4o", input_tokens=1_000_000), JULY_2025)
    assert (dated.cost_usd, plain.cost_usd) == (D(5), D("2.50"))


def test_unknown_model_is_unpriced_not_guessed(book: BookPriceBook, tokens: Any) -> None:
    for _ in range(2):  # the second time comes from the miss cache
        priced = book.price(
            TOK, tokens("openai", "gpt-99-turbo", input_tokens=10), JULY_2025, "acme"
        )
        assert priced == Priced(D(0), D(0), False, "", "unknown_model")
    unknown_provider = book.price(TOK, tokens("nobody", "gpt-4o", input_tokens=10), JULY_2025)
    assert not unknown_provider.priced


def test_self_hosted_model_before_its_first_period_is_unpriced(tokens: Any) -> None:
    book = BookPriceBook(
        parse_book(
            {
                "models": [
                    {
                        "provider": "me",
                        "model": "m1",
                        "prices": [{"from": "2025-06-01T00:00:00Z", "input_mtok": 1}],
                    }
                ]
            }
        ),
        "x",
    )
    usage = tokens("me", "m1", input_tokens=10)
    assert book.price(TOK, usage, JUNE_1_2025 - 1).reason == "no_price_at_time"
    assert book.price(TOK, usage, JUNE_1_2025).cost_usd == 10 / M


# --- images, units, charges -----------------------------------------------------------------


def test_images_by_model_size_quality_and_date(book: BookPriceBook) -> None:
    high = _make(
        ImageUsage,
        provider="openai",
        model="gpt-image-1",
        images=3,
        size="1024x1024",
        quality="high",
    )
    assert book.price(EventType.IMAGE, high, JUNE_1_2025 - 1, "plain").cost_usd == 3 * D("0.167")
    assert book.price(EventType.IMAGE, high, JUNE_1_2025, "plain").cost_usd == 3 * D("0.19")
    other = _make(
        ImageUsage,
        provider="openai",
        model="gpt-image-1",
        images=1,
        size="1536x1024",
        quality="low",
    )
    assert book.price(EventType.IMAGE, other, JULY_2025, "plain").cost_usd == D("0.04")
    acme = book.price(EventType.IMAGE, high, JULY_2025, "acme")
    assert acme.price_usd == 3 * D("0.15") * D("0.95") + D("0.0001")
    unknown = _make(ImageUsage, provider="openai", model="dall-e-9", images=1)
    assert book.price(EventType.IMAGE, unknown, JULY_2025, "plain").reason == "no_rule"


def test_units_cost_list_price_and_card(book: BookPriceBook) -> None:
    pages = _make(UnitsUsage, unit="page", quantity=D(10))
    plain = book.price(EventType.UNITS, pages, JULY_2025, "plain")
    assert (plain.cost_usd, plain.price_usd) == (10 * D("0.002"), 10 * D("0.012"))
    old = book.price(EventType.UNITS, pages, JUNE_1_2025 - 1, "plain")
    assert (old.cost_usd, old.price_usd) == (10 * D("0.0015"), 10 * D("0.01"))
    assert book.price(EventType.UNITS, pages, JULY_2025, "acme").price_usd == D("0.08") * D(
        "0.95"
    ) + D("0.0001")
    seconds = _make(UnitsUsage, unit="second", quantity=D(3))
    assert book.price(EventType.UNITS, seconds, JULY_2025, "plain").reason == "no_rule"


def test_instant_charges(book: BookPriceBook) -> None:
    usd = book.price(
        EventType.CHARGE, _make(ChargeUsage, amount=D("12.345678901234")), JULY_2025, "acme"
    )
    assert (usd.cost_usd, usd.price_usd, usd.priced) == (D(0), D("12.345678901234"), True)
    eur = book.price(
        EventType.CHARGE, _make(ChargeUsage, amount=D("10"), currency="EUR"), JULY_2025, "acme"
    )
    assert eur.price_usd == D("10.80")
    gbp = book.price(
        EventType.CHARGE, _make(ChargeUsage, amount=D("10"), currency="GBP"), JULY_2025, "acme"
    )
    assert gbp.reason == "unknown_currency" and not gbp.priced
    assert (
        not CatalogPriceBook()
        .price(EventType.CHARGE, _make(ChargeUsage, amount=D(1), currency="EUR"), 0)
        .priced
    )


def test_custom_event_types_stay_unpriced(book: BookPriceBook) -> None:
    assert not book.price("com.example.custom", None, JULY_2025, "acme").priced


def test_version_names_catalog_and_book(book: BookPriceBook) -> None:
    assert book.version.startswith("genai-prices==0.2.3+book.")
    assert CatalogPriceBook().version == "genai-prices==0.2.3"
