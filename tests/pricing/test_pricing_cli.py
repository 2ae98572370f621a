"""``meterline price`` and ``meterline prices``."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from typer.testing import CliRunner

from meterline.cli import app

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "price-book.yaml")
runner = CliRunner()


def test_price_json_output() -> None:
    result = runner.invoke(
        app,
        [
            "price",
            "--provider",
            "openai",
            "--model",
            "gpt-4o-2024-05-13",
            "--input-tokens",
            "1000",
            "--output-tokens",
            "500",
            "--time",
            "2025-07-01T00:00:00Z",
            "--json",
        ],
        env={"METERLINE_PRICE_BOOK": None},  # the catalog alone
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # $5/M input, $15/M output
    assert report["cost_usd"] == report["price_usd"]
    assert Decimal(report["cost_usd"]) == (1000 * 5 + 500 * 15) / Decimal(1_000_000)
    assert report["matched_model"] == "openai/gpt-4o-2024-05-13"
    assert report["price_book"] == "genai-prices==0.2.3"


def test_price_with_book_and_rate_card() -> None:
    result = runner.invoke(
        app,
        [
            "price",
            "--provider",
            "azure",
            "--model",
            "prod-gpt4o",
            "--input-tokens",
            "1000000",
            "--output-tokens",
            "1000000",
            "--subject",
            "acme",
            "--book",
            EXAMPLE,
            "--time",
            "2025-07-01T00:00:00Z",
            "--json",
            "--round",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # acme: gpt-4o at $3 / $12 agreed, 5 % discount, $0.0001 per request
    assert report["price_usd_rounded"] == "14.25"
    assert report["price_book"].startswith("genai-prices==0.2.3+book.")


def test_unknown_model_exits_2() -> None:
    result = runner.invoke(
        app,
        ["price", "--provider", "openai", "--model", "gpt-99", "--input-tokens", "5"],
        env={"METERLINE_PRICE_BOOK": None},
    )
    assert result.exit_code == 2
    assert "openai/gpt-99 is not priced (unknown_model)" in result.output


def test_prices_validate(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["prices", "validate", EXAMPLE])
    assert ok.exit_code == 0 and "ok:" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("units: [{unit: page, cost_usd: 1.5.0}]\n")
    result = runner.invoke(app, ["prices", "validate", str(bad)])
    assert result.exit_code == 2
    assert "units[0].cost_usd" in result.output


def test_prices_list_and_show() -> None:
    listed = runner.invoke(app, ["prices", "list", "--book", EXAMPLE, "--json"])
    assert listed.exit_code == 0
    names = {entry["name"] for entry in json.loads(listed.stdout)["entries"]}
    assert "selfhosted/llama-3.1-70b-internal" in names and "acme" in names
    shown = runner.invoke(
        app, ["prices", "show", "openai", "gpt-4o-2024-08-06", "--time", "2025-07-01T00:00:00Z"]
    )
    assert shown.exit_code == 0
    assert "openai/gpt-4o" in shown.output and "FastPricer" in shown.output
