"""The ``meterline`` command: one entry point; each module of this package adds its commands."""

from __future__ import annotations

import typer

from meterline.cli import alerts, bench, budgets, dlq, invoice, keys, ops, price, server, store

app = typer.Typer(
    name="meterline",
    help="Usage metering for AI products: CloudEvents in, exact priced meters in ClickHouse out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
for module in (server, store, price, keys, ops, dlq, budgets, alerts, invoice, bench):
    module.register(app)


def main() -> None:
    app()
