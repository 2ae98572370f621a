"""``meterline keys``: create API keys and the hashed line for the key file.

The key is printed once and never stored: the key file
(METERLINE_API_KEYS_FILE) holds only its sha256, see ingest/auth.py for why
that is enough for 256-bit random keys.
"""

from __future__ import annotations

import re
from typing import Annotated

import orjson
import typer
from rich.console import Console

console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True)
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def entry_line(
    key_hash: str,
    tenant: str,
    rate_limit: float | None,
    burst: int | None,
    scopes: list[str] | None,
) -> str:
    """One YAML line for the key file (JSON flow style is valid YAML)."""
    if rate_limit is None and burst is None and not scopes:
        return f"{key_hash}: {tenant}"
    spec: dict[str, object] = {"tenant": tenant}
    if rate_limit is not None:
        spec["rate_limit"] = rate_limit
    if burst is not None:
        spec["burst"] = burst
    if scopes:
        spec["scopes"] = sorted(set(scopes))
    return f"{key_hash}: {orjson.dumps(spec).decode()}"


def new_command(
    tenant: Annotated[str, typer.Option(help="Tenant the key sends events for.")],
    rate_limit: Annotated[
        float | None, typer.Option(min=0.001, help="Requests/s for this key (default: none).")
    ] = None,
    burst: Annotated[int | None, typer.Option(min=1, help="Burst for this key.")] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option(help="ingest and/or read (repeat the option); default both."),
    ] = None,
) -> None:
    """Print a new API key and the line to add to the key file."""
    from ingest.auth import SCOPES, hash_key, new_key

    if not _TENANT.match(tenant):
        err.print(f"[red]error:[/red] --tenant must match {_TENANT.pattern}")
        raise typer.Exit(2)
    if scope and not set(scope) <= SCOPES:
        err.print(f"[red]error:[/red] --scope must be one of {', '.join(sorted(SCOPES))}")
        raise typer.Exit(2)
    key = new_key()
    console.print(f"API key (shown once, give it to the client): {key}")
    console.print("add this line to METERLINE_API_KEYS_FILE:")
    console.print(entry_line(hash_key(key), tenant, rate_limit, burst, scope))


def hash_command(key: Annotated[str, typer.Argument(help="An existing API key.")]) -> None:
    """Print the hash of an existing key (to find or revoke its line in the key file)."""
    from ingest.auth import hash_key

    console.print(hash_key(key))


def register(app: typer.Typer) -> None:
    """Add ``meterline keys new|hash`` to the main CLI."""
    keys = typer.Typer(help="API keys for the gateway.", no_args_is_help=True)
    keys.command("new")(new_command)
    keys.command("hash")(hash_command)
    app.add_typer(keys, name="keys")
