"""``meterline verify`` and ``meterline replay``: checking and re-billing."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the operations commands to the main CLI."""
