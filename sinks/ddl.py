"""Load the ClickHouse DDL shipped in ``schemas/sql`` and render it for a database.

Each file is one migration. Its version is the number its name starts with
(``010_usage_events.sql`` is version 10). A file whose first line is
``-- meterline: repeatable`` holds only ``CREATE OR REPLACE`` statements that
depend on settings (the billing timezone): it is applied again whenever its
rendered text changes. Every other file is versioned: applied once, never
edited afterwards (``sinks.migrations`` refuses a changed one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from core.errors import ConfigError

_END = re.compile(r";[ \t]*(?:\n|$)")
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
REPEATABLE = "-- meterline: repeatable"


@dataclass(frozen=True)
class DdlFile:
    """One migration file, its placeholders filled in."""

    version: int
    name: str
    repeatable: bool
    statements: tuple[str, ...]


def files(database: str, billing_timezone: str = "UTC") -> list[DdlFile]:
    """Every migration file, in version order, rendered for ``database``."""
    out: list[DdlFile] = []
    found = sorted(
        (
            f
            for f in resources.files("schemas").joinpath("sql").iterdir()
            if f.name.endswith(".sql")
        ),
        key=lambda f: f.name,
    )
    seen: dict[int, str] = {}
    for file in found:
        match = _NAME.match(file.name)
        if match is None:
            # A file that sorts oddly would run out of order on some machines.
            raise ConfigError(f"schemas/sql/{file.name}: migration files are named NNN_name.sql")
        version = int(match.group(1))
        if version in seen:
            raise ConfigError(
                f"schemas/sql/{file.name} and {seen[version]} share version {version}"
            )
        seen[version] = file.name
        text = file.read_text(encoding="utf-8")
        out.append(
            DdlFile(
                version=version,
                name=file.name,
                repeatable=text.startswith(REPEATABLE),
                statements=tuple(split(render(text, database, billing_timezone))),
            )
        )
    return out


def render(text: str, database: str, billing_timezone: str) -> str:
    return text.replace("{database}", database).replace("{billing_timezone}", billing_timezone)


def split(text: str) -> list[str]:
    """The statements of one file, comment lines dropped."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    # A statement ends with ';' at the end of a line (';' inside COMMENTs is fine).
    return [part.strip() for part in _END.split(body) if part.strip()]


def statements(database: str, billing_timezone: str = "UTC") -> list[str]:
    """Every DDL statement, in file order, with placeholders filled in."""
    return [s for f in files(database, billing_timezone) for s in f.statements]
