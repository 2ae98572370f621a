"""``meterline dlq``: see what was dead-lettered and why, and re-drive it after a fix.

Reads the dead-letter topic (``<topic>.dlq``) of the configured log directly: the
embedded log is a SQLite file that readers may open beside the running instance,
and Kafka is read without a consumer group (nothing is committed or moved).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.table import Table

from meterline.cli._shared import console, exit_on_error, fail
from meterline.cli._shared import settings as settings_for

if TYPE_CHECKING:
    from processor.dead_letters import Letter

dlq = typer.Typer(help="Dead letters: list, count, show and re-drive.", no_args_is_help=True)

Reason = Annotated[str | None, typer.Option(help="Only letters with this reason code.")]
Tenant = Annotated[str | None, typer.Option(help="Only letters of this tenant.")]


def _letters(reason: str | None, tenant: str | None, at: list[str] | None = None) -> list[Letter]:
    from meterline import runtime
    from processor.dead_letters import read_letters

    settings = settings_for()
    wanted = set(at or ())

    def keep(letter: Letter) -> bool:
        return (
            (reason is None or letter.reason == reason)
            and (tenant is None or letter.tenant == tenant)
            and (not wanted or letter.position in wanted)
        )

    with exit_on_error():
        admin = runtime.build_admin(settings)
        try:
            return list(read_letters(admin, runtime.dlq_topic(settings), keep))
        finally:
            admin.close()


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def list_(
    reason: Reason = None,
    tenant: Tenant = None,
    limit: Annotated[int, typer.Option(min=1, help="Show the newest N.")] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line, with detail and value.")
    ] = False,
) -> None:
    """The newest dead letters: where, when, why, and from which record of the events topic."""
    letters = _letters(reason, tenant)[-limit:]
    if as_json:
        for letter in letters:
            full = {
                **_summary(letter),
                "detail": letter.detail,
                "value": letter.record.value.decode("utf-8", "replace"),
            }
            typer.echo(orjson.dumps(full).decode())
        return
    table = Table(title=f"{len(letters)} dead letters (newest last)")
    for column in ("at", "dead-lettered", "reason", "tenant", "from", "key", "detail"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        summary = _summary(letter)
        table.add_row(
            *(str(summary[c]) for c in ("at", "time", "reason", "tenant", "from", "key")),
            letter.detail[:120],
        )
    console.print(table)


def stats(reason: Reason = None, tenant: Tenant = None) -> None:
    """How many dead letters per reason (and tenant)."""
    counts = Counter((letter.reason, letter.tenant) for letter in _letters(reason, tenant))
    table = Table(title="dead letters by reason")
    for column in ("reason", "tenant", "letters"):
        table.add_column(column, justify="right" if column == "letters" else "left")
    for (why, who), count in sorted(counts.items()):
        table.add_row(why, who, str(count))
    console.print(table)


def show(
    position: Annotated[str, typer.Argument(help="partition:offset in the DLQ topic")],
) -> None:
    """One letter in full: every header and the record's value."""
    letters = _letters(None, None, [position])
    if not letters:
        raise fail(f"no dead letter at {position} (see `meterline dlq list`)", 1)
    record = letters[0].record
    out = {
        **_summary(letters[0]),
        "detail": letters[0].detail,
        "headers": {k: v.decode("utf-8", "replace") for k, v in record.headers},
        "value": record.value.decode("utf-8", "replace"),
    }
    typer.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


def redrive(
    reason: Reason = None,
    tenant: Tenant = None,
    at: Annotated[
        list[str] | None, typer.Option("--at", help="Only the letter at partition:offset.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every letter (no filter given).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be sent.")] = False,
) -> None:
    """Publish dead letters back to the events topic, after the cause is fixed.

    Safe to repeat: what was stored meanwhile is dropped by the dedupe; what is
    still invalid is dead-lettered again with its reason.
    """
    if reason is None and tenant is None and not at and not all_:
        raise fail("choose what to re-drive: --reason, --tenant, --at, or --all")
    letters = _letters(reason, tenant, at)
    if dry_run or not letters:
        console.print(f"{len(letters)} dead letters would be re-driven", highlight=False)
        return
    from meterline import runtime
    from processor.dead_letters import redrive_message

    settings = settings_for()
    with exit_on_error():
        producer = runtime.build_producer(settings)
        try:
            producer.publish_sync([redrive_message(letter) for letter in letters])
        finally:
            producer.close()
    console.print(
        f"re-drove {len(letters)} dead letters to {settings.topic!r}; "
        "watch `meterline dlq stats` for any that fail again",
        highlight=False,
    )


def _summary(letter: Letter) -> dict[str, object]:
    origin = (
        f"{letter.original_topic}:{letter.original_partition}:{letter.original_offset}"
        if letter.original_topic
        else ""
    )
    return {
        "at": letter.position,
        "time": _when(letter.record.timestamp_ms),
        "reason": letter.reason,
        "tenant": letter.tenant,
        "from": origin,
        "key": (letter.record.key or b"").decode("utf-8", "replace"),
    }


COMMANDS: dict[str, Callable[..., None]] = {
    "list": list_,
    "stats": stats,
    "show": show,
    "redrive": redrive,
}


def register(app: typer.Typer) -> None:
    for name, command in COMMANDS.items():
        dlq.command(name)(command)
    app.add_typer(dlq, name="dlq")
