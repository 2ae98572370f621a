"""Load the ClickHouse DDL shipped in ``schemas/sql`` and render it for a database."""

from __future__ import annotations

import re
from importlib import resources

_END = re.compile(r";[ \t]*(?:\n|$)")


def statements(database: str, billing_timezone: str = "UTC") -> list[str]:
    """Every DDL statement, in file order, with placeholders filled in.

    The files are idempotent (IF NOT EXISTS / OR REPLACE), so running all of
    them on every start is how migrations are applied.
    """
    out: list[str] = []
    files = sorted(
        (
            f
            for f in resources.files("schemas").joinpath("sql").iterdir()
            if f.name.endswith(".sql")
        ),
        key=lambda f: f.name,
    )
    for file in files:
        text = file.read_text(encoding="utf-8")
        text = text.replace("{database}", database).replace("{billing_timezone}", billing_timezone)
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        # A statement ends with ';' at the end of a line (';' inside COMMENTs is fine).
        out.extend(part.strip() for part in _END.split(body) if part.strip())
    return out
