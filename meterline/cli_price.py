"""``meterline price`` and ``meterline prices``: inspect and try the price book."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the pricing commands to the main CLI."""
