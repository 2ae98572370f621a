"""What every ``meterline`` command shares: the consoles, the settings, the error exit.

One place, so every command reports a bad setting or a missing extra the same way
(exit 2, the message naming the setting) and nothing re-implements it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from core.errors import MeterlineError

if TYPE_CHECKING:
    from core.settings import Settings

console = Console()
err = Console(stderr=True)

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data folder (env METERLINE_DATA_DIR).")
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v")]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr; the caller raises the returned Exit."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(code)


def missing_extras(exc: ImportError) -> typer.Exit:
    return fail(
        f"{exc.name} is not installed: this command needs the server extras: "
        "pip install 'meterline[server]'"
    )


def settings(**overrides: Any) -> Settings:
    """The one validated settings object (env METERLINE_* plus the command's options)."""
    try:
        from core.settings import load_settings
    except ImportError as exc:
        raise missing_extras(exc) from None
    try:
        return load_settings(**overrides)
    except MeterlineError as exc:
        raise fail(str(exc)) from None


def serve_function() -> Callable[..., None]:
    """The server side, or a clear message when only the SDK is installed."""
    try:
        from meterline.serve import serve
    except ImportError as exc:
        raise missing_extras(exc) from None
    return serve


@contextmanager
def exit_on_error(code: int = 1) -> Iterator[None]:
    """A ``MeterlineError`` (our own, expected failures) becomes ``error: ...`` and an exit code."""
    try:
        yield
    except MeterlineError as exc:
        raise fail(str(exc), code) from None


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
